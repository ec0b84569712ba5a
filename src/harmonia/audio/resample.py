"""Sample-rate conversion of float audio `(frames, channels)` (polyphase, scipy)."""

from __future__ import annotations

import math

import numpy as np

from harmonia.audio.encode import as_frames


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling to `rate_out`; returns float32 `(frames, channels)`."""
    arr = as_frames(audio)
    if rate_in == rate_out or arr.shape[0] == 0:
        return arr
    from scipy.signal import resample_poly

    g = math.gcd(int(rate_in), int(rate_out))
    return resample_poly(arr, rate_out // g, rate_in // g, axis=0).astype(np.float32)
