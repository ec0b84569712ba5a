"""Arranging: a `PlannedSong` -> a `Score` with one part per instrument role, and the section map.

The plan's chord symbols become diatonic chords spread evenly over each section's bars, as the
schema says (a bar may hold several: `i iv | V i` is a two-bar phrase); each section is split
into phrases whose cadences follow its harmony (a phrase that closes on the tonic is authentic,
any other ends on a half cadence). The composer then writes
the melody over the whole form (chord tones on strong beats, stepwise motion, cadence goals, inside
the lead's range: a singer's range for vocals) and the supporting parts: accompaniment patterns
with nearest-inversion voice leading, pads, a bass line that walks into the next root, and a
General MIDI drum groove for the genre.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from harmonia.engines.jen1.composer import (
    lay_out_bars,
    music_length_beats,
    plan_phrases,
    spread_chords,
    write_parts,
)
from harmonia.engines.jen1.planner import PlannedSong
from harmonia.engines.jen1.style import METERS
from harmonia.music.instruments import InstrumentSpec
from harmonia.music.score import Phrase, Score
from harmonia.music.theory import Chord, chord, degree_for_symbol, parse_key

# SongPlan role -> the composer's part writer.
_COMPOSER_ROLE = {"melody": "melody", "vocals": "melody", "pad": "pad", "bass": "bass", "drums": "drums"}


@dataclass(frozen=True)
class SectionSpan:
    name: str
    first_bar: int
    bars: int
    start_s: float
    end_s: float
    lyrics: tuple[str, ...] = ()


@dataclass
class Arrangement:
    score: Score
    sections: list[SectionSpan]
    vocal_lead: bool  # the melody part is meant to be sung
    notes: list[str] = field(default_factory=list)


def composer_roles(band: list[tuple[InstrumentSpec, str]]) -> list[tuple[InstrumentSpec, str]]:
    """SongPlan roles -> the composer's: one lead, chords (accompaniment/pad/harmony), bass, drums."""
    out: list[tuple[InstrumentSpec, str]] = []
    lead_taken = False
    for spec, role in sorted(band, key=lambda sr: sr[1] not in ("vocals", "melody")):
        if spec.is_drum or role in ("drums", "percussion"):
            if spec.is_drum and not any(r == "drums" for _, r in out):
                out.append((spec, "drums"))
            continue
        mapped = _COMPOSER_ROLE.get(role)
        if mapped == "melody":
            if lead_taken:
                mapped = "harmony"
            lead_taken = True
        elif mapped is None:
            mapped = "accompaniment" if spec.polyphonic else "harmony"
        if (spec, mapped) not in out:
            out.append((spec, mapped))
    return out


def arrange(song: PlannedSong) -> Arrangement:
    """Write the score the plan describes; deterministic in `song.seed`."""
    plan = song.plan
    key = parse_key(plan.key)
    top, bottom = (int(x) for x in plan.time_signature.split("/"))
    meter = METERS.get((top, bottom), METERS[(4, 4)])
    notes: list[str] = []
    approximated: set[str] = set()
    per_bar: list[list[Chord]] = []
    phrases: list[Phrase] = []
    for section in plan.sections:
        first = len(per_bar)
        section_chords = []
        for symbol in section.chords or ["I"]:
            if symbol == "I":
                section_chords.append(chord(key, 0))
                continue
            degree, exact = degree_for_symbol(key, symbol)
            section_chords.append(chord(key, degree))
            if not exact:
                approximated.add(f"{symbol}->{section_chords[-1].roman}")
        spread = spread_chords(section_chords, section.bars)
        if any(len(c) > int(meter.beats) for c in spread):
            notes.append(
                f"section {section.name!r}: {len(section_chords)} chords in {section.bars} bars; "
                "at most one chord a beat is played"
            )
        per_bar.extend(spread)
        for p in plan_phrases(section.bars):
            last = per_bar[first + p.first_bar + p.bars - 1][-1]
            cadence = "authentic" if last.root == 0 else "half"
            phrases.append(Phrase(first + p.first_bar, p.bars, cadence))
    if approximated:
        notes.append("chromatic chords approximated by diatonic ones: " + ", ".join(sorted(approximated)))
    duration = float(plan.duration_s or plan.implied_duration_s)
    bars = lay_out_bars(per_bar, meter, music_length_beats(duration, plan.tempo_bpm))
    seconds_per_beat = 60.0 / plan.tempo_bpm
    spans = []
    first = 0
    for section in plan.sections:
        inside = [b for b in bars if first <= b.index < first + section.bars]
        spans.append(
            SectionSpan(
                name=section.name,
                first_bar=first,
                bars=section.bars,
                start_s=inside[0].start * seconds_per_beat,
                end_s=(inside[-1].start + inside[-1].length) * seconds_per_beat,
                lyrics=tuple(section.lyrics),
            )
        )
        first += section.bars
    roles = composer_roles(song.band)
    pitched = [r for s, r in roles if r not in ("drums", "melody")]
    rests: set[int] = set()
    if pitched:  # the lead enters after an instrumental intro
        for span in spans:
            if span.name == "intro" and span is not spans[-1]:
                rests.update(range(span.first_bar, span.first_bar + span.bars))
    parts = write_parts(
        key,
        meter,
        bars,
        phrases,
        roles,
        song.mood,
        plan.tempo_bpm,
        random.Random(song.seed),
        groove=song.groove,
        drum_velocity=-18 if song.soft_drums else 0,
        melody_rests=rests,
    )
    score = Score(
        parts=parts,
        tempo_bpm=plan.tempo_bpm,
        key=key,
        time_signature=(top, bottom) if (top, bottom) in METERS else (4, 4),
        duration_s=duration,
        seed=song.seed,
        mood=song.mood,
        bars=bars,
        phrases=phrases,
    )
    return Arrangement(score=score, sections=spans, vocal_lead=song.has_vocals, notes=notes)
