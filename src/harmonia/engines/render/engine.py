"""The `render` engine: a score (a note list or a MIDI file) -> audio, with a General MIDI SoundFont.

Synthesis is TinySoundFont (`tinysoundfont`); the default SoundFont is the GM bank that ships in the
`pretty_midi` wheel (TimGM6mb.sf2), or any `.sf2` given. The file is read and parsed once per engine;
each concurrent `run` borrows its own parsed synth from a small pool, so runs never share channel
state and need no global lock. Events are applied sample-accurately while audio is rendered in
blocks; between blocks the engine reports progress and calls `ctx.check()`, so a cancel or a time
limit stops a long render within one block.

Note-list input counts `start` and `duration` in beats (quarter notes) at `tempo_bpm`.
"""

from __future__ import annotations

import base64
import binascii
import importlib.resources
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pretty_midi
import tinysoundfont._tinysoundfont as tsf
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from harmonia.audio import analysis, encode
from harmonia.engines.base import ArtifactData, EngineResult, RunContext, Word
from harmonia.errors import EngineUnavailable, InvalidInput
from harmonia.music.instruments import resolve_program

SAMPLE_RATES = (32000, 44100, 48000)
MAX_RENDER_S = 600.0
MAX_NOTES = 20_000
DRUM_CHANNEL = 9
_BLOCK_S = 0.5
_SILENCE_DBFS = -70.0  # trailing audio below this (relative to the peak) is trimmed
_FADE_S = 0.03


class NoteIn(BaseModel):
    pitch: int | Word = Field(description="MIDI number 0..127 or a name such as 'C4', 'F#3', 'Bb5'")
    start: float = Field(ge=0, le=100_000, description="onset in beats (quarter notes)")
    duration: float = Field(gt=0, le=1000, description="length in beats")
    velocity: int = Field(90, ge=1, le=127)

    @field_validator("pitch")
    @classmethod
    def _pitch(cls, value: int | str) -> int:
        return parse_pitch(value)


class RenderInput(BaseModel):
    """Either `notes` (+ `instrument`, `tempo_bpm`) or `midi_b64`, never both."""

    notes: list[NoteIn] | None = Field(None, max_length=MAX_NOTES)
    instrument: Word | int = Field("piano", description="catalog/GM name or program number 0..127")
    tempo_bpm: float = Field(120.0, ge=20, le=400)
    midi_b64: str | None = Field(None, max_length=8_000_000, description="base64 Standard MIDI File")
    sample_rate: Literal[32000, 44100, 48000] | None = Field(None, description="default: engine's")
    output: Literal["wav", "flac"] = "wav"
    tail_s: float = Field(1.5, ge=0, le=10, description="release time rendered after the last note")
    normalize: bool = Field(True, description="scale the peak to -1 dBFS")

    @model_validator(mode="after")
    def _one_source(self) -> RenderInput:
        if (self.notes is None) == (self.midi_b64 is None):
            raise ValueError("give exactly one of 'notes' or 'midi_b64'")
        if self.notes is not None and not self.notes:
            raise ValueError("'notes' is empty")
        return self


def parse_pitch(value: int | str) -> int:
    """A MIDI number 0..127 (int or digits) or a note name like 'C4' / 'F#3' / 'Bb5' -> MIDI number."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, int):
        if not 0 <= value <= 127:
            raise ValueError(f"pitch {value} is outside 0..127")
        return value
    name = value.strip().replace("♯", "#").replace("♭", "b")
    try:
        number = pretty_midi.note_name_to_number(name)
    except (AttributeError, KeyError, ValueError) as exc:
        raise ValueError(f"{value!r} is not a note name like 'C4', 'F#3' or 'Bb5'") from exc
    if not 0 <= number <= 127:
        raise ValueError(f"{value!r} is outside the MIDI range C-1..G9")
    return number


def validate_input(model: type[BaseModel], payload: BaseModel | dict[str, Any]) -> Any:
    """Turn a dict (or an already validated model) into `model`, as InvalidInput(field) on failure."""
    if isinstance(payload, model):
        return payload
    data = payload.model_dump() if isinstance(payload, BaseModel) else payload
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidInput(first["msg"].removeprefix("Value error, "), field=loc) from exc


@dataclass
class RenderedAudio:
    """Float32 stereo `(frames, 2)` audio and what went into it."""

    audio: np.ndarray
    sample_rate: int
    parts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate


def default_soundfont() -> Path:
    """The General MIDI SoundFont shipped inside the pretty_midi wheel."""
    return Path(str(importlib.resources.files("pretty_midi").joinpath("TimGM6mb.sf2")))


class _SynthPool:
    """Parsed TinySoundFont instances, one per concurrent render, reused after a reset."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._free: dict[int, list[Any]] = {}
        self._lock = threading.Lock()

    def acquire(self, sample_rate: int) -> Any:
        with self._lock:
            free = self._free.setdefault(sample_rate, [])
            if free:
                return free.pop()
        return self.configure(tsf.SoundFont(self._data), sample_rate)

    @staticmethod
    def configure(synth: Any, sample_rate: int) -> Any:
        # -6 dB of headroom: several loud GM voices together easily pass full scale.
        synth.set_output(tsf.OutputMode.StereoInterleaved, sample_rate, -6.0)
        synth.set_max_voices(256)
        return synth

    def release(self, sample_rate: int, synth: Any) -> None:
        # tsf_reset drops all channel state but only *starts* a quick release of sounding voices;
        # render them out so the next job starts from exactly the state of a fresh synth (same
        # input -> same bytes). A synth still sounding after that is dropped, not reused.
        synth.reset()
        scratch = np.zeros((int(0.25 * sample_rate), 2), dtype=np.float32)
        _render_into(synth, scratch)
        _render_into(synth, scratch)
        if np.any(scratch):
            return
        with self._lock:
            self._free.setdefault(sample_rate, []).append(synth)


class RenderEngine:
    """Score/MIDI -> audio with a SoundFont. Thread-safe; cheap to call, ~20 ms to build."""

    name: ClassVar[str] = "render"
    input_model: ClassVar[type[BaseModel]] = RenderInput

    def __init__(self, soundfont: Path | None = None, sample_rate: int = 44100) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate}")
        self.sample_rate = sample_rate
        self.soundfont = Path(soundfont) if soundfont is not None else default_soundfont()
        try:
            data = self.soundfont.read_bytes()
            probe = tsf.SoundFont(data)  # parse once now so a bad file fails at startup
        except (OSError, RuntimeError) as exc:
            raise EngineUnavailable(f"cannot load SoundFont {self.soundfont}: {exc}") from exc
        self._preset_count = probe.get_preset_count()
        self._pool = _SynthPool(data)
        self._pool.release(sample_rate, _SynthPool.configure(probe, sample_rate))

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "synth": "tinysoundfont",
            "soundfont": self.soundfont.name,
            "presets": self._preset_count,
            "sample_rate": self.sample_rate,
            "sample_rates": list(SAMPLE_RATES),
            "max_render_s": MAX_RENDER_S,
        }

    # --- the Engine entry point ---------------------------------------------------------------

    def run(self, payload: BaseModel | dict[str, Any], ctx: RunContext) -> EngineResult:
        req: RenderInput = validate_input(RenderInput, payload)
        if req.notes is not None:
            midi = notes_to_midi(req.notes, req.instrument, req.tempo_bpm)
        else:
            midi = midi_from_b64(req.midi_b64 or "")
        sample_rate = req.sample_rate or self.sample_rate
        rendered = self.render_midi(
            midi, ctx, sample_rate=sample_rate, tail_s=req.tail_s, progress_range=(0.0, 0.95)
        )
        audio = encode.normalize_peak(rendered.audio, -1.0) if req.normalize else rendered.audio
        ctx.progress(0.97, "encoding")
        data = encode.encode(audio, sample_rate, req.output)
        ctx.progress(1.0, "done")
        output = {
            "engine": self.name,
            "sample_rate": sample_rate,
            "channels": 2,
            "format": req.output,
            "duration_s": round(rendered.duration_s, 4),
            "peak_dbfs": round(analysis.peak_dbfs(audio), 2),
            "rms_dbfs": round(analysis.rms_dbfs(audio), 2),
            "soundfont": self.soundfont.name,
            "parts": rendered.parts,
        }
        if req.notes is not None:
            output["tempo_bpm"] = req.tempo_bpm
        name = f"audio.{req.output}"
        return EngineResult(
            artifacts=[ArtifactData(name, data, encode.CONTENT_TYPES[req.output])], output=output
        )

    # --- rendering ----------------------------------------------------------------------------

    def render_midi(
        self,
        midi: pretty_midi.PrettyMIDI,
        ctx: RunContext,
        *,
        sample_rate: int | None = None,
        tail_s: float = 1.5,
        progress_range: tuple[float, float] = (0.0, 1.0),
        trim: bool = True,
    ) -> RenderedAudio:
        """Render every instrument of `midi` to stereo float32, reporting progress within
        `progress_range` and stopping at `ctx.check()` between blocks."""
        sample_rate = sample_rate or self.sample_rate
        if sample_rate not in SAMPLE_RATES:
            raise InvalidInput(f"sample rate must be one of {SAMPLE_RATES}", field="sample_rate")
        events, parts = _schedule(midi)
        end_s = max((t for t, *_ in events), default=0.0)
        if end_s + tail_s > MAX_RENDER_S:
            raise InvalidInput(
                f"the score lasts {end_s:.0f} s; at most {MAX_RENDER_S:.0f} s can be rendered", field="notes"
            )
        total = int(np.ceil((end_s + tail_s) * sample_rate)) + 1
        out = np.zeros((total, 2), dtype=np.float32)
        lo, hi = progress_range
        block = int(_BLOCK_S * sample_rate)
        synth = self._pool.acquire(sample_rate)
        try:
            cursor, ev = 0, 0
            while cursor < total:
                ctx.check()
                stop = min(total, cursor + block)
                while ev < len(events) and round(events[ev][0] * sample_rate) < stop:
                    at = max(cursor, round(events[ev][0] * sample_rate))
                    _render_into(synth, out[cursor:at])
                    cursor = at
                    _apply(synth, events[ev])
                    ev += 1
                _render_into(synth, out[cursor:stop])
                cursor = stop
                ctx.progress(lo + (hi - lo) * cursor / total, "rendering")
        finally:
            self._pool.release(sample_rate, synth)
        if trim:
            out = _trim_tail(out, sample_rate, min_frames=int(end_s * sample_rate))
        return RenderedAudio(audio=out, sample_rate=sample_rate, parts=parts)


# --- building MIDI from requests --------------------------------------------------------------


def notes_to_midi(notes: list[NoteIn], instrument: str | int, tempo_bpm: float) -> pretty_midi.PrettyMIDI:
    try:
        program, is_drum, display = resolve_program(instrument)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="instrument") from exc
    seconds_per_beat = 60.0 / tempo_bpm
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum, name=display)
    for note in notes:
        start = note.start * seconds_per_beat
        inst.notes.append(
            pretty_midi.Note(
                velocity=note.velocity,
                pitch=int(note.pitch),
                start=start,
                end=start + note.duration * seconds_per_beat,
            )
        )
    midi.instruments.append(inst)
    return midi


def midi_from_b64(text: str) -> pretty_midi.PrettyMIDI:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("midi_b64 is not valid base64", field="midi_b64") from exc
    return midi_from_bytes(raw)


def midi_from_bytes(raw: bytes) -> pretty_midi.PrettyMIDI:
    try:
        midi = pretty_midi.PrettyMIDI(io.BytesIO(raw))
    except Exception as exc:
        raise InvalidInput(f"not a readable MIDI file: {exc}", field="midi_b64") from exc
    if not any(inst.notes for inst in midi.instruments):
        raise InvalidInput("the MIDI file has no notes", field="midi_b64")
    return midi


# --- scheduling and synthesis -----------------------------------------------------------------

# (time_s, order, kind, channel, a, b); at equal times: program, controls, note-offs, then note-ons.
_Event = tuple[float, int, str, int, int, int]


def _schedule(midi: pretty_midi.PrettyMIDI) -> tuple[list[_Event], list[dict[str, Any]]]:
    """Assign channels (drums on 10, one channel per melodic program) and flatten all events."""
    channels: dict[int, int] = {}
    free = [c for c in range(16) if c != DRUM_CHANNEL]
    events: list[_Event] = []
    parts: list[dict[str, Any]] = []
    drum_kit: int | None = None
    for inst in midi.instruments:
        if not inst.notes:
            continue
        if inst.is_drum:
            chan = DRUM_CHANNEL
            if drum_kit is None:  # one channel, one kit: the first drum track's program picks it
                drum_kit = inst.program
                events.append((0.0, 0, "drums", chan, inst.program, 0))
        elif inst.program in channels:
            chan = channels[inst.program]
        elif free:
            chan = channels[inst.program] = free.pop(0)
            events.append((0.0, 0, "program", chan, inst.program, 0))
        else:
            raise InvalidInput("the score uses more than 15 different melodic programs", field="midi_b64")
        for cc in inst.control_changes:
            events.append((cc.time, 1, "cc", chan, cc.number, cc.value))
        for bend in inst.pitch_bends:
            events.append((bend.time, 1, "bend", chan, bend.pitch + 8192, 0))
        for note in inst.notes:
            events.append((note.start, 3, "on", chan, note.pitch, note.velocity))
            events.append((note.end, 2, "off", chan, note.pitch, 0))
        parts.append(
            {
                "name": inst.name or pretty_midi.program_to_instrument_name(inst.program),
                "program": inst.program,
                "is_drum": inst.is_drum,
                "channel": chan + 1,
                "notes": len(inst.notes),
            }
        )
    if not parts:
        raise InvalidInput("the score has no notes", field="notes")
    events.sort(key=lambda e: (e[0], e[1]))
    return events, parts


def _apply(synth: Any, event: _Event) -> None:
    _, _, kind, chan, a, b = event
    if kind == "on":
        synth.channel_note_on(chan, a, b / 127.0)
    elif kind == "off":
        synth.channel_note_off(chan, a)
    elif kind in ("program", "drums"):
        drums = kind == "drums"
        try:
            synth.channel_set_bank(chan, 0)  # with the drum flag TSF looks in bank 128 itself
            synth.channel_set_preset_number(chan, a, drums)
        except RuntimeError:
            # A user SoundFont without this preset: fall back to its first one rather than fail.
            synth.channel_set_preset_number(chan, 0, drums)
    elif kind == "cc":
        synth.channel_midi_control(chan, a, b)
    elif kind == "bend":
        synth.channel_set_pitch_wheel(chan, min(max(a, 0), 16383))


def _render_into(synth: Any, view: np.ndarray) -> None:
    if view.shape[0] > 0:
        synth.render(memoryview(view).cast("B"), False)


def _trim_tail(audio: np.ndarray, sample_rate: int, min_frames: int) -> np.ndarray:
    """Drop trailing near-silence (never before the last note ends) and fade the last few ms."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0:
        return audio[: max(min_frames, 1)]
    loud = np.flatnonzero(np.max(np.abs(audio), axis=1) > peak * 10 ** (_SILENCE_DBFS / 20))
    end = max(int(loud[-1]) + 1 if loud.size else 0, min_frames)
    end = min(audio.shape[0], end + int(0.05 * sample_rate))
    audio = audio[:end].copy()
    fade = min(end, int(_FADE_S * sample_rate))
    audio[end - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    return audio
