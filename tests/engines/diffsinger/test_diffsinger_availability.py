"""Availability that tells the truth, through a real gateway (uvicorn, Valkey): a voicebank with a
file missing or a corrupt config is `unavailable` in GET /v1/models and `harmonia models`, with
the reason naming the file, before any job runs; a local MusicGen path that is no MusicGen
checkpoint likewise; a hub id that is not downloaded yet is available with a note saying so."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from diffsinger_fixtures import *  # noqa: F403 - the session fixtures (tiny voicebanks)

from harmonia.config import Settings
from helpers import ServerThread, make_gateway


def models(url: str) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in httpx.get(f"{url}/v1/models").json()["models"]}


def cli_models(url: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "harmonia", "models", "--url", url],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return {line.split()[0]: line for line in out.splitlines() if line.strip()}


@pytest.fixture
def voicebank(basic_voicebank: Path, tmp_path: Path) -> Path:
    """A copy of the tiny voicebank that a test may break."""
    return Path(shutil.copytree(basic_voicebank, tmp_path / "voicebank"))


@pytest.fixture
def gateway_with(settings: Settings) -> Iterator[Any]:
    servers: list[ServerThread] = []

    def start(**update: Any) -> str:
        server = ServerThread(make_gateway(settings.model_copy(update=update))).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def test_a_broken_voicebank_is_unavailable_with_the_file_named(
    gateway_with: Any, settings: Settings, voicebank: Path
) -> None:
    url = gateway_with(diffsinger=settings.diffsinger.model_copy(update={"voicebank": voicebank}))
    assert models(url)["diffsinger"]["available"] is True
    assert "available" in cli_models(url)["diffsinger"] and "unavailable" not in cli_models(url)["diffsinger"]

    vocoder = voicebank / "dsvocoder" / "nsf_hifigan.onnx"
    vocoder.unlink()  # checked afresh by every listing, no restart
    entry = models(url)["diffsinger"]
    assert entry["available"] is False
    assert entry["reason"] == f"voicebank file {vocoder}: ONNX model not found"
    assert f"unavailable: voicebank file {vocoder}: ONNX model not found" in cli_models(url)["diffsinger"]
    # and a job for it is refused with the same reason, instead of failing on a worker later
    r = httpx.post(f"{url}/v1/jobs", json={"model": "diffsinger", "payload": {"notes": []}})
    assert r.status_code == 503 and "ONNX model not found" in r.json()["error"]["message"]

    vocoder.write_bytes(b"")
    assert models(url)["diffsinger"]["reason"] == f"voicebank file {vocoder}: empty file, not an ONNX model"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("dsconfig.yaml", "acoustic: [tiny.onnx\nphonemes: x", "not valid YAML"),
        ("dsconfig.yaml", "acoustic: no.onnx\nphonemes: tiny.phonemes.txt\n", "no.onnx: ONNX model not"),
        ("dsconfig.yaml", "- a list\n", "expected a mapping at the top level"),
        ("dsvocoder/vocoder.yaml", "model: nsf_hifigan.onnx\nsample_rate: 22050\n", "sample_rate 22050"),
        ("dictionary.txt", None, "no dictionary found"),
        ("tiny.phonemes.txt", "a\nb\n", "no 'SP' (rest) phoneme"),
    ],
)  # fmt: skip
def test_each_kind_of_broken_voicebank_says_why(
    gateway_with: Any, settings: Settings, voicebank: Path, name: str, content: str | None, reason: str
) -> None:
    if content is None:
        (voicebank / name).unlink()
    else:
        (voicebank / name).write_text(content, encoding="utf-8")
    url = gateway_with(diffsinger=settings.diffsinger.model_copy(update={"voicebank": voicebank}))
    entry = models(url)["diffsinger"]
    assert entry["available"] is False and reason in entry["reason"], entry["reason"]
    assert entry["reason"].startswith("voicebank file ")


def test_musicgen_paths_and_hub_ids(gateway_with: Any, settings: Settings, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    not_musicgen = tmp_path / "t5"
    not_musicgen.mkdir()
    (not_musicgen / "config.json").write_text(json.dumps({"model_type": "t5"}))
    url = gateway_with(musicgen=settings.musicgen.model_copy(update={"model": str(not_musicgen)}))
    entry = models(url)["musicgen"]
    assert entry["available"] is False
    assert entry["reason"] == f"model path {not_musicgen} is a 't5' checkpoint, not MusicGen"
    url = gateway_with(musicgen=settings.musicgen.model_copy(update={"model": str(tmp_path / "missing")}))
    assert models(url)["musicgen"]["reason"] == f"model path {tmp_path / 'missing'} does not exist"
    # a hub id that is not in the local cache: runnable where there is internet, and said so
    url = gateway_with(
        musicgen=settings.musicgen.model_copy(update={"model": "harmonia-tests/not-downloaded"})
    )
    entry = models(url)["musicgen"]
    assert entry["available"] is True
    assert entry["note"].startswith("not loaded yet: the first job downloads harmonia-tests/not-downloaded")
    assert "(not loaded yet: the first job downloads" in cli_models(url)["musicgen"]


def test_a_model_served_by_a_service_is_available_while_the_service_is_ready(
    gateway_with: Any, settings: Settings, basic_voicebank: Path
) -> None:
    """The compose gateway points HARMONIA_DIFFSINGER_URL at the `diffsinger` profile's service:
    with the service up the model is available, without it the listing says why."""
    from harmonia.engines.diffsinger.engine import DiffsingerEngine
    from harmonia.services.model import create_model_app
    from helpers import free_port, wait_for

    closed = f"http://127.0.0.1:{free_port()}"
    entry = models(gateway_with(diffsinger_url=closed))["diffsinger"]
    assert entry["available"] is False and entry["reason"].startswith(f"model service {closed} unreachable")
    engine = DiffsingerEngine(basic_voicebank, device="cpu")
    with ServerThread(create_model_app(engine, settings)) as service:
        wait_for(lambda: httpx.get(f"{service.url}/readyz").status_code == 200)
        entry = models(gateway_with(diffsinger_url=service.url))["diffsinger"]
        assert entry["available"] is True, entry
