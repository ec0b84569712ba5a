"""The diffsinger engine on tiny voicebanks built by conftest.py: loading, phonemisation, tensor
plumbing through real onnxruntime sessions, audio output, bad input and bad voicebanks."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from diffsinger_fixtures import *  # noqa: F403 - the session fixtures (tiny voicebanks)
from pydantic import ValidationError

from harmonia.audio.encode import decode
from harmonia.engines.base import LocalContext
from harmonia.engines.diffsinger.engine import DiffsingerEngine
from harmonia.engines.diffsinger.input import SingingRequest, notes_to_score, parse_note
from harmonia.engines.diffsinger.phrases import layout_phrase, split_phrases
from harmonia.engines.diffsinger.pitch import midi_curve
from harmonia.errors import EngineUnavailable, InvalidInput

FRAME_S = 512 / 44100
MELODY = [
    {"lyric": "la", "note": "C4", "beats": 1},
    {"lyric": "ka", "note": "E4", "beats": 1},
    {"lyric": "-", "note": "G4", "beats": 1},
    {"lyric": "SP", "note": "rest", "beats": 1},
    {"lyric": "mi", "note": "D4", "beats": 2},
]


def sing(engine: DiffsingerEngine, **kw: Any) -> tuple[Any, dict[str, Any]]:
    progress: list[float] = []
    result = engine.run(SingingRequest(**kw), LocalContext(on_progress=lambda f, m: progress.append(f)))
    assert progress[-1] == 1.0 and progress == sorted(progress)
    (artifact,) = result.artifacts
    assert artifact.name == "vocals.wav" and artifact.content_type == "audio/wav"
    return decode(artifact.data), result.output


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


# ---------------------------------------------------------------------------------------- loading
def test_loads_openvpi_layout(basic_engine: DiffsingerEngine) -> None:
    info = basic_engine.info()
    assert info["sample_rate"] == 44100 and info["hop_size"] == 512
    assert info["phonemes"] == 15 and info["dictionary_entries"] == 8
    assert info["providers"] == ["CPUExecutionProvider"]
    assert not info["duration_model"] and not info["variance_model"]
    vb = basic_engine.voicebank
    assert vb.dictionary.lookup("KA") == ["k", "a"]  # case-insensitive fallback
    assert vb.dictionary.is_vowel("a") and not vb.dictionary.is_vowel("k")  # two-part .txt convention


def test_loads_openutau_layout(full_engine: DiffsingerEngine) -> None:
    info = full_engine.info()
    assert info["voicebank"] == "Tiny Test Singer"  # from character.yaml
    assert info["speakers"] == ["alto", "soprano"]
    assert info["duration_model"] and info["variance_model"]
    assert info["variances"] == ["energy", "breathiness"]
    assert full_engine.voicebank.dictionary.lookup("kan") == ["k", "a", "n"]
    assert not full_engine.voicebank.dictionary.is_vowel("n")  # typed by dsdict.yaml symbols


# ---------------------------------------------------------------------------------- phonemisation
def test_phonemes_are_timed_like_a_singer(basic_engine: DiffsingerEngine) -> None:
    vb = basic_engine.voicebank
    req = SingingRequest(notes=MELODY, tempo=120)
    score = notes_to_score(req, vb.dictionary, vb.phonemes)
    phrases = split_phrases(score)
    assert [[n.lyric for n in p] for p in phrases] == [["la", "ka", "-"], ["mi"]]
    phrase = layout_phrase(phrases[0], vb.dictionary)
    assert [p.symbol for p in phrase.phones] == ["SP", "l", "a", "k", "a", "SP"]
    by = {(p.symbol, i): p for i, p in enumerate(phrase.phones)}
    # vowels start on their notes, onset consonants just before them
    assert by[("a", 2)].start == pytest.approx(0.0) and by[("l", 1)].end == pytest.approx(0.0)
    assert by[("a", 4)].start == pytest.approx(0.5) and by[("k", 3)].end == pytest.approx(0.5)
    # the slur keeps the vowel going through G4; the tail SP follows the last note
    assert by[("a", 4)].end == pytest.approx(1.5) and phrase.end == pytest.approx(1.6)
    assert phrase.notes == [(0.0, 0.5, 60), (0.5, 1.0, 64), (1.0, 1.5, 67)]


def test_coda_consonants_and_explicit_phonemes(full_engine: DiffsingerEngine) -> None:
    vb = full_engine.voicebank
    req = SingingRequest(
        notes=[
            {"lyric": "kan", "note": "A3", "beats": 2},
            {"lyric": "whatever", "phonemes": ["s", "u"], "note": 62, "beats": 1},
        ]
    )
    (phrase_notes,) = split_phrases(notes_to_score(req, vb.dictionary, vb.phonemes))
    phrase = layout_phrase(phrase_notes, vb.dictionary)
    symbols = [p.symbol for p in phrase.phones]
    assert symbols == ["SP", "k", "a", "n", "s", "u", "SP"]
    n, s = phrase.phones[3], phrase.phones[4]
    assert n.end == pytest.approx(s.start) and s.end == pytest.approx(1.0)  # coda, then next onset


def test_note_names() -> None:
    assert parse_note("C4", "n") == 60 and parse_note("F#3", "n") == 54 and parse_note("Bb4", "n") == 70
    assert parse_note("A4", "n") == 69 and parse_note(72, "n") == 72 and parse_note("rest", "n") is None


def test_pitch_curve_glides_and_vibrato() -> None:
    times = np.arange(0, 2.0, FRAME_S)
    flat = midi_curve(
        [(0.0, 1.0, 60), (1.0, 2.0, 67)],
        times,
        transition_s=0.1,
        vibrato_depth_cents=0,
        vibrato_rate_hz=5,
        vibrato_delay_s=0.3,
    )
    glide = flat[(times > 0.93) & (times < 1.05)]
    assert np.all(np.diff(glide) >= 0) and 60 < glide[len(glide) // 2] < 67  # smooth, monotonic rise
    assert np.all(flat[times < 0.9] == 60) and np.all(flat[times > 1.1] == 67)
    vib = midi_curve(
        [(0.0, 2.0, 60)],
        times,
        transition_s=0.1,
        vibrato_depth_cents=50,
        vibrato_rate_hz=5,
        vibrato_delay_s=0.3,
    )
    assert np.all(vib[times < 0.3] == 60)  # delayed
    steady = vib[(times > 0.8) & (times < 1.8)]
    assert steady.max() == pytest.approx(60.5, abs=0.02) and steady.min() == pytest.approx(59.5, abs=0.02)


# ----------------------------------------------------------------------------------- audio output
def test_sings_notes_to_wav(basic_engine: DiffsingerEngine) -> None:
    audio, out = sing(basic_engine, notes=MELODY, tempo=120)
    assert audio.sample_rate == 44100 and audio.audio.shape[1] == 1
    # 6 beats at 120 bpm = 3 s, plus the first onset consonant and SP padding before, the tail after
    lead = out["time_offset_s"]
    assert lead == pytest.approx(0.1 + 0.07, abs=2 * FRAME_S)
    assert audio.duration_s == pytest.approx(lead + 3.0 + 0.1, abs=2 * FRAME_S)
    assert out["duration_s"] == pytest.approx(audio.duration_s, abs=1e-3)
    # sound where notes are, near silence in the rest between the phrases (1.6 s .. 1.83 s)
    x = audio.audio[:, 0]
    sr = audio.sample_rate

    def at(t0: float, t1: float) -> np.ndarray:
        return x[round((t0 + lead) * sr) : round((t1 + lead) * sr)]

    assert rms(at(0.1, 1.4)) > 0.02 and rms(at(2.1, 2.9)) > 0.02
    assert rms(at(1.65, 1.75)) < 1e-4
    # metadata: phonemes and frame durations of each phrase, f0 summary within the melody
    p1, p2 = out["phrases"]
    assert p1["phonemes"] == ["SP", "l", "a", "k", "a", "SP"] and p2["phonemes"] == ["SP", "m", "i", "SP"]
    assert sum(p1["durations_s"]) == pytest.approx(p1["frames"] * FRAME_S, abs=1e-3)
    assert 255 < out["f0"]["min_hz"] < 262 and 390 < out["f0"]["max_hz"] < 400
    # the vocoder's source follows f0: the G4 part is pitched at ~392 Hz
    seg = at(1.1, 1.4)
    seg = seg - seg.mean()  # the random post-filter has a bias: ignore DC
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    peak_hz = np.argmax(spectrum) * sr / len(seg)
    assert peak_hz == pytest.approx(392.0, rel=0.03)


def test_sampling_controls_reach_the_model(basic_engine: DiffsingerEngine) -> None:
    a, _ = sing(basic_engine, notes=MELODY[:2], steps=20)
    b, _ = sing(basic_engine, notes=MELODY[:2], steps=20)
    c, _ = sing(basic_engine, notes=MELODY[:2], steps=4)
    assert np.array_equal(a.audio, b.audio)  # deterministic
    assert not np.array_equal(a.audio, c.audio)  # speedup/depth are fed to the graph


def test_full_voicebank_uses_duration_variance_and_speakers(full_engine: DiffsingerEngine) -> None:
    alto, out = sing(full_engine, notes=MELODY, tempo=120)
    assert out["duration_model"] and out["variance_model"] and out["speaker"] == "alto"
    assert rms(alto.audio) > 0.02
    # the duration model moves consonant lengths away from the fixed 70 ms; vowels still start on notes
    first = out["phrases"][0]
    assert first["phonemes"] == ["SP", "l", "a", "k", "a", "SP"]
    assert first["durations_s"][3] != pytest.approx(0.07, abs=FRAME_S)
    soprano, _ = sing(full_engine, notes=MELODY, tempo=120, speaker="soprano")
    assert alto.audio.shape == soprano.audio.shape and not np.allclose(alto.audio, soprano.audio)
    low, _ = sing(full_engine, notes=MELODY, tempo=120, gender=-0.8)
    assert not np.allclose(alto.audio, low.audio)
    with pytest.raises(InvalidInput) as err:
        full_engine.run(SingingRequest(notes=MELODY, speaker="tenor"), LocalContext())
    assert err.value.field == "speaker"


def test_native_ds_segments(basic_engine: DiffsingerEngine) -> None:
    segment = {
        "offset": 0.5,
        "ph_seq": "SP l a SP",
        "ph_dur": "0.1 0.08 0.6 0.1",
        "note_seq": "rest C4 C4 rest",
        "note_dur": "0.1 0.08 0.6 0.1",
        "f0_seq": " ".join(["330.0"] * 90),
        "f0_timestep": "0.01",
    }
    audio, out = sing(basic_engine, ds=segment)
    (phrase,) = out["phrases"]
    assert phrase["phonemes"] == ["SP", "l", "a", "SP"] and phrase["start_s"] == 0.5
    for got, want in zip(phrase["durations_s"], [0.1, 0.08, 0.6, 0.1], strict=True):
        assert got == pytest.approx(want, abs=FRAME_S)
    assert out["f0"]["min_hz"] == pytest.approx(330.0, abs=0.1)  # f0_seq wins over the notes
    assert audio.duration_s == pytest.approx(0.5 + 0.88, abs=2 * FRAME_S)  # offset kept on the timeline


def _midi(notes: list[tuple[float, float, int]], lyrics: list[tuple[float, str]]) -> str:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=p, start=s, end=e) for s, e, p in notes]
    pm.instruments.append(inst)
    pm.lyrics = [pretty_midi.Lyric(text, t) for t, text in lyrics]
    buf = io.BytesIO()
    pm.write(buf)
    return base64.b64encode(buf.getvalue()).decode()


def test_midi_with_lyrics(basic_engine: DiffsingerEngine) -> None:
    midi = _midi([(0.0, 0.5, 62), (0.5, 1.0, 64), (1.0, 1.5, 65)], [(0.0, "sa"), (0.5, "na")])
    audio, out = sing(basic_engine, midi_base64=midi)
    (phrase,) = out["phrases"]  # the third note has no lyric: it continues "na" as a slur
    assert phrase["phonemes"] == ["SP", "s", "a", "n", "a", "SP"]
    assert audio.duration_s == pytest.approx(1.5 + 0.1 + 0.17, abs=2 * FRAME_S)
    overlapping = _midi([(0.0, 0.6, 62), (0.5, 1.0, 64)], [(0.0, "sa"), (0.5, "na")])
    with pytest.raises(InvalidInput, match=r"midi note 1 .*overlaps") as err:
        basic_engine.run(SingingRequest(midi_base64=overlapping), LocalContext())
    assert err.value.field == "midi_base64"
    unknown = _midi([(0.0, 0.5, 62)], [(0.0, "xyzzy")])
    with pytest.raises(InvalidInput, match=r"midi note 0: lyric 'xyzzy'") as err:
        basic_engine.run(SingingRequest(midi_base64=unknown), LocalContext())
    assert err.value.field == "midi_base64"


# -------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("notes", "field", "message"),
    [
        (
            [{"lyric": "la", "note": "C4", "beats": 1}, {"lyric": "xyzzy", "note": "D4", "beats": 1}],
            "notes[1].lyric",
            "'xyzzy' is not in the voicebank dictionary",
        ),
        ([{"lyric": "la", "phonemes": ["l", "qq"], "note": "C4", "beats": 1}], "notes[0].phonemes", "'qq'"),
        ([{"lyric": "la", "note": "C9", "beats": 1}], "notes[0].note", "out of the singing range"),
        ([{"lyric": "la", "note": 10, "beats": 1}], "notes[0].note", "out of the singing range"),
        ([{"lyric": "la", "note": "H4", "beats": 1}], "notes[0].note", "not a note name"),
        (
            [
                {"lyric": "la", "note": "C4", "beats": 2},
                {"lyric": "li", "note": "D4", "beats": 1, "start": 1},
            ],
            "notes[1].start",
            "must not overlap",
        ),
        (
            [{"lyric": "la", "note": "C4", "beats": 1}, {"lyric": "  ", "note": "D4", "beats": 1}],
            "notes[1].lyric",
            "lyric is empty",
        ),
        ([], "notes", "notes is empty"),
        ([{"lyric": "-", "note": "C4", "beats": 1}], "notes[0].lyric", "needs a sung note"),
        ([{"lyric": "SP", "note": "rest", "beats": 1}], "notes", "every note is a rest"),
    ],
)
def test_bad_notes_name_the_item(
    basic_engine: DiffsingerEngine, notes: list[Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        basic_engine.run(SingingRequest(notes=notes), LocalContext())
    assert err.value.field == field


def test_bad_ds_names_the_item(basic_engine: DiffsingerEngine) -> None:
    bad = {"ph_seq": "SP l zz SP", "ph_dur": "0.1 0.1 0.5 0.1", "note_seq": "C4", "note_dur": "0.8"}
    with pytest.raises(InvalidInput, match="'zz'") as err:
        basic_engine.run(SingingRequest(ds=[bad]), LocalContext())
    assert err.value.field == "ds[0].ph_seq"
    short = {"ph_seq": "SP l a SP", "ph_dur": "0.1 0.1 0.5", "note_seq": "C4", "note_dur": "0.8"}
    with pytest.raises(InvalidInput) as err:
        basic_engine.run(SingingRequest(ds=[short]), LocalContext())
    assert err.value.field == "ds[0].ph_dur"


def test_request_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        SingingRequest(notes=MELODY, ds=[{"ph_seq": "SP", "ph_dur": "0.1"}])
    with pytest.raises(ValidationError, match="exactly one"):
        SingingRequest()


# ------------------------------------------------------------------------------ broken voicebanks
def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "vb"))


def _edit_yaml(path: Path, **changes: Any) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


def _breakers() -> list[tuple[str, Any, str]]:
    return [
        ("missing dsconfig", lambda r: (r / "dsconfig.yaml").unlink(), "dsconfig.yaml: not found"),
        (
            "bad yaml",
            lambda r: (r / "dsconfig.yaml").write_text("acoustic: [unclosed"),
            "dsconfig.yaml: not valid YAML",
        ),
        (
            "no acoustic key",
            lambda r: _edit_yaml(r / "dsconfig.yaml", acoustic=None),
            "missing key 'acoustic'",
        ),
        ("missing onnx", lambda r: (r / "tiny.onnx").unlink(), "tiny.onnx: ONNX model not found"),
        (
            "corrupt onnx",
            lambda r: (r / "tiny.onnx").write_bytes(b"not a model"),
            "tiny.onnx: not a loadable ONNX",
        ),
        (
            "no phonemes",
            lambda r: (r / "tiny.phonemes.txt").unlink(),
            "tiny.phonemes.txt: phoneme inventory not found",
        ),
        ("no dictionary", lambda r: (r / "dictionary.txt").unlink(), "dsdict.yaml: no dictionary found"),
        ("bad dictionary", lambda r: (r / "dictionary.txt").write_text("la l a\n"), "dictionary.txt: line 1"),
        ("no vocoder", lambda r: shutil.rmtree(r / "dsvocoder"), "vocoder.yaml: not found"),
        (
            "vocoder mismatch",
            lambda r: _edit_yaml(r / "dsvocoder" / "vocoder.yaml", sample_rate=24000),
            "vocoder.yaml: sample_rate 24000 does not match",
        ),
        (
            "wrong tensor names",
            lambda r: shutil.copy(r / "dsvocoder" / "nsf_hifigan.onnx", r / "tiny.onnx"),
            "tiny.onnx: has no input 'tokens'",
        ),
    ]


@pytest.mark.parametrize(("case", "breaker", "message"), _breakers(), ids=[b[0] for b in _breakers()])
def test_broken_voicebank_names_the_file(
    basic_voicebank: Path, tmp_path: Path, case: str, breaker: Any, message: str
) -> None:
    root = _copy(basic_voicebank, tmp_path)
    breaker(root)
    with pytest.raises(EngineUnavailable, match=message) as err:
        DiffsingerEngine(root, device="cpu")
    text = str(err.value)
    assert "\n" not in text and str(root) in text


def test_missing_variance_model_is_reported(full_voicebank: Path, tmp_path: Path) -> None:
    root = _copy(full_voicebank, tmp_path)
    shutil.rmtree(root / "dsvariance")
    with pytest.raises(
        EngineUnavailable, match=r"dsvariance/dsconfig.yaml: the acoustic model needs \['energy'"
    ):
        DiffsingerEngine(root, device="cpu")


def test_missing_voicebank_folder(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="voicebank folder not found"):
        DiffsingerEngine(tmp_path / "nowhere", device="cpu")
