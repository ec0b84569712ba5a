"""The composer: an `Interpretation` -> a `Score` (bars, chords, a melody and its supporting parts).

How a piece is built:
1. *Form.* The duration (minus a short release) becomes whole bars of the metre; bars group into
   phrases of 2-4(-7) bars, paired as antecedent (ends on a half cadence, V) and consequent
   (authentic cadence, V -> I). The last phrase always closes on the tonic; leftover beats lengthen
   the final chord.
2. *Harmony.* One diatonic chord per bar, from functional templates: tonic opening, predominant
   (IV/ii, iv/VI), dominant, tonic. A phrase of up to three bars is the whole cadence i iv V i
   (a bar may hold two chords), so a short piece states its key. A consequent repeats its
   antecedent's opening chords (a parallel period) so the opening melody can return.
3. *Melody.* Per phrase, a rhythm motif (A B A ... cadence) from one-bar patterns filtered by tempo
   and weighted by mood; pitches move mostly by step, with chord tones on strong beats, passing and
   neighbour tones between, leaps recovered by contrary steps, an arch contour toward a high point,
   and a stepwise approach to the cadence goal; it opens on the tonic, states the tonic's third
   early and dwells on stable degrees. It stays inside the instrument's comfortable range.
4. *Supporting parts* (`accompaniment` module): piano/harp/guitar/organ patterns, bass, inner
   voices, drums.
Everything random draws from one `random.Random(seed)`: the same seed gives the same notes.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

from harmonia.engines.jen1 import accompaniment
from harmonia.engines.jen1.interpret import Interpretation
from harmonia.music.instruments import InstrumentSpec
from harmonia.music.score import Bar, Part, Phrase, Score, ScoreNote
from harmonia.music.theory import Chord, Key, chord

MIN_NOTE_S = 0.13  # shorter notes smear on SoundFont instruments with slow attacks


@dataclass(frozen=True)
class Meter:
    beats: float  # bar length in quarter notes
    strong: tuple[float, ...]
    rhythms: tuple[tuple[float, ...], ...]
    cadence_rhythms: tuple[tuple[float, ...], ...]


METERS: dict[tuple[int, int], Meter] = {
    (4, 4): Meter(
        4.0,
        (0.0, 2.0),
        (
            (1, 1, 1, 1), (2, 1, 1), (1, 1, 2), (1.5, 0.5, 1, 1), (1, 0.5, 0.5, 1, 1),
            (0.5, 0.5, 1, 1, 1), (1, 1, 0.5, 0.5, 1), (3, 1), (1.5, 0.5, 2), (0.5, 0.5, 0.5, 0.5, 2),
            (1, 0.5, 0.5, 2), (0.75, 0.25, 1, 2), (1, 1, 1.5, 0.5), (0.5, 0.5, 0.5, 0.5, 1, 1),
        ),
        ((2, 2), (1, 1, 2), (1.5, 0.5, 2), (4,)),
    ),
    (3, 4): Meter(
        3.0,
        (0.0,),
        (
            (1, 1, 1), (2, 1), (1.5, 0.5, 1), (1, 0.5, 0.5, 1), (0.5, 0.5, 1, 1), (1, 2),
            (0.5, 0.5, 0.5, 0.5, 1), (1, 1, 0.5, 0.5),
        ),
        ((1, 2), (2, 1), (3,)),
    ),
    (6, 8): Meter(
        3.0,
        (0.0, 1.5),
        (
            (1.5, 1.5), (1, 0.5, 1, 0.5), (1, 0.5, 1.5), (0.5, 0.5, 0.5, 1, 0.5), (1.5, 1, 0.5),
            (0.5, 0.5, 0.5, 1.5), (1, 0.5, 0.5, 0.5, 0.5),
        ),
        ((1, 0.5, 1.5), (3,)),
    ),
    (2, 4): Meter(
        2.0,
        (0.0,),
        ((1, 1), (0.5, 0.5, 1), (1.5, 0.5), (1, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5), (0.75, 0.25, 1)),
        ((1, 1), (2,)),
    ),
}  # fmt: skip

# How much each mood prefers busy bars (positive) or long notes (negative); base velocity.
MOOD_DENSITY = {
    "sad": -0.35, "calm": -0.4, "romantic": -0.2, "dark": -0.15, "mysterious": -0.1,
    "neutral": 0.0, "happy": 0.15, "playful": 0.3, "energetic": 0.3, "triumphant": 0.05,
}  # fmt: skip
MOOD_VELOCITY = {
    "sad": 66, "calm": 60, "romantic": 70, "dark": 76, "mysterious": 68, "neutral": 80,
    "happy": 88, "playful": 84, "energetic": 100, "triumphant": 96,
}  # fmt: skip
# Fraction of its slot a melody note sounds: legato for slow moods, detached for playful ones.
MOOD_LEGATO = {"sad": 0.97, "calm": 0.97, "romantic": 0.96, "playful": 0.62, "energetic": 0.82}
MOOD_REGISTER = {"sad": -2, "dark": -3, "happy": 2, "playful": 3, "triumphant": 2}
_PREDOMINANT = {"major": (3, 1), "minor": (3, 5)}  # IV/ii; iv/VI
_MIDDLE = {"major": (5, 3, 1, 2), "minor": (5, 3, 2, 6)}  # vi IV ii iii; VI iv III VII


def compose(interp: Interpretation) -> Score:
    """Write the whole score for `interp`; deterministic in `interp.seed`."""
    rng = random.Random(interp.seed)
    meter = METERS[interp.time_signature]
    key = interp.key
    music_beats = music_length_beats(interp.duration_s, interp.tempo_bpm)

    # Whole bars, rounded; the final bar (the closing tonic) stretches or shrinks (0.5-1.5 bars)
    # so the music ends exactly where the release begins.
    bars_count = max(1, round(music_beats / meter.beats))
    phrases = plan_phrases(bars_count)
    roots = progression(key, phrases, rng)
    bars = lay_out_bars(spread_chords([chord(key, r) for r in roots], bars_count), meter, music_beats)

    roles = assign_roles([s for s in interp.instruments if not s.is_drum])
    drum_spec = next((s for s in interp.instruments if s.is_drum), None)
    if drum_spec is not None:
        roles.append((drum_spec, "drums"))
    parts = write_parts(key, meter, bars, phrases, roles, interp.mood, interp.tempo_bpm, rng)
    return Score(
        parts=parts,
        tempo_bpm=interp.tempo_bpm,
        key=key,
        time_signature=interp.time_signature,
        duration_s=interp.duration_s,
        seed=interp.seed,
        mood=interp.mood,
        bars=bars,
        phrases=phrases,
    )


def music_length_beats(duration_s: float, tempo_bpm: float) -> float:
    """Beats of music in a piece of `duration_s`: all of it but a short release at the end."""
    release_s = min(1.0, 0.15 * duration_s)
    return (duration_s - release_s) * tempo_bpm / 60.0


def spread_chords(chords: list[Chord], bars: int) -> list[list[Chord]]:
    """The chords of a section spread evenly over its bars, as the plan schema says: bar `b` holds
    chords `[b*n/bars, (b+1)*n/bars)`. Fewer chords than bars hold over; more give some bars
    several (['i', 'iv', 'V', 'i'] over 2 bars is i iv | V i)."""
    n = len(chords)
    out = []
    for b in range(bars):
        lo, hi = b * n // bars, (b + 1) * n // bars
        out.append(chords[lo : max(hi, lo + 1)])
    return out


def lay_out_bars(per_bar: list[list[Chord]], meter: Meter, music_beats: float) -> list[Bar]:
    """A chord span for each chord of each bar. A bar of several chords changes chord on its
    strong beats (else on equal half-beat divisions), at most once a beat. The last bar stretches
    or shrinks (0.5-1.5 bars) so the music lasts `music_beats`; its final chord (the tonic) gets
    the longest share: the chords before it take a beat or so each."""
    bar_beats = min(meter.beats, music_beats)
    bars: list[Bar] = []
    for i, chords in enumerate(per_bar):
        length = bar_beats
        if i == len(per_bar) - 1:
            length = max(music_beats - i * bar_beats, 0.5 * bar_beats)
        count = max(1, min(len(chords), int(length)))
        if i == len(per_bar) - 1:
            unit = max(0.5, round(2 * length / (count + 1)) / 2)
            cuts = [k * unit for k in range(count)]
        else:
            cuts = [t for t in meter.strong if t < length][:count]
            if len(cuts) < count:
                cuts = [round(k * length / count * 2) / 2 for k in range(count)]
        for chord_, (a, b) in zip(chords, itertools.pairwise([*cuts, length]), strict=False):
            bars.append(Bar(index=i, start=i * bar_beats + a, length=b - a, chord=chord_))
    return bars


def write_parts(
    key: Key,
    meter: Meter,
    bars: list[Bar],
    phrases: list[Phrase],
    roles: list[tuple[InstrumentSpec, str]],
    mood: str,
    tempo_bpm: float,
    rng: random.Random,
    *,
    groove: str = "basic",
    drum_velocity: int = 0,
    melody_rests: set[int] | frozenset[int] = frozenset(),
) -> list[Part]:
    """Write every part of `roles` (melody, accompaniment, pad, bass, harmony, drums) over `bars`.

    A polyphonic lead also accompanies itself when nothing else plays chords. `melody_rests` are
    bar indices where the lead is silent (an instrumental intro)."""
    seconds_per_beat = 60.0 / tempo_bpm
    roles = list(roles)
    parts: list[Part] = []
    melody_spec = next((s for s, r in roles if r == "melody"), None)
    melody_range = (0, 0)
    if melody_spec is not None:
        chordal = {"accompaniment", "pad", "harmony"}
        self_accompanied = (melody_spec, "accompaniment") in roles
        lead_has_accompaniment = melody_spec.polyphonic and not any(
            r in chordal and s != melody_spec for s, r in roles
        )
        # a keyboard playing tune and chords keeps the tune high, out of the chords' way
        melody_range = melody_register(melody_spec, mood, lead_has_accompaniment or self_accompanied)
        events = compose_melody(key, meter, bars, phrases, melody_range, mood, tempo_bpm, rng)
        if melody_rests:
            rest_beats = [(b.start, b.start + b.length) for b in bars if b.index in melody_rests]
            events = [e for e in events if not any(a - 1e-9 <= e.start < b - 1e-9 for a, b in rest_beats)]
        parts.append(Part(melody_spec, "melody", _to_notes(events, seconds_per_beat, mood)))
        if lead_has_accompaniment and not self_accompanied:
            roles.append((melody_spec, "accompaniment"))
    base_velocity = MOOD_VELOCITY.get(mood, 80)
    inner_index = 0
    for spec, role in roles:
        if role == "melody":
            continue
        writer = accompaniment.PartWriter(
            key=key, bars=bars, beats_per_bar=meter.beats, strong=meter.strong,
            seconds_per_beat=seconds_per_beat, mood=mood, rng=rng, velocity=base_velocity,
            ceiling=melody_range[0] - 1 if melody_spec is not None and role != "drums" else 127,
        )  # fmt: skip
        if role == "accompaniment":
            notes = writer.accompaniment(spec)
        elif role == "pad":
            poly = spec.polyphonic
            notes = writer.accompaniment(spec, style="block") if poly else writer.inner_voice(spec, 0)
        elif role == "bass":
            notes = writer.bass(spec)
        elif role == "drums":
            notes = writer.drums(groove, velocity_offset=drum_velocity)
        else:
            notes = writer.inner_voice(spec, inner_index)
            inner_index += 1
        parts.append(Part(spec, role, notes))
    return parts


def assign_roles(specs: list[InstrumentSpec]) -> list[tuple[InstrumentSpec, str]]:
    """Highest-sounding instrument leads (bass-register ones never do); the lowest takes the bass;
    the rest accompany (polyphonic) or sing inner voices."""
    if not specs:
        return []
    if len(specs) == 1:
        return [(specs[0], "melody")]
    candidates = [i for i, s in enumerate(specs) if s.center >= 50] or list(range(len(specs)))
    lead = max(candidates, key=lambda i: (specs[i].center, -i))
    rest = [i for i in range(len(specs)) if i != lead]
    bass = min(rest, key=lambda i: (specs[i].center, i))
    roles: list[tuple[InstrumentSpec, str]] = [(specs[lead], "melody")]
    for i in rest:
        if i == bass and (len(specs) >= 3 or not specs[i].polyphonic):
            roles.append((specs[i], "bass"))
        else:
            roles.append((specs[i], "accompaniment" if specs[i].polyphonic else "harmony"))
    return roles


def plan_phrases(bars: int) -> list[Phrase]:
    """Split `bars` into phrases: one phrase up to 5 bars, a period (antecedent + consequent) up to
    8, then 4-bar phrases. Pairs alternate half and authentic cadences; the last is authentic."""
    if bars <= 5:
        lengths = [bars]
    elif bars <= 8:
        lengths = [bars // 2, bars - bars // 2]
    else:
        lengths = [4] * (bars // 4)
        lengths[-1] += bars - 4 * len(lengths)  # a longer closing phrase (an extension)
    phrases, first = [], 0
    for i, length in enumerate(lengths):
        last = i == len(lengths) - 1
        cadence = "authentic" if last or i % 2 == 1 else "half"
        phrases.append(Phrase(first_bar=first, bars=length, cadence=cadence))
        first += length
    return phrases


def progression(key: Key, phrases: list[Phrase], rng: random.Random) -> list[int]:
    """Chord roots (diatonic degrees 0..6), one per bar, spread over the bars by `spread_chords`:
    phrases open on the tonic, move through middle and predominant chords, and close on V (half
    cadence) or predominant -> V -> I (authentic). Short authentic phrases hold more chords than
    bars (i iv V i in one or two bars), so that even a short piece states its key."""
    roots: list[int] = []
    antecedent: list[int] = []
    for phrase in phrases:
        n = phrase.bars
        pre = rng.choice(_PREDOMINANT[key.mode])
        if phrase.cadence == "half":
            ending = [4] if n == 1 else [0, 4] if n == 2 else [pre, 4]
        else:
            # Every length opens on the tonic and closes predominant -> V -> I. A phrase of up to
            # three bars is the full cadence i iv V i (two bars: i iv | V i; one: i iv V i): the
            # subdominant is what tells the tonic from the dominant's key.
            ending = [0, 3, 4, 0] if n <= 3 else [pre, 4, 0]
        body: list[int] = []
        if n > len(ending):
            body = [0]
            while len(body) < n - len(ending):
                body.append(rng.choice([r for r in _MIDDLE[key.mode] if r != body[-1]]))
        chords = body + ending
        # Parallel period: a consequent opens with its antecedent's opening chords.
        if phrase.cadence == "authentic" and antecedent:
            shared = max(0, min(n - len(ending), len(antecedent) // 2))
            chords[:shared] = antecedent[:shared]
        roots.extend(chords)
        antecedent = chords if phrase.cadence == "half" else []
    return roots


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


def _to_notes(events: list[_Event], seconds_per_beat: float, mood: str) -> list[ScoreNote]:
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
