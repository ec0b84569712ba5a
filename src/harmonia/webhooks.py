"""Webhooks: a POST of the finished job to the URL given at submission.

URLs must resolve to public addresses (no loopback, private, link-local or metadata ranges) unless
settings allow private targets; the check runs at submission and again just before delivery (DNS
may change in between). Bodies are signed when a secret is configured:
`X-Harmonia-Signature: sha256=HMAC(secret, "<timestamp>.<body>")` with `X-Harmonia-Timestamp`.
Delivery is best effort: a few tries on connection errors and 5xx answers, recorded as job events.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from typing import Any
from urllib.parse import urlparse

import httpx
import stamina

from harmonia.errors import InvalidInput

log = logging.getLogger(__name__)


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise InvalidInput(f"webhook host {host!r} does not resolve", "webhook_url") from exc
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """InvalidInput unless `url` is http(s) to a host that resolves only to public addresses."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidInput("webhook_url must be an http:// or https:// URL with a host", "webhook_url")
    if allow_private:
        return
    for addr in _addresses(parsed.hostname):
        if not addr.is_global or addr.is_multicast:
            raise InvalidInput(
                f"webhook_url resolves to a non-public address ({addr}); "
                "set HARMONIA_WEBHOOK_ALLOW_PRIVATE=true to allow it",
                "webhook_url",
            )


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookFailed(Exception):
    """The receiver kept answering 5xx."""


def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    secret: bytes | None,
    allow_private: bool,
    timeout_s: float = 5.0,
    attempts: int = 3,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """POST `payload` to `url`; returns the final HTTP status. Raises on a refused URL or when every
    try failed (connection errors, 5xx)."""
    check_webhook_url(url, allow_private=allow_private)
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Harmonia-Timestamp": timestamp}
    if secret:
        headers["X-Harmonia-Signature"] = sign(secret, timestamp, body)
    with httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=False) as client:
        for attempt in stamina.retry_context(
            on=(httpx.TransportError, WebhookFailed), attempts=attempts, wait_initial=0.2, wait_max=2.0
        ):
            with attempt:
                response = client.post(url, content=body, headers=headers)
                if response.status_code >= 500:
                    raise WebhookFailed(f"{response.status_code} from webhook")
                return response.status_code
    raise RuntimeError("unreachable")  # stamina re-raises the last error
