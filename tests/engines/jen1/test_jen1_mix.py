"""The mixer and mastering chain on signals with known properties: loudness (pyloudnorm, checked
against the EBU reference level of a 1 kHz sine), the limiter's ceiling, pan law and alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harmonia.audio.loudness import integrated_lufs
from harmonia.audio.mix import Stem, limit, mix, pan_stereo, place

SR = 44100


def sine(freq: float, seconds: float, amp: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_loudness_of_a_reference_sine() -> None:
    # EBU Tech 3341: a 1 kHz sine at -23 dBFS peak on both channels reads -23 LUFS (+/- 0.1)
    tone = sine(1000, 5, 10 ** (-23 / 20))
    assert integrated_lufs(np.stack([tone, tone], axis=1), SR) == pytest.approx(-23.0, abs=0.1)
    assert integrated_lufs(np.zeros((SR, 2)), SR) == -math.inf
    assert integrated_lufs(tone[:1000], SR) == -math.inf  # shorter than one gating block


@pytest.mark.parametrize("seed", range(4))
def test_limiter_never_passes_the_ceiling(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((SR * 2, 2)) * rng.uniform(0.2, 2.0)).astype(np.float32)
    x[rng.integers(0, SR * 2, 20)] *= 6  # spikes
    out, reduction = limit(x, SR, ceiling_db=-1.0)
    assert np.max(np.abs(out)) <= 10 ** (-1 / 20) + 1e-6
    assert reduction > 0
    quiet = x * np.float32(0.01)
    same, none = limit(quiet, SR)
    assert none == 0.0 and np.array_equal(same, quiet)


def test_limiter_gain_moves_smoothly() -> None:
    x = np.stack([sine(220, 1, 0.2), sine(220, 1, 0.2)], axis=1)
    x[SR // 2 : SR // 2 + 50] *= 8  # a 1 ms burst
    out, _ = limit(x, SR)
    gain = np.abs(out[:, 0]) / np.maximum(np.abs(x[:, 0]), 1e-9)
    steady = np.abs(x[:, 0]) > 0.1
    jumps = np.abs(np.diff(gain[steady]))
    assert jumps.max() < 0.05  # no per-sample gain steps (that would be hard clipping)


def test_mix_reaches_the_target_without_clipping() -> None:
    lead = sine(440, 6, 0.05)
    bass = sine(55, 6, 0.6)
    rng = np.random.default_rng(1)
    drums = np.zeros(SR * 6, dtype=np.float32)
    for beat in range(12):
        at = int(beat * 0.5 * SR)
        drums[at : at + 2000] = rng.standard_normal(2000).astype(np.float32) * np.linspace(0.9, 0, 2000)
    stems = [Stem("lead", "melody", lead), Stem("bass", "bass", bass), Stem("drums", "drums", drums)]
    for target in (-14.0, -20.0, -9.0):
        result = mix(stems, SR, SR * 6, target_lufs=target)
        assert result.loudness_lufs == pytest.approx(target, abs=0.2)
        assert integrated_lufs(result.audio, SR) == pytest.approx(target, abs=0.2)
        assert np.max(np.abs(result.audio)) <= 10 ** (-1 / 20) + 1e-6
    # the balance: the lead ends up louder than the bass although it came in 20 dB quieter
    result = mix(stems, SR, SR * 6)
    assert integrated_lufs(result.stems["lead"], SR) > integrated_lufs(result.stems["bass"], SR) + 1


def test_pan_and_place() -> None:
    mono = np.ones((100, 1), dtype=np.float32)
    left = pan_stereo(mono, -1.0)
    assert left[0, 1] == pytest.approx(0, abs=1e-6) and left[0, 0] == pytest.approx(math.sqrt(2))
    centre = pan_stereo(mono, 0.0)
    assert np.allclose(centre, 1.0)
    power = (pan_stereo(mono, 0.4) ** 2).sum(axis=1)
    assert power[0] == pytest.approx(2.0)  # constant power across positions
    x = np.arange(10, dtype=np.float32)
    assert place(x, 3, 8)[:, 0].tolist() == [0, 0, 0, 0, 1, 2, 3, 4]
    assert place(x, -2, 4)[:, 0].tolist() == [2, 3, 4, 5]
