"""The REST API: image uploads in, every model's class probabilities out (FastAPI on uvicorn).

    app = create_app(ModelStore.load(["models/"]))
    uvicorn.run(app, host="127.0.0.1", port=8000)         # what `qtl serve models/` runs

    POST /predict           multipart, one or more images in the field `file`
                            -> {"images": [{"file", "width", "height", "models": {name: {"label",
                               "probabilities", "heatmap_png"?, "heatmap_method"?,
                               "heatmap_note"?}}}]}
         ?explain=true      adds each model's heatmap over the image (PNG, base64)
    GET  /models            names, variant, classes, backbone, recorded accuracy
    GET  /healthz           {"status": "ok", "models": N, "pending": requests waiting}
    GET  /docs, /openapi.json

Concurrent requests are micro-batched (`qtl.deploy.batching`): one backbone pass per batch for the
frozen models that share a backbone. Limits (`qtl.deploy.limits`) are checked before any model runs.
Every refusal is a 4xx with a one-line JSON body {"detail": "..."}; an unexpected failure is a 500
with a one-line body that names no internals (the traceback goes to the server's log only).
"""

from __future__ import annotations

import logging
import socket
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from qtl.deploy.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_S, DEFAULT_WORKERS, MicroBatcher
from qtl.deploy.limits import BodyLimit, Refused, ServeLimits, check_filename, decode_uploads
from qtl.deploy.models import ModelStore
from qtl.utils.threads import share_cores

log = logging.getLogger(__name__)

FIELD = "file"


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
    ) -> PredictResponse:
        """Class probabilities of every model for one or more images sent as multipart field `file`."""
        uploads = await _uploads(request, limits)
        images = await run_in_threadpool(decode_uploads, uploads, limits)
        rows = await batcher.submit([image for _, image in images])
        if explain:
            for (_, image), row in zip(images, rows, strict=True):
                for name, heat in (await batcher.compute(store.explain, image)).items():
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

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness: the server answers and its models are loaded."""
        return Health(status="ok", models=len(store.models), pending=batcher.pending)

    return app


async def _uploads(request: Request, limits: ServeLimits) -> list[tuple[str, bytes]]:
    """The files of field `file` as (name, bytes); Refused for anything but a multipart upload of
    1..max_images files with plain names."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise Refused(
            415, f"send images as multipart/form-data in the field '{FIELD}', not {content_type or 'no type'}"
        )
    try:
        form = await request.form(max_files=limits.max_images, max_fields=limits.max_images)
    except HTTPException as exc:  # Starlette's multipart parser: malformed, or too many parts
        too_many = "Too many" in str(exc.detail)
        status = 413 if too_many else 400
        raise Refused(
            status, f"multipart body refused: {exc.detail} (at most {limits.max_images} images)"
        ) from None
    parts = form.getlist(FIELD)
    if not parts:
        raise Refused(400, f"no images: send one or more files in the multipart field '{FIELD}'")
    uploads = []
    for part in parts:
        if not isinstance(part, UploadFile):
            raise Refused(400, f"the field '{FIELD}' must hold files, got a text value")
        uploads.append((check_filename(part.filename), await part.read()))
    await form.close()
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
