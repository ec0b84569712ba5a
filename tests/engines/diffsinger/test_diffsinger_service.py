"""The diffsinger engine behind the generic model service, on a real uvicorn server in a thread."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from diffsinger_fixtures import *  # noqa: F403 - the session fixtures (tiny voicebanks)

from harmonia.audio.encode import decode
from harmonia.config import Settings
from harmonia.engines.diffsinger.engine import DiffsingerEngine
from harmonia.services.model import create_model_app

NOTES = [{"lyric": "la", "note": "C4", "beats": 1}, {"lyric": "mi", "note": "E4", "beats": 1}]


class Server:
    def __init__(self, app: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_ready(http: httpx.Client, want: int) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        resp = http.get("/readyz")
        if resp.status_code == want or time.monotonic() > deadline:
            return resp
        time.sleep(0.05)


@pytest.fixture
def service(basic_voicebank: Path) -> Iterator[httpx.Client]:
    engine = DiffsingerEngine(basic_voicebank, device="cpu", lazy=True)
    with (
        Server(create_model_app(engine, Settings())) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as http,
    ):
        yield http


def test_generate_sings_wav(service: httpx.Client) -> None:
    assert wait_ready(service, 200).json()["state"] == "READY"
    resp = service.post("/generate", json={"notes": NOTES, "tempo": 120})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("audio/wav")
    audio = decode(resp.content)
    assert audio.sample_rate == 44100
    assert audio.duration_s == pytest.approx(1.0 + 0.17 + 0.1, abs=0.03)
    assert float(abs(audio.audio).max()) > 0.05
    meta = service.post("/generate", json={"notes": NOTES}, headers={"accept": "application/json"}).json()
    assert meta["output"]["phrases"][0]["phonemes"] == ["SP", "l", "a", "m", "i", "SP"]
    info = service.get("/info").json()
    assert info["info"]["sample_rate"] == 44100 and info["engine"] == "diffsinger"
    assert service.get("/metrics").status_code == 200


def test_bad_input_is_422_naming_the_item(service: httpx.Client) -> None:
    wait_ready(service, 200)
    resp = service.post("/generate", json={"notes": [*NOTES, {"lyric": "xyzzy", "note": "D4", "beats": 1}]})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["field"] == "notes[2].lyric" and "xyzzy" in error["message"]
    resp = service.post("/generate", json={"notes": [{"lyric": "la", "note": "C9", "beats": 1}]})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "notes[0].note"
    resp = service.post("/generate", json={"tempo": 100})
    assert resp.status_code == 422


def test_malformed_voicebank_is_not_ready(basic_voicebank: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(basic_voicebank, tmp_path / "vb"))
    (root / "tiny.onnx").write_bytes(b"garbage")
    failures: list[BaseException] = []
    engine = DiffsingerEngine(root, device="cpu", lazy=True)
    app = create_model_app(engine, Settings(), on_load_failure=failures.append)
    with Server(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        resp = wait_ready(http, 503)
        assert resp.status_code == 503 and resp.json()["state"] == "FAILED"
        assert f"{root / 'tiny.onnx'}: not a loadable ONNX model" in resp.json()["error"]["message"]
        assert http.post("/generate", json={"notes": NOTES}).status_code == 503
    assert len(failures) == 1 and "tiny.onnx" in str(failures[0])
