"""ArtifactStore: where job outputs live. A local directory (default, under the data dir) or an
S3-compatible bucket. Keys are `<job_id>/<name>`; names are checked so none escapes its job's
folder, and writes are atomic (local: write to a temp file, then rename; S3: one PUT).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from harmonia.config import Settings
from harmonia.errors import DependencyDown, InvalidInput, NotFound

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9]{8,64}$")
CHUNK = 64 * 1024


def check_name(name: str) -> str:
    """An artifact name is one plain file name: no separators, no `..`, no leading dot."""
    if not _NAME.match(name) or ".." in name:
        raise InvalidInput(f"artifact name {name!r} is not a plain file name", "name")
    return name


def _check_job(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise InvalidInput(f"job id {job_id!r} is malformed", "id")
    return job_id


@dataclass(frozen=True)
class StoredArtifact:
    name: str
    size: int
    content_type: str


class ArtifactStore(Protocol):
    def put(self, job_id: str, name: str, data: bytes, content_type: str) -> StoredArtifact: ...

    def open(self, job_id: str, name: str) -> tuple[Iterator[bytes], int]:
        """Chunks of the artifact and its size; NotFound if absent."""
        ...

    def read(self, job_id: str, name: str) -> bytes: ...

    def delete_job(self, job_id: str) -> None: ...

    def describe(self) -> str: ...

    def sweep(self, older_than_s: float, alive: Callable[[str], bool]) -> int:
        """Delete the artifacts of jobs older than `older_than_s` whose record is gone (expired).
        Returns how many jobs' artifacts were removed. S3 buckets use a lifecycle rule instead."""
        ...


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str, name: str) -> Path:
        # both parts are checked plain names (no separators, no `..`), so the path stays under root
        return self.root / _check_job(job_id) / check_name(name)

    def put(self, job_id: str, name: str, data: bytes, content_type: str) -> StoredArtifact:
        path = self._path(job_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredArtifact(name, len(data), content_type)

    def open(self, job_id: str, name: str) -> tuple[Iterator[bytes], int]:
        path = self._path(job_id, name)
        # Only regular files written by put() are served: the job folder and the file are opened
        # without following symlinks (O_NOFOLLOW on each step, so nothing can be swapped in between
        # a check and the open) and the opened file must be a regular file.
        nofollow = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            dir_fd = os.open(path.parent, nofollow | getattr(os, "O_DIRECTORY", 0))
            try:
                # O_NONBLOCK: a FIFO planted here must not block the open (regular files ignore it)
                fd = os.open(path.name, nofollow | getattr(os, "O_NONBLOCK", 0), dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:  # missing, a symlink (ELOOP), not a directory
            raise NotFound(f"no artifact {name!r}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise NotFound(f"no artifact {name!r}")
        fh = os.fdopen(fd, "rb")

        def chunks() -> Iterator[bytes]:
            with fh:
                while block := fh.read(CHUNK):
                    yield block

        return chunks(), info.st_size

    def read(self, job_id: str, name: str) -> bytes:
        it, _ = self.open(job_id, name)
        return b"".join(it)

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.root / _check_job(job_id), ignore_errors=True)

    def describe(self) -> str:
        return f"local:{self.root}"

    def sweep(self, older_than_s: float, alive: Callable[[str], bool]) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for folder in self.root.iterdir():
            if not (folder.is_dir() and _JOB_ID.match(folder.name)) or folder.stat().st_mtime > cutoff:
                continue
            if not alive(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed


class S3ArtifactStore:
    """Any S3-compatible service (AWS, MinIO, Ceph RGW, R2) through boto3."""

    def __init__(self, client: object, bucket: str, prefix: str = "") -> None:
        self.s3 = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def _key(self, job_id: str, name: str) -> str:
        key = f"{_check_job(job_id)}/{check_name(name)}"
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, job_id: str, name: str, data: bytes, content_type: str) -> StoredArtifact:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.put_object(  # type: ignore[attr-defined]
                Bucket=self.bucket, Key=self._key(job_id, name), Body=data, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise DependencyDown(f"artifact store s3://{self.bucket} failed: {exc}") from exc
        return StoredArtifact(name, len(data), content_type)

    def open(self, job_id: str, name: str) -> tuple[Iterator[bytes], int]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self._key(job_id, name))  # type: ignore[attr-defined]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"no artifact {name!r}") from exc
            raise DependencyDown(f"artifact store s3://{self.bucket} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise DependencyDown(f"artifact store s3://{self.bucket} failed: {exc}") from exc
        body = obj["Body"]
        return iter(lambda: body.read(CHUNK), b""), int(obj["ContentLength"])

    def read(self, job_id: str, name: str) -> bytes:
        it, _ = self.open(job_id, name)
        return b"".join(it)

    def delete_job(self, job_id: str) -> None:
        prefix = self._key(job_id, "x")[:-1]
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)  # type: ignore[attr-defined]
        keys = [{"Key": o["Key"]} for o in listing.get("Contents", [])]
        if keys:
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})  # type: ignore[attr-defined]

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def sweep(self, older_than_s: float, alive: Callable[[str], bool]) -> int:
        return 0  # expiry is the bucket's lifecycle rule (see deploy docs)


def build_store(settings: Settings) -> ArtifactStore:
    """The store named by `storage_url` (None or file:// -> local; s3://bucket/prefix -> S3)."""
    url = settings.storage_url
    if not url:
        return LocalArtifactStore(settings.artifacts_dir)
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalArtifactStore(Path(parsed.path or url))
    if parsed.scheme == "s3":
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id.get_secret_value()
            if settings.s3_access_key_id
            else None,
            aws_secret_access_key=(
                settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
            ),
        )
        return S3ArtifactStore(client, parsed.netloc, parsed.path)
    raise InvalidInput(
        f"storage_url scheme {parsed.scheme!r} is not supported (use a path or s3://)", "storage_url"
    )
