"""The console's API key handling, error messages, keyboard use and narrow-screen layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from console_page import API_KEY, Console

from helpers import ServerThread

pytestmark = pytest.mark.slow

NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !el.getAttribute('aria-labelledby')
                  && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.outerHTML)"""


def test_api_key_lives_in_session_storage_and_a_401_reads_well(
    open_console: Callable[..., Console], keyed_gateway: ServerThread, worker: Any
) -> None:
    console = open_console(keyed_gateway.url)
    page = console.open()
    assert console.text("#api-key-error") == (
        "Not authorized: missing API key: send 'Authorization: Bearer <key>'. Enter a valid API key above."
    )
    assert page.locator("#api-key").get_attribute("aria-invalid") == "true"
    assert page.locator("#models li").count() == 0

    page.fill("#api-key", "wrong")
    page.click("#key-save")
    page.wait_for_selector("#api-key-error:has-text('unknown API key')")

    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Enter")
    page.wait_for_selector('#models li[data-model="noop"]')
    assert console.text("#api-key-error") == ""
    stored = console.js(
        "() => [sessionStorage.getItem('harmonia.apiKey'), localStorage.length, document.cookie]"
    )
    assert stored == [API_KEY, 0, ""]

    # a job with the key: live progress over fetch()-read SSE, and a download carrying the key
    page.select_option("#model", "noop")
    page.fill("#field-sleep_s", "0.6")
    page.fill("#field-steps", "3")
    page.check("#field-artifact")
    page.click("#submit")
    console.wait_js("() => document.getElementById('job-status').textContent === 'succeeded'")
    assert "step 3/3" in console.text("#events")
    with page.expect_download() as download:
        page.click('#artifacts a[data-artifact="echo.json"]')
    assert b'"sleep_s":0.6' in Path(download.value.path()).read_bytes()

    # the key survives a reload of this tab, and another tab never sees it
    page.reload()
    page.wait_for_selector('#models li[data-model="noop"]')
    assert page.input_value("#api-key") == API_KEY
    other = console.context.browser.new_context(base_url=keyed_gateway.url)
    try:
        fresh = other.new_page()
        fresh.goto("/")
        fresh.wait_for_selector("#api-key-error:not(:empty)")
        assert fresh.evaluate("sessionStorage.length") == 0
    finally:
        other.close()

    page.click("#key-forget")
    page.wait_for_selector("#api-key-error:has-text('missing API key')")
    assert console.js("() => sessionStorage.getItem('harmonia.apiKey')") is None


def test_invalid_fields_show_the_gateways_message_next_to_them(console: Console) -> None:
    page = console.open()
    page.select_option("#model", "jen1")
    page.fill("#field-instructions", "render violin")
    page.fill("#field-duration_s", "9999")
    page.click("#submit")
    page.wait_for_selector("#field-duration_s-error:not(:empty)")
    assert console.text("#field-duration_s-error") == "Input should be less than or equal to 300"
    assert page.locator("#field-duration_s").get_attribute("aria-invalid") == "true"
    assert console.js("() => document.activeElement.id") == "field-duration_s"
    assert "see the message next to it" in console.text("#submit-status")

    # an engine-level check (the key name) lands next to its field inside "Advanced" too
    page.fill("#field-duration_s", "4")
    page.click("#advanced summary")
    page.fill("#field-key", "H# major")
    page.click("#submit")
    page.wait_for_selector("#field-key-error:not(:empty)")
    assert "H# major" in console.text("#field-key-error")
    assert console.text("#field-duration_s-error") == ""
    assert page.locator("#field-duration_s").get_attribute("aria-invalid") is None

    # a job-level field (the time limit) has its own place
    page.fill("#field-key", "")
    page.fill("#job-timeout_s", "999999")
    page.click("#submit")
    page.wait_for_selector("#job-timeout_s-error:not(:empty)")
    assert console.text("#job-timeout_s-error") == "at most 3600 s"


def test_a_tagged_union_model_gets_a_task_picker_with_errors_in_place(
    open_console: Callable[..., Console], llm_gateway: ServerThread
) -> None:
    console = open_console(llm_gateway.url)
    page = console.open()
    page.select_option("#model", "ollama")
    tasks = page.locator("#field-task option").all_text_contents()
    assert tasks == ["enhance_prompt", "song_plan", "lyrics"]
    assert page.locator("#field-idea").is_visible()
    page.select_option("#field-task", "lyrics")
    assert page.locator("#field-theme").is_visible() and page.locator("#field-idea").count() == 0
    # the gateway names payload.lyrics.theme; the message lands on the theme field
    with page.expect_response(lambda r: r.url.endswith("/v1/jobs")) as resp:
        page.click("#submit")
    assert resp.value.status == 422
    assert resp.value.request.post_data_json["payload"] == {"task": "lyrics"}
    page.wait_for_selector("#field-theme-error:not(:empty)")
    assert console.text("#field-theme-error") == "Field required"


def test_keyboard_only_submit_with_labelled_controls(console: Console) -> None:
    page = console.open()
    assert console.js(UNLABELLED) == []
    order: list[str] = []
    for _ in range(30):
        page.keyboard.press("Tab")
        focused = console.js("() => document.activeElement.id || document.activeElement.tagName")
        order.append(focused)
        if focused == "field-instructions":
            page.keyboard.type("render violin")
        if focused == "submit":
            break
    assert order[:4] == ["A", "api-key", "key-save", "key-forget"], order
    assert order.index("model") < order.index("field-instructions") < order.index("submit"), order
    page.keyboard.press("Enter")
    page.wait_for_selector("#submit-status:has-text('accepted')")
    console.wait_js("() => document.getElementById('job-status').textContent === 'succeeded'", 60)


def test_narrow_screen_has_no_sideways_scroll(
    open_console: Callable[..., Console], gateway: ServerThread, worker: Any, screenshot_dir: Path
) -> None:
    console = open_console(gateway.url, width=375, height=812)
    page = console.open()
    page.select_option("#model", "jen1")
    page.fill("#field-instructions", "render violin")
    page.fill("#field-duration_s", "3")
    page.click("#advanced summary")
    page.select_option("#field-output", '"flac"')  # FLAC decodes and plays as WAV does
    page.click("#submit")
    duration = console.wait_js(
        "() => { const a = document.getElementById('audio'); return a.duration > 0 && a.duration; }", 60
    )
    assert duration == pytest.approx(3.0, abs=0.05)
    assert console.text("#player-title").endswith(".flac")
    page.click("#jobs-refresh")
    page.wait_for_selector("#jobs-body tr")
    page.click("#json-details summary")
    page.click("#events-details summary")
    assert console.js(NO_SIDEWAYS_SCROLL), console.js("() => document.documentElement.scrollWidth")
    page.screenshot(path=str(screenshot_dir / "console-375px.png"), full_page=True)


def test_rate_limit_is_a_readable_message_at_the_submit_button(
    open_console: Callable[..., Console], limited_gateway: ServerThread, worker: Any
) -> None:
    console = open_console(limited_gateway.url)
    page = console.open()
    page.select_option("#model", "noop")
    for _ in range(2):
        page.click("#submit")
        page.wait_for_selector("#submit-status:has-text('accepted')")
        page.evaluate("() => { document.getElementById('submit-status').textContent = ''; }")
    page.click("#submit")
    # the status says "Submitting…" until the answer comes back; wait for what replaces it
    message = console.wait_js(
        "() => { const t = document.getElementById('submit-status').textContent;"
        " return t && !t.startsWith('Submitting') && t; }"
    )
    assert message.startswith("Too many requests: more than 2/minute job submissions"), message
    assert page.locator("#submit").is_enabled()
