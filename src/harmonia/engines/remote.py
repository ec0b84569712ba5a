"""An engine served by a model service over HTTP (`harmonia serve <engine>`): jobs for that model
are forwarded to the service's `POST /generate` instead of loading the model in this process.

Only HTTP *client* code lives here (like the LLM client); the service side is `harmonia.services.model`.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel

from harmonia.engines.base import ArtifactData, EngineResult, RunContext
from harmonia.errors import EngineError, EngineUnavailable, InvalidInput, JobStopped, RetryableError

POLL_S = 0.2


class RemoteEngine:
    """Forwards runs to a model service. Connection failures and 5xx/429 answers are retryable
    (the job is retried with backoff); 4xx answers fail the job with the service's message."""

    name: ClassVar[str] = "remote"

    def __init__(
        self,
        model: str,
        url: str,
        input_model: type[BaseModel],
        *,
        timeout_s: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.url = url.rstrip("/")
        self.input_model = input_model  # type: ignore[misc]
        self.timeout_s = timeout_s
        self._transport = transport

    def info(self) -> dict[str, Any]:
        return {"model": self.model, "service": self.url}

    def run(self, payload: BaseModel, ctx: RunContext) -> EngineResult:
        body = payload.model_dump(mode="json", exclude_unset=True)
        body.pop("stream", None)
        # The request runs on a private event loop in a helper thread, so this thread keeps
        # checking for cancel/time limit, and a stop cancels the request task, which closes its
        # connection at once (the service then cancels work for a client that went away). A sync
        # client closed from another thread would leave the request and its socket open.
        loop = asyncio.new_event_loop()
        task = loop.create_task(self._post(body))
        outcome: dict[str, Any] = {}

        def drive() -> None:
            try:
                outcome["response"] = loop.run_until_complete(task)
            except asyncio.CancelledError:
                outcome["canceled"] = True
            except httpx.HTTPError as exc:
                outcome["error"] = exc
            finally:
                loop.close()

        thread = threading.Thread(target=drive, name=f"remote-{self.model}", daemon=True)
        thread.start()
        ctx.progress(0.05, f"sent to {self.url}")
        try:
            while thread.is_alive():
                thread.join(POLL_S)
                ctx.check()
        except JobStopped:
            loop.call_soon_threadsafe(task.cancel)
            thread.join(5.0)
            raise
        if "error" in outcome:
            exc = outcome["error"]
            raise RetryableError(f"{self.model} service at {self.url} unreachable: {exc}") from exc
        return self._result(outcome["response"])

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        timeout = httpx.Timeout(self.timeout_s, connect=5.0)
        async with httpx.AsyncClient(timeout=timeout, transport=self._transport) as client:
            return await client.post(
                f"{self.url}/generate", json=body, headers={"Accept": "application/json"}
            )

    def _result(self, response: httpx.Response) -> EngineResult:
        try:
            data = response.json()
        except ValueError as exc:
            raise RetryableError(
                f"{self.model} service answered {response.status_code} without JSON"
            ) from exc
        if response.status_code >= 500 or response.status_code == 429:
            message = (data.get("error") or {}).get("message", response.text[:200])
            if response.status_code == 503 and "voicebank" in message:
                raise EngineUnavailable(f"{self.model} service: {message}")
            raise RetryableError(f"{self.model} service answered {response.status_code}: {message}")
        if response.status_code >= 400:
            err = data.get("error") or {}
            if response.status_code == 422:
                raise InvalidInput(err.get("message", "invalid input"), err.get("field"))
            raise EngineError(
                f"{self.model} service answered {response.status_code}: {err.get('message', '')}"
            )
        artifacts = [
            ArtifactData(a["name"], base64.b64decode(a["data_b64"]), a["content_type"])
            for a in data.get("artifacts", [])
        ]
        return EngineResult(artifacts=artifacts, output={**data.get("output", {}), "served_by": self.url})
