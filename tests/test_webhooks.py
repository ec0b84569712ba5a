"""Webhooks: SSRF refusal at submission, signed delivery to a real receiver, retries on 5xx."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from harmonia.config import Settings
from harmonia.errors import InvalidInput
from harmonia.webhooks import check_webhook_url
from helpers import ServerThread, make_gateway, wait_for


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://0.0.0.0/x",
        "file:///etc/passwd",
        "http:///nohost",
    ],
)
def test_private_and_odd_webhook_targets_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_webhook_url(url, allow_private=False)
    assert info.value.field == "webhook_url"


def test_public_literal_address_is_accepted() -> None:
    check_webhook_url("https://93.184.216.34/hook", allow_private=False)


def test_gateway_refuses_loopback_webhook_by_default(http: httpx.Client) -> None:
    r = http.post("/v1/jobs", json={"model": "noop", "payload": {}, "webhook_url": "http://127.0.0.1:1/x"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "webhook_url"


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first

    async def hook(self, request: Request) -> Response:
        self.calls.append((dict(request.headers), await request.body()))
        if len(self.calls) <= self.fail_first:
            return Response(status_code=503)
        return Response(status_code=204)


@pytest.mark.usefixtures("worker")
def test_signed_delivery_with_retry_on_5xx(settings: Settings) -> None:
    settings.webhook_allow_private = True
    settings.webhook_secret = SecretStr("whsec-test")
    receiver = Receiver(fail_first=1)
    with (
        ServerThread(Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])) as hook_server,
        ServerThread(make_gateway(settings)) as gw,
        httpx.Client(base_url=gw.url) as http,
    ):
        job = http.post(
            "/v1/jobs",
            json={"model": "noop", "payload": {"note": "hooked"}, "webhook_url": hook_server.url + "/hook"},
        ).json()
        wait_for(lambda: len(receiver.calls) == 2, timeout=20)
    headers, body = receiver.calls[-1]
    expected = hmac.new(b"whsec-test", headers["x-harmonia-timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["x-harmonia-signature"] == "sha256=" + expected.hexdigest()
    sent: dict[str, Any] = json.loads(body)
    assert sent["id"] == job["id"] and sent["status"] == "succeeded" and sent["result"]["note"] == "hooked"
    assert "owner" not in sent


def test_a_job_canceled_while_queued_is_delivered_too(settings: Settings) -> None:
    settings.webhook_allow_private = True
    receiver = Receiver(fail_first=0)
    with (
        ServerThread(Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])) as hook_server,
        ServerThread(make_gateway(settings)) as gw,
        httpx.Client(base_url=gw.url) as http,
    ):  # no worker: the job stays queued until it is canceled
        job = http.post(
            "/v1/jobs", json={"model": "noop", "payload": {}, "webhook_url": hook_server.url + "/hook"}
        ).json()
        assert http.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"
        wait_for(lambda: len(receiver.calls) == 1, timeout=20)
    sent = json.loads(receiver.calls[0][1])
    assert sent["id"] == job["id"] and sent["status"] == "canceled"
