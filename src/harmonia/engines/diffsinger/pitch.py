"""The pitch curve a singer would sing for a melody: glides between notes and delayed vibrato.

DiffSinger's acoustic model and NSF vocoder take a frame-level f0 curve; OpenUtau draws it from the
notes plus pitch-bend points when no pitch model is used. We do the same from the notes alone:
- each note holds its pitch; before the first and after the last note the pitch is held;
- between two notes that follow each other the pitch glides along a cosine ease over
  `transition_s`, starting a little before the new note (singers lead into the next pitch);
- notes longer than `vibrato.delay_s` get a sine vibrato that fades in after the delay and fades
  out before the note ends.
Curves are in MIDI semitones (float); `midi_to_hz` converts for the models.
"""

from __future__ import annotations

import numpy as np

GLIDE_LEAD = 0.6  # share of a glide that happens before the new note's onset
LEGATO_GAP_S = 0.3  # notes closer than this are joined by a glide
VIBRATO_FADE_IN_S = 0.3
VIBRATO_FADE_OUT_S = 0.15


def midi_to_hz(midi: np.ndarray) -> np.ndarray:
    return (440.0 * np.power(2.0, (np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)).astype(np.float32)


def hz_to_midi(hz: np.ndarray) -> np.ndarray:
    return (69.0 + 12.0 * np.log2(np.maximum(np.asarray(hz, dtype=np.float64), 1e-3) / 440.0)).astype(
        np.float32
    )


def midi_curve(
    notes: list[tuple[float, float, int]],
    times: np.ndarray,
    *,
    transition_s: float,
    vibrato_depth_cents: float,
    vibrato_rate_hz: float,
    vibrato_delay_s: float,
) -> np.ndarray:
    """Pitch (MIDI, float) at `times` (seconds) for notes `(start, end, midi)` sorted by start."""
    if not notes:
        raise ValueError("a pitch curve needs at least one note")
    starts = np.array([n[0] for n in notes])
    pitches = np.array([float(n[2]) for n in notes])
    idx = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(notes) - 1)
    curve = pitches[idx].astype(np.float64)

    for j in range(1, len(notes)):
        prev_start, prev_end, prev_midi = notes[j - 1]
        start, end, midi = notes[j]
        if midi == prev_midi or start - prev_end > LEGATO_GAP_S or transition_s <= 0:
            continue
        # the glide may use at most half of either note
        before = min(transition_s * GLIDE_LEAD, (prev_end - prev_start) / 2)
        after = min(transition_s * (1 - GLIDE_LEAD), (end - start) / 2)
        w0, w1 = start - before, start + after
        inside = (times >= w0) & (times < w1)
        if w1 <= w0 or not inside.any():
            continue
        u = (times[inside] - w0) / (w1 - w0)
        curve[inside] = prev_midi + (midi - prev_midi) * (0.5 - 0.5 * np.cos(np.pi * u))

    if vibrato_depth_cents > 0:
        for start, end, _ in notes:
            if end - start <= vibrato_delay_s + 0.1:
                continue
            onset = start + vibrato_delay_s
            inside = (times >= onset) & (times < end)
            rel = times[inside] - onset
            envelope = np.minimum(1.0, rel / VIBRATO_FADE_IN_S) * np.clip(
                (end - times[inside]) / VIBRATO_FADE_OUT_S, 0, 1
            )
            curve[inside] += (
                vibrato_depth_cents / 100.0 * envelope * np.sin(2 * np.pi * vibrato_rate_hz * rel)
            )
    return curve.astype(np.float32)


def resample_curve(values: np.ndarray, timestep: float, t0: float, times: np.ndarray) -> np.ndarray:
    """A curve sampled every `timestep` from `t0` (e.g. a .ds f0_seq), read at `times`; edges held."""
    src_t = t0 + timestep * np.arange(len(values))
    return np.interp(times, src_t, values).astype(np.float32)


def linear_resize(values: np.ndarray, length: int) -> np.ndarray:
    """Stretch a curve to `length` points (variance models may use another hop size)."""
    if len(values) == length:
        return values.astype(np.float32)
    if length == 1 or len(values) == 1:
        return np.full(length, float(values[0]), dtype=np.float32)
    x = np.linspace(0, len(values) - 1, length)
    return np.interp(x, np.arange(len(values)), values).astype(np.float32)
