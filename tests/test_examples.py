"""The sample scripts in examples/ and the `harmonia` command, run as subprocesses against a live
gateway (real uvicorn, real Valkey, an in-process worker running the real jen1 engine)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from helpers import ServerThread, free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def harmonia_cmd() -> list[str]:
    """The installed console script when it sits next to this interpreter, else `python -m`."""
    script = Path(sys.executable).with_name("harmonia")
    return [str(script)] if script.exists() else [sys.executable, "-m", "harmonia"]


def example(script: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / script), *args]


def run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def assert_audible_wav(path: Path, min_seconds: float = 1.0) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(path, always_2d=True)
    assert rate in (32000, 44100), rate
    assert audio.shape[0] >= min_seconds * rate, f"only {audio.shape[0] / rate:.2f} s"
    mono = audio.mean(axis=1)
    rms_dbfs = 20 * np.log10(float(np.sqrt(np.mean(mono**2))) + 1e-12)
    assert rms_dbfs > -40, f"nearly silent: {rms_dbfs:.1f} dBFS"
    assert float(np.abs(mono).max()) > 0.05
    return audio, rate


def newest_job(http: httpx.Client) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = http.get("/v1/jobs", params={"limit": 1}).json()["jobs"]
    assert jobs, "the example made no job"
    return jobs[0]


def assert_is_the_jobs_wav(http: httpx.Client, out: Path) -> dict[str, Any]:
    """The file is the whole audio artifact of the job the script made, and that job was jen1."""
    job = newest_job(http)
    assert job["model"] == "jen1" and job["status"] == "succeeded"
    wav = next(a for a in job["artifacts"] if a["name"] == "audio.wav")
    assert out.stat().st_size == wav["size"]
    assert out.read_bytes() == http.get(wav["url"]).content
    return job


@pytest.mark.usefixtures("worker")
def test_httpx_example_follows_sse_and_downloads_the_wav(
    gateway: ServerThread, http: httpx.Client, tmp_path: Path
) -> None:
    out = tmp_path / "violin.wav"
    proc = run(
        example("submit_httpx.py", "--url", gateway.url, "--instructions", "render violin", "-o", str(out))
    )
    assert proc.returncode == 0, proc.stderr
    assert "state: running" in proc.stdout and "state: succeeded" in proc.stdout  # it followed SSE
    assert_audible_wav(out)
    job = assert_is_the_jobs_wav(http, out)
    assert job["payload"]["instructions"] == "render violin"
    assert job["result"]["interpretation"]["instruments"] == ["violin"]


@pytest.mark.usefixtures("worker")
def test_requests_example_polls_and_downloads_the_wav(
    gateway: ServerThread, http: httpx.Client, tmp_path: Path
) -> None:
    out = tmp_path / "piano.wav"
    instructions = "render a slow piano piece in D minor, 6 seconds"
    proc = run(
        example("submit_requests.py", "--url", gateway.url, "--instructions", instructions, "-o", str(out))
    )
    assert proc.returncode == 0, proc.stderr
    assert "succeeded" in proc.stdout
    audio, rate = assert_audible_wav(out)
    job = assert_is_the_jobs_wav(http, out)
    assert job["payload"]["instructions"] == instructions
    assert job["result"]["interpretation"]["key"] == "D minor"
    assert audio.shape[0] / rate == pytest.approx(job["result"]["duration_s"], abs=1.0)


def test_examples_report_an_unreachable_gateway_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for script in ("submit_httpx.py", "submit_requests.py"):
        proc = run(example(script, "--url", url, "-o", str(tmp_path / "x.wav")))
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().startswith("error: cannot reach"), proc.stderr
        assert not (tmp_path / "x.wav").exists()


def test_example_reports_the_gateways_error_in_one_line(gateway: ServerThread, tmp_path: Path) -> None:
    proc = run(
        example(
            "submit_requests.py", "--url", gateway.url, "--instructions", "", "-o", str(tmp_path / "x.wav")
        )
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: HTTP 422"), proc.stderr


@pytest.mark.usefixtures("worker")
def test_cli_submit_wait_writes_the_wav_and_status_prints_the_job(
    gateway: ServerThread, http: httpx.Client, tmp_path: Path
) -> None:
    out = tmp_path / "violin.wav"
    submit = ["submit", "jen1", "--instructions", "render violin", "--wait", "-o", str(out)]
    proc = run([*harmonia_cmd(), *submit, "--url", gateway.url])
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)  # stdout is the job's JSON and nothing else: `| jq` works
    assert job["status"] == "succeeded" and job["model"] == "jen1"
    assert "succeeded" in proc.stderr and "100%" in proc.stderr  # the progress bar is on stderr
    assert f"wrote {out}" in proc.stderr
    assert_audible_wav(out)
    assert_is_the_jobs_wav(http, out)

    status = run([*harmonia_cmd(), "status", job["id"], "--url", gateway.url])
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["id"] == job["id"] and shown["status"] == "succeeded"
    waited = run([*harmonia_cmd(), "wait", job["id"], "--url", gateway.url])
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["id"] == job["id"] and "succeeded" in waited.stderr
    assert {a["name"] for a in shown["artifacts"]} >= {"audio.wav"}


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["submit", "nope"], "model"),
        (["submit", "jen1", "--payload", "{not json"], "--payload is not JSON"),
        (["status", "0" * 27], "404"),
    ],
)
def test_cli_bad_input_is_one_line_on_stderr(gateway: ServerThread, args: list[str], expect: str) -> None:
    proc = run([*harmonia_cmd(), *args, "--url", gateway.url])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expect in lines[0]


def test_cli_reports_an_unreachable_gateway_in_one_line() -> None:
    proc = run([*harmonia_cmd(), "submit", "noop", "--url", f"http://127.0.0.1:{free_port()}"])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the gateway"), proc.stderr


# --- the musicgen service example, against a real service with a tiny random checkpoint ----------
@pytest.fixture(scope="module")
def musicgen_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from harmonia.config import MusicgenSettings, Settings
    from harmonia.engines.musicgen.engine import MusicgenEngine
    from harmonia.engines.musicgen.tiny import make_tiny_musicgen
    from harmonia.services.model import create_model_app
    from helpers import wait_for

    path = make_tiny_musicgen(tmp_path_factory.mktemp("musicgen") / "tiny")
    settings = Settings(musicgen=MusicgenSettings(model=str(path), device="cpu", max_wait_ms=5))
    with ServerThread(create_model_app(MusicgenEngine(settings.musicgen), settings)) as server:
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, timeout=120, interval=0.1)
        yield server


def test_musicgen_service_example_saves_the_wav(musicgen_service: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "piano.wav"
    args = ["--text", "solo piano melody", "--duration", "1", "--seed", "3", "-o", str(out)]
    proc = run(example("musicgen_service.py", "--url", musicgen_service.url, *args))
    assert proc.returncode == 0, proc.stderr
    audio, rate = sf.read(io.BytesIO(out.read_bytes()), always_2d=True)
    assert rate == 32000 and audio.shape[0] == 32000
    assert float(np.sqrt(np.mean(audio**2))) > 1e-3  # random weights: noise, but never silence
    assert "wrote" in proc.stdout


def test_musicgen_service_example_reports_bad_input(musicgen_service: ServerThread, tmp_path: Path) -> None:
    proc = run(
        example(
            "musicgen_service.py", "--url", musicgen_service.url, "--text", "", "-o", str(tmp_path / "x.wav")
        )
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: HTTP 422 invalid_input"), proc.stderr
    assert not (tmp_path / "x.wav").exists()
