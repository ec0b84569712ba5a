"""Artifact downloads at the HTTP level: traversal in every spelling (raw, URL-encoded, double-
encoded, backslashes, overlong UTF-8, NUL), symlinks planted in the store, and another key's
artifacts. Requests go out as raw request lines (http.client) so no client normalizes the path.

Already covered elsewhere (not repeated): `..%2F..` and `%2Fetc%2Fpasswd` names and key isolation
for job/events/cancel (tests/gateway/test_gateway_api.py)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from harmonia.config import Settings
from helpers import ServerThread, make_gateway

SECRET = "top-secret-sentinel-4242"

TRAVERSALS = [
    "../../secret.txt",
    "..%2F..%2Fsecret.txt",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "%2E%2E/%2E%2E/secret.txt",
    "%252e%252e%252f%252e%252e%252fsecret.txt",
    "..%5C..%5Csecret.txt",
    "..\\..\\secret.txt",
    "%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afsecret.txt",
    "..%c0%af..%c0%afsecret.txt",
    "%2Fetc%2Fhostname",
    "//etc/hostname",
    "....%2F%2F....%2F%2Fsecret.txt",
    "..;/..;/secret.txt",
    "echo.json%00.wav",
    "echo.json%2F..%2F..%2F..%2Fsecret.txt",
    "%2E",
    ".",
    "~",
    "%7E%2F.ssh%2Fid_rsa",
]


def raw_get(base: str, path: str, key: str) -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def keyed(settings: Settings) -> Iterator[tuple[str, Settings]]:
    settings.api_keys = [SecretStr("key-a"), SecretStr("key-b")]
    with ServerThread(make_gateway(settings)) as gw:
        yield gw.url, settings


@pytest.fixture
def finished_job(keyed: tuple[str, Settings], worker: Any) -> dict[str, Any]:
    url, settings = keyed
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "secret.txt").write_text(SECRET)
    job = httpx.post(
        url + "/v1/jobs",
        json={"model": "noop", "mode": "sync", "payload": {"note": "mine", "artifact": True}},
        headers={"Authorization": "Bearer key-a"},
        timeout=30,
    ).json()
    assert job["status"] == "succeeded" and job["artifacts"][0]["name"] == "echo.json"
    return job


def test_traversal_in_names_and_job_ids_is_refused(keyed: tuple[str, Settings], finished_job: dict) -> None:
    url, _ = keyed
    # one server and job for all spellings: a fixture per spelling costs a worker start each
    paths = [f"/v1/jobs/{finished_job['id']}/artifacts/{name}" for name in TRAVERSALS]
    paths += [f"/v1/jobs/{j}/artifacts/echo.json" for j in ("..%2F..%2Fsecret.txt", "..", "%2e%2e", "..%2F")]
    for path in paths:
        status, body = raw_get(url, path, "key-a")
        assert status in (404, 422), (path, status, body[:200])
        assert SECRET.encode() not in body and b"root:" not in body
        assert "error" in json.loads(body), path


def test_symlinks_planted_in_the_store_are_not_followed(
    keyed: tuple[str, Settings], finished_job: dict
) -> None:
    url, settings = keyed
    path = settings.artifacts_dir / finished_job["id"] / "echo.json"
    path.unlink()
    path.symlink_to(settings.data_dir / "secret.txt")
    status, body = raw_get(url, f"/v1/jobs/{finished_job['id']}/artifacts/echo.json", "key-a")
    assert status == 404 and SECRET.encode() not in body
    # the whole job folder replaced by a symlink to a folder holding a file of the same name
    folder = settings.artifacts_dir / finished_job["id"]
    elsewhere = settings.data_dir / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "echo.json").write_text(SECRET)
    shutil.rmtree(folder)
    os.symlink(elsewhere, folder)
    status, body = raw_get(url, f"/v1/jobs/{finished_job['id']}/artifacts/echo.json", "key-a")
    assert status == 404 and SECRET.encode() not in body


def test_other_key_gets_404_on_a_real_artifact_and_a_finished_job(
    keyed: tuple[str, Settings], finished_job: dict
) -> None:
    url, _ = keyed
    job_id = finished_job["id"]
    assert raw_get(url, f"/v1/jobs/{job_id}/artifacts/echo.json", "key-a")[0] == 200
    status, body = raw_get(url, f"/v1/jobs/{job_id}/artifacts/echo.json", "key-b")
    assert status == 404 and b"mine" not in body
    b = httpx.Client(base_url=url, headers={"Authorization": "Bearer key-b"})
    # canceling someone else's finished job must be 404, not 409: a 409 would confirm it exists
    assert b.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
    assert b.get(f"/job/{job_id}").status_code == 404
    assert b.get("/v1/jobs", params={"status": "succeeded"}).json()["jobs"] == []


def test_same_idempotency_key_under_two_api_keys_makes_two_jobs(keyed: tuple[str, Settings]) -> None:
    url, _ = keyed
    body = {"model": "noop", "payload": {"note": "same"}}
    ids = []
    for key in ("key-a", "key-b"):
        r = httpx.post(
            url + "/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "k1"}
        )
        assert r.status_code == 202
        ids.append(r.json()["id"])
    assert ids[0] != ids[1]


def test_artifact_store_root_is_the_only_place_served(settings: Settings) -> None:
    """Names the store accepts never leave its root (checked on the real store, not a fake)."""
    from harmonia.errors import InvalidInput
    from harmonia.storage import LocalArtifactStore

    store = LocalArtifactStore(settings.data_dir / "artifacts")
    for name in [*TRAVERSALS, "a/b", "/abs", "..", "x" * 200, ""]:
        try:
            path = store._path("abcdef0123456789", name)
        except InvalidInput:
            continue
        assert Path(os.path.realpath(path)).is_relative_to(store.root), name
