"""Client for a language-model daemon: the Ollama HTTP API, or any OpenAI-compatible server.

`OllamaClient` speaks Ollama's native API (`/api/chat`, `/api/generate`, `/api/tags`,
`/api/version`, NDJSON streaming, `format` with a JSON schema, `options`, `keep_alive`).
`OpenAIClient` speaks `/v1/chat/completions` (SSE streaming, `response_format` json_schema) for
vLLM, llama.cpp's server, hosted APIs, or Ollama's own `/v1` endpoints. Both have one interface.

Answers are streamed even when the caller wants the whole text: the read timeout then bounds the
gap between tokens instead of the whole generation, and the caller can stop between chunks (a
canceled job closes the connection, which makes Ollama stop generating).

A request may carry a `deadline` (a `time.monotonic()` value, the caller's wall-clock budget): the
wait for the answer to start is cut to it, the stream is checked against it between chunks, and a
stalled stream is hung up when it passes, so the call never runs past it (`BudgetExceeded`).

Failures become Harmonia errors: daemon unreachable -> `DependencyDown` naming the URL (after
retrying connection errors only: the request never reached the server, so resending is safe);
model not served -> `ModelMissing` naming the models the server does serve and how to pick one;
a prompt longer than the model's context -> `ContextOverflow`; a stream that is not what the
protocol says -> `MalformedStream`; no answer in time -> `LLMTimeout`.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import stamina
from pydantic import BaseModel, ConfigDict, Field

from harmonia.config import OllamaSettings
from harmonia.errors import (
    DependencyDown,
    EngineError,
    EngineUnavailable,
    HarmoniaError,
    RetryableError,
)

Message = dict[str, str]
JsonFormat = dict[str, Any] | str  # a JSON schema, or "json" for any JSON object
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
# How servers say a prompt does not fit: llama.cpp "exceeds the available context size", vLLM and
# OpenAI "maximum context length" / "context_length_exceeded", Ollama "exceeds the context length".
_OVERFLOW_RE = re.compile(r"context[ _](size|length|window)|exceed_context_size", re.I)


class ModelMissing(EngineUnavailable):
    """The daemon answers but does not serve the model (Ollama: not pulled; llama.cpp: another name)."""

    code = "model_missing"

    def __init__(self, model: str, url: str, hint: str, served: list[str] | None = None) -> None:
        listed = ", ".join(repr(n) for n in served[:8]) if served else ""
        more = f" (and {len(served) - 8} more)" if served and len(served) > 8 else ""
        serves = f"; it serves {listed}{more}" if served else "; it lists no models" if served == [] else ""
        super().__init__(f"model {model!r} is not available at {url}{serves}; {hint}")
        self.model, self.url, self.hint, self.served = model, url, hint, served


class ContextOverflow(EngineError):
    """The prompt (with the room asked for the answer) does not fit the model's context window."""

    code = "context_overflow"


class BudgetExceeded(EngineError):
    """The caller's wall-clock budget ran out before the answer was complete (not retried: a retry
    would take as long)."""

    code = "llm_budget_exceeded"


class LLMTimeout(RetryableError):
    """The daemon accepted the request but did not answer in time (busy, or loading the model)."""

    code = "llm_timeout"


class MalformedStream(EngineError):
    """The answer broke the streaming protocol: a line that is not JSON, a cut connection, no end."""

    code = "malformed_stream"


class GenerationOptions(BaseModel):
    """Sampling options. Names follow Ollama; the OpenAI backend maps them (num_predict -> max_tokens)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    num_ctx: int | None = Field(
        default=None, ge=256, le=1_048_576, description="context window (Ollama only)"
    )
    num_predict: int | None = Field(default=None, ge=1, le=131_072, description="most tokens to generate")
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None


@dataclass(frozen=True)
class Chunk:
    """A piece of a streamed answer. The last one has `done=True`, the stop reason and the stats."""

    text: str
    done: bool = False
    done_reason: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """A whole answer with what the server reported about it (token counts, timings in seconds)."""

    text: str
    model: str
    done_reason: str | None
    stats: dict[str, Any]


def _ns_to_s(value: Any) -> float | None:
    return round(value / 1e9, 6) if isinstance(value, int | float) else None


class LLMClient(ABC):
    """Shared transport: URLs, auth, timeouts, connection retries, error translation, streaming."""

    backend: ClassVar[str] = "?"
    label: ClassVar[str] = "LLM server"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        http: httpx.Client | None = None,
        token: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        keep_alive: str | float | None = None,
        retry_attempts: int = 3,
        retry_wait_s: float = 0.25,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.keep_alive = keep_alive
        self.retry_attempts = max(1, retry_attempts)
        self.retry_wait_s = retry_wait_s
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client()
        self._timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    # --- public interface (the backends fill in the protocol) -------------------------------------

    @abstractmethod
    def stream_chat(
        self,
        messages: list[Message],
        *,
        model: str | None = None,
        format: JsonFormat | None = None,
        options: GenerationOptions | None = None,
        keep_alive: str | float | None = None,
        deadline: float | None = None,
    ) -> Iterator[Chunk]:
        """Implemented by each backend."""

    @abstractmethod
    def stream_generate(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        format: JsonFormat | None = None,
        options: GenerationOptions | None = None,
        keep_alive: str | float | None = None,
        deadline: float | None = None,
    ) -> Iterator[Chunk]:
        """Implemented by each backend."""

    @abstractmethod
    def list_models(self) -> list[str]:
        """Implemented by each backend."""

    @abstractmethod
    def version(self) -> str | None:
        """Implemented by each backend."""

    def chat(
        self,
        messages: list[Message],
        *,
        model: str | None = None,
        format: JsonFormat | None = None,
        options: GenerationOptions | None = None,
        keep_alive: str | float | None = None,
        on_chunk: Callable[[Chunk], None] | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """The whole answer to a conversation; `on_chunk` sees each piece (and may raise to stop);
        `deadline` (a `time.monotonic()` value) bounds the whole call."""
        chunks = self.stream_chat(
            messages, model=model, format=format, options=options, keep_alive=keep_alive, deadline=deadline
        )
        return self._collect(chunks, model or self.model, on_chunk, deadline)

    def generate(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        format: JsonFormat | None = None,
        options: GenerationOptions | None = None,
        keep_alive: str | float | None = None,
        on_chunk: Callable[[Chunk], None] | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """The whole completion of one prompt (with an optional system prompt)."""
        chunks = self.stream_generate(
            prompt,
            system=system,
            model=model,
            format=format,
            options=options,
            keep_alive=keep_alive,
            deadline=deadline,
        )
        return self._collect(chunks, model or self.model, on_chunk, deadline)

    def check_ready(self, model: str | None = None) -> dict[str, Any]:
        """Raise `DependencyDown` / `ModelMissing` unless the server answers and has the model."""
        model = model or self.model
        names = self.list_models()
        if not any(_same_model(model, n) for n in names):
            raise self._missing(model, names)
        return {"url": self.base_url, "backend": self.backend, "model": model, "version": self.version()}

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------------------

    def _missing(self, model: str, served: list[str] | None) -> ModelMissing:
        hint = f"pull it with `ollama pull {model}`"
        if served:
            hint += " or set HARMONIA_OLLAMA__MODEL to one it serves"
        return ModelMissing(model, self.base_url, hint, served)

    def _served(self) -> list[str] | None:
        """The models the server lists, for an error message; None when it will not say."""
        try:
            return self.list_models()
        except HarmoniaError:
            return None

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        stream: bool = False,
        deadline: float | None = None,
    ) -> httpx.Response:
        """One request; connection errors retried; an error status raised as a Harmonia error."""
        url = self._url(path)
        timeout, retrying_for = self._timeout, None
        if deadline is not None:  # neither the retries nor the wait for the answer outlast the budget
            left = retrying_for = max(deadline - time.monotonic(), 0.001)
            timeout = httpx.Timeout(
                min(self.timeout_s, left), connect=min(self._timeout.connect or left, left)
            )
        request = self._http.build_request(method, url, json=body, headers=self._headers, timeout=timeout)
        try:
            for attempt in stamina.retry_context(
                on=_CONNECT_ERRORS,
                attempts=self.retry_attempts,
                timeout=retrying_for,
                wait_initial=self.retry_wait_s,
                wait_max=max(self.retry_wait_s, 2.0),
                wait_jitter=self.retry_wait_s,
            ):
                with attempt:
                    response = self._http.send(request, stream=stream)
        except _CONNECT_ERRORS as exc:
            reason = str(exc) or type(exc).__name__
            raise DependencyDown(
                f"{self.label} at {self.base_url} is not reachable ({method} {url}: {reason})"
            ) from exc
        except httpx.TimeoutException as exc:
            _raise_if_past(deadline, f"{self.label} at {url} {_doing(False)}", exc)
            raise LLMTimeout(f"{self.label} at {url} did not answer within {self.timeout_s:g} s") from exc
        except httpx.TransportError as exc:
            raise DependencyDown(f"{self.label} at {url} failed: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            try:
                response.read()
            except httpx.HTTPError:
                pass  # the status alone says enough
            finally:
                response.close()
            raise self._error_for(response, url, body)
        return response

    def _error_for(self, response: httpx.Response, url: str, body: dict[str, Any] | None) -> Exception:
        status = response.status_code
        message = _error_message(response)
        model = str((body or {}).get("model") or self.model)
        lowered = message.lower()
        if status == 404 and "model" in lowered and ("not found" in lowered or "does not exist" in lowered):
            return self._missing(model, self._served())
        if status == 404:
            return DependencyDown(f"{url} answered 404 ({message}); is {self.base_url} a {self.label}?")
        if status in (401, 403):
            return DependencyDown(f"{url} refused the request ({status}: {message}); check the token")
        if status in (408, 429, 502, 503, 504):
            return RetryableError(f"{self.label} at {url} is busy or unavailable ({status}: {message})")
        if _OVERFLOW_RE.search(message):
            return _overflow(url, message)
        return EngineError(f"{self.label} at {url} answered {status}: {message}")

    def _post_lines(
        self, path: str, body: dict[str, Any], deadline: float | None = None
    ) -> Generator[str, None, None]:
        """POST and yield the streamed body line by line; the response is closed however it ends.

        Lazy: nothing is sent until the first line is asked for, so an iterator that is dropped
        unstarted holds no connection. Transport failures mid-body become stream errors. Without a
        deadline a long answer that keeps streaming is fine (the job's own time limit stops it
        through the caller's `on_chunk`); with one, a stream still open at the deadline is hung up.
        """
        url = self._url(path)
        response = self._send("POST", path, body, stream=True, deadline=deadline)
        watchdog = _hang_up_at(response, deadline) if deadline is not None else None
        started = False
        try:
            for line in response.iter_lines():
                started = started or bool(line.strip())
                yield line
        except httpx.TimeoutException as exc:
            _raise_if_past(deadline, f"{self.label} at {url} {_doing(started)}", exc)
            raise LLMTimeout(f"{self.label} at {url} stopped sending for {self.timeout_s:g} s") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            _raise_if_past(deadline, f"{self.label} at {url} {_doing(started)}", exc)
            raise MalformedStream(f"the answer from {url} broke off: {exc or type(exc).__name__}") from exc
        finally:
            if watchdog is not None:
                watchdog.cancel()
            response.close()

    def _get_json(self, path: str) -> Any:
        response = self._send("GET", path)
        try:
            return response.json()
        except ValueError as exc:
            raise EngineError(f"{self._url(path)} answered with something that is not JSON") from exc

    def _collect(
        self,
        chunks: Iterator[Chunk],
        model: str,
        on_chunk: Callable[[Chunk], None] | None,
        deadline: float | None = None,
    ) -> Completion:
        parts: list[str] = []
        try:
            for chunk in chunks:
                parts.append(chunk.text)
                if on_chunk is not None:
                    on_chunk(chunk)  # may raise (a canceled job): the finally below hangs up
                if chunk.done:
                    return Completion("".join(parts), model, chunk.done_reason, chunk.stats)
                _raise_if_past(deadline, f"{self.label} at {self.base_url} {_doing(True)}")
        finally:
            if isinstance(chunks, Generator):
                chunks.close()
        raise MalformedStream(f"the answer from {self.base_url} ended without its final message")


class OllamaClient(LLMClient):
    """Ollama's native API."""

    backend = "ollama"
    label = "Ollama"

    def stream_chat(
        self,
        messages: list[Message],
        *,
        model: str | None = None,
        format: JsonFormat | None = None,
        options: GenerationOptions | None = None,
        keep_alive: str | float | None = None,
        deadline: float | None = None,
    ) -> Iterator[Chunk]:
        body = self._body(model, format, options, keep_alive)
        body["messages"] = messages
        return self._stream(
            "/api/chat", body, lambda obj: (obj.get("message") or {}).get("content"), deadline
        )

    def stream_generate(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        format: JsonFormat | None = None,
        options: GenerationOptions | None = None,
        keep_alive: str | float | None = None,
        deadline: float | None = None,
    ) -> Iterator[Chunk]:
        body = self._body(model, format, options, keep_alive)
        body["prompt"] = prompt
        if system is not None:
            body["system"] = system
        return self._stream("/api/generate", body, lambda obj: obj.get("response"), deadline)

    def list_models(self) -> list[str]:
        data = self._get_json("/api/tags")
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise EngineError(f"{self._url('/api/tags')} did not list models")
        return [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]

    def version(self) -> str | None:
        data = self._get_json("/api/version")
        return str(data["version"]) if isinstance(data, dict) and "version" in data else None

    def _body(
        self,
        model: str | None,
        format: JsonFormat | None,
        options: GenerationOptions | None,
        keep_alive: str | float | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model or self.model, "stream": True}
        if format is not None:
            body["format"] = format
        if options is not None and (opts := options.model_dump(exclude_none=True)):
            body["options"] = opts
        keep = keep_alive if keep_alive is not None else self.keep_alive
        if keep is not None:
            body["keep_alive"] = keep
        return body

    def _stream(
        self, path: str, body: dict[str, Any], text_of: Callable[[dict], Any], deadline: float | None
    ) -> Iterator[Chunk]:
        with closing(self._post_lines(path, body, deadline)) as lines:
            yield from self._ndjson_chunks(lines, self._url(path), text_of)

    def _ndjson_chunks(
        self, lines: Iterator[str], url: str, text_of: Callable[[dict], Any]
    ) -> Iterator[Chunk]:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MalformedStream(f"line {number} from {url} is not JSON: {line[:80]!r}") from exc
            if not isinstance(obj, dict):
                raise MalformedStream(f"line {number} from {url} is not a JSON object: {line[:80]!r}")
            if "error" in obj:
                if _OVERFLOW_RE.search(str(obj["error"])):
                    raise _overflow(url, str(obj["error"]))
                raise EngineError(f"Ollama at {url} failed while answering: {obj['error']}")
            text = text_of(obj)
            if text is None and not obj.get("done"):
                raise MalformedStream(f"line {number} from {url} has no answer text: {line[:80]!r}")
            if obj.get("done"):
                yield Chunk(str(text or ""), True, obj.get("done_reason"), _ollama_stats(obj))
                return
            yield Chunk(str(text))


class OpenAIClient(LLMClient):
    """An OpenAI-compatible `/v1/chat/completions` server. `base_url` may end in `/v1` or not."""

    backend = "openai"
    label = "OpenAI-compatible server"

    def _url(self, path: str) -> str:
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        return root + path

    def _missing(self, model: str, served: list[str] | None) -> ModelMissing:
        # llama.cpp lists its model by the file path it was started with unless given `--alias`.
        hint = (
            "set HARMONIA_OLLAMA__MODEL to a model it serves, or start the server with that name "
            f"(llama.cpp: `--alias {model}`; vLLM: `--served-model-name {model}`; "
            f"with Ollama behind it: `ollama pull {model}`)"
        )
        return ModelMissing(model, self.base_url, hint, served)

    def stream_chat(
        self,
        messages: list[Message],
        *,
        model: str | None = None,
        format: JsonFormat | None = None,
        options: GenerationOptions | None = None,
        keep_alive: str | float | None = None,
        deadline: float | None = None,
    ) -> Iterator[Chunk]:
        # keep_alive is Ollama's; OpenAI-compatible servers have no equivalent, so it is dropped.
        body: dict[str, Any] = {
            "model": model or self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if options is not None:
            opts = options.model_dump(exclude_none=True)
            for ours, theirs in (("temperature", "temperature"), ("seed", "seed"), ("top_p", "top_p"),
                                 ("num_predict", "max_tokens"), ("stop", "stop")):  # fmt: skip
                if ours in opts:
                    body[theirs] = opts[ours]
        if isinstance(format, dict):
            name = str(format.get("title") or "answer")[:64]
            # strict=False: pydantic schemas allow optional fields, which strict mode forbids.
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": format, "strict": False},
            }
        elif format == "json":
            body["response_format"] = {"type": "json_object"}
        path = "/v1/chat/completions"
        with closing(self._post_lines(path, body, deadline)) as lines:
            yield from self._sse_chunks(lines, self._url(path))

    def stream_generate(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        format: JsonFormat | None = None,
        options: GenerationOptions | None = None,
        keep_alive: str | float | None = None,
        deadline: float | None = None,
    ) -> Iterator[Chunk]:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        return self.stream_chat(messages, model=model, format=format, options=options, deadline=deadline)

    def list_models(self) -> list[str]:
        data = self._get_json("/v1/models")
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise EngineError(f"{self._url('/v1/models')} did not list models")
        return [str(m.get("id")) for m in models if isinstance(m, dict)]

    def version(self) -> str | None:
        return None  # the OpenAI API has no version endpoint

    def _sse_chunks(self, lines: Iterator[str], url: str) -> Iterator[Chunk]:
        data: list[str] = []
        finish: str | None = None
        stats: dict[str, Any] = {}
        for line in _with_end(lines):
            if line.startswith(":"):
                continue  # an SSE comment (keep-alive)
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
                continue
            if line.strip() or not data:
                continue  # other SSE fields (event:, id:) carry nothing we use
            payload, data = "\n".join(data), []
            if payload.strip() == "[DONE]":
                yield Chunk("", True, finish, stats)
                return
            try:
                obj = json.loads(payload)
            except json.JSONDecodeError as exc:
                raise MalformedStream(f"an event from {url} is not JSON: {payload[:80]!r}") from exc
            if not isinstance(obj, dict):
                raise MalformedStream(f"an event from {url} is not a JSON object: {payload[:80]!r}")
            if "error" in obj:
                err = obj["error"]
                reason = str(err.get("message", err) if isinstance(err, dict) else err)
                if _OVERFLOW_RE.search(reason):
                    raise _overflow(url, reason)
                raise EngineError(f"{url} failed while answering: {reason}")
            if isinstance(obj.get("usage"), dict):
                stats = _openai_stats(obj["usage"])
            for choice in obj.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                text = (choice.get("delta") or {}).get("content")
                finish = choice.get("finish_reason") or finish
                if text:
                    yield Chunk(str(text))
        raise MalformedStream(f"the answer from {url} ended without `data: [DONE]`")


def _with_end(lines: Iterator[str]) -> Iterator[str]:
    """The lines, then one blank line so a last event without its separator is still dispatched."""
    yield from lines
    yield ""


def _ollama_stats(obj: dict[str, Any]) -> dict[str, Any]:
    stats = {
        "prompt_tokens": obj.get("prompt_eval_count"),
        "completion_tokens": obj.get("eval_count"),
        "total_s": _ns_to_s(obj.get("total_duration")),
        "load_s": _ns_to_s(obj.get("load_duration")),
        "prompt_eval_s": _ns_to_s(obj.get("prompt_eval_duration")),
        "eval_s": _ns_to_s(obj.get("eval_duration")),
    }
    return {k: v for k, v in stats.items() if v is not None}


def _openai_stats(usage: dict[str, Any]) -> dict[str, Any]:
    stats = {"prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens")}
    return {k: v for k, v in stats.items() if v is not None}


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except (ValueError, httpx.ResponseNotRead):
        try:
            text = response.text
        except httpx.ResponseNotRead:
            text = ""
        return text[:300].strip() or response.reason_phrase
    if isinstance(data, dict):
        err = data.get("error", data.get("message"))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:300]
    return json.dumps(data)[:300]


def _overflow(url: str, message: str) -> ContextOverflow:
    return ContextOverflow(
        f"the prompt does not fit the model's context window ({url}: {message}); shorten the input, "
        "or give the model a larger context (llama.cpp `-c`, Ollama `num_ctx`, vLLM `--max-model-len`)"
    )


def _raise_if_past(deadline: float | None, doing: str, cause: BaseException | None = None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise BudgetExceeded(f"the time budget ran out while {doing}") from cause


def _doing(started: bool) -> str:
    return "was still answering" if started else "had not started answering"


def _hang_up_at(response: httpx.Response, deadline: float) -> threading.Timer | None:
    """Shut the response's socket down at `deadline`, which wakes a read blocked on a stalled
    stream (closing a socket from another thread does not). None when the transport has no socket
    (a custom or HTTP/2 transport): then the deadline is still checked between chunks."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if not isinstance(sock, socket.socket):
        return None

    def hang_up() -> None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(deadline - time.monotonic(), 0.0), hang_up)
    timer.daemon = True
    timer.start()
    return timer


def _same_model(wanted: str, listed: str) -> bool:
    """Ollama names default their tag to `latest`: 'llama3.2' is 'llama3.2:latest'."""
    if wanted == listed:
        return True
    return (wanted if ":" in wanted else wanted + ":latest") == (
        listed if ":" in listed else listed + ":latest"
    )


def build_llm_client(settings: OllamaSettings, *, http: httpx.Client | None = None) -> LLMClient:
    """The client `HARMONIA_OLLAMA__*` describes (api = ollama | openai)."""
    token = settings.token.get_secret_value() if settings.token is not None else None
    cls = OpenAIClient if settings.api == "openai" else OllamaClient
    return cls(settings.url, settings.model, http=http, token=token, timeout_s=settings.timeout_s)
