"""The browser tests' page driver (`Console`) and constants, imported as `console_page`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "console-test-key"


class Console:
    """One browser tab on the console, failing the test on any uncaught page error."""

    def __init__(self, browser: Any, base_url: str, width: int = 1280, height: int = 900) -> None:
        self.base_url = base_url
        self.context = browser.new_context(
            viewport={"width": width, "height": height}, base_url=base_url, accept_downloads=True
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.closed = False
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.set_default_timeout(15_000)

    def open(self, path: str = "/") -> Any:
        self.page.goto(path)
        # the model list is the first thing app.js loads; without a key it may be a 401 instead
        self.page.wait_for_selector("#models li, #api-key-error:not(:empty)")
        return self.page

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def wait_js(self, expression: str, timeout: float = 30.0, arg: Any = None) -> Any:
        """Poll a JS expression until truthy. (page.wait_for_function evaluates its predicate with
        eval(), which the console's Content-Security-Policy rightly forbids.)"""
        deadline = time.monotonic() + timeout
        while True:
            value = self.page.evaluate(expression, arg)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout} s: {expression}")
            time.sleep(0.05)

    def text(self, selector: str) -> str:
        return str(self.page.text_content(selector) or "")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.context.close()
