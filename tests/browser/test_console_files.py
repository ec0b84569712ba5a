"""The console's files as the gateway serves them (no browser needed)."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/sse.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "text/css; charset=utf-8"),
        ("/console/favicon.svg", "image/svg+xml"),
    ],
)
def test_files_are_served_with_their_type_and_a_strict_policy(
    http: httpx.Client, path: str, content_type: str
) -> None:
    response = http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    # revalidated with the ETag, never served stale after an upgrade
    assert response.headers["cache-control"] == "no-cache"
    again = http.get(path, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_page_loads_its_modules_from_the_console_path(http: httpx.Client) -> None:
    page = http.get("/").text
    assert '<script type="module" src="/console/app.js"></script>' in page
    for module in ("api.js", "form.js", "jobview.js", "joblist.js", "waveform.js", "sse.js"):
        assert http.get(f"/console/{module}").status_code == 200, module


@pytest.mark.parametrize(
    "name",
    ["nope.js", "..%2Fapp.py", "%2e%2e%2f%2e%2e%2fconfig.py", ".hidden.js", "index", "../routes/console.py"],
)
def test_only_console_files_are_served(http: httpx.Client, name: str) -> None:
    response = http.get(f"/console/{name}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
