"""HTTP pieces shared by the gateway and the model services: the error envelope, the body-size
limit and the Prometheus endpoint. Every error leaves as `{"error": {"code", "message", "field"?}}`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harmonia import errors

log = logging.getLogger(__name__)

STATUS_FOR: dict[type[errors.HarmoniaError], int] = {
    errors.InvalidInput: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.DependencyDown: 503,
    errors.EngineUnavailable: 503,
    errors.RetryableError: 503,
    errors.EngineError: 500,
}


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
        status = next((s for t, s in STATUS_FOR.items() if isinstance(exc, t)), 500)
        field = getattr(exc, "field", None)
        message = getattr(exc, "message", None) or str(exc)
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
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal", "internal error; see the server log")


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


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
