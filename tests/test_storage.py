"""ArtifactStore backends: the local directory and S3 (against moto's real HTTP S3 server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harmonia.config import Settings
from harmonia.errors import InvalidInput, NotFound
from harmonia.storage import LocalArtifactStore, S3ArtifactStore, build_store
from helpers import free_port

JOB = "1a2b3c4d5e6f7a8b"


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "/etc/passwd", "..", ".hidden", "", "a\x00b", "x" * 200, "a b"]
)
def test_names_that_escape_or_are_odd_are_refused(tmp_path: Path, name: str) -> None:
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(InvalidInput):
        store.put(JOB, name, b"x", "text/plain")
    with pytest.raises(InvalidInput):
        store.open(JOB, name)


def test_local_roundtrip_is_atomic_and_ignores_symlinks(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    stored = store.put(JOB, "audio.wav", b"RIFF" * 1000, "audio/wav")
    assert stored.size == 4000 and store.read(JOB, "audio.wav") == b"RIFF" * 1000
    store.put(JOB, "audio.wav", b"new", "audio/wav")  # same key again (a redelivered attempt)
    assert store.read(JOB, "audio.wav") == b"new"
    assert sorted(p.name for p in (tmp_path / "a" / JOB).iterdir()) == ["audio.wav"]  # no temp files left
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    os.symlink(secret, tmp_path / "a" / JOB / "link.txt")
    with pytest.raises(NotFound):
        store.open(JOB, "link.txt")
    with pytest.raises(NotFound):
        store.open(JOB, "absent.wav")
    with pytest.raises(InvalidInput):
        store.put("../../x", "a.wav", b"", "audio/wav")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_store_through_settings(tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    ).create_bucket(Bucket="music")
    settings = Settings(
        data_dir=tmp_path,
        storage_url="s3://music/harmonia",
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        s3_access_key_id="k",
        s3_secret_access_key="s",
    )
    store = build_store(settings)
    assert isinstance(store, S3ArtifactStore) and store.describe() == "s3://music/harmonia"
    payload = bytes(range(256)) * 1000
    assert store.put(JOB, "mix.flac", payload, "audio/flac").size == len(payload)
    chunks, size = store.open(JOB, "mix.flac")
    assert size == len(payload) and b"".join(chunks) == payload
    with pytest.raises(NotFound):
        store.open(JOB, "other.wav")
    store.delete_job(JOB)
    with pytest.raises(NotFound):
        store.open(JOB, "mix.flac")


def test_unknown_storage_scheme_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="scheme"):
        build_store(Settings(data_dir=tmp_path, storage_url="ftp://x/y"))


def test_sweep_removes_only_old_artifacts_of_expired_jobs(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    for job in ("aaaaaaaa11", "bbbbbbbb22", "cccccccc33"):
        store.put(job, "a.wav", b"x", "audio/wav")
    old = 1_000_000_000  # 2001
    os.utime(tmp_path / "aaaaaaaa11", (old, old))
    os.utime(tmp_path / "bbbbbbbb22", (old, old))
    alive = {"bbbbbbbb22"}
    assert store.sweep(3600, lambda j: j in alive) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bbbbbbbb22", "cccccccc33"]


def test_local_open_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    store.put(JOB, "ok.txt", b"fine", "text/plain")
    os.mkfifo(tmp_path / "a" / JOB / "pipe.wav")  # nobody ever writes to it
    with pytest.raises(NotFound):
        store.open(JOB, "pipe.wav")
    assert store.read(JOB, "ok.txt") == b"fine"
