"""Mixing and mastering: aligned stems -> one stereo master at a target loudness, never clipping.

Mix: each stem is placed at its offset, balanced to a loudness for its role (a lead sits above the
chords, the pad under everything), panned with a constant-power law and summed. Master: the sum is
brought to the target integrated loudness (EBU R128, `harmonia.audio.loudness`), then a
look-ahead peak limiter holds the sample peak under the ceiling. Limiting lowers the loudness a
little, so gain and limiter are iterated until the result is within 0.1 LU of the target (or the
limiter would have to squash the music more than `max_reduction_db`, where loudness gives way).

The limiter's gain curve is a minimum filter of the gain each sample needs, smoothed by a moving
average no longer than that filter's half-width: every smoothed value is an average of values that
are each at most the gain the current sample needs, so the output never passes the ceiling, and
the gain changes over milliseconds instead of per sample (no distortion from hard clipping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from harmonia.audio.encode import as_frames
from harmonia.audio.loudness import db_to_gain, gain_to, integrated_lufs

DEFAULT_TARGET_LUFS = -14.0
DEFAULT_CEILING_DB = -1.0
# Loudness of each role before mastering, relative to one another (LUFS): the balance of the mix.
ROLE_LEVEL_LUFS = {
    "vocals": -17.0,
    "melody": -18.0,
    "backing": -19.0,
    "drums": -21.0,
    "bass": -21.0,
    "accompaniment": -22.0,
    "harmony": -23.0,
    "pad": -25.0,
}
# Pan positions -1 (left) .. 1 (right); lead, bass and drums stay in the centre.
ROLE_PAN = {"accompaniment": -0.25, "harmony": 0.3, "pad": 0.15}


@dataclass
class Stem:
    """One aligned part: float audio `(frames, channels)`, where it starts, and its role."""

    name: str
    role: str
    audio: np.ndarray
    offset_frames: int = 0
    gain_db: float | None = None  # None: balance by the role's loudness
    pan: float | None = None  # None: the role's position


@dataclass
class MixResult:
    audio: np.ndarray  # the master, float32 (frames, 2)
    stems: dict[str, np.ndarray]  # each stem as it sits in the master (gain, pan, master gain)
    loudness_lufs: float
    peak_dbfs: float
    gain_reduction_db: float  # the limiter's deepest reduction
    stem_gains_db: dict[str, float] = field(default_factory=dict)


def pan_stereo(audio: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan/balance of mono or stereo audio to stereo; 0 leaves the centre as it is."""
    arr = as_frames(audio)
    stereo = np.repeat(arr, 2, axis=1) if arr.shape[1] == 1 else arr[:, :2]
    theta = (min(max(pan, -1.0), 1.0) + 1.0) * math.pi / 4
    gains = np.array([math.cos(theta), math.sin(theta)], dtype=np.float32) * np.float32(math.sqrt(2))
    return stereo * gains


def place(audio: np.ndarray, offset_frames: int, frames: int) -> np.ndarray:
    """`audio` on a timeline of `frames`, starting at `offset_frames` (negative: its head is cut)."""
    arr = as_frames(audio)
    out = np.zeros((frames, arr.shape[1]), dtype=np.float32)
    src = arr[max(0, -offset_frames) :]
    at = max(0, offset_frames)
    n = max(0, min(frames - at, src.shape[0]))
    out[at : at + n] = src[:n]
    return out


def limit(
    audio: np.ndarray,
    sample_rate: int,
    *,
    ceiling_db: float = DEFAULT_CEILING_DB,
    lookahead_s: float = 0.005,
    release_s: float = 0.06,
) -> tuple[np.ndarray, float]:
    """Look-ahead peak limiter: (limited audio, deepest gain reduction in dB)."""
    arr = as_frames(audio)
    ceiling = db_to_gain(ceiling_db)
    peak = np.max(np.abs(arr), axis=1)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    if need.min() >= 1.0:
        return arr, 0.0
    gain = need
    # Two stages: a short look-ahead attack, then a longer release-like hold; each keeps the
    # "never above what the sample needs" property (see the module docstring).
    for width_s in (lookahead_s, release_s):
        half = max(1, int(width_s * sample_rate))
        held = minimum_filter1d(gain, size=2 * half + 1, mode="nearest")
        gain = np.minimum(uniform_filter1d(held, size=half, mode="nearest"), gain)
    out = (arr * gain[:, None].astype(np.float32)).astype(np.float32)
    over = np.max(np.abs(out)) if out.size else 0.0
    if over > ceiling:  # float rounding at the very edge
        out *= np.float32(ceiling / over)
    return out, float(-20 * math.log10(max(gain.min(), 1e-12)))


def mix(
    stems: list[Stem],
    sample_rate: int,
    frames: int,
    *,
    target_lufs: float = DEFAULT_TARGET_LUFS,
    ceiling_db: float = DEFAULT_CEILING_DB,
    max_reduction_db: float = 12.0,
    fade_out_s: float = 0.0,
) -> MixResult:
    """Balance, pan and sum `stems` on a timeline of `frames`, then master to `target_lufs`."""
    placed: dict[str, np.ndarray] = {}
    gains: dict[str, float] = {}
    for stem in stems:
        audio = place(stem.audio, stem.offset_frames, frames)
        if stem.gain_db is not None:
            g = stem.gain_db
        else:
            # Balance on the mid signal: half the work of a stereo measurement, and the offset it
            # has from the stereo loudness is the same for every stem, so the balance is unchanged.
            g = gain_to(audio.mean(axis=1), sample_rate, ROLE_LEVEL_LUFS.get(stem.role, -22.0) - 3.0)
        pan = ROLE_PAN.get(stem.role, 0.0) if stem.pan is None else stem.pan
        audio = pan_stereo(audio * np.float32(db_to_gain(g)), pan)
        placed[stem.name] = audio
        gains[stem.name] = round(g, 2)
    total = np.zeros((frames, 2), dtype=np.float32)
    for audio in placed.values():
        total += audio
    if fade_out_s > 0:
        fade = min(frames, int(fade_out_s * sample_rate))
        if fade > 0:
            total[frames - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    # Loudness scales exactly with gain, so one measurement of the sum sets the master gain; the
    # limiter then costs a little loudness, which one or two corrections win back.
    loudness = integrated_lufs(total, sample_rate)
    master_gain = target_lufs - loudness if math.isfinite(loudness) else 0.0
    for _ in range(3):
        out, reduction = limit(
            total * np.float32(db_to_gain(master_gain)), sample_rate, ceiling_db=ceiling_db
        )
        loudness = integrated_lufs(out, sample_rate)
        if not math.isfinite(loudness) or abs(target_lufs - loudness) < 0.05 or reduction > max_reduction_db:
            break
        master_gain += target_lufs - loudness
    scale = np.float32(db_to_gain(master_gain))
    stems_out = {name: audio * scale for name, audio in placed.items()}
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    return MixResult(
        audio=out,
        stems=stems_out,
        loudness_lufs=loudness,
        peak_dbfs=20 * math.log10(peak) if peak > 0 else -math.inf,
        gain_reduction_db=reduction,
        stem_gains_db=gains,
    )
