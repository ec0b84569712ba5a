"""Browser fixtures: Debian's Chromium (never a downloaded browser) driven by Playwright against a
real gateway and worker (the `gateway` / `worker` fixtures of tests/conftest.py).

Skips with the reason when Playwright or /usr/bin/chromium is missing. Screenshots go to
$CONSOLE_SCREENSHOT_DIR when set (CI keeps them as artifacts), else to pytest's temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from console_page import API_KEY, CHROMIUM, CHROMIUM_ARGS, Console

from harmonia.config import Settings
from helpers import ServerThread, make_gateway


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's browser with `apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is missing")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("CONSOLE_SCREENSHOT_DIR")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def open_console(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Console]]:
    made: list[Console] = []

    def make(base_url: str, **size: int) -> Console:
        console = Console(browser, base_url, **size)
        made.append(console)
        # registered during the test, so it runs before the gateway and worker fixtures stop:
        # closing the tab first ends its event streams instead of making the server wait on them
        request.node.addfinalizer(console.close)
        return console

    yield make
    errors = [e for c in made for e in c.errors]
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def console(open_console: Callable[..., Console], gateway: ServerThread, worker: Any) -> Console:
    """The console on an open gateway with a worker running every queue."""
    return open_console(gateway.url)


@pytest.fixture
def limited_gateway(settings: Settings) -> Iterator[ServerThread]:
    """An open gateway allowing two submissions a minute."""
    limited = settings.model_copy(update={"rate_limit": "2/minute"})
    with ServerThread(make_gateway(limited)) as server:
        yield server


@pytest.fixture
def llm_gateway(settings: Settings) -> Iterator[ServerThread]:
    """An open gateway whose `ollama` model points at the fake Ollama daemon (so it is available)."""
    from fake_ollama import FakeOllama

    with FakeOllama() as fake:
        ollama = settings.ollama.model_copy(update={"url": fake.url})
        with ServerThread(make_gateway(settings.model_copy(update={"ollama": ollama}))) as server:
            yield server


@pytest.fixture
def keyed_gateway(settings: Settings) -> Iterator[ServerThread]:
    keyed = settings.model_copy(update={"api_keys": Settings(api_keys=[API_KEY]).api_keys})
    with ServerThread(make_gateway(keyed)) as server:
        yield server
