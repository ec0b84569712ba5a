"""HTTP pieces shared by the gateway and the model services: the error envelope, the body-size
limit, strict JSON bodies and the Prometheus endpoint. Every error leaves as
`{"error": {"code", "message", "field"?}}`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harmonia import errors

log = logging.getLogger(__name__)

#: The one table from domain errors to HTTP status, for every app (gateway, model and LLM services).
#: Ordered: the first class an error is an instance of decides (specific kinds before their bases).
STATUS_FOR: dict[type[errors.HarmoniaError], int] = {
    errors.TimedOut: 504,
    errors.JobCanceled: 499,  # the client went away (nginx's "client closed request")
    errors.InvalidInput: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.UpstreamError: 502,
    errors.DependencyDown: 503,
    errors.EngineUnavailable: 503,
    errors.RetryableError: 503,
    errors.EngineError: 500,
}


def status_for(exc: errors.HarmoniaError) -> int:
    """The HTTP status of a domain error (500 for one the table does not name)."""
    return next((s for t, s in STATUS_FOR.items() if isinstance(exc, t)), 500)


class JsonBody(Response):
    """A JSON answer encoded with orjson (several times faster than the standard library on job
    records, which the gateway's hot paths answer with)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {"code", "message", "field"?}}`."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting the error envelope for these statuses."""
    reasons = {
        401: "missing or unknown API key",
        404: "unknown, or not yours",
        409: "conflict",
        413: "body too large",
        415: "the body is not JSON (send Content-Type: application/json)",
        422: "invalid input (field names the problem)",
        429: "rate limited (see Retry-After)",
        503: "a dependency is down (the message says which)",
    }
    return {s: {"model": ErrorBody, "description": reasons.get(s, "error")} for s in statuses}


class ApiError(Exception):
    """An HTTP answer raised from a route: status, machine code, message, optional field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Map validation errors, HTTP errors and Harmonia errors onto the JSON error envelope."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(first.get("loc", ()))
        msg = str(first.get("msg", "invalid"))
        if first.get("type") == "json_invalid":
            return error_response(422, "invalid_json", f"request body is not valid JSON: {msg}", "body")
        return error_response(422, "invalid_input", f"{field}: {msg}", field)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(errors.HarmoniaError)
    async def _domain(_: Request, exc: errors.HarmoniaError) -> JSONResponse:
        status = status_for(exc)
        field = exc.field
        message = exc.message or str(exc)
        if status >= 500 and status != 503:
            log.error("unhandled domain error: %s", message)
        return error_response(status, exc.code, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        too_large = next((e for e in (exc.__cause__, exc.__context__) if isinstance(e, _TooLarge)), None)
        if too_large is not None:  # a chunked body ran past the limit while FastAPI was reading it
            return error_response(
                413, "too_large", f"request body is larger than the limit of {too_large.limit} bytes", "body"
            )
        bad_json = exc.__cause__
        if isinstance(bad_json, errors.InvalidInput):  # raised by JsonRequest while FastAPI parsed the body
            return error_response(422, bad_json.code, bad_json.message, bad_json.field)
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal", "internal error; see the server log")


MAX_JSON_DEPTH = 64


class InvalidJson(errors.InvalidInput):
    """The body is not JSON this API accepts (maps to 422 `invalid_json`)."""

    code = "invalid_json"


def parse_json(body: bytes) -> Any:
    """Parse a request body as strict JSON: no NaN or Infinity (InvalidInput naming the field:
    "must be a finite number") and no nesting deeper than `MAX_JSON_DEPTH` (InvalidJson)."""
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise InvalidJson(f"request body nests deeper than {MAX_JSON_DEPTH} levels", "body") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}", "body") from exc
    _check_json(data, [])
    return data


def _check_json(value: Any, path: list[str]) -> None:
    if len(path) > MAX_JSON_DEPTH:
        raise InvalidJson(f"request body nests deeper than {MAX_JSON_DEPTH} levels", "body")
    if isinstance(value, float) and not math.isfinite(value):
        field = ".".join(path) or "body"
        raise errors.InvalidInput(f"{field}: must be a finite number", field)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _check_json(item, [*path, str(key)])


def _is_json_type(content_type: str) -> bool:
    main = content_type.split(";", 1)[0].strip().lower()
    return main == "application/json" or (main.startswith("application/") and main.endswith("+json"))


def check_json_content_type(request: Request) -> None:
    """A request with a body must declare it as JSON (415 otherwise; no Content-Type is read as JSON)."""
    declared = request.headers.get("content-type")
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if declared and has_body and not _is_json_type(declared):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be JSON sent with Content-Type: application/json (got {declared})",
            "Content-Type",
        )


class JsonRequest(Request):
    """A request whose JSON body is parsed by `parse_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """Route class for endpoints that take a JSON body (FastAPI's documented custom-route hook):
    a non-JSON Content-Type is a 415, NaN/Infinity a 422 "must be a finite number" on the field,
    a body nested past `MAX_JSON_DEPTH` a 422 `invalid_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            check_json_content_type(request)
            return await handler(JsonRequest(request.scope, request.receive))

        return strict


class BodySizeLimit:
    """ASGI middleware: answer 413 before reading more than `max_bytes` of a request body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        response = error_response(
            413, "too_large", f"request body is larger than the limit of {self.max_bytes} bytes", "body"
        )
        await response({"type": "http"}, _empty_receive, send)


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


DOCS_ASSETS_URL = "/docs-assets"


def docs_app_kwargs() -> dict[str, Any]:
    """`FastAPI(...)` arguments that turn off the CDN-backed /docs and /redoc (`serve_docs` adds them)."""
    return {"docs_url": None, "redoc_url": None}


def serve_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc with their JavaScript, CSS and icon served by this
    app (FastAPI's documented self-hosting recipe), from the copies that the pinned
    `fastapi-offline` package installs: the pages work without internet. Build `app` with
    `docs_app_kwargs()` so FastAPI does not add its own CDN pages first."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.staticfiles import StaticFiles
    from starlette.responses import HTMLResponse

    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
