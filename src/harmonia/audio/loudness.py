"""Loudness: ITU-R BS.1770-4 / EBU R128 integrated loudness (LUFS) through `pyloudnorm`.

`pyloudnorm` applies the K-weighting filter and the two-stage gating (absolute -70 LUFS, relative
-10 LU) the standard defines. Anything shorter than one 400 ms gating block, or silent, has no
integrated loudness: those return `-inf` rather than a number that means nothing.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyloudnorm

from harmonia.audio.encode import as_frames

_BLOCK_S = 0.4


def integrated_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS; `-inf` for silence or audio shorter than 400 ms."""
    arr = as_frames(audio).astype(np.float64)
    if arr.shape[0] < _BLOCK_S * sample_rate or not np.any(arr):
        return -math.inf
    meter = pyloudnorm.Meter(sample_rate)  # cheap: the filter coefficients for this rate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns on possible clipping; the master checks that
        value = float(meter.integrated_loudness(arr))
    return value if math.isfinite(value) else -math.inf


def gain_to(audio: np.ndarray, sample_rate: int, target_lufs: float) -> float:
    """The gain in dB that brings `audio` to `target_lufs` (0 for silence)."""
    current = integrated_lufs(audio, sample_rate)
    return 0.0 if not math.isfinite(current) else target_lufs - current


def db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))
