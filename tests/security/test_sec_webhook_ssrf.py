"""Webhook SSRF at the HTTP level: URLs that reach loopback, private, link-local or metadata
addresses in any spelling, and DNS names that resolve to loopback, are refused with a 422 on
`webhook_url` unless HARMONIA_WEBHOOK_ALLOW_PRIVATE allows them; and DNS rebinding between the
check and the connection.

Already covered elsewhere (not repeated): the unit check of literal private addresses and signed
delivery with the HMAC header (tests/test_webhooks.py)."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from harmonia.config import Settings
from helpers import ServerThread, make_gateway, wait_for

REFUSED = [
    "http://localhost:8080/hook",
    "http://LOCALHOST/hook",
    "http://localhost./hook",
    f"http://{socket.gethostname()}/hook",  # the machine's own name (here: 127.0.0.1 in /etc/hosts)
    "http://127.1/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/hook",
    "http://017700000001/hook",  # octal
    "http://0/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
    "http://[::1]:8000/hook",
    "http://[::]/hook",
    "http://[fe80::1]/hook",
    "http://100.64.0.1/hook",  # carrier-grade NAT
    "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://user:pass@127.0.0.1/hook",
    "http://example.com@127.0.0.1/hook",
    "http://127.0.0.1#@example.com/hook",
    "https://10.0.0.1:443/hook",
    "http://no-such-host.invalid/hook",  # does not resolve: refused, not accepted blindly
]


def test_private_targets_in_every_spelling_are_refused(http: httpx.Client) -> None:
    accepted = []
    for url in REFUSED:
        r = http.post("/v1/jobs", json={"model": "noop", "payload": {}, "webhook_url": url})
        if r.status_code != 422 or r.json()["error"]["field"] != "webhook_url":
            accepted.append((url, r.status_code))
    assert not accepted
    assert http.get("/v1/jobs").json()["jobs"] == []  # nothing was queued for any of them


def test_allow_private_setting_lets_loopback_through(settings: Settings) -> None:
    settings.webhook_allow_private = True
    with ServerThread(make_gateway(settings)) as gw:
        r = httpx.post(
            gw.url + "/v1/jobs", json={"model": "noop", "payload": {}, "webhook_url": "http://localhost:9/x"}
        )
    assert r.status_code == 202


class Receiver:
    def __init__(self) -> None:
        self.calls: list[bytes] = []

    async def hook(self, request: Request) -> Response:
        self.calls.append(await request.body())
        return Response(status_code=204)


@pytest.mark.usefixtures("worker")
def test_dns_rebinding_between_check_and_connect_is_refused(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that resolves to a public address when checked and to loopback when connected to.
    The resolver (the system's DNS, not Harmonia code) is the seam replaced here."""
    receiver = Receiver()
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        # the submission check and the delivery check see a public address; the connection, loopback
        addr = "93.184.216.34" if len(lookups) <= 2 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port or 80))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with ServerThread(Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])) as hook:
        job = http.post(
            "/v1/jobs",
            json={"model": "noop", "payload": {}, "webhook_url": f"http://rebind.test:{hook.port}/hook"},
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded", timeout=20)
        wait_for(lambda: len(lookups) >= 2, timeout=10)
        time.sleep(2.0)  # delivery runs off the worker thread
    print(
        f"\nlookups of rebind.test: {len(lookups)}; receiver on 127.0.0.1 got {len(receiver.calls)} call(s)"
    )
    assert receiver.calls == []
