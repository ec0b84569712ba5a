"""Python SDK for the gateway API (httpx; sync `HarmoniaClient` and async `AsyncHarmoniaClient`).

with HarmoniaClient("http://127.0.0.1:8000", api_key="...") as hc:
    job = hc.submit("jen1", {"instructions": "render violin"})
    job = hc.wait(job["id"], on_event=print)
    hc.download(job["id"], "audio.wav", "violin.wav")
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse, connect_sse

FINISHED = frozenset({"succeeded", "failed", "canceled"})
EventCallback = Callable[[str, dict[str, Any]], None]


class HarmoniaAPIError(Exception):
    """An error answer from the gateway: HTTP status plus the `{error: {code, message, field}}` body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        where = f" (field {field})" if field else ""
        super().__init__(f"{status} {code}: {message}{where}")
        self.status, self.code, self.message, self.field = status, code, message, field


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        err = response.json().get("error", {})
    except (json.JSONDecodeError, AttributeError):
        err = {}
    raise HarmoniaAPIError(
        response.status_code,
        err.get("code", "http_error"),
        err.get("message", response.text[:200]),
        err.get("field"),
    )


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _job_body(model: str, payload: dict[str, Any], mode: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "mode": mode, "payload": payload}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


class HarmoniaClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> HarmoniaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def submit(
        self,
        model: str,
        payload: dict[str, Any],
        *,
        mode: str = "async",
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        webhook_url: str | None = None,
        priority: int | None = None,
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = _job_body(
            model, payload, mode, timeout_s=timeout_s, webhook_url=webhook_url, priority=priority
        )
        response = self.http.post("/v1/jobs", json=body, headers=headers)
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    def get(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    def list(self, **filters: Any) -> dict[str, Any]:
        response = self.http.get("/v1/jobs", params={k: v for k, v in filters.items() if v is not None})
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = self.http.post(f"/v1/jobs/{job_id}/cancel")
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    def models(self) -> list[dict[str, Any]]:
        response = self.http.get("/v1/models")
        _raise_for(response)
        models: list[dict[str, Any]] = response.json()["models"]
        return models

    def events(self, job_id: str, on_event: EventCallback, last_event_id: str | None = None) -> str | None:
        """Follow the job's SSE stream until it ends; returns the last event id seen."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with connect_sse(
            self.http, "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None
        ) as source:
            _raise_for_stream(source.response)
            for sse in source.iter_sse():
                last_event_id = sse.id or last_event_id
                on_event(sse.event, json.loads(sse.data) if sse.data else {})
        return last_event_id

    def wait(
        self, job_id: str, *, timeout: float | None = None, on_event: EventCallback | None = None
    ) -> dict[str, Any]:
        """Block until the job finishes: follows SSE, reconnects with Last-Event-ID, else polls."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: str | None = None
        while True:
            job = self.get(job_id)
            if job["status"] in FINISHED:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            try:
                last = self.events(job_id, on_event or (lambda *_: None), last)
            except (httpx.TransportError, httpx.HTTPStatusError):
                time.sleep(0.5)

    def download(self, job_id: str, name: str, dest: str | Path) -> Path:
        dest = Path(dest)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response:
            if not response.is_success:
                response.read()
                _raise_for(response)
            tmp = dest.with_name(f".{dest.name}.part")
            with open(tmp, "wb") as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
            tmp.replace(dest)
        return dest


def _raise_for_stream(response: httpx.Response) -> None:
    if not response.is_success:
        response.read()
        _raise_for(response)


class AsyncHarmoniaClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncHarmoniaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def submit(
        self,
        model: str,
        payload: dict[str, Any],
        *,
        mode: str = "async",
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = await self.http.post(
            "/v1/jobs", json=_job_body(model, payload, mode, timeout_s=timeout_s), headers=headers
        )
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    async def get(self, job_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/jobs/{job_id}")
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    async def cancel(self, job_id: str) -> dict[str, Any]:
        response = await self.http.post(f"/v1/jobs/{job_id}/cancel")
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    async def wait(self, job_id: str, *, on_event: EventCallback | None = None) -> dict[str, Any]:
        last: str | None = None
        while True:
            job = await self.get(job_id)
            if job["status"] in FINISHED:
                return job
            headers = {"Last-Event-ID": last} if last else {}
            try:
                async with aconnect_sse(
                    self.http, "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None
                ) as source:
                    if not source.response.is_success:
                        await source.response.aread()
                        _raise_for(source.response)
                    async for sse in source.aiter_sse():
                        last = sse.id or last
                        if on_event:
                            on_event(sse.event, json.loads(sse.data) if sse.data else {})
            except httpx.TransportError:
                import anyio

                await anyio.sleep(0.5)

    async def download(self, job_id: str, name: str) -> bytes:
        response = await self.http.get(f"/v1/jobs/{job_id}/artifacts/{name}")
        _raise_for(response)
        return response.content
