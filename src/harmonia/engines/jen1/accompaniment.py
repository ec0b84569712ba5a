"""Supporting parts under a melody: keyboard/harp/guitar accompaniment, a bass line, inner voices
and a General MIDI drum groove. Each follows the bar-by-bar chords of the plan.

Voice leading basics: chords are voiced in close position and each new voicing is the inversion
nearest the previous one (common tones stay, other voices move by the smallest step); the bass
takes the octave of the new root nearest the last one, and walks into the next bar by step.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from harmonia.music.instruments import InstrumentSpec
from harmonia.music.score import Bar, ScoreNote
from harmonia.music.theory import Chord, Key

SUSTAINED = {"organ", "choir", "strings", "synth pad", "accordion", "brass", "voice"}
PLUCKED = {"harp", "guitar", "steel guitar", "electric guitar", "koto", "kalimba", "banjo", "harpsichord",
           "dulcimer"}  # fmt: skip
KICK, SIDE_STICK, SNARE, CLOSED_HAT, OPEN_HAT, CRASH, RIDE = 36, 37, 38, 42, 46, 49, 51
_MIN_UNIT_S = 0.13


@dataclass
class PartWriter:
    key: Key
    bars: list[Bar]
    beats_per_bar: float
    strong: tuple[float, ...]
    seconds_per_beat: float
    mood: str
    rng: random.Random
    velocity: int
    ceiling: int  # highest MIDI pitch a supporting part may use (just under the melody)

    # --- helpers --------------------------------------------------------------------------

    def _note(
        self, pitch: int, start: float, length: float, velocity: int, legato: float = 0.95
    ) -> ScoreNote:
        start_s = start * self.seconds_per_beat
        sounding = max(0.05, length * self.seconds_per_beat * legato)
        return ScoreNote(pitch, start_s, start_s + sounding, max(20, min(120, velocity)))

    def _ref(self, low: int) -> int:
        return self.key.tonic_near(low) - 12

    def _midi(self, harmony: Chord, degree: int, ref: int) -> int:
        return self.key.midi(degree, ref, raise_seventh=harmony.is_dominant)

    def _nearest(self, harmony: Chord, degree_mod: int, ref: int, lo: int, hi: int, near: int) -> int:
        options = [
            self._midi(harmony, degree_mod + 7 * k, ref)
            for k in range(-2, 8)
            if lo <= self._midi(harmony, degree_mod + 7 * k, ref) <= hi
        ]
        if not options:  # range narrower than an octave: the octave nearest the range (a clamped
            # pitch would be a note outside the key)
            options = [self._midi(harmony, degree_mod + 7 * k, ref) for k in range(-2, 8)]
            return min(options, key=lambda p: (max(lo - p, p - hi, 0), abs(p - near)))
        return min(options, key=lambda p: (abs(p - near), p))

    def _voicing(self, harmony: Chord, ref: int, lo: int, hi: int, previous: list[int] | None) -> list[int]:
        r = harmony.root
        shapes = ((r, r + 2, r + 4), (r + 2, r + 4, r + 7), (r + 4, r + 7, r + 9))
        candidates = []
        for k in range(-2, 8):
            for shape in shapes:
                pitches = [self._midi(harmony, d + 7 * k, ref) for d in shape]
                if lo <= pitches[0] and pitches[-1] <= hi:
                    candidates.append(pitches)
        if not candidates:  # no room for a triad above the bass: the chord tones that fit, if any
            tones = {self._midi(harmony, d + 7 * k, ref) for d in (r, r + 2, r + 4) for k in range(-2, 8)}
            return sorted(p for p in tones if lo <= p <= hi)[-2:]
        if previous:
            return min(candidates, key=lambda c: sum(abs(a - b) for a, b in zip(c, previous, strict=False)))
        middle = (lo + hi) / 2
        return min(candidates, key=lambda c: abs(sum(c) / 3 - middle))

    def _metric_bars(self) -> list[Bar]:
        """The bars of the metre (a bar that holds two chords is one bar here): for the drums."""
        out: list[Bar] = []
        for span in self.bars:
            if out and out[-1].index == span.index:
                out[-1] = Bar(span.index, out[-1].start, out[-1].length + span.length, out[-1].chord)
            else:
                out.append(span)
        return out

    def _unit(self, preferred: float) -> float:
        return preferred if preferred * self.seconds_per_beat >= _MIN_UNIT_S else preferred * 2

    # --- parts ----------------------------------------------------------------------------

    def accompaniment(self, spec: InstrumentSpec, style: str | None = None) -> list[ScoreNote]:
        """Chords under the melody in a pattern that suits the instrument, metre and mood
        (or in `style`: block, arpeggio, waltz, alberti)."""
        hi = min(spec.high, self.ceiling)
        lo = min(spec.low + 7, hi - 14)
        ref = self._ref(lo)
        if style is not None:
            pass
        elif spec.name in SUSTAINED:
            style = "block"
        elif spec.name in PLUCKED or self.mood in ("sad", "calm", "romantic", "mysterious", "dark"):
            style = "arpeggio"
        elif self.beats_per_bar == 3.0 and self.strong == (0.0,):
            style = "waltz"
        else:
            style = "alberti" if 60 / self.seconds_per_beat <= 132 else "block"
        vel = self.velocity - 16
        notes: list[ScoreNote] = []
        bass_prev, voicing = lo + 5, None
        for i, bar in enumerate(self.bars):
            h = bar.chord
            if i == len(self.bars) - 1:  # the final chord sits low on its root: the piece ends on the tonic
                floor = max(spec.low, lo - 7)
                bass = self._nearest(h, h.root, ref, floor, lo + 14, floor)
            else:
                bass = self._nearest(h, h.root, ref, lo, lo + 14, bass_prev)
            voicing = self._voicing(h, ref, bass + 3, hi, voicing)
            bass_prev = bass
            if i == len(self.bars) - 1:
                for p in [bass, *voicing]:
                    notes.append(self._note(p, bar.start, bar.length, vel, legato=1.0))
                continue
            # a bar that holds two chords plays its pattern in each half
            if style == "block" or (style == "waltz" and bar.length < self.beats_per_bar):
                hits = [0.0, bar.length]
                if spec.name not in SUSTAINED:
                    hits = [*(t for t in self.strong if t < bar.length), bar.length]
                for a, b in itertools.pairwise(hits):
                    for p in [bass, *voicing]:
                        notes.append(self._note(p, bar.start + a, b - a, vel + (4 if a == 0 else 0), 0.97))
            elif style == "waltz":
                notes.append(self._note(bass, bar.start, 1.0, vel + 6))
                for beat in (1.0, 2.0):
                    for p in voicing:
                        notes.append(self._note(p, bar.start + beat, 1.0, vel - 4, 0.8))
            else:
                unit = self._unit(0.5)
                if not voicing:
                    cycle = [bass]
                elif style == "alberti":
                    cycle = [bass, voicing[-1], voicing[len(voicing) // 2], voicing[-1]]
                else:
                    cycle = (
                        [bass, *voicing, *reversed(voicing[:-1])] if len(voicing) > 1 else [bass, *voicing]
                    )
                t, k = 0.0, 0
                while t < bar.length - 1e-9:
                    length = min(unit, bar.length - t)
                    ring = min(bar.length - t, unit * (2.0 if style == "arpeggio" else 1.0))
                    if k == 0:  # the bass note is held under the pattern (as a pianist's pedal does)
                        ring = bar.length
                    accent = 6 if t in self.strong else 0
                    notes.append(self._note(cycle[k % len(cycle)], bar.start + t, ring, vel + accent, 0.95))
                    t += length
                    k += 1
        return notes

    def bass(self, spec: InstrumentSpec) -> list[ScoreNote]:
        """Roots on the downbeat, fifths on the other strong beat, a step into the next chord."""
        lo, hi = spec.low, min(spec.low + 19, self.ceiling, spec.high)
        ref = self._ref(lo)
        vel = self.velocity - 6
        notes: list[ScoreNote] = []
        prev = lo + 7
        calm = self.mood in ("sad", "calm", "romantic")
        for i, bar in enumerate(self.bars):
            h = bar.chord
            last = i == len(self.bars) - 1
            root = self._nearest(h, h.root, ref, lo, hi, lo if last else prev)
            prev = root
            if last or bar.length < self.beats_per_bar:
                notes.append(self._note(root, bar.start, bar.length, vel, 1.0))
                continue
            fifth = self._nearest(h, h.root + 4, ref, lo, hi, root + 7)
            if self.beats_per_bar == 4.0 and not calm:
                nxt = self.bars[i + 1].chord
                target = self._nearest(nxt, nxt.root, ref, lo, hi, root)
                step = self._nearest(h, nxt.root + (1 if target < root else -1), ref, lo, hi, target)
                pattern = [(0.0, 2.0, root), (2.0, 1.0, fifth), (3.0, 1.0, step)]
            elif self.beats_per_bar == 4.0 and calm and self.rng.random() < 0.5:
                pattern = [(0.0, 4.0, root)]
            else:
                half = self.strong[1] if len(self.strong) > 1 else (2.0 if self.beats_per_bar == 3.0 else 1.0)
                pattern = [(0.0, half, root), (half, self.beats_per_bar - half, fifth)]
            for at, length, pitch in pattern:
                notes.append(self._note(pitch, bar.start + at, length, vel + (6 if at == 0 else 0), 0.92))
        return notes

    def inner_voice(self, spec: InstrumentSpec, index: int) -> list[ScoreNote]:
        """A sustained line of chord tones (3rd, 5th or root by `index`) that keeps common tones."""
        lo, hi = spec.low, min(spec.high, self.ceiling)
        if hi - lo < 7:  # the melody sits at the bottom of this instrument: share its register
            hi = min(spec.high, lo + 12)
        ref = self._ref(lo)
        vel = self.velocity - 14
        prefer = (2, 4, 0)[index % 3]
        notes: list[ScoreNote] = []
        prev = (lo + hi) // 2 - 2 * index
        for bar in self.bars:
            h = bar.chord
            tones = [self._nearest(h, h.root + d, ref, lo, hi, prev) for d in (0, 2, 4)]
            if prev in tones and self.rng.random() < 0.7:
                pitch = prev  # keep the common tone
            else:
                pitch = self._nearest(h, h.root + prefer, ref, lo, hi, prev)
            if bar.length >= self.beats_per_bar and self.rng.random() < 0.35 and bar is not self.bars[-1]:
                half = self.beats_per_bar / 2
                other = min((t for t in tones if t != pitch), key=lambda t: abs(t - pitch), default=pitch)
                notes.append(self._note(pitch, bar.start, half, vel, 0.97))
                notes.append(self._note(other, bar.start + half, bar.length - half, vel - 4, 0.97))
                prev = other
            else:
                notes.append(self._note(pitch, bar.start, bar.length, vel, 0.98))
                prev = pitch
        return notes

    def drums(self, groove: str = "basic", velocity_offset: int = 0) -> list[ScoreNote]:
        """A General MIDI drum groove. `basic`: kick on strong beats, snare (side stick when calm)
        on the off-beats, hats on a pulse. In 4/4 also `boom_bap` (lo-fi / hip hop: syncopated kick,
        eighth-note hats), `rock`, `four_on_floor` (dance) and `swing` (jazz ride pattern)."""
        soft = self.mood in ("sad", "calm", "romantic", "mysterious")
        snare = SIDE_STICK if soft else SNARE
        hat_unit = self._unit(0.5)
        vel = self.velocity - 6 + velocity_offset
        if self.beats_per_bar != 4.0 or groove not in GROOVES:
            groove = "basic"
        notes: list[ScoreNote] = []
        metric = self._metric_bars()
        for i, bar in enumerate(metric):
            if i == len(metric) - 1 or bar.length < self.beats_per_bar:
                notes.append(self._note(KICK, bar.start, min(0.5, bar.length), vel + 8))
                notes.append(self._note(CRASH if not soft else RIDE, bar.start, min(1.0, bar.length), vel))
                continue
            if i == 0:
                notes.append(self._note(CRASH if not soft else RIDE, bar.start, 1.0, vel - 4))
            if groove != "basic":
                kicks, snares, hats, hat = GROOVES[groove]
                if groove == "boom_bap" and self.rng.random() < 0.35:
                    kicks = (*kicks, 3.5)  # a pickup kick into the next bar, now and then
                for t in kicks:
                    notes.append(self._note(KICK, bar.start + t, 0.25, vel + (8 if t == 0 else 2)))
                backbeat = SIDE_STICK if groove == "swing" else SNARE
                for t in snares:
                    notes.append(self._note(backbeat, bar.start + t, 0.25, vel))
                for t in hats:
                    accent = 10 if t in self.strong or float(t).is_integer() else 0
                    notes.append(self._note(hat, bar.start + t, 0.2, vel - 22 + accent))
                continue
            if self.beats_per_bar == 4.0:
                kicks, snares = [0.0, 2.0] + ([2.5] if self.rng.random() < 0.4 else []), [1.0, 3.0]
            elif self.strong == (0.0, 1.5):  # 6/8
                kicks, snares = [0.0], [1.5]
            elif self.beats_per_bar == 3.0:
                kicks, snares = [0.0], [1.0, 2.0]
            else:
                kicks, snares = [0.0], [1.0]
            for t in kicks:
                notes.append(self._note(KICK, bar.start + t, 0.25, vel + (8 if t == 0 else 0)))
            for t in snares:
                notes.append(self._note(snare, bar.start + t, 0.25, vel))
            t = 0.0
            while t < bar.length - 1e-9:
                accent = 8 if t in self.strong else 0
                notes.append(self._note(CLOSED_HAT, bar.start + t, min(hat_unit, 0.25), vel - 20 + accent))
                t += hat_unit
        return notes


# 4/4 grooves: kick beats, snare beats, hat beats, hat sound. The other parts play straight
# eighths, so the hats do too (swung hats over straight arpeggios would flam); jazz swings on the ride.
_EIGHTHS = tuple(b / 2 for b in range(8))
GROOVES: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], int]] = {
    "boom_bap": ((0.0, 1.75, 2.5), (1.0, 3.0), _EIGHTHS, CLOSED_HAT),
    "rock": ((0.0, 2.0, 2.5), (1.0, 3.0), _EIGHTHS, CLOSED_HAT),
    "four_on_floor": ((0.0, 1.0, 2.0, 3.0), (1.0, 3.0), (0.5, 1.5, 2.5, 3.5), OPEN_HAT),
    "swing": ((0.0,), (1.0, 3.0), (0.0, 1.0, 1 + 2 / 3, 2.0, 3.0, 3 + 2 / 3), RIDE),
}
