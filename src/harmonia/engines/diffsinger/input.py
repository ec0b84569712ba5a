"""What a singing request looks like, and how lyrics + notes or a MIDI file become a score.

Three inputs are accepted (exactly one per request):
- `notes` + `tempo`: what people write, `[{"lyric": "la", "note": "C4", "beats": 1}, ...]`;
- `midi_base64`: a standard MIDI file whose lyric meta events are sung on its melody notes;
- `ds`: native openvpi `.ds` segments (ph_seq, ph_dur, note_seq, note_dur, f0_seq, ...), which
  `singing_plan` turns into phrases directly.

A score is a time-ordered list of `ScoreNote`s (seconds, MIDI pitch, phonemes from the voicebank
dictionary). Every problem with the request is an `InvalidInput` naming the item, e.g.
`notes[3].lyric`; the caller answers 422 with it.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harmonia.engines.base import Word
from harmonia.engines.diffsinger.dictionary import PhonemeDictionary
from harmonia.errors import InvalidInput

LOWEST_NOTE = 24  # C1: below any singing voice a voicebank is trained on
HIGHEST_NOTE = 96  # C7
MAX_DURATION_S = 600.0
MAX_SEQ = 20_000  # phonemes/notes per .ds segment
MAX_F0 = 200_000  # f0 points per segment (10 min at 5.8 ms steps)
SLUR_LYRICS = frozenset({"-", "+", "~", "+~", "+*"})
REST_LYRICS = frozenset({"SP", "R", "rest", "r"})
BREATH_LYRIC = "AP"
_NOTE_RE = re.compile(r"^([A-Ga-g])([#♯b♭]?)(-?\d)$")
_PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


class NoteEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lyric: str = Field(
        max_length=64,
        description="a word/syllable from the voicebank dictionary, '-' to slur, 'SP' rest, 'AP' breath",
    )
    note: Word | int = Field(description="note name such as 'C4', 'F#3', 'Bb4', a MIDI number, or 'rest'")
    beats: float = Field(gt=0, le=64, description="length in beats at `tempo`")
    start: float | None = Field(
        None, ge=0, description="start in beats; default: right after the previous note"
    )
    phonemes: list[Word] | None = Field(
        None, max_length=32, description="explicit phonemes, overriding the dictionary"
    )


class Vibrato(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth_cents: float = Field(30.0, ge=0, le=200)
    rate_hz: float = Field(5.5, gt=0, le=12)
    delay_s: float = Field(0.25, ge=0, le=5, description="notes shorter than this get no vibrato")


def _split_seq(value: Any) -> Any:
    return value.split() if isinstance(value, str) else value


class DsSegment(BaseModel):
    """One segment of an openvpi `.ds` file (sequences may be space-separated strings or lists)."""

    model_config = ConfigDict(extra="ignore")

    offset: float = Field(0.0, ge=0)
    ph_seq: list[Word] = Field(max_length=MAX_SEQ)
    ph_dur: list[float] = Field(max_length=MAX_SEQ)
    note_seq: list[Word] | None = Field(None, max_length=MAX_SEQ)
    note_dur: list[float] | None = Field(None, max_length=MAX_SEQ)
    f0_seq: list[float] | None = Field(None, max_length=MAX_F0)
    f0_timestep: float | None = Field(None, gt=0)

    _split = field_validator("ph_seq", "ph_dur", "note_seq", "note_dur", "f0_seq", mode="before")(
        lambda cls, v: _split_seq(v)
    )


class SingingRequest(BaseModel):
    """Input of the `diffsinger` engine."""

    model_config = ConfigDict(extra="forbid")

    notes: list[NoteEvent] | None = Field(None, max_length=4000)
    tempo: float = Field(120.0, gt=10, le=400, description="beats per minute for `notes`")
    midi_base64: str | None = Field(None, max_length=8_000_000, description="a .mid file with lyric events")
    ds: list[DsSegment] | None = Field(None, max_length=2000, description="native .ds segments")
    speaker: Word | None = Field(None, description="speaker of a multi-speaker voicebank; default: the first")
    steps: int = Field(20, ge=1, le=1000, description="diffusion sampling steps")
    depth: float = Field(1.0, gt=0, le=1, description="shallow-diffusion depth (fraction)")
    gender: float = Field(
        0.0, ge=-1, le=1, description="formant shift: -1 lower .. 1 higher (key-shift embed)"
    )
    velocity: float = Field(1.0, ge=0.25, le=4, description="consonant speed (speed embed)")
    vibrato: Vibrato = Field(default_factory=lambda: Vibrato.model_validate({}))
    transition_s: float = Field(0.08, ge=0, le=0.5, description="length of pitch glides between notes")

    @field_validator("ds", mode="before")
    @classmethod
    def _one_segment(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _one_source(self) -> SingingRequest:
        given = [n for n in ("notes", "midi_base64", "ds") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of notes, midi_base64, ds (got {given or 'none'})")
        return self


@dataclass
class ScoreNote:
    """A note of the score. `midi is None` is a rest; a slur note has no phonemes of its own."""

    item: str  # where it came from, for error messages: "notes[3]", "midi note 7"
    start: float
    end: float
    midi: int | None
    lyric: str
    phonemes: list[str] = field(default_factory=list)
    slur: bool = False

    @property
    def is_rest(self) -> bool:
        return self.midi is None and not self.phonemes


def parse_note(value: str | int, item: str) -> int | None:
    """'C4' -> 60, 'F#3' -> 54, 'Bb4' -> 70, 62 -> 62, 'rest' -> None; out of C1..C7 is invalid."""
    if isinstance(value, str) and value.strip() in REST_LYRICS:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        midi = value
    else:
        match = _NOTE_RE.match(str(value).strip())
        if not match:
            raise InvalidInput(
                f"{item}: {value!r} is not a note name like C4, F#3 or Bb4", field=f"{item}.note"
            )
        letter, accidental, octave = match.groups()
        midi = (int(octave) + 1) * 12 + _PITCH_CLASS[letter.upper()]
        midi += 1 if accidental in ("#", "♯") else -1 if accidental in ("b", "♭") else 0
    if not LOWEST_NOTE <= midi <= HIGHEST_NOTE:
        raise InvalidInput(
            f"{item}: note {value!r} (MIDI {midi}) is out of the singing range C1..C7", field=f"{item}.note"
        )
    return midi


def resolve_lyric(
    lyric: str,
    override: list[str] | None,
    dictionary: PhonemeDictionary,
    inventory: dict[str, int],
    item: str,
) -> list[str]:
    """Phonemes for one lyric: explicit phonemes, the dictionary, or the lyric read as phonemes."""
    if override is not None:
        if not override:
            raise InvalidInput(f"{item}: phonemes is empty", field=f"{item}.phonemes")
        for ph in override:
            if ph not in inventory:
                raise InvalidInput(
                    f"{item}: phoneme {ph!r} is not in the voicebank", field=f"{item}.phonemes"
                )
        return list(override)
    found = dictionary.lookup(lyric)
    if found is not None:
        for ph in found:
            if ph not in inventory:
                raise InvalidInput(
                    f"{item}: lyric {lyric!r} maps to phoneme {ph!r}, which the acoustic model does not know",
                    field=f"{item}.lyric",
                )
        return found
    as_phonemes = lyric.split()
    if as_phonemes and all(ph in inventory for ph in as_phonemes):
        return as_phonemes
    raise InvalidInput(
        f"{item}: lyric {lyric!r} is not in the voicebank dictionary and is not a phoneme",
        field=f"{item}.lyric",
    )


def _make_note(
    item: str,
    start: float,
    end: float,
    lyric: str,
    midi: int | None,
    override: list[str] | None,
    dictionary: PhonemeDictionary,
    inventory: dict[str, int],
    prev_sung: bool,
) -> ScoreNote:
    lyric = lyric.strip()
    if not lyric and override is None:
        raise InvalidInput(f"{item}: the lyric is empty", field=f"{item}.lyric")
    if lyric in REST_LYRICS or (midi is None and lyric != BREATH_LYRIC):
        return ScoreNote(item, start, end, None, lyric)
    if lyric == BREATH_LYRIC:
        return ScoreNote(item, start, end, None, lyric, phonemes=["AP"] if "AP" in inventory else ["SP"])
    if lyric in SLUR_LYRICS and override is None:
        if not prev_sung:
            raise InvalidInput(f"{item}: a slur '{lyric}' needs a sung note before it", field=f"{item}.lyric")
        return ScoreNote(item, start, end, midi, lyric, slur=True)
    return ScoreNote(
        item, start, end, midi, lyric, resolve_lyric(lyric, override, dictionary, inventory, item)
    )


def notes_to_score(
    req: SingingRequest, dictionary: PhonemeDictionary, inventory: dict[str, int]
) -> list[ScoreNote]:
    """Lyrics + notes (beats at `tempo`) -> score in seconds; gaps between notes become rests."""
    events = req.notes or []
    if not events:
        raise InvalidInput("notes is empty: give at least one note with a lyric", field="notes")
    spb = 60.0 / req.tempo
    score: list[ScoreNote] = []
    cursor = 0.0
    for i, ev in enumerate(events):
        item = f"notes[{i}]"
        start = cursor if ev.start is None else ev.start
        if start < cursor - 1e-9:
            raise InvalidInput(
                f"{item} starts at beat {start:g}, before notes[{i - 1}] ends at beat {cursor:g}; "
                "notes must not overlap",
                field=f"{item}.start",
            )
        if start > cursor + 1e-9:
            score.append(ScoreNote(f"{item} (gap before)", cursor * spb, start * spb, None, "SP"))
        midi = parse_note(ev.note, item)
        prev_sung = bool(score) and not score[-1].is_rest
        score.append(
            _make_note(
                item,
                start * spb,
                (start + ev.beats) * spb,
                ev.lyric,
                midi,
                ev.phonemes,
                dictionary,
                inventory,
                prev_sung,
            )
        )
        cursor = start + ev.beats
    _check_length(score, "notes")
    return score


def midi_to_score(
    req: SingingRequest, dictionary: PhonemeDictionary, inventory: dict[str, int]
) -> list[ScoreNote]:
    """A MIDI file's melody (first non-drum track with notes) sung on its lyric events."""
    import pretty_midi

    try:
        raw = base64.b64decode(req.midi_base64 or "", validate=True)
        pm = pretty_midi.PrettyMIDI(io.BytesIO(raw))
    except (binascii.Error, ValueError, OSError, EOFError, IndexError, KeyError) as exc:
        raise InvalidInput(f"midi_base64 is not a readable MIDI file ({exc})", field="midi_base64") from exc
    melody = next((inst for inst in pm.instruments if not inst.is_drum and inst.notes), None)
    if melody is None:
        raise InvalidInput("the MIDI file has no melody notes", field="midi_base64")
    lyrics = sorted((ly.time, ly.text) for ly in pm.lyrics if ly.text.strip())
    if not lyrics:
        raise InvalidInput("the MIDI file has no lyric events to sing", field="midi_base64")
    notes = sorted(melody.notes, key=lambda n: (n.start, n.pitch))
    score: list[ScoreNote] = []
    cursor = 0.0
    li = 0
    for i, note in enumerate(notes):
        item = f"midi note {i}"
        if note.start < cursor - 1e-3:
            raise InvalidInput(
                f"{item} ({pretty_midi.note_number_to_name(note.pitch)} at {note.start:.3f} s) overlaps the "
                "previous note; a voice sings one note at a time",
                field="midi_base64",
            )
        # a lyric belongs to the note it starts on (within 50 ms); later lyrics wait for later notes
        while li < len(lyrics) and lyrics[li][0] < note.start - 0.05:
            li += 1
        lyric = "-"
        if li < len(lyrics) and abs(lyrics[li][0] - note.start) <= 0.05:
            lyric = lyrics[li][1].strip().rstrip("-/\\").strip() or "-"
            li += 1
        if note.start > cursor + 1e-3:
            score.append(ScoreNote(f"{item} (gap before)", cursor, note.start, None, "SP"))
        prev_sung = bool(score) and not score[-1].is_rest
        if lyric == "-" and not prev_sung:
            raise InvalidInput(f"{item} at {note.start:.3f} s has no lyric", field="midi_base64")
        try:
            midi = parse_note(int(note.pitch), item)
            score.append(
                _make_note(item, note.start, note.end, lyric, midi, None, dictionary, inventory, prev_sung)
            )
        except InvalidInput as exc:  # the message names the note; the field is the file
            raise InvalidInput(exc.message, field="midi_base64") from exc
        cursor = note.end
    _check_length(score, "midi_base64")
    return score


def _check_length(score: list[ScoreNote], where: str) -> None:
    if not any(n.phonemes for n in score):
        raise InvalidInput("nothing to sing: every note is a rest", field=where)
    if score[-1].end > MAX_DURATION_S:
        raise InvalidInput(
            f"the song is {score[-1].end:.0f} s long; the limit is {MAX_DURATION_S:.0f} s", field=where
        )
