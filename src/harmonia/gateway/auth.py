"""API keys. Keys are held as SHA-256 digests (settings may give the digest itself as
`sha256:<hex>`), compared in constant time, and never logged. A job's owner is derived from the
digest of the key that made it, so another key never sees it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from fastapi import Request

from harmonia.asgi import ApiError
from harmonia.config import Settings

log = logging.getLogger(__name__)

PUBLIC_OWNER = "public"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._digests: list[bytes] = []
        for secret in settings.api_keys:
            value = secret.get_secret_value()
            if value.startswith("sha256:"):
                self._digests.append(bytes.fromhex(value.removeprefix("sha256:")))
            else:
                self._digests.append(_digest(value))

    @property
    def open(self) -> bool:
        return not self._digests

    def owner_for(self, authorization: str | None) -> str:
        """The owner id for an `Authorization` header value; ApiError 401 when it is not a known key."""
        if self.open:
            return PUBLIC_OWNER
        if not authorization or not authorization.lower().startswith("bearer "):
            raise ApiError(
                401,
                "unauthorized",
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        presented = _digest(authorization[7:].strip())
        match = False
        for known in self._digests:  # no early exit: the time taken does not depend on which key matched
            match |= hmac.compare_digest(presented, known)
        if not match:
            raise ApiError(401, "unauthorized", "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        return "k" + presented.hex()[:24]

    def __call__(self, request: Request) -> str:
        return self.owner_for(request.headers.get("authorization"))
