"""The REST API: image uploads in, every model's class probabilities out (FastAPI on uvicorn).

    app = create_app(ModelStore.load(["models/"]))
    uvicorn.run(app, host="127.0.0.1", port=8000)         # what `qtl serve models/` runs

    POST /predict           multipart, one or more images in the field `file`
                            -> {"images": [{"file", "width", "height", "models": {name: {"label",
                               "probabilities", "heatmap_png"?, "heatmap_method"?,
                               "heatmap_note"?}}}]}
         ?explain=true      adds each model's heatmap over the image (PNG, base64)
         &method=M          with it: auto (default), grad-cam or saliency, as `qtl explain --method`
    GET  /models            names, variant, classes, backbone, recorded accuracy, engine
    GET  /healthz           {"status": "ok", "models": N, "pending": requests waiting} (HEAD too)
    GET  /docs, /openapi.json   (/docs loads Swagger UI from a CDN; /openapi.json is served here)

Concurrent requests are micro-batched (`qtl.deploy.batching`): one backbone pass per batch for the
frozen models that share a backbone. Limits (`qtl.deploy.limits`) are checked before any model runs.
Every refusal is a 4xx with a one-line JSON body {"detail": "..."} (a query parameter /predict does not
take is one, not ignored); an unexpected failure is a 500 with a one-line body that names no internals
(the traceback goes to the server's log only).
"""

from __future__ import annotations

import logging
import socket
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from qtl.deploy.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_S, DEFAULT_WORKERS, MicroBatcher
from qtl.deploy.limits import BodyLimit, Refused, ServeLimits, allow_pixels, check_filename, decode_uploads
from qtl.deploy.models import ModelStore
from qtl.utils.threads import share_cores

log = logging.getLogger(__name__)

FIELD = "file"
METHODS = ("auto", "grad-cam", "saliency")
"""?method= of /predict: `qtl.analysis.explain.METHODS` (kept torch-free here; a test holds them equal)."""
PREDICT_PARAMETERS = ("explain", "method")
"""The query parameters /predict takes: any other is refused (`?explian=true` was ignored silently)."""
MAX_TEXT_FIELDS = 16
"""Text (non-file) fields a multipart body may hold: /predict reads none, so a few are tolerated and a
flood of them is refused before it is parsed."""


class ModelAnswer(BaseModel):
    label: str = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="class name -> probability, in the model's order")
    heatmap_png: str | None = Field(None, description="?explain=true: the heatmap over the image, base64 PNG")
    heatmap_method: str | None = Field(None, description="?explain=true: grad-cam or saliency")
    heatmap_note: str | None = Field(
        None, description="?explain=true: why the heatmap is blank (the method found no evidence), else null"
    )


class ImageAnswer(BaseModel):
    file: str = Field(description="the uploaded file's name")
    width: int
    height: int
    models: dict[str, ModelAnswer] = Field(description="model name -> its answer")


class PredictResponse(BaseModel):
    images: list[ImageAnswer]


class ModelDescription(BaseModel):
    name: str
    variant: str
    classes: list[str]
    backbone: str
    weights: str
    accuracy: float | None = Field(description="validation accuracy recorded in the checkpoint")
    n_qubits: int | None
    depth: int | None
    noise: str | None
    engine: str | None = Field(description="the circuit's simulator (native, mps, a PennyLane device)")
    max_bond: int | None = Field(description="MPS bonds truncated to this (approximate); null: exact")
    shots: int | None = Field(
        description="shots each <Z> is the mean of (a PennyLane engine's, or its noise model's); null: exact "
        "expectations"
    )


class Health(BaseModel):
    status: str
    models: int
    pending: int = Field(description="requests waiting for a batch")


class Problem(BaseModel):
    detail: str = Field(description="why, in one line")


REFUSALS = {code: {"model": Problem} for code in (400, 413, 415, 422)}
#: /predict reads its multipart body itself (to refuse before parsing what it need not), so its OpenAPI
#: request body is declared here: one or more files in the field `file`.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more images (JPEG, PNG, WEBP, GIF, BMP by default)",
                        }
                    },
                }
            }
        },
    }
}


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "error"


def _problem(status: int, detail: object) -> JSONResponse:
    return JSONResponse({"detail": _one_line(detail)}, status_code=status)


def create_app(
    store: ModelStore,
    limits: ServeLimits | None = None,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    workers: int = DEFAULT_WORKERS,
) -> FastAPI:
    """The API over `store`, with `limits` (default `ServeLimits()`) and micro-batches of at most
    `max_batch` images gathered for at most `max_wait_s` seconds, run on `workers` compute threads."""
    limits = limits or ServeLimits()
    allow_pixels(limits.max_pixels)
    batcher = MicroBatcher(
        store.predict,
        max_batch=max_batch,
        max_wait_s=max_wait_s,
        workers=workers,
        thread_setup=share_cores(workers),
    )

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = FastAPI(
        title="qtl",
        summary="Hybrid quantum-classical image classifiers: class probabilities for uploaded images.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.store, app.state.batcher, app.state.limits = store, batcher, limits
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return _problem(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _problem(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _problem(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return _problem(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        responses=REFUSALS,
        openapi_extra=UPLOAD_BODY,
    )
    async def predict(
        request: Request,
        explain: bool = Query(False, description="add each model's heatmap over each image (slower)"),
        method: Literal[METHODS] = Query(
            "auto",
            description="with explain=true: grad-cam (CNN backbones), saliency (any), or auto (grad-cam "
            "where the backbone is a CNN, else saliency)",
        ),
    ) -> PredictResponse:
        """Class probabilities of every model for one or more images sent as multipart field `file`."""
        _check_query(request, explain)
        uploads = await _uploads(request, limits)
        images = await run_in_threadpool(decode_uploads, uploads, limits)
        rows = await batcher.submit([image for _, image in images])
        if explain:
            for (_, image), row in zip(images, rows, strict=True):
                for name, heat in (await _explain(batcher, store, image, method)).items():
                    row[name].update(
                        heatmap_png=heat["heatmap_png"],
                        heatmap_method=heat["method"],
                        heatmap_note=heat["note"],
                    )
        return PredictResponse(
            images=[
                ImageAnswer(file=name, width=image.width, height=image.height, models=row)
                for (name, image), row in zip(images, rows, strict=True)
            ]
        )

    @app.get("/models", response_model=list[ModelDescription])
    async def models() -> list[ModelDescription]:
        """The models every prediction comes from."""
        return [ModelDescription(**vars(info)) for info in store.info()]

    # GET in the schema, HEAD (what many probes send) served beside it: one route of both methods gave the
    # two operations one operationId, which OpenAPI client generators refuse
    @app.head("/healthz", response_model=Health, include_in_schema=False)
    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness: the server answers and its models are loaded."""
        return Health(status="ok", models=len(store.models), pending=batcher.pending)

    return app


def _check_query(request: Request, explain: bool) -> None:
    """Refused (422) for a query parameter /predict does not take (a misspelt `?explian=true` answered
    without heatmaps, as if understood), and for `method` without `explain=true` (it would be ignored)."""
    unknown = [key for key in request.query_params if key not in PREDICT_PARAMETERS]
    if unknown:
        raise Refused(
            422,
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"/predict takes {' and '.join(PREDICT_PARAMETERS)}",
        )
    if "method" in request.query_params and not explain:
        raise Refused(422, "method chooses the heatmaps of explain=true: add explain=true, or drop method")


async def _explain(batcher: MicroBatcher, store: ModelStore, image, method: str) -> dict:
    """`store.explain` on the compute thread; Refused (422) where `method` cannot explain a model
    (grad-cam on a backbone without a convolutional feature map)."""
    try:
        return await batcher.compute(store.explain, image, method)
    except ValueError as exc:
        if method == "auto":  # auto always has a method: anything else is a fault, a 500
            raise
        raise Refused(422, f"method={method}: {exc}") from None


async def _uploads(request: Request, limits: ServeLimits) -> list[tuple[str, bytes]]:
    """The files of field `file` as (name, bytes); Refused for anything but a multipart upload of
    1..max_images files with plain names, every file in that field (a file elsewhere is a client's slip,
    not a file to ignore). Each refusal says what the body holds that is refused."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        sent = f"not {content_type}" if content_type else "and this request has no Content-Type"
        raise Refused(415, f"send images as multipart/form-data in the field '{FIELD}', {sent}")
    body = await request.body()  # within BodyLimit; the form below parses this one, cached
    if (close := _closing_delimiter(content_type)) is not None and close not in body:
        # the multipart parser ends a body cut short without a word: its last file was dropped, a 200
        raise Refused(400, "malformed multipart body: it ends before its closing boundary (cut short?)")
    try:  # files are counted in every field: more than max_images files is over the limit anyhow
        form = await request.form(max_files=limits.max_images, max_fields=MAX_TEXT_FIELDS)
    except HTTPException as exc:  # Starlette's multipart parser: too many parts, or malformed
        raise _multipart_refusal(str(exc.detail), limits) from None
    try:
        return await _files(form)
    finally:
        await form.close()


def _closing_delimiter(content_type: str) -> bytes | None:
    """The line that ends a multipart body of this Content-Type ("--BOUNDARY--"), or None without a
    boundary parameter (the parser refuses such a body itself)."""
    from email.message import Message

    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    return f"--{boundary}--".encode("latin-1", "replace") if isinstance(boundary, str) and boundary else None


def _multipart_refusal(detail: str, limits: ServeLimits) -> Refused:
    """Starlette's multipart error `detail`, as what the body holds that is refused."""
    if detail.startswith("Too many files"):
        return Refused(
            413,
            f"the body holds more than {limits.max_images} files: a request takes at most "
            f"{limits.max_images}, every one an image in the field '{FIELD}'",
        )
    if detail.startswith("Too many fields"):
        return Refused(
            413,
            f"the body holds more than {MAX_TEXT_FIELDS} text fields: /predict reads only the files in the "
            f"field '{FIELD}'",
        )
    return Refused(400, f"malformed multipart body: {detail}")


async def _files(form) -> list[tuple[str, bytes]]:
    """The uploads of `form`'s field `file` (Refused for a text value there, or a file in another field)."""
    elsewhere = sorted(
        {key for key, value in form.multi_items() if key != FIELD and isinstance(value, UploadFile)}
    )
    if elsewhere:
        fields = ", ".join(repr(key) for key in elsewhere)
        several = len(elsewhere) > 1
        raise Refused(
            400,
            f"the field{'s' if several else ''} {fields} hold{'' if several else 's'} files: /predict reads "
            f"images from the field '{FIELD}' only",
        )
    parts = form.getlist(FIELD)
    if not parts:
        raise Refused(400, f"no images: send one or more files in the multipart field '{FIELD}'")
    uploads = []
    for part in parts:
        if not isinstance(part, UploadFile):
            raise Refused(  # a part is a file by its filename parameter (filename*= alone is not read)
                400,
                f"the field '{FIELD}' must hold files, got a text value (a part without a filename= in its "
                "Content-Disposition)",
            )
        uploads.append((check_filename(part.filename), await part.read()))
    return uploads


def _version() -> str:
    import qtl

    return qtl.__version__


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); OSError with one line naming them if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def listen_url(sock: socket.socket) -> str:
    """The http:// address a `listen` socket answers at, with the port it opened (`listen(host, 0)` takes
    a free one: the address names that port, not 0)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app: FastAPI, *, log_level: str = "warning"):
    """A uvicorn server for `app` (run it with `.run(sockets=[listen(host, port)])`)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
