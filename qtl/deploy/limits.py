"""What a server accepts: request bytes, images per request, pixels per image and per request, image
formats. (Pillow is imported only to decode, so the command line's parser reads the defaults for free.)

    limits = ServeLimits(max_images=16)
    image = decode_upload(data, "bee.jpg", limits)     # an RGB PIL image, or Refused(status, message)
    images = decode_uploads([("a.jpg", a), ("b.png", b)], limits)     # [(name, image)], or Refused
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)

Every refusal is a `Refused` with an HTTP status (4xx) and a one-line message. An image is checked
before its pixels are decoded: its format (from its bytes, never its name or declared type) must be
accepted, its width x height within `max_pixels`, so a decompression bomb (a small PNG of 50,000 x
50,000 pixels) is refused without allocating it, and its sides at most 100:1 apart, so the model's resize
of its short side cannot blow it up (a 16,000 x 1 PNG of 129 bytes would become 4,096,000 x 256 pixels);
then the pixels of all the request's images together must be within `max_request_pixels` (16 solid
6000 x 6000 PNGs make a request of 1.9 MB but 576 million pixels). A request body is counted as it
streams in.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from qtl.utils.words import error_line

#: Formats a server decodes by default (Pillow's names), the common web formats.
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
#: Pixels of all the images of one request together, by default: 100 million (eight 12-megapixel photos;
#: about 300 MB decoded as RGB), where 16 images of `max_pixels` each would be 640 million.
DEFAULT_REQUEST_PIXELS = 100_000_000


class Refused(Exception):
    """A request the server will not serve: `status` (4xx) and a one-line `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())


@dataclass(frozen=True)
class ServeLimits:
    """The server's limits; every refusal names the limit it hit."""

    max_request_bytes: int = 20 * 2**20  # a whole request body
    max_images: int = 16  # files in one request
    max_pixels: int = 40_000_000  # width x height of one image (decompression bombs)
    formats: tuple[str, ...] = DEFAULT_FORMATS  # Pillow format names (`pillow_formats`: JPG is JPEG)
    #: width x height of all the images of one request together (None: DEFAULT_REQUEST_PIXELS, or
    #: max_pixels where that is more, so one image of max_pixels always fits)
    max_request_pixels: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_images", "max_pixels", "max_request_pixels"):
            value = getattr(self, name)
            if value is None and name == "max_request_pixels":
                object.__setattr__(self, name, max(DEFAULT_REQUEST_PIXELS, self.max_pixels))
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if not self.formats:
            raise ValueError("formats must name at least one image format")
        if tuple(self.formats) != DEFAULT_FORMATS:  # Pillow's names already: the parser imports no Pillow
            object.__setattr__(self, "formats", pillow_formats(self.formats))


def allow_pixels(max_pixels: int) -> None:
    """Let Pillow open images of up to `max_pixels` (a server's `ServeLimits.max_pixels`): its own
    decompression-bomb check refused anything over twice its `MAX_IMAGE_PIXELS` (178,956,970 pixels),
    whatever --max-pixels said, in its own numbers. qtl checks its limit from the header (`_open`)."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def pillow_formats(names) -> tuple[str, ...]:
    """Pillow's names of the formats `names` (any case; a file extension such as JPG or TIF names its
    format), each once, in order; ValueError (one line, with the choices) for one Pillow cannot open."""
    from PIL import Image

    Image.init()  # every plugin registered
    extensions = Image.registered_extensions()  # ".jpg" -> "JPEG"
    out: list[str] = []
    for name in names:
        key = str(name).strip().lstrip(".")
        fmt = key.upper() if key.upper() in Image.OPEN else extensions.get(f".{key.lower()}")
        if fmt not in Image.OPEN:
            raise ValueError(
                f"{name!r} is no image format Pillow reads: choose from {', '.join(sorted(Image.OPEN))} "
                "(or a file extension such as JPG)"
            )
        if fmt not in out:
            out.append(fmt)
    return tuple(out)


_SEPARATORS = re.compile(r"[/\\\x00]")


def check_filename(name: str | None) -> str:
    """The upload's file name as given, refused (400) if it holds a path separator, NUL or is '..'."""
    name = name or ""
    if _SEPARATORS.search(name) or name in (".", ".."):
        raise Refused(400, f"file name {name!r} holds a path separator: send a plain file name")
    return name


def decode_upload(data: bytes, name: str, limits: ServeLimits):
    """One uploaded file -> an RGB PIL image, or Refused: 400 empty, undecodable (truncated or corrupt,
    in its header or after: an accepted format's file by its first bytes) or of a shape a model's resize
    would blow up (`qtl.data.images.shape_refusal`: one side over 100 times the other), 413 more pixels
    than `max_pixels` (or `max_request_pixels`), 415 not an image in an accepted format."""
    return decode_uploads([(name, data)], limits)[0][1]


def decode_uploads(uploads: list[tuple[str, bytes]], limits: ServeLimits) -> list:
    """A request's files (name, bytes) -> [(name, RGB PIL image)], or the first Refused: every header
    is checked as `decode_upload` checks one, then their pixels together (413 over `max_request_pixels`),
    before any is decoded."""
    opened = []
    try:
        for name, data in uploads:
            opened.append((name, _open(data, name or "upload", limits)))
        total = sum(image.width * image.height for _, image in opened)
        if total > limits.max_request_pixels:
            raise Refused(
                413,
                f"the {len(opened)} images hold {total:,} pixels together, over the limit of "
                f"{limits.max_request_pixels:,} pixels per request: send fewer or smaller images",
            )
        return [(name, _decode(image, name or "upload")) for name, image in opened]
    finally:
        for _, image in opened:
            image.close()


def _open(data: bytes, label: str, limits: ServeLimits):
    """The upload opened from its header alone (no pixels decoded), its format, pixels and shape checked."""
    from PIL import Image

    from qtl.data.images import shape_refusal

    if not data:
        raise Refused(400, f"{label} is empty (0 bytes)")
    accepted = ", ".join(limits.formats)
    try:
        image = Image.open(io.BytesIO(data), formats=limits.formats)  # reads the header only
    except Image.DecompressionBombError:  # over twice Pillow's own limit (`allow_pixels`)
        raise Refused(
            413,
            f"{label} holds more pixels than Pillow opens, over the limit of {limits.max_pixels:,} pixels",
        ) from None
    except Exception as exc:  # Pillow raises UnidentifiedImageError, or others on hostile headers
        if fmt := _signature(data, limits.formats):  # an accepted format's file cut short in its header
            said = error_line(exc)
            raise Refused(400, f"{label} cannot be decoded as {fmt}: {said}") from None
        raise Refused(415, f"{label} is not an image in an accepted format ({accepted})") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        image.close()
        raise Refused(
            413, f"{label} is {width} x {height} pixels, over the limit of {limits.max_pixels:,} pixels"
        )
    if reason := shape_refusal(width, height):
        image.close()
        raise Refused(400, f"{label} {reason}")
    return image


def _signature(data: bytes, formats: tuple[str, ...]) -> str | None:
    """The accepted format whose signature `data` opens with (Pillow's own test of a file's first
    bytes), or None. A JPEG truncated inside its header then fails as one truncated after it does, 400
    "cannot be decoded", where it was a 415 "not an image in an accepted format"."""
    from PIL import Image

    for fmt in formats:
        accept = Image.OPEN.get(fmt, (None, None))[1]
        try:
            if accept is not None and accept(data[:16]):
                return fmt
        except Exception:  # a plugin's test on too few bytes
            continue
    return None


def _decode(image, label: str):
    """An opened upload's pixels as an RGB image (Refused 400 for truncated or corrupt data)."""
    from qtl.data.images import to_rgb, upright

    try:
        image.load()
        rgb = to_rgb(upright(image))  # as `qtl predict` decodes: turned by its EXIF orientation, 16-bit
        # grayscale keeps its top 8 bits
        return rgb.copy() if rgb is image else rgb
    except Exception as exc:  # truncated or corrupt data: OSError, SyntaxError, ValueError, EOFError ...
        said = error_line(exc)
        raise Refused(400, f"{label} cannot be decoded as {image.format}: {said}") from None


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is refused with 413 (by its Content-Length before
    any byte is read, else as soon as the streamed bytes pass the limit)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise Refused(413, self._message(seen, streamed=True))
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Refused as exc:  # raised from a read deep inside the app's body parsing
            if started:
                raise
            await _send_json(send, exc.status, exc.message)

    def _message(self, size: int, streamed: bool = False) -> str:
        what = f"more than {self.max_bytes:,}" if streamed else f"{size:,}"
        return f"request body is {what} bytes, over the limit of {self.max_bytes:,} bytes"

    async def _refuse(self, send, size: int) -> None:
        await _send_json(send, 413, self._message(size))


async def _send_json(send, status: int, message: str) -> None:
    import json

    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
