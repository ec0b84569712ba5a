"""The melody writer: per phrase, a rhythm motif (A B A ... cadence) from the metre's one-bar
patterns, filtered by tempo and weighted by mood; pitches that move mostly by step, chord tones on
strong beats, leaps recovered, an arch toward a high point and a stepwise approach to the cadence
goal, inside the instrument's comfortable range (see `composer` for where it fits)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from harmonia.engines.jen1.style import (
    MIN_NOTE_S,
    MOOD_DENSITY,
    MOOD_LEGATO,
    MOOD_REGISTER,
    MOOD_VELOCITY,
    Meter,
)
from harmonia.music.instruments import InstrumentSpec
from harmonia.music.score import Bar, Phrase, ScoreNote
from harmonia.music.theory import Chord, Key


def melody_register(spec: InstrumentSpec, mood: str, with_accompaniment: bool) -> tuple[int, int]:
    """The MIDI range the melody uses: about an octave and a half around the instrument's centre."""
    center = spec.center + MOOD_REGISTER.get(mood, 0) + (5 if with_accompaniment else 0)
    low = max(spec.low, center - 8)
    high = min(spec.high, center + 9)
    return low, high


@dataclass(frozen=True)
class _Event:
    start: float  # beats
    length: float
    pitch: int
    strong: bool
    accent: float  # 0..1 position along the phrase arch, for dynamics


def _rhythm_choices(meter: Meter, tempo: float, mood: str) -> list[tuple[tuple[float, ...], float]]:
    seconds_per_beat = 60.0 / tempo
    ok = [r for r in meter.rhythms if min(r) * seconds_per_beat >= MIN_NOTE_S]
    if len(ok) < 3:
        ok = sorted(meter.rhythms, key=lambda r: (-min(r), len(r)))[:3]
    bias = MOOD_DENSITY.get(mood, 0.0) + (0.25 if tempo < 76 else -0.25 if tempo > 150 else 0.0)
    center = meter.beats
    return [(r, math.exp(bias * (len(r) - center))) for r in ok]


def _pick(rng: random.Random, weighted: list[tuple[tuple[float, ...], float]]) -> tuple[float, ...]:
    return rng.choices([r for r, _ in weighted], weights=[w for _, w in weighted])[0]


def _phrase_rhythms(
    meter: Meter, phrase: Phrase, choices: list, rng: random.Random
) -> list[tuple[float, ...]]:
    motif = _pick(rng, choices)
    contrast = _pick(rng, [c for c in choices if c[0] != motif] or choices)
    if phrase.bars == 1:  # a one-bar piece: a bar of the tune, its last note the closing one
        return [motif]
    rhythms = []
    for i in range(phrase.bars - 1):
        if i % 2 == 0:
            rhythms.append(motif)
        else:
            rhythms.append(contrast if i < 3 or rng.random() < 0.5 else _pick(rng, choices))
    rhythms.append(rng.choice(meter.cadence_rhythms))
    return rhythms


def compose_melody(
    key: Key,
    meter: Meter,
    bars: list[Bar],
    phrases: list[Phrase],
    register: tuple[int, int],
    mood: str,
    tempo: float,
    rng: random.Random,
) -> list[_Event]:
    low, high = register
    tonic_midi = key.tonic_near((low + high) // 2)
    degrees = [d for d in range(-14, 22) if low <= key.midi(d, tonic_midi) <= high - 1]
    dlo, dhi = min(degrees), max(degrees)
    choices = _rhythm_choices(meter, tempo, mood)
    events: list[_Event] = []
    # The piece opens on the tonic (the tonic chord's third or fifth only if the range has no tonic):
    # with the closing V -> I, that is what makes a short piece sound in its key.
    prev = min(
        (d for d in (0, 7, -7, 2, 4, -3) if dlo <= d <= dhi),
        key=lambda d: (d % 7 != 0, abs(d - (dlo + dhi) // 2)),
    )
    prev_interval = 0
    antecedent: tuple[Phrase, list[tuple[float, ...]], list[int]] | None = None
    for phrase in phrases:
        # the phrase's bars, each as its chord spans (two when a bar holds two chords)
        phrase_bars = [
            [b for b in bars if b.index == i] for i in range(phrase.first_bar, phrase.first_bar + phrase.bars)
        ]
        lengths = [sum(s.length for s in spans) for spans in phrase_bars]
        if len(phrase_bars) == 1 and lengths[0] < meter.beats:  # a piece shorter than a bar
            rhythms = [_short_rhythm(lengths[0])]
        else:
            rhythms = _phrase_rhythms(meter, phrase, choices, rng)
            if lengths[-1] < meter.beats:  # a shortened closing bar holds just its chords
                rhythms[-1] = (lengths[-1],)
        # Parallel period: a consequent whose opening chords match its antecedent's repeats its
        # opening bars (rhythm and pitches); the rest, and the cadence, are new.
        echo: list[int] = []
        if phrase.cadence == "authentic" and antecedent is not None:
            ante, ante_rhythms, ante_degrees = antecedent
            shared = 0
            while shared < min(ante.bars // 2, phrase.bars - 1) and _same_chords(
                bars, phrase.first_bar + shared, ante.first_bar + shared
            ):
                shared += 1
            rhythms[:shared] = ante_rhythms[:shared]
            echo = ante_degrees[: sum(len(r) for r in ante_rhythms[:shared])]
        slots = [
            slot for spans, rhythm in zip(phrase_bars, rhythms, strict=True) for slot in _slots(rhythm, spans)
        ]
        phrase_start = phrase_bars[0][0].start
        phrase_end = phrase_bars[-1][-1].start + phrase_bars[-1][-1].length
        onset, _, bar = slots[-1]
        slots[-1] = (onset, phrase_end - onset, bar)  # the closing note fills the (longer) last bar
        # Cadence goal: the tonic (authentic) or a dominant chord tone (half), nearest the melody.
        goal_set = (0,) if phrase.cadence == "authentic" else (4, 1, 6)
        goal = min(
            (d for d in range(dlo, dhi + 1) if d % 7 in goal_set),
            key=lambda d: (abs(d - prev), d % 7 != goal_set[0]),
        )
        start_deg = echo[0] if echo else prev
        peak = min(dhi, max(start_deg, goal) + rng.choice((3, 4, 5, 6)))
        peak_at = rng.uniform(0.45, 0.75)
        degrees: list[int] = []
        repeats = 0
        # The piece states its mode early: unless the line found the tonic's third by itself, the
        # last note of the opening bar over the tonic chord takes it.
        third_at = -1
        if not events:
            opening = [
                i
                for i, (_, _, b) in enumerate(slots[: len(slots) - 1])
                if i > 0 and b.index == phrase.first_bar and b.chord.root == 0
            ]
            third_at = max(opening, default=-1)
        for i, (onset, length, bar) in enumerate(slots):
            p = (onset - phrase_start) / (phrase_end - phrase_start)
            if p < peak_at:
                target = start_deg + (peak - start_deg) * p / peak_at
            else:
                target = peak + (goal - peak) * (p - peak_at) / (1 - peak_at)
            strong = (onset - bar.start) in meter.strong
            remaining = len(slots) - i
            if remaining == 1:
                degree = goal
            elif not events:
                degree = prev  # the piece opens on the tonic
            elif i == third_at and not any(d % 7 == 2 for d in degrees):
                degree = min((d for d in range(dlo, dhi + 1) if d % 7 == 2), key=lambda d: abs(d - prev))
            elif remaining == 2:
                # Re-aim the goal's octave from where the line is now, then approach it by step
                # (or by a third from a chord tone when this note falls on a strong beat).
                # A half cadence also leans toward the phrase's opening register, so the
                # consequent that restates the opening doesn't have to leap back to it.
                pull = 0.6 if phrase.cadence == "half" else 0.0
                goal = min(
                    (d for d in range(dlo, dhi + 1) if d % 7 == goal % 7),
                    key=lambda d: (abs(d - prev) + pull * abs(d - start_deg), d),
                )
                near = [
                    d for d in (goal + 1, goal - 1, goal + 2, goal - 2, goal - 3, goal + 4) if dlo <= d <= dhi
                ]
                if strong:
                    near = [d for d in near if bar.chord.contains(d)] or [goal]
                # closing on the tonic, the line comes down from ^2 rather than up from the leading
                # tone when both are as near: the leading tone already sounds in the V chord
                above = phrase.cadence == "authentic"
                degree = min(near or [goal], key=lambda d: (abs(d - goal), above and d < goal, abs(d - prev)))
            elif i < len(echo):
                degree = echo[i]
            else:
                degree = _next_degree(prev, prev_interval, bar.chord, strong, target, repeats, dlo, dhi, rng)
            repeats = repeats + 1 if degree == prev else 0
            prev_interval, prev = degree - prev, degree
            degrees.append(degree)
            # The leading tone is raised (minor) over V and where it resolves up to the final tonic.
            leading = bar.chord.is_dominant or (remaining == 2 and phrase.cadence == "authentic")
            pitch = key.midi(degree, tonic_midi, raise_seventh=leading)
            events.append(_Event(onset, length, pitch, strong, 1 - abs(p - peak_at)))
        if phrase.cadence == "half":
            antecedent = (phrase, rhythms, degrees)
    return events


# Tonal stability of each scale degree, from Lerdahl's basic space (Tonal Pitch Space, 2001):
# how many of its levels (root, fifth, triad, scale) hold the degree. Tonal melodies dwell on the
# stable degrees; weighting the line by them is what keeps a short piece in its key.
_STABILITY = {0: 4, 4: 3, 2: 2, 1: 1, 3: 1, 5: 1, 6: 1}


def _next_degree(
    prev: int, prev_interval: int, harmony: Chord, strong: bool, target: float, repeats: int,
    dlo: int, dhi: int, rng: random.Random,
) -> int:  # fmt: skip
    step_weight = {0: 0.3 if repeats == 0 else 0.03, 1: 1.0, 2: 0.65, 3: 0.3, 4: 0.22, 5: 0.1}
    candidates, weights = [], []
    for degree in range(max(dlo, prev - 5), min(dhi, prev + 5) + 1):
        interval = degree - prev
        w = step_weight[abs(interval)]
        tone = harmony.contains(degree)
        if strong:
            w *= 3.0 if tone else 0.0  # strong beats carry chord tones
        elif not tone and abs(interval) > 1:
            w *= 0.1  # a non-chord tone is a passing or neighbour note: reached by step
        if abs(prev_interval) >= 3 and (interval * prev_interval > 0 or abs(interval) > 2):
            w *= 0.15  # after a leap, turn back by step
        # Follow the phrase's arch: moving toward the contour target is favoured, far from it is not.
        if interval != 0 and interval * (target - prev) > 0:
            w *= 1.6
        w *= math.exp(-0.3 * abs(target - degree))
        if harmony.is_dominant and degree % 7 == 5:
            w *= 0.1  # minor: b6 against the raised leading tone makes an augmented second
        w *= _STABILITY[degree % 7]
        candidates.append(degree)
        weights.append(w)
    return rng.choices(candidates, weights=weights)[0]


def _onsets(rhythm: tuple[float, ...]) -> list[tuple[float, float]]:
    out, t = [], 0.0
    for length in rhythm:
        out.append((t, float(length)))
        t += length
    return out


def _same_chords(bars: list[Bar], one: int, other: int) -> bool:
    """Do bars `one` and `other` hold the same chords?"""
    return [b.chord for b in bars if b.index == one] == [b.chord for b in bars if b.index == other]


def _slots(rhythm: tuple[float, ...], spans: list[Bar]) -> list[tuple[float, float, Bar]]:
    """A bar's rhythm as (onset, length, chord span) slots; a note that runs over a chord change
    is cut there, so the new chord gets its own note."""
    start = spans[0].start
    cuts = [s.start for s in spans[1:]]
    out = []
    for offset, length in _onsets(rhythm):
        a, b = start + offset, start + offset + length
        for c in cuts:
            if a + 1e-9 < c < b - 1e-9:
                out.append((a, c - a, _span_at(spans, a)))
                a = c
        out.append((a, b - a, _span_at(spans, a)))
    return out


def _span_at(spans: list[Bar], beat: float) -> Bar:
    return next(s for s in reversed(spans) if s.start <= beat + 1e-9)


def _short_rhythm(beats: float) -> tuple[float, ...]:
    if beats < 2:
        return (beats,)
    whole = int(beats)
    return (*([1.0] * (whole - 1)), beats - (whole - 1))


def to_notes(events: list[_Event], seconds_per_beat: float, mood: str) -> list[ScoreNote]:
    legato = MOOD_LEGATO.get(mood, 0.9)
    base = MOOD_VELOCITY.get(mood, 80)
    notes = []
    for i, ev in enumerate(events):
        start = ev.start * seconds_per_beat
        slot = ev.length * seconds_per_beat
        sounding = slot * legato if i < len(events) - 1 else slot  # the last note rings to the end
        sounding = max(min(sounding, slot - 0.01), 0.05)
        velocity = base + (8 if ev.strong else 0) + round(12 * (ev.accent - 0.5))
        notes.append(ScoreNote(ev.pitch, start, start + sounding, max(30, min(120, velocity))))
    return notes
