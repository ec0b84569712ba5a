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
   (`melody` module)
4. *Supporting parts* (`accompaniment` module): piano/harp/guitar/organ patterns, bass, inner
   voices, drums.
Everything random draws from one `random.Random(seed)`: the same seed gives the same notes.
"""

from __future__ import annotations

import itertools
import random

from harmonia.engines.jen1 import accompaniment
from harmonia.engines.jen1.interpret import Interpretation
from harmonia.engines.jen1.melody import compose_melody, melody_register, to_notes
from harmonia.engines.jen1.style import METERS, MOOD_VELOCITY, Meter
from harmonia.music.instruments import InstrumentSpec
from harmonia.music.score import Bar, Part, Phrase, Score
from harmonia.music.theory import Chord, Key, chord

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
        parts.append(Part(melody_spec, "melody", to_notes(events, seconds_per_beat, mood)))
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
