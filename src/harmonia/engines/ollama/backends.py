"""The two wire protocols of `LLMClient`: `OllamaClient` speaks Ollama's native API (`/api/chat`,
`/api/generate`, `/api/tags`, `/api/version`, NDJSON streaming, `format` with a JSON schema,
`options`, `keep_alive`); `OpenAIClient` speaks `/v1/chat/completions` (SSE streaming,
`response_format` json_schema) for vLLM, llama.cpp's server, hosted APIs, or Ollama's own `/v1`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import httpx

from harmonia.config import OllamaSettings
from harmonia.engines.ollama.client import (
    OVERFLOW_RE,
    Chunk,
    GenerationOptions,
    JsonFormat,
    LLMClient,
    MalformedStream,
    Message,
    ModelMissing,
    overflow_error,
)
from harmonia.errors import UpstreamError


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
            raise UpstreamError(f"{self._url('/api/tags')} did not list models")
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
                if OVERFLOW_RE.search(str(obj["error"])):
                    raise overflow_error(url, str(obj["error"]))
                raise UpstreamError(f"Ollama at {url} failed while answering: {obj['error']}")
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
            raise UpstreamError(f"{self._url('/v1/models')} did not list models")
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
                if OVERFLOW_RE.search(reason):
                    raise overflow_error(url, reason)
                raise UpstreamError(f"{url} failed while answering: {reason}")
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


def _ns_to_s(value: Any) -> float | None:
    return round(value / 1e9, 6) if isinstance(value, int | float) else None


def build_llm_client(settings: OllamaSettings, *, http: httpx.Client | None = None) -> LLMClient:
    """The client `HARMONIA_OLLAMA__*` describes (api = ollama | openai)."""
    token = settings.token.get_secret_value() if settings.token is not None else None
    cls = OpenAIClient if settings.api == "openai" else OllamaClient
    return cls(settings.url, settings.model, http=http, token=token, timeout_s=settings.timeout_s)
