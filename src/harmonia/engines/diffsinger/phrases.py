"""From a score (or .ds segments) to phrases: timed phonemes, word groups and the notes of each phrase.

A phrase is what one acoustic-model call renders: the notes between two rests, padded with `SP`
before and after (OpenUtau pads 100 ms each side). Phonemes are laid out the way singers (and
OpenUtau's phonemizers) do it: the vowel starts on the note, onset consonants come *before* the
note, taking time from the previous note or the leading silence. Phonemes are grouped in "words"
anchored at note onsets (group k = the vowel part of note k + the onset consonants of note k+1);
the duration model, when the voicebank has one, predicts lengths that are stretched to fill each
group, which is how OpenUtau aligns predicted durations to the score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harmonia.engines.diffsinger.dictionary import PhonemeDictionary
from harmonia.engines.diffsinger.input import DsSegment, ScoreNote, parse_note
from harmonia.errors import InvalidInput

HEAD_S = 0.1
TAIL_S = 0.1
CONSONANT_S = 0.07
MAX_ONSET_S = 0.5  # onset consonants never start more than this before their note
MIN_VOWEL_SHARE = 0.3  # consonants shrink so that vowels keep at least this share of a group


@dataclass
class Phone:
    symbol: str
    start: float
    end: float
    midi: int
    group: int


@dataclass
class Phrase:
    phones: list[Phone]
    notes: list[tuple[float, float, int]]  # sung pitches for the f0 curve
    f0: tuple[np.ndarray, float, float] | None = None  # given curve: (hz, timestep, t0)
    group_bounds: list[float] = field(default_factory=list)  # group k spans [bounds[k], bounds[k+1])

    @property
    def start(self) -> float:
        return self.phones[0].start

    @property
    def end(self) -> float:
        return self.phones[-1].end


def split_phrases(score: list[ScoreNote]) -> list[list[ScoreNote]]:
    """Cut the score at rests; each run of sung notes (and breaths) is one phrase."""
    phrases: list[list[ScoreNote]] = []
    current: list[ScoreNote] = []
    for note in score:
        if note.is_rest:
            if current:
                phrases.append(current)
            current = []
        else:
            current.append(note)
    if current:
        phrases.append(current)
    return phrases


def _split_onset(phonemes: list[str], dictionary: PhonemeDictionary) -> tuple[list[str], list[str]]:
    """Onset consonants (sung before the note) and the rest, which starts on the note."""
    for i, ph in enumerate(phonemes):
        if dictionary.is_vowel(ph):
            return phonemes[:i], phonemes[i:]
    return [], phonemes


def _fill(
    items: list[tuple[str, float | None, float]], start: float, length: float
) -> list[tuple[str, float, float]]:
    """Lay out (symbol, fixed length or None, weight) from `start`: flexible ones share what is left."""
    fixed = sum(f for _, f, _ in items if f is not None)
    weights = sum(w for _, f, w in items if f is None)
    scale = 1.0
    if weights > 0 and fixed > length * (1 - MIN_VOWEL_SHARE):
        scale = length * (1 - MIN_VOWEL_SHARE) / fixed
    elif weights == 0 and fixed > 0:
        scale = length / fixed
    flexible = max(length - fixed * scale, 0.0)
    out = []
    t = start
    for symbol, f, w in items:
        d = f * scale if f is not None else flexible * w / weights
        out.append((symbol, t, t + d))
        t += d
    return out


def layout_phrase(
    notes: list[ScoreNote], dictionary: PhonemeDictionary, predicted: list[float] | None = None
) -> Phrase:
    """Timed phonemes for a phrase. `predicted` (seconds per phone, from the duration model) replaces
    the fixed consonant lengths: every phone of a group then gets its predicted share of it."""
    sung = [n for n in notes if n.phonemes or n.slur]
    # groups: (anchor time, owning midi, body phonemes); slurs extend the current group
    anchors: list[float] = []
    bodies: list[list[tuple[str, int]]] = []
    onsets: list[list[tuple[str, int]]] = []
    pitch_notes: list[tuple[float, float, int]] = []
    last_midi = next((n.midi for n in sung if n.midi is not None), 60)
    for note in sung:
        midi = note.midi if note.midi is not None else last_midi
        if note.midi is not None:
            pitch_notes.append((note.start, note.end, note.midi))
            last_midi = note.midi
        if note.slur:
            continue
        onset, body = _split_onset(note.phonemes, dictionary)
        anchors.append(note.start)
        onsets.append([(p, midi) for p in onset])
        bodies.append([(p, midi) for p in body])
    end = notes[-1].end
    pred = iter(predicted) if predicted is not None else None

    def item(symbol: str) -> tuple[str, float | None, float]:
        if pred is not None:
            return symbol, None, max(next(pred), 1e-3)
        return (symbol, None, 1.0) if dictionary.is_vowel(symbol) else (symbol, CONSONANT_S, 0.0)

    phones: list[Phone] = []
    # head group: SP, then the first note's onset consonants, ending on the first anchor
    head_midi = bodies[0][0][1] if bodies[0] else last_midi
    head_items = [item("SP")] + [item(p) for p, _ in onsets[0]]
    head_lens = [w if pred is not None else f or 0.0 for _, f, w in head_items]
    head_lens[0] = HEAD_S
    if sum(head_lens[1:]) > MAX_ONSET_S:
        k = MAX_ONSET_S / sum(head_lens[1:])
        head_lens[1:] = [x * k for x in head_lens[1:]]
    t = anchors[0] - sum(head_lens)
    for (symbol, _, _), d in zip(head_items, head_lens, strict=True):
        phones.append(Phone(symbol, t, t + d, head_midi, 0))
        t += d
    bounds = [phones[0].start, anchors[0]]
    for k, anchor in enumerate(anchors):
        last = k == len(anchors) - 1
        group_end = end + TAIL_S if last else anchors[k + 1]
        items = [item(p) for p, _ in bodies[k]]
        midis = [m for _, m in bodies[k]]
        if not last:
            items += [item(p) for p, _ in onsets[k + 1]]
            midis += [m for _, m in onsets[k + 1]]
        else:
            items.append(("SP", TAIL_S, 0.0))
            midis.append(midis[-1] if midis else last_midi)
        for (symbol, s, e), m in zip(_fill(items, anchor, group_end - anchor), midis, strict=True):
            phones.append(Phone(symbol, s, e, m, k + 1))
        bounds.append(group_end)
    if not pitch_notes:  # a phrase of breaths only: hold the last sung pitch
        pitch_notes = [(phones[0].start, phones[-1].end, last_midi)]
    return Phrase(phones=phones, notes=pitch_notes, group_bounds=bounds)


def ds_to_phrases(segments: list[DsSegment], inventory: dict[str, int]) -> list[Phrase]:
    """Native .ds segments: phonemes and durations as given; pitch from f0_seq or from the notes."""
    phrases = []
    for i, seg in enumerate(segments):
        item = f"ds[{i}]"
        if not seg.ph_seq:
            raise InvalidInput(f"{item}: ph_seq is empty", field=f"{item}.ph_seq")
        if len(seg.ph_dur) != len(seg.ph_seq):
            raise InvalidInput(
                f"{item}: ph_dur has {len(seg.ph_dur)} values for {len(seg.ph_seq)} phonemes",
                field=f"{item}.ph_dur",
            )
        for ph in seg.ph_seq:
            if ph not in inventory:
                raise InvalidInput(f"{item}: phoneme {ph!r} is not in the voicebank", field=f"{item}.ph_seq")
        if any(not np.isfinite(d) or d <= 0 for d in seg.ph_dur):
            raise InvalidInput(
                f"{item}: every ph_dur must be a positive number of seconds", field=f"{item}.ph_dur"
            )
        notes: list[tuple[float, float, int]] = []
        if seg.note_seq is not None:
            if seg.note_dur is None or len(seg.note_dur) != len(seg.note_seq):
                raise InvalidInput(f"{item}: note_dur must match note_seq", field=f"{item}.note_dur")
            t = seg.offset
            for j, (name, dur) in enumerate(zip(seg.note_seq, seg.note_dur, strict=True)):
                midi = parse_note(name, f"{item}.note_seq[{j}]")
                if midi is not None:
                    notes.append((t, t + dur, midi))
                t += dur
        f0 = None
        if seg.f0_seq is not None:
            values = np.asarray(seg.f0_seq, dtype=np.float64)
            if seg.f0_timestep is None or not np.all(np.isfinite(values)) or values.max(initial=0) <= 0:
                raise InvalidInput(
                    f"{item}: f0_seq needs f0_timestep and positive Hz values", field=f"{item}.f0_seq"
                )
            voiced = values > 0
            values = np.interp(np.arange(len(values)), np.flatnonzero(voiced), values[voiced])
            f0 = (values.astype(np.float32), float(seg.f0_timestep), seg.offset)
        elif not notes:
            raise InvalidInput(f"{item}: give f0_seq or note_seq + note_dur", field=item)
        t = seg.offset
        phones = []
        for ph, dur in zip(seg.ph_seq, seg.ph_dur, strict=True):
            mid = t + dur / 2
            midi = next((m for s, e, m in notes if s <= mid < e), notes[0][2] if notes else 60)
            phones.append(Phone(ph, t, t + dur, midi, 0))
            t += dur
        phrases.append(Phrase(phones=phones, notes=notes, f0=f0))
    return phrases


def frame_durations(phrase: Phrase, frame_s: float) -> list[int]:
    """Phone lengths in frames, rounding boundaries (not lengths) so errors do not accumulate."""
    origin = phrase.start
    bounds = [round((p.end - origin) / frame_s) for p in phrase.phones]
    durations = []
    prev = 0
    for b in bounds:
        b = max(b, prev + 1)  # every phone keeps at least one frame
        durations.append(b - prev)
        prev = b
    return durations
