"""Musical features measured from audio: tempo (onset autocorrelation) and pitch-class content.

Used to check that rendered music is what was asked for (tests, `jen1`'s report), so they read the
audio only, never the score. Both are standard, simple estimators:

- `estimate_tempo`: the SuperFlux onset-strength envelope (`analysis.onset_strength`), its
  autocorrelation over lags of 40..240 BPM, weighted by a log-normal prior around 110 BPM (the
  usual remedy for octave errors, as in librosa's `beat.tempo`), refined by parabolic interpolation.
- `chroma`: STFT magnitudes folded onto the 12 pitch classes between 55 Hz and 2 kHz (where
  fundamentals and strong low harmonics live), after a median-filter harmonic/percussive split so
  that drums do not colour the pitch profile.
- `estimate_key`: the Krumhansl-Schmuckler algorithm (Krumhansl 1990, "Cognitive Foundations of
  Musical Pitch"): the chroma profile correlated with the Krumhansl-Kessler major and minor key
  profiles rotated to each of the 12 tonics; the best correlation names the key.
"""

from __future__ import annotations

import numpy as np

from harmonia.audio.analysis import onset_strength, to_mono

_HOP_S = 0.01


def tempo_strengths(audio: np.ndarray, sample_rate: int, bpms: np.ndarray) -> np.ndarray:
    """Normalised onset-envelope autocorrelation at each tempo in `bpms` (1.0 = as strong as lag 0)."""
    hop = max(1, round(_HOP_S * sample_rate))
    env = onset_strength(audio, sample_rate, hop=hop)
    env = env - env.mean()
    if not np.any(env):
        return np.zeros(len(bpms))
    n = len(env)
    spec = np.fft.rfft(env, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]
    ac /= ac[0]
    fps = sample_rate / hop
    lags = 60.0 * fps / np.asarray(bpms, dtype=float)
    return np.interp(lags, np.arange(n), ac)


def estimate_tempo(
    audio: np.ndarray, sample_rate: int, *, low: float = 40.0, high: float = 240.0, prior_bpm: float = 110.0
) -> float:
    """The most likely tempo in BPM (0.0 when there are no onsets)."""
    bpms = np.arange(low, high, 0.25)
    strength = tempo_strengths(audio, sample_rate, bpms)
    if not np.any(strength > 0):
        return 0.0
    prior = np.exp(-0.5 * (np.log2(bpms / prior_bpm) / 1.0) ** 2)
    score = np.maximum(strength, 0) * prior
    i = int(np.argmax(score))
    if 0 < i < len(bpms) - 1:
        a, b, c = score[i - 1 : i + 2]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
        return float(bpms[i] + offset * 0.25)
    return float(bpms[i])


def chroma(audio: np.ndarray, sample_rate: int, *, frame: int = 8192, hop: int = 2048) -> np.ndarray:
    """Energy per pitch class (C=0 .. B=11) of the harmonic part of the signal, normalised to sum 1.

    Harmonic-percussive separation by median filtering (Fitzgerald, DAFx 2010) keeps drum hits
    (short in time, wide in frequency) out of the profile: a bin counts where its median over
    ~0.4 s is at least its median over neighbouring frequencies."""
    from scipy.ndimage import median_filter

    mono = to_mono(audio)
    if mono.size < frame:
        mono = np.pad(mono, (0, frame - mono.size))
    count = 1 + (mono.size - frame) // hop
    window = np.hanning(frame).astype(np.float32)
    freqs = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    band = (freqs >= 55.0) & (freqs <= 2000.0)
    pcs = (np.round(12 * np.log2(freqs[band] / 440.0)).astype(int) + 9) % 12
    rows = []
    for start in range(0, count, 64):  # blocks of frames keep memory small
        idx = np.arange(frame)[None, :] + hop * np.arange(start, min(count, start + 64))[:, None]
        rows.append(np.abs(np.fft.rfft(mono[idx] * window, axis=1))[:, band])
    mag = np.concatenate(rows)
    time_kernel = max(3, round(0.4 * sample_rate / hop) | 1)
    harmonic = median_filter(mag, size=(time_kernel, 1), mode="nearest")
    percussive = median_filter(mag, size=(1, 17), mode="nearest")
    mag = np.where(harmonic >= percussive, mag, 0.0)
    total = np.zeros(12)
    np.add.at(total, pcs, (mag**2).sum(axis=0))
    s = total.sum()
    return total / s if s > 0 else total


def scale_fit(profile: np.ndarray, pitch_classes: set[int]) -> float:
    """Fraction of the chroma energy on `pitch_classes`."""
    return float(sum(profile[pc] for pc in pitch_classes))


# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def key_correlations(profile: np.ndarray) -> dict[tuple[int, str], float]:
    """Pearson correlation of a pitch-class profile with each of the 24 rotated key profiles,
    keyed by (tonic pitch class, "major" | "minor")."""
    out: dict[tuple[int, str], float] = {}
    x = np.asarray(profile, dtype=np.float64)
    if x.shape != (12,) or np.ptp(x) == 0:
        return {(tonic, mode): 0.0 for tonic in range(12) for mode in ("major", "minor")}
    for mode, template in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            out[(tonic, mode)] = float(np.corrcoef(x, np.roll(template, tonic))[0, 1])
    return out


def estimate_key(profile: np.ndarray) -> tuple[int, str, float]:
    """The most likely key of a chroma profile: (tonic pitch class, mode, correlation)."""
    scores = key_correlations(profile)
    (tonic, mode), r = max(scores.items(), key=lambda kv: kv[1])
    return tonic, mode, r
