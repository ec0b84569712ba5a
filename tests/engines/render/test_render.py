"""The `render` engine against the real bundled General MIDI SoundFont: audio, pitch, inputs, errors,
determinism, concurrency, progress and cancellation."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import pytest

from harmonia.audio import analysis, encode
from harmonia.engines.base import LocalContext
from harmonia.engines.render.engine import RenderEngine, RenderInput, default_soundfont
from harmonia.errors import EngineUnavailable, InvalidInput, JobCanceled
from helpers import RecordingContext as Recorder


@pytest.fixture(scope="module")
def engine() -> RenderEngine:
    return RenderEngine()


def run(engine: RenderEngine, payload: dict[str, Any], ctx: Any = None) -> tuple[encode.Decoded, dict]:
    result = engine.run(payload, ctx or LocalContext())
    assert len(result.artifacts) == 1
    return encode.decode(result.artifacts[0].data), result.output


MELODY = ["C5", "E5", "G5", "E5", "A5", "F5", "D5", "C5"]


def melody_payload(instrument: str | int, names: list[str] = MELODY, **extra: Any) -> dict[str, Any]:
    notes = [{"pitch": n, "start": i, "duration": 1, "velocity": 96} for i, n in enumerate(names)]
    return {"notes": notes, "instrument": instrument, "tempo_bpm": 120, **extra}


def test_renders_real_violin_pitches(engine: RenderEngine) -> None:
    decoded, output = run(engine, melody_payload("violin"))
    assert decoded.sample_rate == 44100
    assert decoded.audio.shape[1] == 2
    assert analysis.rms_dbfs(decoded.audio) > -30
    # 8 beats at 120 bpm = 4 s of notes, plus at most the 1.5 s release tail (trimmed when silent).
    assert 4.0 <= decoded.duration_s <= 5.6
    # The audio plays exactly the requested pitches, in order.
    track = analysis.f0_track(decoded.audio, decoded.sample_rate)
    expected = [pretty_midi.note_name_to_number(n) for n in MELODY]
    assert [s.midi for s in analysis.pitch_segments(track)] == expected
    assert output["parts"][0]["program"] == 40
    assert output["tempo_bpm"] == 120


def test_note_timing_follows_tempo(engine: RenderEngine) -> None:
    decoded, _ = run(engine, {**melody_payload("cello", ["C3", "G3", "C3", "G3"]), "tempo_bpm": 60})
    # Floor at 70 Hz: where C3's release overlaps G3's attack the mix really has a common
    # subharmonic at C2 (65 Hz), which is not a note.
    track = analysis.f0_track(decoded.audio, decoded.sample_rate, fmin=70)
    segments = analysis.pitch_segments(track)
    assert [s.midi for s in segments] == [48, 55, 48, 55]
    # One beat per note at 60 bpm: onsets one second apart.
    np.testing.assert_allclose([s.start_s for s in segments], [0, 1, 2, 3], atol=0.08)


def test_midi_numbers_and_program_numbers(engine: RenderEngine) -> None:
    decoded, output = run(engine, melody_payload(73, [81, 81, 84]))  # program 73 = flute
    assert output["parts"][0]["program"] == 73
    median = analysis.median_f0(decoded.audio, decoded.sample_rate)
    assert median is not None
    assert analysis.hz_to_midi(median) == pytest.approx(81, abs=0.5)


def multitrack_midi() -> bytes:
    midi = pretty_midi.PrettyMIDI(initial_tempo=100)
    cello = pretty_midi.Instrument(program=42, name="cello")
    flute = pretty_midi.Instrument(program=73, name="flute")
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="kit")
    for i in range(4):
        cello.notes.append(pretty_midi.Note(velocity=90, pitch=43, start=i * 0.6, end=i * 0.6 + 0.55))
        flute.notes.append(pretty_midi.Note(velocity=90, pitch=79, start=i * 0.6, end=i * 0.6 + 0.55))
        drums.notes.append(pretty_midi.Note(velocity=100, pitch=38, start=i * 0.6, end=i * 0.6 + 0.1))
    midi.instruments.extend([cello, flute, drums])
    buf = io.BytesIO()
    midi.write(buf)
    return buf.getvalue()


def test_multitrack_midi_file(engine: RenderEngine) -> None:
    payload = {"midi_b64": base64.b64encode(multitrack_midi()).decode()}
    decoded, output = run(engine, payload)
    parts = {p["name"]: p for p in output["parts"]}
    assert parts["cello"]["program"] == 42 and parts["flute"]["program"] == 73
    assert parts["kit"]["is_drum"] and parts["kit"]["channel"] == 10
    assert parts["cello"]["channel"] != parts["flute"]["channel"]
    assert analysis.rms_dbfs(decoded.audio) > -30
    # Both pitched tracks sound: energy near G2 (98 Hz) and near G5 (784 Hz).
    mono = analysis.to_mono(decoded.audio)[: int(2.4 * decoded.sample_rate)]
    spectrum = np.abs(np.fft.rfft(mono))
    freqs = np.fft.rfftfreq(mono.size, 1 / decoded.sample_rate)

    def band(f: float) -> float:
        return float(spectrum[(freqs > f * 0.97) & (freqs < f * 1.03)].max())

    floor = float(np.median(spectrum))
    assert band(98.0) > 20 * floor
    assert band(784.0) > 20 * floor


@pytest.mark.parametrize("sample_rate", [32000, 48000])
def test_sample_rate_and_flac(engine: RenderEngine, sample_rate: int) -> None:
    result = engine.run(melody_payload("piano", sample_rate=sample_rate, output="flac"), LocalContext())
    art = result.artifacts[0]
    assert art.name == "audio.flac" and art.content_type == "audio/flac"
    decoded = encode.decode(art.data)
    assert decoded.sample_rate == sample_rate
    assert analysis.rms_dbfs(decoded.audio) > -40


def test_engine_default_sample_rate() -> None:
    eng = RenderEngine(soundfont=default_soundfont(), sample_rate=32000)
    decoded, _ = run(eng, melody_payload("flute", ["A5"]))
    assert decoded.sample_rate == 32000
    assert eng.info()["sample_rate"] == 32000
    with pytest.raises(ValueError):
        RenderEngine(sample_rate=22050)


def test_missing_soundfont_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable):
        RenderEngine(soundfont=tmp_path / "nope.sf2")
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF0000sfbk" + b"\0" * 64)
    with pytest.raises(EngineUnavailable):
        RenderEngine(soundfont=bad)


def test_trailing_silence_is_trimmed(engine: RenderEngine) -> None:
    payload = {"notes": [{"pitch": "C6", "start": 0, "duration": 0.25}], "instrument": "xylophone"}
    decoded, _ = run(engine, {**payload, "tail_s": 10})
    # A xylophone note dies away long before the 10 s tail; the silent rest is cut.
    assert 0.125 <= decoded.duration_s < 5.0
    assert np.max(np.abs(decoded.audio[-10:])) < 1e-3  # faded, no click at the end


def test_same_input_same_bytes_even_after_other_renders(engine: RenderEngine) -> None:
    payload = melody_payload("trumpet")
    first = engine.run(payload, LocalContext()).artifacts[0].data
    engine.run(melody_payload("drums", [36, 38, 42, 49], tail_s=0), LocalContext())  # cut mid-ring
    engine.run(melody_payload("organ", tail_s=0), LocalContext())
    assert engine.run(payload, LocalContext()).artifacts[0].data == first
    assert RenderEngine().run(payload, LocalContext()).artifacts[0].data == first


def test_concurrent_runs_do_not_interfere(engine: RenderEngine) -> None:
    instruments = ["violin", "cello", "flute", "piano", "harp", "clarinet"]
    expected = {i: engine.run(melody_payload(i), LocalContext()).artifacts[0].data for i in instruments}
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            results[name] = engine.run(melody_payload(name), LocalContext()).artifacts[0].data
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in instruments]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert results == expected


def test_progress_and_cancel(engine: RenderEngine) -> None:
    ctx = Recorder()
    run(engine, melody_payload("violin"), ctx)
    fractions = [f for f, _ in ctx.progress_calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 5
    assert ctx.checks >= 5  # a check per 0.5 s block

    # A 5-minute note list: canceled after a few blocks instead of rendering to the end.
    long_notes = [{"pitch": 60 + (i % 12), "start": i, "duration": 1} for i in range(600)]
    cancel = Recorder(cancel_after=3)
    with pytest.raises(JobCanceled):
        engine.run({"notes": long_notes, "instrument": "piano", "tempo_bpm": 120}, cancel)
    assert cancel.checks == 4
    assert max(f for f, _ in cancel.progress_calls) < 0.05
    # The engine keeps serving after a canceled render.
    decoded, _ = run(engine, melody_payload("violin"))
    assert analysis.rms_dbfs(decoded.audio) > -30


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"notes": [{"pitch": "H9", "start": 0, "duration": 1}]}, "notes.0.pitch"),
        ({"notes": [{"pitch": 128, "start": 0, "duration": 1}]}, "notes.0.pitch"),
        ({"notes": [{"pitch": 60, "start": -1, "duration": 1}]}, "notes.0.start"),
        ({"notes": [{"pitch": 60, "start": 0, "duration": 0}]}, "notes.0.duration"),
        ({"notes": [{"pitch": 60, "start": 0, "duration": 1}], "instrument": "kazoo"}, "instrument"),
        ({"notes": [{"pitch": 60, "start": 0, "duration": 1}], "instrument": 200}, "instrument"),
        ({"notes": [{"pitch": 60, "start": 0, "duration": 1}], "sample_rate": 22050}, "sample_rate"),
        ({"midi_b64": "***not base64***"}, "midi_b64"),
        ({"midi_b64": base64.b64encode(b"MThd garbage that is not a midi file").decode()}, "midi_b64"),
        ({"notes": [{"pitch": 60, "start": 700, "duration": 1}], "tempo_bpm": 60}, "notes"),
    ],
)
def test_bad_input_names_the_field(engine: RenderEngine, payload: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        engine.run(payload, LocalContext())
    assert info.value.field == field
    assert info.value.message


def test_exactly_one_source() -> None:
    with pytest.raises(InvalidInput):
        RenderEngine.run(RenderEngine(), {}, LocalContext())
    both = {"notes": [{"pitch": 60, "start": 0, "duration": 1}], "midi_b64": "AAAA"}
    with pytest.raises(InvalidInput):
        RenderEngine().run(both, LocalContext())
    assert RenderEngine.input_model is RenderInput
    assert RenderEngine.name == "render"
