"""Encoding round trips, peak safety, and the analysis measurements on signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from harmonia.audio import analysis, encode

SR = 44100


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("sr", [32000, 44100, 48000])
def test_round_trip_stereo(fmt: str, sr: int) -> None:
    left, right = tone(440, 0.5, sr), tone(660, 0.5, sr, amp=0.25)
    audio = np.stack([left, right], axis=1)
    data = encode.encode(audio, sr, fmt)
    assert data[:4] == (b"RIFF" if fmt == "wav" else b"fLaC")
    back = encode.decode(data)
    assert back.sample_rate == sr
    assert back.audio.shape == audio.shape
    # PCM16: one quantisation step is 1/32768.
    assert np.max(np.abs(back.audio - audio)) < 2 / 32768


def test_round_trip_mono_and_channel_first() -> None:
    mono = tone(220, 0.3)
    back = encode.decode(encode.encode_wav(mono, SR))
    assert back.audio.shape == (mono.size, 1)
    channel_first = np.stack([mono, -mono])  # (2, frames), as torch models return audio
    back = encode.decode(encode.encode_flac(channel_first, SR))
    assert back.audio.shape == (mono.size, 2)
    np.testing.assert_allclose(back.audio[:, 1], -mono, atol=2 / 32768)


def test_overload_is_scaled_not_clipped_or_wrapped() -> None:
    loud = tone(440, 0.2, amp=2.5)
    back = encode.decode(encode.encode_wav(loud, SR)).audio[:, 0]
    assert np.max(np.abs(back)) <= 1.0
    assert np.max(np.abs(back)) > 0.98  # scaled to just under full scale, not shrunk further
    # The shape survives: a wrapped or clipped sine would not be proportional to the input.
    ratio = back[loud != 0] / loud[loud != 0]
    assert np.std(ratio[np.abs(loud[loud != 0]) > 0.5]) < 1e-3
    assert np.all(np.sign(back[np.abs(loud) > 0.1]) == np.sign(loud[np.abs(loud) > 0.1]))


def test_quiet_audio_is_left_alone() -> None:
    quiet = tone(440, 0.1, amp=0.1)
    np.testing.assert_array_equal(encode.peak_safe(quiet)[:, 0], quiet)


def test_normalize_peak() -> None:
    out = encode.normalize_peak(tone(440, 0.1, amp=0.1), -6.0)
    assert analysis.peak_dbfs(out) == pytest.approx(-6.0, abs=0.01)
    silence = np.zeros(100, dtype=np.float32)
    assert not np.any(encode.normalize_peak(silence))


@pytest.mark.parametrize(
    "bad",
    [np.full(10, np.nan, dtype=np.float32), np.zeros((2, 2, 2), dtype=np.float32), np.zeros((10, 0))],
)
def test_bad_audio_is_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode.encode_wav(bad, SR)


def test_bad_format_and_rate_are_rejected() -> None:
    with pytest.raises(ValueError):
        encode.encode(tone(440, 0.1), SR, "mp3")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode.encode(tone(440, 0.1), 10, "wav")


def test_decode_garbage_raises_value_error() -> None:
    with pytest.raises(ValueError):
        encode.decode(b"definitely not audio" * 10)


def test_levels() -> None:
    assert analysis.rms_dbfs(tone(1000, 1.0, amp=1.0)) == pytest.approx(-3.01, abs=0.02)
    assert analysis.peak_dbfs(tone(1000, 1.0, amp=0.5)) == pytest.approx(-6.02, abs=0.02)
    assert analysis.rms_dbfs(np.zeros(1000, dtype=np.float32)) == analysis.SILENCE_DBFS


@pytest.mark.parametrize("freq", [65.4, 220.0, 440.0, 1318.5])
def test_median_f0_of_a_harmonic_tone(freq: float) -> None:
    # A tone with harmonics, like an instrument: the tracker must find the fundamental.
    sig = sum(tone(freq * k, 1.0, amp=0.3 / k) for k in range(1, 5))
    assert analysis.median_f0(sig, SR) == pytest.approx(freq, rel=0.01)
    assert analysis.median_f0(np.zeros(SR, dtype=np.float32), SR) is None


def test_pitch_segments_follow_a_melody() -> None:
    midi = [60, 64, 67, 64, 72]
    sig = np.concatenate([tone(float(analysis.midi_to_hz(m)), 0.3) for m in midi])
    segments = analysis.pitch_segments(analysis.f0_track(sig, SR))
    assert [s.midi for s in segments] == midi
    assert segments[0].start_s == pytest.approx(0.0, abs=0.05)
    assert segments[-1].end_s == pytest.approx(1.5, abs=0.05)


def test_onsets_of_plucked_notes() -> None:
    # Five decaying tones 0.4 s apart (a plucked string's envelope), with silence before them.
    t = np.arange(int(0.4 * SR)) / SR
    notes = [np.sin(2 * np.pi * f * t) * np.exp(-6 * t) for f in (220, 247, 262, 294, 330)]
    sig = np.concatenate([np.zeros(int(0.2 * SR)), *notes]).astype(np.float32) * 0.5
    onsets = analysis.onset_times(sig, SR)
    expected = 0.2 + 0.4 * np.arange(5)
    assert len(onsets) == 5
    np.testing.assert_allclose(onsets, expected, atol=0.03)
    assert analysis.note_density(sig, SR) == pytest.approx(5 / 2.0, rel=0.15)
