"""Encode float audio to WAV/FLAC bytes and decode it back (libsndfile through `soundfile`).

Every encoder is peak-safe: integer PCM cannot hold values past full scale, and libsndfile would
clip them (or, with some settings, wrap them). Audio whose peak exceeds the ceiling is therefore
scaled down as a whole before it is written, which keeps its shape and its internal dynamics.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf

AudioFormat = Literal["wav", "flac"]

CONTENT_TYPES: dict[str, str] = {"wav": "audio/wav", "flac": "audio/flac"}
# Just under full scale: PCM16 rounding of exactly 1.0 would hit +32768, one past the top code.
DEFAULT_CEILING = 10 ** (-0.1 / 20)
_MAX_CHANNELS = 8


@dataclass(frozen=True)
class Decoded:
    """Audio read back from bytes: float32 `(frames, channels)` and its sample rate."""

    audio: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate


def as_frames(audio: np.ndarray) -> np.ndarray:
    """Return float32 audio shaped `(frames, channels)`.

    Accepts `(frames,)` (mono), `(frames, channels)`, or channel-first `(channels, frames)` as
    torch models produce it (recognised when the first axis is small and the second is not).
    """
    arr = np.asarray(audio)
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim == 2:
        if arr.shape[1] > _MAX_CHANNELS and arr.shape[0] <= _MAX_CHANNELS:
            arr = arr.T
    else:
        raise ValueError(f"audio must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[1] == 0 or arr.shape[1] > _MAX_CHANNELS:
        raise ValueError(f"audio must have 1..{_MAX_CHANNELS} channels, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("audio contains NaN or infinite samples")
    return arr


def peak_safe(audio: np.ndarray, ceiling: float = DEFAULT_CEILING) -> np.ndarray:
    """Scale the whole signal down so its peak is at most `ceiling`; quieter audio is unchanged."""
    arr = as_frames(audio)
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if peak > ceiling:
        arr = arr * np.float32(ceiling / peak)
    return arr


def normalize_peak(audio: np.ndarray, target_dbfs: float = -1.0) -> np.ndarray:
    """Scale the whole signal so its peak sits at `target_dbfs` (silence stays silence)."""
    arr = as_frames(audio)
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if peak <= 1e-9:
        return arr
    return arr * np.float32(10 ** (target_dbfs / 20) / peak)


def encode(audio: np.ndarray, sample_rate: int, fmt: AudioFormat = "wav") -> bytes:
    """Encode float audio as 16-bit PCM WAV or FLAC bytes, peak-safe."""
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {sorted(CONTENT_TYPES)}")
    if not 1000 <= int(sample_rate) <= 384_000:
        raise ValueError(f"sample rate {sample_rate} is out of range")
    arr = peak_safe(audio)
    buf = io.BytesIO()
    sf.write(buf, arr, int(sample_rate), format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    return encode(audio, sample_rate, "wav")


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    return encode(audio, sample_rate, "flac")


def decode(data: bytes) -> Decoded:
    """Decode WAV/FLAC (anything libsndfile reads) to float32 `(frames, channels)`."""
    try:
        audio, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise ValueError(f"not a readable audio file: {exc}") from exc
    return Decoded(audio=audio, sample_rate=int(sample_rate))
