"""The web console: a static single page at `/` and its files under `/console/...`.

The page is plain HTML, CSS and ES modules from `gateway/static/` (no build step); it talks to the
same public API as any client, with the API key the user types (kept in the tab's sessionStorage).
Only files that exist directly in that folder, with a known type, are served.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response

from harmonia.errors import NotFound

router = APIRouter(include_in_schema=False)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# The console needs nothing from other origins; blob: is for decoded audio and downloads made
# with the API key, which an <audio src> or a plain link could not send.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match", max_length=256)]


def _read(name: str) -> bytes:
    if "/" in name or "\\" in name or name.startswith("."):
        raise NotFound(f"no console file {name!r}")
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in CONTENT_TYPES:
        raise NotFound(f"no console file {name!r}")
    entry = resources.files("harmonia.gateway").joinpath("static", name)
    if not entry.is_file():
        raise NotFound(f"no console file {name!r}")
    return entry.read_bytes()


def _serve(name: str, if_none_match: str | None) -> Response:
    body = _read(name)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    # no-cache = revalidate every time: a gateway upgrade must never mix old and new modules
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CSP,
        "Referrer-Policy": "no-referrer",
    }
    if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    media_type = CONTENT_TYPES[name[name.rfind(".") :]]
    return Response(body, media_type=media_type, headers=headers)


@router.get("/")
def console_index(if_none_match: IfNoneMatch = None) -> Response:
    """The console page."""
    return _serve("index.html", if_none_match)


@router.get("/console/{name}")
def console_file(name: str, if_none_match: IfNoneMatch = None) -> Response:
    """A file of the console (its modules and stylesheet)."""
    return _serve(name, if_none_match)
