"""The client contract for a language-model server, its errors and the helpers both wire
protocols share. The protocols themselves are in `backends` (Ollama's native API and the
OpenAI-compatible one); `build_llm_client` picks one from the settings.

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
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import stamina
from pydantic import BaseModel, ConfigDict, Field

from harmonia.errors import (
    DependencyDown,
    EngineError,
    EngineUnavailable,
    HarmoniaError,
    RetryableError,
    TimedOut,
    UpstreamError,
)

Message = dict[str, str]
JsonFormat = dict[str, Any] | str  # a JSON schema, or "json" for any JSON object
CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
# How servers say a prompt does not fit: llama.cpp "exceeds the available context size", vLLM and
# OpenAI "maximum context length" / "context_length_exceeded", Ollama "exceeds the context length".
OVERFLOW_RE = re.compile(r"context[ _](size|length|window)|exceed_context_size", re.I)


class ModelMissing(EngineUnavailable):
    """The daemon answers but does not serve the model (Ollama: not pulled; llama.cpp: another name)."""

    code = "model_missing"

    def __init__(self, model: str, url: str, hint: str, served: list[str] | None = None) -> None:
        listed = ", ".join(repr(n) for n in served[:8]) if served else ""
        more = f" (and {len(served) - 8} more)" if served and len(served) > 8 else ""
        serves = f"; it serves {listed}{more}" if served else "; it lists no models" if served == [] else ""
        super().__init__(f"model {model!r} is not available at {url}{serves}; {hint}")
        self.model, self.url, self.hint, self.served = model, url, hint, served


class ContextOverflow(UpstreamError):
    """The prompt (with the room asked for the answer) does not fit the model's context window."""

    code = "context_overflow"


class BudgetExceeded(EngineError, TimedOut):
    """The caller's wall-clock budget ran out before the answer was complete (not retried: a retry
    would take as long)."""

    code = "llm_budget_exceeded"


class LLMTimeout(RetryableError, TimedOut):
    """The daemon accepted the request but did not answer in time (busy, or loading the model)."""

    code = "llm_timeout"


class MalformedStream(UpstreamError):
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
        if not any(same_model(model, n) for n in names):
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
                on=CONNECT_ERRORS,
                attempts=self.retry_attempts,
                timeout=retrying_for,
                wait_initial=self.retry_wait_s,
                wait_max=max(self.retry_wait_s, 2.0),
                wait_jitter=self.retry_wait_s,
            ):
                with attempt:
                    response = self._http.send(request, stream=stream)
        except CONNECT_ERRORS as exc:
            reason = str(exc) or type(exc).__name__
            raise DependencyDown(
                f"{self.label} at {self.base_url} is not reachable ({method} {url}: {reason})"
            ) from exc
        except httpx.TimeoutException as exc:
            raise_if_past(deadline, f"{self.label} at {url} {doing(False)}", exc)
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
        message = error_message(response)
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
        if OVERFLOW_RE.search(message):
            return overflow_error(url, message)
        return UpstreamError(f"{self.label} at {url} answered {status}: {message}")

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
        watchdog = hang_up_at(response, deadline) if deadline is not None else None
        started = False
        try:
            for line in response.iter_lines():
                started = started or bool(line.strip())
                yield line
        except httpx.TimeoutException as exc:
            raise_if_past(deadline, f"{self.label} at {url} {doing(started)}", exc)
            raise LLMTimeout(f"{self.label} at {url} stopped sending for {self.timeout_s:g} s") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise_if_past(deadline, f"{self.label} at {url} {doing(started)}", exc)
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
            raise UpstreamError(f"{self._url(path)} answered with something that is not JSON") from exc

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
                raise_if_past(deadline, f"{self.label} at {self.base_url} {doing(True)}")
        finally:
            if isinstance(chunks, Generator):
                chunks.close()
        raise MalformedStream(f"the answer from {self.base_url} ended without its final message")


def error_message(response: httpx.Response) -> str:
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


def overflow_error(url: str, message: str) -> ContextOverflow:
    return ContextOverflow(
        f"the prompt does not fit the model's context window ({url}: {message}); shorten the input, "
        "or give the model a larger context (llama.cpp `-c`, Ollama `num_ctx`, vLLM `--max-model-len`)"
    )


def raise_if_past(deadline: float | None, doing: str, cause: BaseException | None = None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise BudgetExceeded(f"the time budget ran out while {doing}") from cause


def doing(started: bool) -> str:
    return "was still answering" if started else "had not started answering"


def hang_up_at(response: httpx.Response, deadline: float) -> threading.Timer | None:
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


def same_model(wanted: str, listed: str) -> bool:
    """Ollama names default their tag to `latest`: 'llama3.2' is 'llama3.2:latest'."""
    if wanted == listed:
        return True
    return (wanted if ":" in wanted else wanted + ":latest") == (
        listed if ":" in listed else listed + ":latest"
    )
