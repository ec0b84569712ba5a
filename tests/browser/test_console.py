"""The console in headless Chromium against a real gateway and worker: models, submitting (async
and sync), live progress, playing and downloading the result, cancel, opening jobs."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile
from console_page import Console

pytestmark = pytest.mark.slow

# count of waveform-coloured pixels (the console draws --wave / --wave-played on --wave-bg)
CANVAS_INK = """() => {
  const c = document.getElementById('waveform');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const bg = [d[0], d[1], d[2]];
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - bg[0]) + Math.abs(d[i + 1] - bg[1]) + Math.abs(d[i + 2] - bg[2]) > 60) ink++;
  }
  return {ink, total: c.width * c.height, columns: c.width};
}"""


def wait_status(console: Console, status: str, timeout: float = 60) -> None:
    console.wait_js(f"document.getElementById('job-status').textContent === '{status}'", timeout)


def test_models_are_listed_with_the_reason_an_unavailable_one_cannot_run(console: Console) -> None:
    page = console.open()
    diffsinger = page.locator('#models li[data-model="diffsinger"]')
    assert diffsinger.get_attribute("data-available") == "false"
    assert "no voicebank configured" in diffsinger.inner_text()
    assert "available" in page.locator('#models li[data-model="noop"]').inner_text()
    # the picker offers it but will not let it be chosen
    option = page.locator('#model option[value="diffsinger"]')
    assert option.get_attribute("disabled") is not None
    assert "unavailable" in option.inner_text()
    # the form is generated from the chosen model's schema
    page.select_option("#model", "noop")
    assert page.locator("#field-sleep_s").get_attribute("type") == "number"
    assert page.locator("#field-artifact").get_attribute("type") == "checkbox"
    fail = page.locator("#field-fail option").all_text_contents()
    assert fail == ["default (none)", "none", "error", "retryable"]
    page.select_option("#model", "render")  # a list of note objects: a JSON box
    assert "JSON" in console.text("#field-notes-hint")


def test_render_violin_plays_with_a_waveform_and_downloads_a_wav(
    console: Console, screenshot_dir: Path
) -> None:
    page = console.open()
    page.select_option("#model", "jen1")
    page.fill("#field-instructions", "render violin")
    page.fill("#field-duration_s", "6")
    page.click("#submit")
    wait_status(console, "succeeded")

    # progress arrived over SSE stage by stage (each with its stage name) and reached 100 %
    states = page.locator("#events li[data-kind=state]").all_text_contents()
    assert [s.split("  ", 1)[1] for s in states] == ["state queued", "state running", "state succeeded"]
    progress = [
        p.split("  ", 1)[1] for p in page.locator("#events li[data-kind=progress]").all_text_contents()
    ]
    percents = [int(p.split("%", 1)[0]) for p in progress]
    assert len(progress) >= 3 and percents == sorted(percents) and percents[-1] == 100, progress
    assert all(p.split("% ", 1)[1].strip() for p in progress), progress
    assert page.locator("#job-progress").get_attribute("value") == "100"
    assert console.text("#job-elapsed").startswith("Elapsed ")

    job = console.js("() => JSON.parse(document.getElementById('job-json').textContent)")
    result = job["result"]
    assert result["format"] == "wav" and "violin" in json.dumps(result).lower()
    # the player has a playable source of the rendered length
    duration = console.wait_js(
        "() => { const a = document.getElementById('audio'); return a.duration > 0 && a.duration; }"
    )
    assert duration == pytest.approx(result["duration_s"], abs=0.05)
    assert console.js("() => document.getElementById('audio').src.startsWith('blob:')")
    # and the waveform was drawn from the decoded audio: ink across most of the width
    console.wait_js(
        "() => document.getElementById('waveform').getAttribute('aria-label').includes('seconds')"
    )
    ink = console.js(CANVAS_INK)
    assert ink["ink"] > 0.1 * ink["total"], ink

    # every artifact is listed; the one playing downloads as the WAV it was decoded from
    names = page.locator("#artifacts a").all_inner_texts()
    assert names == [f"Download {a['name']}" for a in job["artifacts"]]
    playing = console.text("#player-title").removeprefix("Listen: ")
    assert playing == next(a["name"] for a in job["artifacts"] if a["content_type"] == "audio/wav")
    with page.expect_download() as download:
        page.click(f'#artifacts a[data-artifact="{playing}"]')
    assert download.value.suggested_filename == playing
    data = Path(download.value.path()).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    info = soundfile.info(io.BytesIO(data))
    assert info.duration == pytest.approx(result["duration_s"], abs=0.01)
    page.screenshot(path=str(screenshot_dir / "console-desktop.png"), full_page=True)


def test_progress_updates_live_while_the_job_runs(console: Console) -> None:
    page = console.open()
    page.select_option("#model", "noop")
    page.fill("#field-sleep_s", "2.4")
    page.fill("#field-steps", "6")
    page.click("#submit")
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = console.text("#job-status")
        value = page.locator("#job-progress").get_attribute("value") or ""
        if status == "running" and value not in seen:
            seen.append(value)
        if status == "succeeded":
            break
        time.sleep(0.05)
    # several distinct values were shown while the job was still running, in order
    assert len(seen) >= 3, seen
    assert [int(v) for v in seen] == sorted(int(v) for v in seen)
    assert "step 6/6" in console.text("#events")


def test_sync_submit_answers_with_the_finished_job(console: Console) -> None:
    page = console.open()
    page.select_option("#model", "noop")
    page.fill("#field-note", "synchronous hello")
    page.check('input[name="mode"][value="sync"]')
    with page.expect_response(lambda r: r.url.endswith("/v1/jobs") and r.request.method == "POST") as resp:
        page.click("#submit")
    assert resp.value.status == 200
    body = resp.value.json()
    assert body["status"] == "succeeded"
    # the page handles the answer after the browser has it: wait for the status it writes
    page.wait_for_selector("#job-status[data-status=succeeded]")
    page.wait_for_selector(f"#submit-status:has-text('Job {body['id']} succeeded.')")
    assert console.text("#submit-status") == f"Job {body['id']} succeeded."
    assert console.text("#job-status") == "succeeded"
    assert "synchronous hello" in console.text("#job-result")
    assert page.locator("#job-error").is_hidden()

    # a job that fails says why
    page.select_option("#field-fail", '"error"')
    page.click("#submit")
    page.wait_for_selector("#job-status[data-status=failed]")
    assert page.locator("#job-error").is_visible()
    assert "noop asked to fail" in console.text("#job-error")


def test_cancel_a_running_job(console: Console, http: httpx.Client) -> None:
    page = console.open()
    page.select_option("#model", "noop")
    page.fill("#field-sleep_s", "60")
    page.fill("#field-steps", "600")
    page.click("#submit")
    wait_status(console, "running", 20)
    job_id = console.text("#job-id")
    page.click("#job-cancel")
    wait_status(console, "canceled", 20)
    assert page.locator("#job-cancel").is_disabled()
    assert "state canceled" in console.text("#events")
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"


def _finished(http: httpx.Client, ids: list[str]) -> bool:
    return all(http.get(f"/v1/jobs/{i}").json()["status"] in ("succeeded", "failed") for i in ids)


def test_job_list_filters_by_status_and_pages(console: Console, http: httpx.Client) -> None:
    ids = []
    for i in range(13):
        payload: dict[str, Any] = {"note": f"n{i}", "fail": "error" if i % 4 == 0 else "none"}
        ids.append(http.post("/v1/jobs", json={"model": "noop", "payload": payload}).json()["id"])
    deadline = time.monotonic() + 30
    while not _finished(http, ids):
        assert time.monotonic() < deadline, "noop jobs did not finish"
        time.sleep(0.1)

    page = console.open()
    rows = page.locator("#jobs-body tr")
    page.click("#jobs-refresh")
    console.wait_js("() => document.getElementById('jobs-status').textContent === ''")
    assert rows.count() == 10
    newest_first = [j["id"] for j in http.get("/v1/jobs", params={"limit": 50}).json()["jobs"]]
    assert sorted(newest_first) == sorted(ids)
    assert page.locator("#jobs-body button").all_inner_texts() == newest_first[:10]
    assert page.locator("#jobs-newer").is_disabled()
    page.click("#jobs-older")
    console.wait_js("() => document.getElementById('jobs-page').textContent === 'Page 2'")
    assert page.locator("#jobs-body button").all_inner_texts() == newest_first[10:]
    assert page.locator("#jobs-older").is_disabled()
    page.click("#jobs-newer")
    console.wait_js("() => document.getElementById('jobs-page').textContent === 'Page 1'")
    assert rows.count() == 10

    page.select_option("#filter-status", "failed")
    console.wait_js("() => document.querySelectorAll('#jobs-body tr').length === 4")
    assert set(page.locator("#jobs-body .badge").all_inner_texts()) == {"failed"}
    failed = [j for j in newest_first if ids.index(j) % 4 == 0]
    assert page.locator("#jobs-body button").all_inner_texts() == failed


def test_opening_a_job_shows_its_json_and_every_artifact(console: Console, http: httpx.Client) -> None:
    job = http.post(
        "/v1/jobs",
        json={"model": "noop", "mode": "sync", "payload": {"note": "open me", "artifact": True}},
    ).json()
    assert job["status"] == "succeeded"
    page = console.open()
    page.click(f'#jobs-body button[data-job="{job["id"]}"]')
    wait_status(console, "succeeded")
    shown = console.js("() => JSON.parse(document.getElementById('job-json').textContent)")
    assert shown["id"] == job["id"] and shown["payload"]["note"] == "open me"
    assert "open me" in console.text("#job-result")
    link = page.locator('#artifacts a[data-artifact="echo.json"]')
    assert link.get_attribute("href") == f"/v1/jobs/{job['id']}/artifacts/echo.json"
    assert "application/json" in console.text("#artifacts")
    page.click("#artifacts .artifact-json summary")
    page.wait_for_selector("#artifacts .artifact-json pre:has-text('open me')")
    echoed = console.js(
        "() => JSON.parse(document.querySelector('#artifacts .artifact-json pre').textContent)"
    )
    assert echoed["note"] == "open me" and echoed["artifact"] is True
    assert page.evaluate("location.hash") == f"#job={job['id']}"
    # the link is shareable: a fresh tab on it opens the same job
    again = console.page.context.new_page()
    again.goto(f"/#job={job['id']}")
    again.wait_for_selector("#job-status[data-status=succeeded]")
    # an unknown id is a readable 404 next to the field
    page.fill("#open-id", "doesnotexist")
    page.press("#open-id", "Enter")
    page.wait_for_selector("#open-id-error:not(:empty)")
    assert console.text("#open-id-error").startswith("Not found: ")
    assert page.locator("#open-id").get_attribute("aria-invalid") == "true"


def test_sse_parser_handles_chunks_split_anywhere(console: Console) -> None:
    page = console.open()
    stream = (
        'id: 1-0\r\nevent: progress\r\ndata: {"fraction": 0.5}\r\n\r\n'
        ": ping\r\n\r\n"
        "id: 2-0\ndata: a\ndata: b\n\n"
    )
    events = page.evaluate(
        """async (text) => {
          const { createParser } = await import('/console/sse.js');
          const out = [];
          for (let size = 1; size <= text.length; size++) {
            const got = [];
            const p = createParser((e) => got.push(e));
            for (let i = 0; i < text.length; i += size) p.feed(text.slice(i, i + size));
            out.push(JSON.stringify(got));
          }
          return out;
        }""",
        stream,
    )
    expected = (
        '[{"id":"1-0","event":"progress","data":"{\\"fraction\\": 0.5}"},'
        '{"id":"2-0","event":"message","data":"a\\nb"}]'
    )
    assert set(events) == {expected}


IN_VIEW = """(id) => {
  const r = document.getElementById(id).getBoundingClientRect();
  return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight;
}"""


def test_after_submit_the_progress_and_the_player_stay_in_view(console: Console) -> None:
    """At 1280x900 the page used to scroll after Submit so that the player was off screen."""
    page = console.open()
    page.select_option("#model", "jen1")
    page.fill("#field-instructions", "render violin")
    page.fill("#field-duration_s", "4")
    page.click("#submit")
    console.wait_js("() => !document.getElementById('job-view').hidden")
    assert console.js(IN_VIEW, "job-progress"), console.js("() => window.scrollY")
    wait_status(console, "succeeded")
    console.wait_js("() => document.getElementById('audio').duration > 0")
    time.sleep(0.5)  # late layout: the waveform, the artifact list, the refreshed job list
    assert console.js(IN_VIEW, "job-status") and console.js(IN_VIEW, "audio"), {
        "scrollY": console.js("() => window.scrollY"),
        "audio": console.js("() => JSON.stringify(document.getElementById('audio').getBoundingClientRect())"),
    }
