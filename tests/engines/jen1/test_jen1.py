"""The `jen1` engine end to end (interpret -> compose -> render -> encode), measured on its audio,
plus the interpreter and composer on their own."""

from __future__ import annotations

import difflib
import io
import json
from typing import Any

import numpy as np
import pretty_midi
import pytest

from harmonia.audio import analysis, encode
from harmonia.engines.base import LocalContext
from harmonia.engines.jen1.composer import compose
from harmonia.engines.jen1.engine import Jen1Engine, Jen1Input
from harmonia.engines.jen1.interpret import interpret, parse_duration
from harmonia.engines.render.engine import RenderEngine
from harmonia.errors import InvalidInput, JobCanceled
from harmonia.music.instruments import find_instrument
from harmonia.music.theory import parse_key
from helpers import RecordingContext as Recorder


@pytest.fixture(scope="module")
def jen1() -> Jen1Engine:
    return Jen1Engine(RenderEngine())


class Result:
    def __init__(self, engine: Jen1Engine, payload: dict[str, Any], ctx: Any = None) -> None:
        res = engine.run(payload, ctx or LocalContext())
        self.output = res.output
        self.files = {a.name: a for a in res.artifacts}
        audio_name = next(n for n in self.files if n.startswith("audio."))
        self.audio = encode.decode(self.files[audio_name].data)
        self.score = json.loads(self.files["score.json"].data)
        self.melody = [n for n in self.score["notes"] if n["role"] == "melody"]

    def weighted_median_pitch(self) -> float:
        pitches = np.array([n["pitch"] for n in self.melody], dtype=float)
        weights = np.array([n["end_s"] - n["start_s"] for n in self.melody])
        order = np.argsort(pitches)
        cumulative = np.cumsum(weights[order])
        return float(pitches[order][np.searchsorted(cumulative, cumulative[-1] / 2)])

    def audio_median_midi(self) -> float:
        hz = analysis.median_f0(self.audio.audio, self.audio.sample_rate)
        assert hz is not None, "no pitch found in the audio"
        return float(analysis.hz_to_midi(hz))


def test_render_violin(jen1: Jen1Engine) -> None:
    r = Result(jen1, {"instructions": "render violin"})
    violin = find_instrument("violin")
    assert violin is not None
    assert [i["name"] for i in r.score["instruments"]] == ["violin"]
    assert r.score["program"] == 40
    assert set(r.files) == {"mix.wav", "audio.wav", "plan.json", "score.json", "arrangement.mid"}
    # Audible, the promised length, and a violin's pitches.
    assert analysis.rms_dbfs(r.audio.audio) > -30
    assert r.audio.duration_s == pytest.approx(r.score["duration_s"], abs=0.01)
    assert all(violin.low <= n["pitch"] <= violin.high for n in r.melody)
    median = r.audio_median_midi()
    assert violin.low - 1 <= median <= violin.high + 1
    assert median == pytest.approx(r.weighted_median_pitch(), abs=1.5)
    # The audio plays the composed melody: its pitch sequence matches the score's.
    played = [s.midi for s in analysis.pitch_segments(analysis.f0_track(r.audio.audio, r.audio.sample_rate))]
    written = [n["pitch"] for n in r.melody]
    written = [p for i, p in enumerate(written) if i == 0 or p != written[i - 1]]
    assert difflib.SequenceMatcher(a=written, b=played).ratio() > 0.8


def test_cello_sounds_lower_than_flute(jen1: Jen1Engine) -> None:
    cello = Result(jen1, {"instructions": "render cello", "duration_s": 6})
    flute = Result(jen1, {"instructions": "render flute", "duration_s": 6})
    assert cello.audio_median_midi() < flute.audio_median_midi() - 7
    assert max(n["pitch"] for n in cello.melody) < min(n["pitch"] for n in flute.melody)


def test_slow_piano_in_d_minor_20_seconds(jen1: Jen1Engine) -> None:
    r = Result(jen1, {"instructions": "render a slow piano piece in D minor, 20 seconds"})
    s = r.score
    assert s["key"] == "D minor"
    assert s["duration_s"] == 20
    assert s["tempo_bpm"] <= 80
    assert r.audio.duration_s == pytest.approx(20.0, abs=0.01)
    assert {p["name"] for p in s["instruments"]} == {"piano"}
    assert set(s["instruments"][0]["roles"]) == {"melody", "accompaniment"}
    d_minor = {2, 4, 5, 7, 9, 10, 0, 1}  # natural minor plus the raised leading tone C#
    assert {n["pitch"] % 12 for n in s["notes"]} <= d_minor
    assert s["notes"][-1]["end_s"] <= 20.0
    assert analysis.rms_dbfs(r.audio.audio) > -35
    # Bars at the chosen tempo fill the duration (less at most one bar and the release).
    bar_s = 4 * 60 / s["tempo_bpm"]
    assert 20 - 0.5 * bar_s - 1.0 <= s["bars"] * bar_s <= 20 + 0.5 * bar_s


def test_fast_happy_duet(jen1: Jen1Engine) -> None:
    r = Result(jen1, {"instructions": "fast happy flute and cello duet at 140 bpm"})
    s = r.score
    assert s["tempo_bpm"] == 140
    assert s["key"].endswith("major")
    roles = {p["name"]: p["roles"] for p in s["instruments"]}
    assert roles == {"flute": ["melody"], "cello": ["bass"]}
    flute, cello = find_instrument("flute"), find_instrument("cello")
    assert flute is not None and cello is not None
    for note in s["notes"]:
        spec = flute if note["instrument"] == "flute" else cello
        assert spec.low <= note["pitch"] <= spec.high
    midi = pretty_midi.PrettyMIDI(io.BytesIO(r.files["arrangement.mid"].data))
    assert midi.get_tempo_changes()[1][0] == pytest.approx(140, abs=0.01)
    assert sorted(i.program for i in midi.instruments) == [42, 73]
    assert sum(len(i.notes) for i in midi.instruments) == len(s["notes"])


def test_fast_is_busier_than_slow(jen1: Jen1Engine) -> None:
    # A struck instrument: its onsets are unambiguous to the onset detector.
    fast = Result(jen1, {"instructions": "fast cheerful xylophone", "duration_s": 8, "seed": 3})
    slow = Result(jen1, {"instructions": "slow sad xylophone", "duration_s": 8, "seed": 3})
    assert fast.score["tempo_bpm"] > slow.score["tempo_bpm"] + 40
    assert len(fast.melody) > len(slow.melody)
    fast_density = analysis.note_density(fast.audio.audio, fast.audio.sample_rate)
    slow_density = analysis.note_density(slow.audio.audio, slow.audio.sample_rate)
    assert fast_density > slow_density


def test_overrides_win(jen1: Jen1Engine) -> None:
    payload = {
        "instructions": "a slow violin piece in D minor for 20 seconds",
        "duration_s": 5,
        "tempo_bpm": 150,
        "key": "F# major",
        "instruments": ["oboe"],
        "output": "flac",
    }
    r = Result(jen1, payload)
    assert "audio.flac" in r.files and r.files["audio.flac"].content_type == "audio/flac"
    assert r.score["key"] == "F# major" and r.score["tempo_bpm"] == 150 and r.score["duration_s"] == 5
    assert [i["name"] for i in r.score["instruments"]] == ["oboe"]
    assert r.audio.duration_s == pytest.approx(5.0, abs=0.01)
    assert {n["pitch"] % 12 for n in r.melody} <= {6, 8, 10, 11, 1, 3, 5}


def test_seeds(jen1: Jen1Engine) -> None:
    a = jen1.run({"instructions": "render violin", "seed": 7}, LocalContext())
    b = jen1.run({"instructions": "render violin", "seed": 7}, LocalContext())
    c = jen1.run({"instructions": "render violin", "seed": 8}, LocalContext())
    assert [x.data for x in a.artifacts] == [x.data for x in b.artifacts]
    score = lambda res: next(a for a in res.artifacts if a.name == "score.json")  # noqa: E731
    notes = lambda res: [(n["pitch"], n["start_s"]) for n in json.loads(score(res).data)["notes"]]  # noqa: E731
    assert notes(a) != notes(c)
    assert a.artifacts[0].data != c.artifacts[0].data
    # No seed: one is derived from the text, reported, and reproduces the same piece.
    d = jen1.run({"instructions": "render violin"}, LocalContext())
    e = jen1.run({"instructions": "  Render   VIOLIN "}, LocalContext())
    assert isinstance(d.output["seed"], int)
    assert d.output["seed"] == e.output["seed"]
    assert d.artifacts[0].data == e.artifacts[0].data
    f = jen1.run({"instructions": "render violin", "seed": d.output["seed"]}, LocalContext())
    assert f.artifacts[0].data == d.artifacts[0].data


@pytest.mark.parametrize("seed", range(12))
def test_melody_is_music_not_a_scale(seed: int) -> None:
    for text in ("render violin", "a sad waltz for cello", "happy trumpet tune in 6/8"):
        interp = interpret(text, seed=seed)
        score = compose(interp)
        melody = score.part("melody")
        assert melody is not None
        pitches = [n.pitch for n in melody.notes]
        durations = {round(n.end_s - n.start_s, 3) for n in melody.notes[:-1]}
        intervals = np.diff(pitches)
        assert len(pitches) >= 6
        assert len({abs(int(i)) for i in intervals}) >= 3, "intervals vary"
        assert (intervals > 0).any() and (intervals < 0).any(), "the line goes up and down"
        assert len(durations) >= 2, "the rhythm varies"
        assert np.abs(intervals).max() <= 12, "no leap wider than an octave"
        assert pitches[-1] % 12 == score.key.tonic_pc, "ends on the tonic"
        assert score.bars[-1].chord.roman in ("I", "i") and score.bars[-2].chord.roman == "V"
        spec = interp.instruments[0]
        assert all(spec.low <= p <= spec.high for p in pitches)
        # Strong beats carry chord tones.
        beat_s = 60 / score.tempo_bpm
        for note in melody.notes:
            beat = note.start_s / beat_s
            bar = next(b for b in reversed(score.bars) if b.start <= beat + 1e-6)
            if abs(beat - bar.start) < 1e-6:
                pcs = {
                    score.key.midi(d, score.key.tonic_pc, raise_seventh=True) % 12 for d in bar.chord.degrees
                }
                pcs |= {score.key.midi(d, score.key.tonic_pc) % 12 for d in bar.chord.degrees}
                assert note.pitch % 12 in pcs


def test_waltz_and_duration_words() -> None:
    interp = interpret("a gentle waltz for harp, one minute and a half")
    assert interp.time_signature == (3, 4)
    assert interp.duration_s == 90
    assert interp.mood == "calm"
    score = compose(interp)
    assert score.part("accompaniment") is not None
    assert max(n.end_s for p in score.parts for n in p.notes) <= 90


def test_interpreter_reads_instructions() -> None:
    i = interpret("fast happy flute and cello duet at 140 bpm")
    assert [s.name for s in i.instruments] == ["flute", "cello"] and i.tempo_bpm == 140
    assert i.sources["tempo_bpm"] == "text '140 bpm'"
    assert interpret("string quartet").instruments[2].name == "viola"
    assert [s.name for s in interpret("piano without drums").instruments] == ["piano"]
    assert [s.name for s in interpret("something nice").instruments] == ["piano"]
    assert interpret("in Bb, gently").key == parse_key("Bb major")
    assert interpret("a sad song").key.mode == "minor"
    assert interpret("e flat minor nocturne").key == parse_key("Eb minor")
    assert parse_duration("1 minute 30 seconds") == (90, "1 minute 30 seconds")
    assert parse_duration("half a minute")[0] == 30  # type: ignore[index]
    assert parse_duration("20-second clip")[0] == 20  # type: ignore[index]
    assert parse_duration("80s pop") is None


def test_progress_stages(jen1: Jen1Engine) -> None:
    ctx = Recorder()
    jen1.run({"instructions": "render violin", "duration_s": 4}, ctx)
    fractions = [f for f, _ in ctx.progress_calls]
    assert fractions == sorted(fractions)
    assert (0.05, "plan") in ctx.progress_calls and (0.1, "arrange") in ctx.progress_calls
    assert ctx.progress_calls[-1] == (1.0, "done")
    rendering = [f for f, m in ctx.progress_calls if m == "part 1/1: violin (melody)"]
    assert len(rendering) > 2 and 0.1 <= min(rendering) and max(rendering) <= 0.85


def test_cancel_stops_the_render(jen1: Jen1Engine) -> None:
    ctx = Recorder(cancel_after=2)
    with pytest.raises(JobCanceled):
        jen1.run({"instructions": "render organ, 5 minutes"}, ctx)
    assert max(f for f, _ in ctx.progress_calls) < 0.2


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"instructions": "   "}, "instructions", "blank"),
        ({"instructions": ""}, "instructions", ""),
        ({"instructions": "x" * 2001}, "instructions", ""),
        ({"instructions": "render violin for 2 hours"}, "instructions", "out of range"),
        ({"instructions": "render violin for 0.5 seconds"}, "instructions", "out of range"),
        ({"instructions": "violin at 500 bpm"}, "instructions", "out of range"),
        ({"instructions": "render violin", "duration_s": 301}, "duration_s", ""),
        ({"instructions": "render violin", "tempo_bpm": 10}, "tempo_bpm", ""),
        ({"instructions": "render violin", "instruments": ["kazoo"]}, "instruments", "violin"),
        ({"instructions": "render violin", "instruments": []}, "instruments", ""),
        ({"instructions": "render violin", "key": "H major"}, "key", "key"),
        ({"instructions": "render violin", "output": "mp3"}, "output", ""),
        ({"instructions": "render violin", "seed": -1}, "seed", ""),
        ({"instructions": "render violin", "lyrics": ""}, "lyrics", "blank"),
        ({"instructions": "render violin", "stems": "many"}, "stems", ""),
    ],
)
def test_bad_input(jen1: Jen1Engine, payload: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        jen1.run(payload, LocalContext())
    assert info.value.field == field
    assert words in info.value.message


def test_engine_surface(jen1: Jen1Engine) -> None:
    assert Jen1Engine.name == "jen1" and Jen1Engine.input_model is Jen1Input
    info = jen1.info()
    assert info["renderer"]["engine"] == "render" and "violin" in info["instruments"]
    # An already validated model is accepted as well as a dict.
    res = jen1.run(Jen1Input(instructions="render harp", duration_s=2), LocalContext())
    assert encode.decode(res.artifacts[0].data).duration_s == pytest.approx(2.0, abs=0.01)
