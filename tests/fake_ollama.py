"""A protocol-faithful fake Ollama daemon for the tests, served by a real uvicorn on loopback.

It speaks what the Ollama API documents: `POST /api/chat` and `/api/generate` streaming NDJSON
(one JSON object per line, the last with `done: true`, `done_reason` and the timing fields in
nanoseconds) or one object with `"stream": false`; `GET /api/tags`, `GET /api/version`; 404
`{"error": "model \"x\" not found, try pulling it first"}` for a model it does not have; 400 for a
bad `format`. It also serves the OpenAI-compatible `POST /v1/chat/completions` (SSE chunks ending
in `data: [DONE]`, `response_format`) and `GET /v1/models`, as Ollama itself does.

It never reads the prompt to decide what to say: tests `push` scripted answers (text plus an
optional misbehaviour) that the next generation requests consume in order. Every request is
recorded in `requests` so tests can check what the client sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

Mode = Literal["ok", "slow", "stall", "malformed", "cut", "error", "no_done", "status"]


@dataclass
class Answer:
    """One scripted answer. `mode` picks a misbehaviour:

    slow: sleep `delay_s` before every chunk; stall: stream half the answer at once, then sleep
    `delay_s` before the rest (a server that hangs mid-answer); malformed: a truncated JSON line halfway;
    cut: drop the connection halfway; error: an `{"error": ...}` line halfway (as Ollama does when
    the runner dies); no_done: end the stream without the final `done` object;
    status: answer HTTP `status` with `{"error": error}` and no stream.
    """

    text: str = "Hello from the fake."
    mode: Mode = "ok"
    delay_s: float = 0.0
    status: int = 500
    error: str = "an error was encountered while running the model"


@dataclass
class Seen:
    method: str
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeOllama:
    """The fake daemon's state and its ASGI app. Use `with FakeOllama() as fake:`; `fake.url`."""

    def __init__(
        self,
        models: tuple[str, ...] = ("llama3.2:latest",),
        *,
        version: str = "0.12.6",
        token: str | None = None,
        chunk_chars: int = 7,
    ) -> None:
        self.models = list(models)
        self.version = version
        self.token = token
        self.chunk_chars = chunk_chars
        self.requests: list[Seen] = []
        self._answers: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._server: ServerThread | None = None
        self.app = Starlette(
            routes=[
                Route("/", self._root, methods=["GET", "HEAD"]),
                Route("/api/version", self._version, methods=["GET"]),
                Route("/api/tags", self._tags, methods=["GET"]),
                Route("/api/chat", self._chat, methods=["POST"]),
                Route("/api/generate", self._generate, methods=["POST"]),
                Route("/v1/models", self._openai_models, methods=["GET"]),
                Route("/v1/chat/completions", self._openai_chat, methods=["POST"]),
            ]
        )

    # --- test controls ---------------------------------------------------------------------------

    def push(self, *answers: str | Answer) -> None:
        """Queue answers for the next generation requests, in order."""
        with self._lock:
            self._answers.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def reset(self) -> None:
        """Forget queued answers and recorded requests (between tests sharing one daemon)."""
        with self._lock:
            self._answers.clear()
        self.requests.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._answers)

    def generations(self) -> list[Seen]:
        return [r for r in self.requests if r.path in ("/api/chat", "/api/generate", "/v1/chat/completions")]

    def __enter__(self) -> FakeOllama:
        self._server = ServerThread(self.app)
        self.url = self._server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.__exit__(*exc)

    # --- protocol helpers ------------------------------------------------------------------------

    def _next(self) -> Answer:
        with self._lock:
            return self._answers.popleft() if self._answers else Answer()

    def _has(self, name: str) -> bool:
        def full(n: str) -> str:
            return n if ":" in n else n + ":latest"

        return any(full(name) == full(m) for m in self.models)

    async def _admit(
        self, request: Request, *, openai: bool = False
    ) -> tuple[dict[str, Any] | None, Response | None]:
        """Record the request; return (body, None) or (None, the error response Ollama would give)."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        self.requests.append(Seen(request.method, request.url.path, body, dict(request.headers)))
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return None, self._err(401, "unauthorized", openai)
        if request.method == "GET":
            return {}, None
        if not isinstance(body, dict):
            return None, self._err(400, "invalid request body", openai)
        model = body.get("model")
        if not model:
            return None, self._err(400, "model is required", openai)
        if not self._has(model):
            return None, self._err(404, f'model "{model}" not found, try pulling it first', openai)
        fmt = body.get("format")
        if fmt is not None and fmt != "json" and not (isinstance(fmt, dict) and fmt.get("type") == "object"):
            return None, self._err(400, 'invalid format: expected "json" or a valid JSON schema', openai)
        return body, None

    @staticmethod
    def _err(status: int, message: str, openai: bool) -> JSONResponse:
        if openai:
            return JSONResponse(
                {"error": {"message": message, "type": "api_error", "param": None, "code": None}}, status
            )
        return JSONResponse({"error": message}, status)

    def _pieces(self, answer: Answer, body: dict[str, Any]) -> tuple[list[str], str]:
        """The answer split into streamed pieces, truncated at options.num_predict like a token limit."""
        n = self.chunk_chars
        pieces = [answer.text[i : i + n] for i in range(0, len(answer.text), n)] or [""]
        limit = (body.get("options") or {}).get("num_predict") or (body.get("max_tokens"))
        if isinstance(limit, int) and 0 < limit < len(pieces):
            return pieces[:limit], "length"
        return pieces, "stop"

    @staticmethod
    async def _pause(answer: Answer, index: int, half: int) -> None:
        if answer.delay_s and (answer.mode == "slow" or (answer.mode == "stall" and index == half)):
            await asyncio.sleep(answer.delay_s)

    @staticmethod
    def _now() -> str:
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    # --- Ollama endpoints ------------------------------------------------------------------------

    async def _root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def _version(self, request: Request) -> Response:
        _, error = await self._admit(request)
        return error or JSONResponse({"version": self.version})

    async def _tags(self, request: Request) -> Response:
        _, error = await self._admit(request)
        if error:
            return error
        models = [
            {
                "name": m,
                "model": m,
                "modified_at": "2025-01-01T00:00:00Z",
                "size": 2019393189,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": {
                    "format": "gguf",
                    "family": "llama",
                    "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for m in self.models
        ]
        return JSONResponse({"models": models})

    async def _chat(self, request: Request) -> Response:
        return await self._ollama(request, chat=True)

    async def _generate(self, request: Request) -> Response:
        return await self._ollama(request, chat=False)

    async def _ollama(self, request: Request, *, chat: bool) -> Response:
        body, error = await self._admit(request)
        if error:
            return error
        assert body is not None
        if chat and not isinstance(body.get("messages"), list):
            return self._err(400, "messages must be a list", False)
        answer = self._next()
        if answer.mode == "status":
            return self._err(answer.status, answer.error, False)
        pieces, reason = self._pieces(answer, body)
        model = body["model"]

        def line(text: str, done: bool) -> dict[str, Any]:
            obj: dict[str, Any] = {"model": model, "created_at": self._now()}
            if chat:
                obj["message"] = {"role": "assistant", "content": text}
            else:
                obj["response"] = text
            obj["done"] = done
            if done:
                obj.update(done_reason=reason, **_timings(len(pieces)))
                if not chat:
                    obj["context"] = [1, 2, 3]
            return obj

        if body.get("stream") is False:
            return JSONResponse(line("".join(pieces), True))

        async def stream() -> AsyncIterator[bytes]:
            half = len(pieces) // 2
            for i, piece in enumerate(pieces):
                await self._pause(answer, i, half)
                if i == half and answer.mode == "malformed":
                    yield b'{"model": "' + model.encode() + b'", "message": {"content": "\n'
                    return
                if i == half and answer.mode == "cut":
                    raise ConnectionAbortedError("fake daemon drops the connection")
                if i == half and answer.mode == "error":
                    yield (json.dumps({"error": answer.error}) + "\n").encode()
                    return
                yield (json.dumps(line(piece, False)) + "\n").encode()
            if answer.mode != "no_done":
                yield (json.dumps(line("", True)) + "\n").encode()

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    # --- OpenAI-compatible endpoints -------------------------------------------------------------

    async def _openai_models(self, request: Request) -> Response:
        _, error = await self._admit(request, openai=True)
        return error or JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "library"} for m in self.models
                ],
            }
        )

    async def _openai_chat(self, request: Request) -> Response:
        body, error = await self._admit(request, openai=True)
        if error:
            return error
        assert body is not None
        answer = self._next()
        if answer.mode == "status":
            return self._err(answer.status, answer.error, True)
        pieces, reason = self._pieces(answer, body)
        base = {
            "id": "chatcmpl-1",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_ollama",
        }
        usage = {"prompt_tokens": 11, "completion_tokens": len(pieces), "total_tokens": 11 + len(pieces)}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(pieces)}
            choice = {"index": 0, "message": message, "finish_reason": reason}
            return JSONResponse({**base, "object": "chat.completion", "choices": [choice], "usage": usage})

        def event(obj: Any) -> bytes:
            return f"data: {json.dumps(obj)}\n\n".encode()

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return event({**base, "object": "chat.completion.chunk", "choices": [choice]})

        async def stream() -> AsyncIterator[bytes]:
            half = len(pieces) // 2
            for i, piece in enumerate(pieces):
                await self._pause(answer, i, half)
                if i == half and answer.mode == "malformed":
                    yield b'data: {"id": "chatcmpl-1", "choices": [\n\n'
                    return
                if i == half and answer.mode == "cut":
                    raise ConnectionAbortedError("fake daemon drops the connection")
                if i == half and answer.mode == "error":
                    yield event({"error": {"message": answer.error, "type": "api_error"}})
                    return
                yield chunk({"role": "assistant", "content": piece}, None)
            if answer.mode == "no_done":
                return
            yield chunk({"role": "assistant", "content": ""}, reason)
            if (body.get("stream_options") or {}).get("include_usage"):
                yield event({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")


def _timings(tokens: int) -> dict[str, int]:
    """Plausible Ollama statistics (durations in nanoseconds)."""
    return {
        "total_duration": 5_000_000 + tokens * 1_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": 11,
        "prompt_eval_duration": 2_000_000,
        "eval_count": tokens,
        "eval_duration": tokens * 1_000_000,
    }


class ServerThread:
    """Serve an ASGI app with a real uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __enter__(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="critical", timeout_graceful_shutdown=1, lifespan="auto")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self._sock = sock
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self._sock.close()


def real_ollama() -> tuple[str, str] | None:
    """(url, model) of a real daemon when HARMONIA_TEST_OLLAMA_URL is set (see docs/ollama.md).

    Read when a test module is imported: the suite's autouse fixture clears HARMONIA_* variables
    around every test, so reading it inside a test would always miss it.
    """
    url = os.environ.get("HARMONIA_TEST_OLLAMA_URL")
    return (url.rstrip("/"), os.environ.get("HARMONIA_TEST_OLLAMA_MODEL", "llama3.2")) if url else None


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
