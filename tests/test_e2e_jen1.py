"""End to end through real servers: the seed curl -> 202 -> SSE progress -> succeeded -> a WAV that
is music in the requested instrument's range (measured from the audio, not read from metadata)."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
import soundfile

from harmonia.audio.analysis import f0_track, rms_dbfs

VIOLIN_HZ = (196.0, 3520.0)  # G3 .. A7, the instrument's playable range
CELLO_HZ = (65.4, 1047.0)  # C2 .. C6


def _events(http: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    out = []
    event = None
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                out.append((event, json.loads(line[6:])))
    return out


def _voiced_hz(wav: bytes) -> tuple[np.ndarray, int, np.ndarray]:
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    track = f0_track(mono, rate)
    return mono, rate, track.hz[track.voiced]


@pytest.mark.usefixtures("worker")
def test_seed_call_render_violin_end_to_end(http: httpx.Client) -> None:
    r = http.post(
        "/job",
        headers={"Content-Type": "application/json"},
        content=b'{"model":"jen1","mode":"async","payload":{"instructions":"render violin"}}',
    )
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    events = _events(http, job_id)
    progress = [d for e, d in events if e == "progress"]
    assert len(progress) >= 3 and progress[-1]["fraction"] == 1.0
    assert events[-1] == ("state", {"status": "succeeded"})
    job = http.get(f"/job/{job_id}").json()
    names = {a["name"] for a in job["artifacts"]}
    assert {"audio.wav", "score.json", "arrangement.mid"} <= names
    wav = http.get(f"/v1/jobs/{job_id}/artifacts/audio.wav")
    assert wav.headers["content-type"] == "audio/wav"
    mono, rate, voiced = _voiced_hz(wav.content)
    assert rate in (32000, 44100, 48000) and len(mono) / rate > 3
    assert rms_dbfs(mono) > -35  # real sound, not silence
    assert len(voiced) > 20
    low, high = np.percentile(voiced, [5, 95])
    assert VIOLIN_HZ[0] * 0.94 <= low and high <= VIOLIN_HZ[1]
    score = http.get(f"/v1/jobs/{job_id}/artifacts/score.json").json()
    assert "violin" in json.dumps(score).lower()
    written = np.array([n["pitch"] for n in score["notes"]])
    measured_midi = 69 + 12 * np.log2(np.median(voiced) / 440.0)
    assert abs(measured_midi - np.median(written)) <= 2  # the audio is the score that was written


@pytest.mark.usefixtures("worker")
def test_cello_renders_lower_than_violin_and_bad_instructions_are_422(http: httpx.Client) -> None:
    med = {}
    for inst in ("violin", "cello"):
        job = http.post(
            "/v1/jobs",
            json={"model": "jen1", "mode": "sync", "payload": {"instructions": f"render {inst}", "seed": 3}},
        ).json()
        assert job["status"] == "succeeded", job.get("error")
        med[inst] = float(np.median(_voiced_hz(http.get(job["artifacts"][0]["url"]).content)[2]))
    assert CELLO_HZ[0] <= med["cello"] < med["violin"]
    for payload, field in [
        ({"instructions": "   "}, "payload.instructions"),
        ({"instructions": "render violin for 2 hours"}, "payload.instructions"),
        ({"instructions": "render violin", "duration_s": 100000}, "payload.duration_s"),
    ]:
        r = http.post("/v1/jobs", json={"model": "jen1", "payload": payload})
        assert r.status_code == 422, (payload, r.text)
        assert r.json()["error"]["field"] == field
