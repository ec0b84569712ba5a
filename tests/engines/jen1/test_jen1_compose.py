"""jen1's acceptance, measured on the audio: each example instruction, offline (rules planner,
SoundFont parts, the mixer), must come out the requested length, at a tempo an onset analysis
finds, with pitch content in the planned key, the instruments asked for audible, at -14 LUFS and
without clipping. Plus seeds, contradictions, stages and cancel."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pretty_midi
import pytest

from harmonia.audio import analysis, encode
from harmonia.audio.features import chroma, estimate_tempo, scale_fit, tempo_strengths
from harmonia.audio.loudness import integrated_lufs
from harmonia.engines.base import LocalContext
from harmonia.engines.jen1.engine import Jen1Engine
from harmonia.engines.render.engine import RenderEngine
from harmonia.errors import InvalidInput, JobCanceled
from harmonia.music.theory import parse_key
from helpers import RecordingContext

LOFI = "a 30 second lo-fi hip hop beat with piano and soft drums"
FOLK = "a sad folk song about the sea with a female voice"


class Recorder(RecordingContext):
    check_on_progress = True


class Piece:
    def __init__(self, engine: Jen1Engine, payload: dict[str, Any]) -> None:
        res = engine.run(payload, LocalContext())
        self.output = res.output
        self.files = {a.name: a for a in res.artifacts}
        self.order = [a.name for a in res.artifacts]
        fmt = payload.get("output", "wav")
        self.mix = encode.decode(self.files[f"mix.{fmt}"].data)
        self.audio, self.sr = self.mix.audio, self.mix.sample_rate
        self.plan = json.loads(self.files["plan.json"].data)
        self.score = json.loads(self.files["score.json"].data)

    def stem(self, role: str) -> np.ndarray:
        name = next(n for n in self.files if n.startswith("stem-") and f"-{role}." in n)
        return encode.decode(self.files[name].data).audio


@pytest.fixture(scope="module")
def jen1() -> Jen1Engine:
    return Jen1Engine(RenderEngine())


@pytest.fixture(scope="module")
def lofi(jen1: Jen1Engine) -> Piece:
    return Piece(jen1, {"instructions": LOFI, "stems": True})


@pytest.fixture(scope="module")
def folk(jen1: Jen1Engine) -> Piece:
    return Piece(jen1, {"instructions": FOLK, "stems": True})


@pytest.fixture(scope="module")
def violin(jen1: Jen1Engine) -> Piece:
    return Piece(jen1, {"instructions": "render violin"})


def assert_mastered(p: Piece, target: float = -14.0) -> None:
    assert abs(integrated_lufs(p.audio, p.sr) - target) <= 1.0
    peak = float(np.max(np.abs(p.audio)))
    assert peak <= 10 ** (-0.9 / 20), "the limiter holds the peak at -1 dBFS"
    assert np.count_nonzero(np.abs(p.audio) >= 0.999) == 0, "no clipped samples"


def assert_tempo(p: Piece, bpm: float) -> None:
    found = estimate_tempo(p.audio, p.sr)
    assert min(abs(found - bpm * k) / (bpm * k) for k in (0.5, 1, 2)) <= 0.04, (found, bpm)
    # and the requested tempo stands out against tempos a little off it
    near = tempo_strengths(p.audio, p.sr, np.array([bpm, bpm * 0.93, bpm * 1.07]))
    assert near[0] > max(near[1], near[2]), near


def assert_in_key(p: Piece, key_name: str) -> None:
    key = parse_key(key_name)
    pcs = key.pitch_classes | ({(key.tonic_pc + 11) % 12} if key.mode == "minor" else set())
    profile = chroma(p.audio, p.sr)
    assert scale_fit(profile, pcs) >= 0.8, np.round(profile, 3)
    # no other transposition of the same scale fits as well
    steps = {(pc - key.tonic_pc) % 12 for pc in pcs}
    fits = {t: scale_fit(profile, {(t + s) % 12 for s in steps}) for t in range(12)}
    assert max(fits, key=fits.get) == key.tonic_pc, fits  # type: ignore[arg-type]


def high_band_ratio(audio: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(analysis.to_mono(audio))) ** 2
    freqs = np.fft.rfftfreq(analysis.to_mono(audio).size, 1 / sr)
    return float(spec[freqs > 6000].sum() / spec.sum())


def flatness(audio: np.ndarray) -> float:
    mono = analysis.to_mono(audio)
    frames = mono[: mono.size // 2048 * 2048].reshape(-1, 2048)
    loud = frames[np.sqrt((frames**2).mean(axis=1)) > 1e-3]
    mag = np.abs(np.fft.rfft(loud * np.hanning(2048), axis=1))[:, 1:] + 1e-12
    return float(np.median(np.exp(np.log(mag).mean(axis=1)) / mag.mean(axis=1)))


# --- the examples ------------------------------------------------------------------------------


def test_render_violin_example(violin: Piece) -> None:
    assert violin.order[0] == "mix.wav" and violin.files["audio.wav"].data == violin.files["mix.wav"].data
    assert {"mix.wav", "audio.wav", "plan.json", "score.json", "arrangement.mid"} == set(violin.files)
    assert violin.plan["planner"] == "rules" and [i["name"] for i in violin.plan["instruments"]] == ["violin"]
    assert violin.mix.duration_s == pytest.approx(violin.plan["duration_s"], rel=0.05)
    assert_mastered(violin)
    hz = analysis.median_f0(violin.audio, violin.sr)
    assert hz is not None and 196 <= hz <= 3520  # the violin's compass
    assert_in_key(violin, violin.plan["key"])


def test_lofi_beat_example(lofi: Piece) -> None:
    plan = lofi.plan
    assert plan["genre"] == "lo-fi hip hop" and plan["duration_s"] == 30
    assert 60 <= plan["tempo_bpm"] <= 95
    roles = {(c["name"], c["role"]) for c in plan["catalog"]}
    assert {("piano", "melody"), ("drums", "drums"), ("bass", "bass")} <= roles
    assert any("added bass" in n for n in plan["notes"])  # the addition is stated
    assert lofi.mix.duration_s == pytest.approx(30.0, rel=0.05)
    assert_mastered(lofi)
    assert_tempo(lofi, plan["tempo_bpm"])
    assert_in_key(lofi, plan["key"])
    # drums present and audible: a broadband stem, whose hits land on the beat grid
    drums, piano = lofi.stem("drums"), lofi.stem("accompaniment")
    assert flatness(drums) > 4 * flatness(piano)
    assert analysis.rms_dbfs(drums) > -40
    grid = np.arange(0, 30, 60 / plan["tempo_bpm"] / 4)  # sixteenths
    for audio, share in ((drums, 0.95), (lofi.audio, 0.9)):
        onsets = analysis.onset_times(audio, lofi.sr)
        on_grid = [np.min(np.abs(grid - t)) < 0.035 for t in onsets if t < 28]
        assert len(on_grid) > 30 and np.mean(on_grid) > share
    # soft drums: the groove sits under the lead in the mix
    assert lofi.output["stem_gains_db"] and analysis.rms_dbfs(drums) < analysis.rms_dbfs(lofi.audio)


def test_folk_song_example(folk: Piece) -> None:
    plan = folk.plan
    assert plan["genre"] == "folk" and plan["mood"] == "sad" and plan["key"].endswith("minor")
    assert plan["sections"][0]["name"] == "intro" and plan["sections"][-1]["name"] == "outro"
    assert ("female voice", "vocals") in {(c["name"], c["role"]) for c in plan["catalog"]}
    assert any("no singing engine" in n for n in plan["notes"])  # offline: an instrument sings
    assert folk.mix.duration_s == pytest.approx(30.0, rel=0.05)
    assert_mastered(folk)
    assert_tempo(folk, plan["tempo_bpm"])
    assert_in_key(folk, plan["key"])
    # no drums asked: none written, none heard; the lead sits in a female singer's range
    assert not any(n["instrument"] == "drums" for n in folk.score["notes"])
    assert high_band_ratio(folk.audio, folk.sr) < 0.01
    voice = folk.stem("melody")
    hz = analysis.median_f0(voice, folk.sr)
    assert hz is not None and 220 <= hz <= 700


def test_drums_make_the_difference(lofi: Piece, folk: Piece) -> None:
    assert high_band_ratio(lofi.audio, lofi.sr) > 3 * high_band_ratio(folk.audio, folk.sr)


def test_arrangement_midi_matches_the_plan(lofi: Piece) -> None:
    midi = pretty_midi.PrettyMIDI(io.BytesIO(lofi.files["arrangement.mid"].data))
    assert midi.get_tempo_changes()[1][0] == pytest.approx(lofi.plan["tempo_bpm"], abs=0.01)
    assert any(i.is_drum for i in midi.instruments)
    assert {i.program for i in midi.instruments if not i.is_drum} == {0, 33}
    bars = sum(s["bars"] for s in lofi.plan["sections"])
    assert lofi.score["bars"] == bars
    # every plan chord is played (a closing bar may hold two: V I)
    assert len(lofi.score["chords"]) == sum(
        len(s["chords"]) if len(s["chords"]) > s["bars"] else s["bars"] for s in lofi.plan["sections"]
    )


# --- seeds, overrides, contradictions --------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_music(jen1: Jen1Engine) -> None:
    payload = {"instructions": "lo-fi beat with piano", "duration_s": 8, "seed": 11}
    a = jen1.run(payload, LocalContext())
    b = jen1.run(payload, LocalContext())
    c = jen1.run({**payload, "seed": 12}, LocalContext())
    assert [x.data for x in a.artifacts] == [x.data for x in b.artifacts]
    notes = lambda r: [(n["pitch"], n["start_s"]) for n in json.loads(r.artifacts[3].data)["notes"]]  # noqa: E731
    assert notes(a) != notes(c)
    assert a.artifacts[0].data != c.artifacts[0].data


def test_fields_override_the_text(jen1: Jen1Engine) -> None:
    p = Piece(
        jen1,
        {"instructions": LOFI, "duration_s": 12, "tempo_bpm": 96, "key": "E minor", "genre": "jazz",
         "mood": "happy", "output": "flac", "loudness_lufs": -18},
    )  # fmt: skip
    assert p.plan["tempo_bpm"] == 96 and p.plan["key"] == "E minor" and p.plan["genre"] == "jazz"
    assert p.plan["sources"]["mood"] == "field 'mood'" and p.plan["groove"] == "swing"
    assert p.mix.duration_s == pytest.approx(12, rel=0.05)
    assert_mastered(p, -18.0)
    assert_tempo(p, 96)


def test_sections_and_lyrics_fields(jen1: Jen1Engine) -> None:
    p = Piece(
        jen1,
        {"instructions": "a folk song", "tempo_bpm": 100, "sections": ["intro", {"name": "verse", "bars": 4},
         {"name": "chorus", "bars": 2, "chords": ["C", "G"]}], "lyrics": "the sea is wide\nand I am small"},
    )  # fmt: skip
    sections = p.plan["sections"]
    assert [s["name"] for s in sections] == ["intro", "verse", "chorus"]
    assert sections[1]["bars"] == 4 and sections[2]["chords"] == ["C", "G"]
    assert any(s["lyrics"] for s in sections) and not sections[0]["lyrics"]
    assert any(c["role"] == "vocals" for c in p.plan["catalog"])


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (
            {"instructions": LOFI, "duration_s": 10, "sections": [{"name": "verse", "bars": 40}]},
            "sections",
            "bars",
        ),
        ({"instructions": "a 2 hour lo-fi beat"}, "instructions", "out of range"),
        (
            {"instructions": "folk song", "duration_s": 2, "sections": ["a", "b", "c", "d"]},
            "sections",
            "too few",
        ),
        ({"instructions": "lo-fi", "engine": "magic"}, "engine", ""),
        (
            {"instructions": "lo-fi", "sections": [{"name": "verse", "chords": ["IV"]}]},
            "sections.0.chords",
            "",
        ),
        ({"instructions": "lo-fi", "lyrics": "   "}, "lyrics", "blank"),
        ({"instructions": "lo-fi", "loudness_lufs": 0}, "loudness_lufs", ""),
    ],
)
def test_contradictions_are_422(jen1: Jen1Engine, payload: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        jen1.run(payload, LocalContext())
    assert info.value.field == field
    assert words in info.value.message


def test_nonsense_is_a_stated_best_effort(jen1: Jen1Engine) -> None:
    res = jen1.run({"instructions": "zxqv blorp wibble", "duration_s": 3}, LocalContext())
    plan = json.loads(res.artifacts[2].data)
    assert any("no musical terms" in n for n in plan["notes"])
    assert plan["sources"]["instruments"].startswith("default")
    assert analysis.rms_dbfs(encode.decode(res.artifacts[0].data).audio) > -30
    # contradictory words: the first wins and the plan says which
    res = jen1.run({"instructions": "a fast slow waltz", "duration_s": 3}, LocalContext())
    plan = json.loads(res.artifacts[2].data)
    assert plan["sources"]["tempo_bpm"] == "word 'fast'" and plan["time_signature"] == "3/4"


# --- stages and cancel -------------------------------------------------------------------------------


def test_stages_are_reported_in_order(jen1: Jen1Engine) -> None:
    ctx = Recorder()
    jen1.run({"instructions": "lo-fi beat with piano", "duration_s": 6}, ctx)
    fractions = [f for f, _ in ctx.progress_calls]
    messages = list(dict.fromkeys(m for _, m in ctx.progress_calls))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert messages[:2] == ["plan", "arrange"] and messages[-3:] == ["mix", "encode", "done"]
    parts = [m for m in messages if m.startswith("part ")]
    assert len(parts) == 4 and parts[0].startswith("part 1/4: piano (melody)")
    stages = [d["stage"] for k, d in ctx.events if k == "stage"]
    assert stages == ["plan", "arrange", "part", "part", "part", "part", "mix"]


def test_cancel_inside_a_long_part(jen1: Jen1Engine) -> None:
    ctx = Recorder(cancel_after=12)
    with pytest.raises(JobCanceled):
        jen1.run({"instructions": "lo-fi beat with piano", "duration_s": 240}, ctx)
    assert any(m.startswith("part 1/") for _, m in ctx.progress_calls)
    assert max(f for f, _ in ctx.progress_calls) < 0.3


def test_cancel_between_stages(jen1: Jen1Engine) -> None:
    ctx = Recorder(cancel_after=0)
    with pytest.raises(JobCanceled):
        jen1.run({"instructions": "render violin"}, ctx)
    assert [m for _, m in ctx.progress_calls] == ["plan"]


def test_output_reports_measurements(lofi: Piece) -> None:
    out = lofi.output
    assert out["loudness_lufs"] == pytest.approx(integrated_lufs(lofi.audio, lofi.sr), abs=0.05)
    assert out["peak_dbfs"] <= -0.99 and math.isfinite(out["limiter_reduction_db"])
    assert {p["role"] for p in out["parts"]} == {"melody", "accompaniment", "bass", "drums"}
