"""Settings: one typed object per process, built at the entry point from `HARMONIA_*` env vars.

Nested groups use `__`, e.g. `HARMONIA_MUSICGEN__DEVICE=cuda`. Nothing here is read at import time;
`Settings()` is called by the CLI (or a test) and passed down.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_QUEUES = ("jen1", "render", "musicgen", "diffsinger", "ollama", "noop", "acestep", "stable-audio")


class MusicgenSettings(BaseModel):
    model: str = "facebook/musicgen-small"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_batch_size: int = Field(8, ge=1, le=256)
    max_wait_ms: float = Field(20.0, ge=0, le=10_000)
    max_duration_s: float = Field(120.0, gt=0)
    quantize: Literal["auto", "none", "int8"] = Field(
        "auto",
        description="auto: int8 on CPU, none on CUDA. int8 (CPU only): dynamic int8 decoder products, "
        "~2.5x faster than float32 there but not bit for bit the float model's tokens; none: float",
    )
    cuda_graphs: bool = True
    window_s: float = Field(30.0, gt=1, le=40, description="longer audio is generated in windows")
    overlap_s: float = Field(10.0, ge=0, description="context carried from one window to the next")
    stream_chunk_s: float = Field(1.0, gt=0)
    tick_every: int = Field(10, ge=1, description="decode steps between progress/cancel checks")


class DiffusionSettings(BaseModel):
    """A diffusers pipeline served by a `DiffusionEngine` (ACE-Step, Stable Audio); each family
    sets its own default checkpoint and limits below."""

    model: str
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on CUDA (float16 where bf16 is unsupported), float32 on CPU"
    )
    max_batch_size: int = Field(4, ge=1, le=64, description="requests run as one pipeline call")
    max_wait_ms: float = Field(50.0, ge=0, le=10_000)
    max_duration_s: float = Field(600.0, gt=0)
    max_steps: int = Field(200, ge=1, le=1000, description="diffusion steps one request may ask for")


class AceStepSettings(DiffusionSettings):
    """ACE-Step 1.5 (`HARMONIA_ACESTEP__*`): songs with vocals, 10 s to 10 min."""

    model: str = "ACE-Step/acestep-v15-xl-turbo-diffusers"


class StableAudioSettings(DiffusionSettings):
    """Stable Audio Open (`HARMONIA_STABLE_AUDIO__*`); the checkpoint caps a clip (47.55 s for 1.0)."""

    model: str = "stabilityai/stable-audio-open-1.0"
    max_steps: int = Field(500, ge=1, le=1000, description="diffusion steps one request may ask for")


class DiffsingerSettings(BaseModel):
    voicebank: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"


class OllamaSettings(BaseModel):
    url: str = "http://127.0.0.1:11434"
    model: str = "llama3.2"
    api: Literal["ollama", "openai"] = "ollama"
    token: SecretStr | None = None
    timeout_s: float = Field(120.0, gt=0)
    task_budget_s: float = Field(
        120.0, gt=0, le=3600, description="wall-clock limit of one helper task, its repair included"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HARMONIA_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    # --- state ---------------------------------------------------------------------------------
    redis_url: str | None = Field(None, description="Redis/Valkey URL; unset = embedded Valkey")
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".harmonia")
    storage_url: str | None = Field(None, description="unset = <data_dir>/artifacts; or s3://bucket/prefix")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    embedded_appendfsync: Literal["always", "everysec", "no"] = "everysec"

    # --- gateway -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    allow_open_remote: bool = Field(False, description="serve without API keys on a non-loopback address")
    sync_timeout_s: float = Field(30.0, ge=0, le=3600)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_sync_waiters: int = Field(256, ge=1)
    gateway_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="processes of `harmonia gateway` sharing its port; 0 = one per usable core (CPU "
        "affinity and cgroup quota), at most 4",
    )
    rate_limit: str | None = Field(
        None, description="job submissions per API key, e.g. '120/minute' (limits syntax); unset = none"
    )

    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key signing webhook bodies")
    webhook_allow_private: bool = Field(False, description="allow webhooks to loopback/private addresses")
    webhook_timeout_s: float = Field(5.0, gt=0, le=60)

    # --- jobs ----------------------------------------------------------------------------------
    job_timeout_s: float = Field(600.0, gt=0)
    max_job_timeout_s: float = Field(3600.0, gt=0)
    result_ttl_s: int = Field(7 * 24 * 3600, ge=0, description="0 keeps finished jobs forever")
    max_retries: int = Field(3, ge=0, le=50)
    min_backoff_ms: int = Field(1000, ge=0)
    max_backoff_ms: int = Field(60_000, ge=0)
    events_maxlen: int = Field(1000, ge=10)
    lease_s: float = Field(
        30.0, gt=0, description="a running job's claim expires this long after its last beat"
    )
    heartbeat_timeout_ms: int = Field(60_000, ge=1000, description="Dramatiq: when a silent worker is dead")
    maintenance_chance: int = Field(1000, ge=0, le=1_000_000)
    queues: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_QUEUES))
    worker_threads: int = Field(2, ge=1, le=256)
    shutdown_timeout_s: float = Field(600.0, ge=0)
    worker_liveness_file: Path | None = Field(
        None,
        description="a file the worker touches while its consumers are healthy (`harmonia probe worker` "
        "checks its age); unset = <temp dir>/harmonia-worker.alive",
    )
    worker_liveness_max_age_s: float = Field(
        60.0, gt=0, description="the worker counts as wedged when its liveness file is older than this"
    )

    # --- engines -------------------------------------------------------------------------------
    soundfont: Path | None = Field(None, description=".sf2 for the render engine; unset = bundled GM")
    musicgen_url: str | None = None
    diffsinger_url: str | None = None
    musicgen: MusicgenSettings = Field(default_factory=MusicgenSettings)
    # ACE-Step and Stable Audio (the [diffusers] extra); *_url: a `harmonia serve` model service
    acestep_url: str | None = None
    stable_audio_url: str | None = None
    acestep: AceStepSettings = Field(default_factory=AceStepSettings)
    stable_audio: StableAudioSettings = Field(default_factory=StableAudioSettings)
    diffsinger: DiffsingerSettings = Field(default_factory=DiffsingerSettings)
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)

    log_level: str = "INFO"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str | None) -> str | None:
        if value:
            from limits import parse

            parse(value)  # ValueError -> a clear settings error at start
        return value or None

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            return [q.strip() for q in value.split(",") if q.strip()]
        return value

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    def gateway_processes(self) -> int:
        """`gateway_workers`, or for 0 the cores this process may use (affinity, cgroup CPU quota),
        between 1 and 4: a Python process serves requests on one core at a time."""
        if self.gateway_workers:
            return self.gateway_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        try:  # cgroup v2: "max 100000" or "<quota> <period>"
            quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
            if quota != "max":
                cores = min(cores, max(1, int(int(quota) / int(period))))
        except (OSError, ValueError):
            pass
        return max(1, min(cores, 4))

    @property
    def liveness_file(self) -> Path:
        return self.worker_liveness_file or Path(tempfile.gettempdir()) / "harmonia-worker.alive"
