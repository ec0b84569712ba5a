"""The score: what the composer writes and what gets rendered, saved as JSON and as a MIDI file.

Times are seconds (the tempo is constant), pitches MIDI numbers. A `Part` is one instrument playing
one role (melody, accompaniment, bass, harmony, drums); a polyphonic instrument may have two parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pretty_midi

from harmonia.music.instruments import InstrumentSpec
from harmonia.music.theory import Chord, Key


@dataclass(frozen=True)
class ScoreNote:
    pitch: int
    start_s: float
    end_s: float
    velocity: int


@dataclass
class Part:
    instrument: InstrumentSpec
    role: str
    notes: list[ScoreNote] = field(default_factory=list)


@dataclass(frozen=True)
class Bar:
    """One chord's span of the plan: where it starts and how long it lasts (in beats), its harmony,
    and `index`, the bar it lies in. Usually a whole bar; a bar that holds two chords (a cadence
    `V i` inside the last bar of a short piece) is two spans with the same `index`."""

    index: int
    start: float
    length: float
    chord: Chord


@dataclass(frozen=True)
class Phrase:
    first_bar: int
    bars: int
    cadence: str  # "half" (ends on V) or "authentic" (V -> I)


@dataclass
class Score:
    parts: list[Part]
    tempo_bpm: float
    key: Key
    time_signature: tuple[int, int]
    duration_s: float
    seed: int
    mood: str
    bars: list[Bar]
    phrases: list[Phrase]

    @property
    def bar_count(self) -> int:
        """Bars of the metre (`bars` may hold more entries: one per chord span)."""
        return self.bars[-1].index + 1 if self.bars else 0

    def part(self, role: str) -> Part | None:
        return next((p for p in self.parts if p.role == role), None)

    def to_midi(self) -> pretty_midi.PrettyMIDI:
        midi = pretty_midi.PrettyMIDI(initial_tempo=self.tempo_bpm, resolution=480)
        midi.time_signature_changes.append(pretty_midi.TimeSignature(*self.time_signature, 0.0))
        midi.key_signature_changes.append(pretty_midi.KeySignature(self.key.midi_key_number, 0.0))
        for part in self.parts:
            inst = pretty_midi.Instrument(
                program=part.instrument.program,
                is_drum=part.instrument.is_drum,
                name=f"{part.instrument.name} ({part.role})",
            )
            inst.notes = [
                pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=n.start_s, end=n.end_s)
                for n in part.notes
            ]
            midi.instruments.append(inst)
        return midi

    def as_json(self) -> dict[str, Any]:
        notes = [
            {
                "instrument": part.instrument.name,
                "role": part.role,
                "pitch": n.pitch,
                "name": self.key.spell(n.pitch) if not part.instrument.is_drum else _drum_name(n.pitch),
                "start_s": round(n.start_s, 4),
                "end_s": round(n.end_s, 4),
                "velocity": n.velocity,
            }
            for part in self.parts
            for n in part.notes
        ]
        notes.sort(key=lambda n: (n["start_s"], n["pitch"]))
        seen: set[str] = set()
        instruments = []
        for part in self.parts:  # one entry per instrument, listing the roles it plays
            if part.instrument.name in seen:
                continue
            seen.add(part.instrument.name)
            instruments.append(
                {
                    "name": part.instrument.name,
                    "program": part.instrument.program,
                    "is_drum": part.instrument.is_drum,
                    "range": [part.instrument.low, part.instrument.high],
                    "roles": [p.role for p in self.parts if p.instrument.name == part.instrument.name],
                }
            )
        return {
            "instruments": instruments,
            "program": instruments[0]["program"] if instruments else None,
            "tempo_bpm": self.tempo_bpm,
            "key": self.key.name,
            "time_signature": f"{self.time_signature[0]}/{self.time_signature[1]}",
            "duration_s": self.duration_s,
            "seed": self.seed,
            "mood": self.mood,
            "bars": self.bar_count,
            "chords": [bar.chord.roman for bar in self.bars],
            "phrases": [
                {"first_bar": p.first_bar + 1, "bars": p.bars, "cadence": p.cadence} for p in self.phrases
            ],
            "notes": notes,
        }


def _drum_name(pitch: int) -> str:
    try:
        return pretty_midi.note_number_to_drum_name(pitch) or str(pitch)
    except (IndexError, ValueError):
        return str(pitch)
