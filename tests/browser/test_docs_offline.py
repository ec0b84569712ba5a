"""/docs and /redoc render with no internet: every file they load comes from the server itself.

The browser refuses any request to another origin (as a machine without internet would fail it),
and the pages must still draw the API. Before, /docs loaded Swagger UI from a CDN and stayed blank.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from console_page import Console

from helpers import ServerThread


def _offline_tab(open_console: Any, base_url: str) -> tuple[Console, list[str], list[str]]:
    tab = open_console(base_url)
    local, refused = [], []
    origin = urlsplit(base_url).netloc

    def route(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc == origin:
            local.append(url)
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    tab.context.route("**/*", route)
    return tab, local, refused


def test_swagger_ui_renders_offline(open_console: Any, gateway: ServerThread) -> None:
    tab, local, refused = _offline_tab(open_console, gateway.url)
    tab.page.goto("/docs")
    tab.page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    paths = tab.page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
    assert "/v1/jobs" in [p.replace("\u200b", "") for p in paths], paths
    assert "Harmonia" in tab.page.text_content(".swagger-ui .info .title")
    assert refused == [], f"/docs asked other origins for {refused}"
    assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in local), local


def test_redoc_renders_offline(open_console: Any, gateway: ServerThread) -> None:
    tab, _, refused = _offline_tab(open_console, gateway.url)
    tab.page.goto("/redoc")
    tab.page.wait_for_selector(".api-content h2", timeout=20_000)
    headings = tab.page.eval_on_selector_all(".api-content h2", "els => els.map(e => e.textContent)")
    assert any("Submit a job" in h for h in headings), headings
    assert "/v1/jobs" in tab.page.inner_text("body")
    # ReDoc's footer asks its vendor for a logo image; failing that costs nothing else
    assert [u for u in refused if not u.endswith("/logo-mini.svg")] == [], f"/redoc asked for {refused}"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_doc_pages_name_no_other_origin(http: httpx.Client, page: str) -> None:
    html = http.get(page).text
    assert "cdn." not in html and "fonts.googleapis" not in html and "tiangolo" not in html, html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
        r = http.get(f"/docs-assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 1000, asset
