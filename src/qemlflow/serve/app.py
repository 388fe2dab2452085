"""The HTTP edge of the prediction service: FastAPI routes, auth, limits, metrics.

Handlers only parse, call :class:`~qemlflow.serve.service.ModelService` and render;
the model, its swaps and its domain live in :mod:`qemlflow.serve.service`.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qemlflow._version import __version__
from qemlflow.errors import InputTooLargeError, QeMLflowError
from qemlflow.serve.domain import DEFAULT_THRESHOLD
from qemlflow.serve.metrics import (
    CONTENT_TYPE,
    ASGIApp,
    MetricsMiddleware,
    Receive,
    Scope,
    Send,
    ServiceMetrics,
)
from qemlflow.serve.schemas import (
    HealthResponse,
    ModelsResponse,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
)
from qemlflow.serve.service import (
    BatchTooLargeError,
    ModelNotReadyError,
    ModelService,
    molecules_from_table,
)

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = [
    "BodyLimitMiddleware",
    "KnownAnswersMiddleware",
    "ServeSettings",
    "build_app",
    "create_app",
    "run_server",
]

MIB = 1024 * 1024
ENDPOINTS = ("/predict", "/healthz", "/readyz", "/metrics", "/models", "/openapi.json", "/docs")


class ServeSettings(BaseModel):
    """Everything ``qemlflow serve`` can be told."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: str = Field(description="NAME, NAME@ALIAS or NAME@N.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    poll_seconds: float = Field(default=10.0, ge=0.0)
    domain_threshold: float = Field(default=DEFAULT_THRESHOLD, ge=0.0, le=1.0)
    max_body_bytes: int = Field(default=MIB, gt=0)
    max_batch: int = Field(default=10_000, gt=0)
    max_upload_bytes: int = Field(
        default=32 * MIB, gt=0, description="Largest uploaded table once decompressed."
    )
    max_field_bytes: int = Field(
        default=MIB, gt=0, description="Largest row (or value) of an uploaded table."
    )
    cors_origin: str | None = None
    public_docs: bool = False
    key_cache_seconds: float = Field(
        default=0.5, ge=0.0, le=1.0, description="A revoked key is refused within this time."
    )
    workers: int | None = Field(
        default=None, gt=0, description="Worker processes (default: one per core, at least 2)."
    )
    monitor_seconds: float | None = Field(
        default=None,
        gt=0.0,
        description="Monitoring aggregation window (default: $QEMLFLOW_MONITOR_WINDOW_SECONDS "
        "or 60 s).",
    )


_BODY = "qemlflow.body"  # the scope key of the whole body, set by BodyLimitMiddleware


class BodyLimitMiddleware:
    """Answers 413 to a request whose body is over ``max_bytes`` (declared or streamed).

    The body is read here (it is at most ``max_bytes``) and handed on whole, so the app
    never sees a request it would have to abandon half-way.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        scope[_BODY] = body  # for KnownAnswersMiddleware: the body is read once, here
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        detail = f"request body over {self.max_bytes} bytes; send fewer molecules per request"
        response = JSONResponse({"detail": detail}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


_JSON_HEADER = (b"content-type", b"application/json")


class KnownAnswersMiddleware:
    """Answers a ``POST /predict`` whose every molecule the served version has answered
    before, without the framework; any other request goes on to the app unchanged.

    It answers only what the ``/predict`` route would answer the same way: a JSON body (the
    route's reading of the content type, missing meaning JSON) that ``PredictRequest``
    accepts, a bearer key that :meth:`ModelService.key_allowed` trusts (the same check
    and its cache), and molecules :meth:`ModelService.answered_json` knows, which also
    counts the response in the metrics and the monitoring. The status, headers and body
    are the bytes the route writes (tests/test_serve.py compares them). Anything else,
    an exception included, and the request goes to the app, which answers it as it always
    did (401, 413, 422, 503, or scoring the molecules). Under a steady load of repeated
    molecules, this is most requests: routing, dependency solving and the ``Request`` and
    ``Response`` objects were about half of the server's CPU per request
    (docs/benchmarks.md, "Prediction service").

    Sits inside :class:`BodyLimitMiddleware`, which reads the body whole (within the limit)
    and hands it on in the scope as well as to the app, and inside the CORS middleware when
    there is one (its headers are added as before).
    """

    def __init__(self, app: ASGIApp, service: ModelService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = scope.get(_BODY)  # the body BodyLimitMiddleware read, replayed to the app
        known = (
            await self._known(scope, body)
            if body is not None and scope["path"] == "/predict" and scope["method"] == "POST"
            else None
        )
        if known is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-length", str(len(known)).encode()), _JSON_HEADER]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": known})

    async def _known(self, scope: Scope, body: bytes) -> bytes | None:
        content_type = authorization = None
        for name, value in scope["headers"]:  # the first of each, as Starlette reads them
            if name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
        if (content_type or "application/json").split(";")[0].strip() != "application/json":
            return None
        scheme, key = get_authorization_scheme_param(authorization)
        if not (authorization and scheme and key) or scheme.lower() != "bearer":
            return None
        try:
            if not await self.service.key_allowed(key):
                return None
            return self.service.answered_json(PredictRequest.model_validate_json(body).smiles)
        except Exception:  # the app answers it, and its error, as it always did
            return None


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer KEY`.")
_CSV_TYPES = ("text/csv", "text/plain", "application/csv")
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


async def _request_smiles(
    request: Request, smiles_column: str | None, settings: ServeSettings
) -> tuple[list[str], list[str]]:
    """The SMILES of a JSON body, a CSV body or an uploaded file (field ``file``), and per
    row the reason it could not be read ("" when it was).

    An uploaded table is decompressed and parsed in a worker thread, as a stream bounded
    by the settings' limits (InputTooLargeError, answered 413, past any of them).
    """
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    limits = {
        "max_rows": settings.max_batch,
        "max_bytes": settings.max_upload_bytes,
        "max_field_bytes": settings.max_field_bytes,
    }
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "a multipart upload needs the CSV in a file field 'file'")
        data, filename = await upload.read(), upload.filename
    elif content_type in _CSV_TYPES:
        data, filename = await request.body(), "upload.csv"
    elif content_type == "application/json":
        smiles = PredictRequest.model_validate_json(await request.body()).smiles
        return smiles, [""] * len(smiles)
    else:
        raise HTTPException(415, "send application/json, text/csv or a multipart CSV upload")
    molecules = await run_in_threadpool(
        molecules_from_table, data, filename, smiles_column, **limits
    )
    return [m.smiles for m in molecules], [m.error for m in molecules]


def create_app(service: ModelService, settings: ServeSettings, metrics: ServiceMetrics) -> FastAPI:
    """Return the FastAPI app serving ``service`` (started with the app if not yet)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not service.started:
            await run_in_threadpool(service.start)
        yield
        await run_in_threadpool(service.stop)

    app = FastAPI(
        title="QeMLflow prediction service",
        version=__version__,
        description=f"Scores molecules with the registered model `{settings.spec}`.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )

    async def require_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        key = credentials.credentials if credentials is not None else ""
        if not key or not await service.key_allowed(key):
            raise HTTPException(
                401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
            )

    auth = [Depends(require_key)]
    docs_auth = [] if settings.public_docs else auth

    @app.post(
        "/predict", response_model=PredictResponse, dependencies=auth, openapi_extra=_PREDICT_BODY
    )
    async def predict(
        request: Request,
        smiles_column: Annotated[str | None, Query(description="SMILES column of a CSV.")] = None,
    ) -> PredictResponse | Response:
        """Score molecules: one result per input SMILES, in order."""
        smiles, unreadable = await _request_smiles(request, smiles_column, settings)
        if not any(unreadable):
            # Every molecule answered before (a CSV body: a JSON one is answered so by
            # KnownAnswersMiddleware before it gets here): the response's bytes from the
            # answers kept, without FastAPI validating and serializing a PredictResponse.
            body = service.answered_json(smiles)
            if body is not None:
                return Response(body, media_type="application/json")
        response = await service.predict(smiles)
        if any(unreadable):  # a row that never held a molecule: say why, not "empty SMILES"
            # A copy: the service may hand the same result object to other requests.
            response.results = [
                result.model_copy(update={"error": reason}) if reason else result
                for result, reason in zip(response.results, unreadable, strict=True)
            ]
        return response

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> HealthResponse:
        """Liveness: the process answers (no API key needed)."""
        return HealthResponse()

    @app.get("/readyz", response_model=ReadyResponse, dependencies=auth)
    async def readyz(response: Response) -> ReadyResponse:
        """Readiness: a smoke-tested model is loaded (503 until then)."""
        model = service.current
        response.status_code = 200 if service.ready else 503
        if model is None:
            return ReadyResponse(ready=False)
        return ReadyResponse(ready=service.ready, model=model.name, model_version=model.number)

    @app.get("/models", response_model=ModelsResponse, dependencies=auth)
    async def models() -> ModelsResponse:
        """The model being served, its aliases and any refused versions."""
        return ModelsResponse(
            serving=await run_in_threadpool(service.describe), poll_seconds=service.poll_seconds
        )

    @app.get("/metrics", dependencies=auth, response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/openapi.json", include_in_schema=False, dependencies=docs_auth)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=docs_auth)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    _add_error_handlers(app)
    # Innermost first: the known answers inside CORS, the body limit and the metrics.
    app.add_middleware(KnownAnswersMiddleware, service=service)
    if settings.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[settings.cors_origin],
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def answer(status: int, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(BatchTooLargeError)
    async def too_many(request: Request, exc: BatchTooLargeError) -> JSONResponse:
        return answer(413, exc)

    @app.exception_handler(ModelNotReadyError)
    async def not_ready(request: Request, exc: ModelNotReadyError) -> JSONResponse:
        return answer(503, exc)

    @app.exception_handler(ValidationError)
    async def invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.errors(include_url=False, include_input=False, include_context=False)},
            status_code=422,
        )

    @app.exception_handler(InputTooLargeError)
    async def upload_too_large(request: Request, exc: InputTooLargeError) -> JSONResponse:
        return answer(413, exc)

    @app.exception_handler(QeMLflowError)
    async def unusable(request: Request, exc: QeMLflowError) -> JSONResponse:
        return answer(422, exc)


def build_app(settings: ServeSettings, store: Store) -> FastAPI:
    """Return the app for ``settings`` on ``store`` (the model loads when it starts)."""
    from qemlflow.serve.monitoring import TrafficMonitor, window_seconds

    metrics = ServiceMetrics(ENDPOINTS)
    monitor = TrafficMonitor(store, window_seconds(settings.monitor_seconds), metrics)
    service = ModelService(
        store,
        settings.spec,
        poll_seconds=settings.poll_seconds,
        domain_threshold=settings.domain_threshold,
        max_batch=settings.max_batch,
        key_cache_seconds=settings.key_cache_seconds,
        workers=settings.workers,
        metrics=metrics,
        monitor=monitor,
    )
    app = create_app(service, settings, metrics)
    app.state.service = service
    return app


# SIGTERM/SIGINT: requests in flight get this long to finish, then the service stops; a
# process still alive at _EXIT_DEADLINE is ended by faulthandler's C watchdog thread.
_GRACE_SECONDS = 5
_EXIT_DEADLINE = 9.0


def run_server(settings: ServeSettings, store: Store, *, log_level: str = "info") -> None:
    """Load the model, then serve it with uvicorn until SIGTERM or SIGINT (then drain, exit)."""
    import faulthandler

    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Whatever happens during shutdown, the process is gone within 10 s: the
            # watchdog runs in C and needs neither the GIL nor the event loop.
            faulthandler.dump_traceback_later(_EXIT_DEADLINE, exit=True)
            super().handle_exit(sig, frame)

    app = build_app(settings, store)
    app.state.service.start()  # fail here, before binding, when the model is unusable
    # The model and the training fingerprints are long-lived: keep them out of the
    # garbage collector's full passes, which otherwise stall requests for tens of ms.
    gc.collect()
    gc.freeze()
    # The event loop and the dispatcher thread share the GIL: hand it over more often
    # than every 5 ms so that a request is not held up behind a batch's Python work.
    sys.setswitchinterval(0.001)
    http: type[asyncio.Protocol] | str
    try:
        from qemlflow.serve.protocol import OneSendHttpToolsProtocol

        http = OneSendHttpToolsProtocol  # one send per response (uvicorn[standard]'s parser)
    except ImportError:  # uvicorn without httptools: its pure-Python h11 protocol
        http = "auto"
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=_GRACE_SECONDS,
    )
    try:
        # Server.run, not asyncio.run(serve()): it runs on the loop the config picks
        # (uvloop, which the serve extra installs), whose per-request overhead is lower.
        Server(config).run()
    finally:
        app.state.service.stop()  # no-op after a clean lifespan shutdown
        faulthandler.cancel_dump_traceback_later()  # stopped in time: the caller goes on
