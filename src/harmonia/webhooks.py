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
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx
import stamina

from harmonia.errors import HarmoniaError, InvalidInput
from harmonia.jobs.models import job_view

if TYPE_CHECKING:
    from harmonia.config import Settings
    from harmonia.jobs.store import JobStore

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


def check_webhook_url(
    url: str, *, allow_private: bool
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses `url`'s host resolves to; InvalidInput unless it is http(s) and (unless private
    targets are allowed) every address is public."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidInput("webhook_url must be an http:// or https:// URL with a host", "webhook_url")
    addresses = _addresses(parsed.hostname)
    if not allow_private:
        for addr in addresses:
            if not addr.is_global or addr.is_multicast:
                raise InvalidInput(
                    f"webhook_url resolves to a non-public address ({addr}); "
                    "set HARMONIA_WEBHOOK_ALLOW_PRIVATE=true to allow it",
                    "webhook_url",
                )
    return addresses


def _pinned(
    url: str, addr: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> tuple[str, dict[str, str], dict]:
    """`url` with its host replaced by the checked address (so a second DNS answer cannot redirect
    the connection: DNS rebinding), plus the Host header and TLS server name of the original."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    literal = f"[{addr}]" if addr.version == 6 else str(addr)
    userinfo, _, hostport = parsed.netloc.rpartition("@")
    netloc = (f"{userinfo}@" if userinfo else "") + literal + (f":{parsed.port}" if parsed.port else "")
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return parsed._replace(netloc=netloc).geturl(), {"Host": hostport}, extensions


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
    addresses = check_webhook_url(url, allow_private=allow_private)
    target, host_header, extensions = _pinned(url, addresses[0])
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Harmonia-Timestamp": timestamp, **host_header}
    if secret:
        headers["X-Harmonia-Signature"] = sign(secret, timestamp, body)
    with httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=False) as client:
        for attempt in stamina.retry_context(
            on=(httpx.TransportError, WebhookFailed), attempts=attempts, wait_initial=0.2, wait_max=2.0
        ):
            with attempt:
                response = client.post(target, content=body, headers=headers, extensions=extensions)
                if response.status_code >= 500:
                    raise WebhookFailed(f"{response.status_code} from webhook")
                return response.status_code
    raise RuntimeError("unreachable")  # stamina re-raises the last error


class WebhookNotifier:
    """Sends finished jobs to their webhooks from a small thread pool, so neither a worker thread
    nor a gateway request waits on a receiver. Used by the worker (a job finished or was canceled
    at claim) and the gateway (a queued job canceled). Each outcome is recorded as a job event."""

    def __init__(self, settings: Settings, store: JobStore, *, transport: httpx.BaseTransport | None = None):
        self.settings, self.store, self.transport = settings, store, transport
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook")

    def notify(self, job_id: str) -> None:
        """Deliver the finished job to its webhook, off the calling thread (best effort)."""
        job = self.store.get(job_id)
        if job is None or not job.webhook_url:
            return
        self._pool.submit(self._deliver, job.id, job.webhook_url, job_view(job))

    def _deliver(self, job_id: str, url: str, body: dict[str, Any]) -> None:
        secret = self.settings.webhook_secret
        try:
            status = deliver(
                url,
                body,
                secret=secret.get_secret_value().encode() if secret else None,
                allow_private=self.settings.webhook_allow_private,
                timeout_s=self.settings.webhook_timeout_s,
                transport=self.transport,
            )
            message = f"webhook delivered ({status})"
        except (httpx.HTTPError, WebhookFailed, InvalidInput) as exc:
            log.warning("job %s: webhook to %s failed: %s", job_id, url, exc)
            message = f"webhook failed: {exc}"
        try:
            self.store.add_event(job_id, "log", {"message": message})
        except HarmoniaError as exc:  # redis went away meanwhile: the delivery itself happened
            log.warning("job %s: could not record the webhook outcome: %s", job_id, exc)

    def close(self) -> None:
        """Wait for deliveries already handed over (shutdown)."""
        self._pool.shutdown(wait=True)
