"""Music theory for the composer: keys, scales, diatonic degrees, chords, note spelling.

Pitches inside the composer are *diatonic degrees*: integers counting scale steps from the tonic
of a reference octave (0 = tonic, 7 = tonic an octave up, -1 = leading tone below). That makes
"a step", "a third", "a chord tone" simple arithmetic; `Key.midi` turns a degree into a MIDI number.
Minor keys use the natural minor scale, except that the 7th degree is raised (harmonic minor) where
the dominant harmony needs a leading tone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Mode = Literal["major", "minor"]

MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)
_SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
_LETTER_PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
# Keys written with flats: F major and every major key on a black key except F#; their relative minors.
_FLAT_MAJOR_PCS = {5, 10, 3, 8, 1}
_FLAT_MINOR_PCS = {2, 7, 0, 5, 10}

KEY_PATTERN = re.compile(
    r"^\s*(?P<letter>[a-g])\s*(?P<acc>#|♯|b|♭|-?sharp|-?flat)?\s*"
    r"(?P<mode>major|minor|maj|min|m|dur|moll)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Key:
    tonic_pc: int
    mode: Mode

    @property
    def uses_flats(self) -> bool:
        return self.tonic_pc in (_FLAT_MAJOR_PCS if self.mode == "major" else _FLAT_MINOR_PCS)

    @property
    def tonic_name(self) -> str:
        return (_FLAT_NAMES if self.uses_flats else _SHARP_NAMES)[self.tonic_pc]

    @property
    def name(self) -> str:
        return f"{self.tonic_name} {self.mode}"

    @property
    def steps(self) -> tuple[int, ...]:
        return MAJOR_STEPS if self.mode == "major" else MINOR_STEPS

    @property
    def pitch_classes(self) -> set[int]:
        return {(self.tonic_pc + s) % 12 for s in self.steps}

    @property
    def midi_key_number(self) -> int:
        """pretty_midi / MIDI key-signature number: 0..11 major, 12..23 minor (by tonic)."""
        return self.tonic_pc + (12 if self.mode == "minor" else 0)

    def midi(self, degree: int, tonic_midi: int, *, raise_seventh: bool = False) -> int:
        """MIDI number of diatonic `degree` counted from the tonic at `tonic_midi`."""
        octave, step = divmod(degree, 7)
        semis = self.steps[step]
        if raise_seventh and self.mode == "minor" and step == 6:
            semis += 1
        return tonic_midi + 12 * octave + semis

    def tonic_near(self, midi: int) -> int:
        """The MIDI number of the tonic closest to (at or below) `midi`."""
        return midi - ((midi - self.tonic_pc) % 12)

    def spell(self, midi: int) -> str:
        """Note name with octave (C4 = 60), using flats in flat keys."""
        names = _FLAT_NAMES if self.uses_flats else _SHARP_NAMES
        if self.mode == "minor" and midi % 12 == (self.tonic_pc + 11) % 12:
            names = _SHARP_NAMES  # the raised leading tone is a sharp even in flat keys (D minor: C#)
        return f"{names[midi % 12]}{midi // 12 - 1}"


def parse_key(text: str) -> Key:
    """Parse 'D minor', 'F# major', 'Bb', 'c#m', 'E♭ maj', 'a min'. A bare tonic means major."""
    match = KEY_PATTERN.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a key like 'D minor', 'F# major' or 'Bb'")
    pc = _LETTER_PC[match["letter"].lower()]
    acc = (match["acc"] or "").lower()
    if acc in ("#", "♯") or acc.endswith("sharp"):
        pc += 1
    elif acc in ("b", "♭") or acc.endswith("flat"):
        pc -= 1
    mode_word = (match["mode"] or "major").lower()
    mode: Mode = "minor" if mode_word in ("minor", "min", "m", "moll") else "major"
    return Key(tonic_pc=pc % 12, mode=mode)


@dataclass(frozen=True)
class Chord:
    """A diatonic triad named by its roman numeral; `root` is a diatonic degree 0..6."""

    roman: str
    root: int

    @property
    def degrees(self) -> tuple[int, int, int]:
        return (self.root, self.root + 2, self.root + 4)

    @property
    def is_dominant(self) -> bool:
        return self.root == 4

    def contains(self, degree: int) -> bool:
        return (degree - self.root) % 7 in (0, 2, 4)

    def midi_notes(self, key: Key, tonic_midi: int, degrees: list[int]) -> list[int]:
        # The dominant in minor takes the raised 7th (its third): V, not v.
        return [key.midi(d, tonic_midi, raise_seventh=self.is_dominant) for d in degrees]


_ROMAN_MAJOR = ("I", "ii", "iii", "IV", "V", "vi", "vii°")
_ROMAN_MINOR = ("i", "ii°", "III", "iv", "V", "VI", "VII")


def chord(key: Key, root: int) -> Chord:
    """The diatonic triad on scale degree `root` (0-based) of `key`."""
    roman = (_ROMAN_MAJOR if key.mode == "major" else _ROMAN_MINOR)[root % 7]
    return Chord(roman=roman, root=root % 7)


# --- chord symbols (the SongPlan's vocabulary) -------------------------------------------------

_CHORD_SYMBOL = re.compile(r"^([A-G])([#b]?)(.*?)(?:/([A-G][#b]?))?$")
_TRIAD = {"major": (0, 4, 7), "minor": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8), "sus": (0, 5, 7)}


def _pc(letter: str, accidental: str) -> int:
    return (_LETTER_PC[letter.lower()] + (1 if accidental == "#" else -1 if accidental == "b" else 0)) % 12


def chord_symbol(key: Key, root: int) -> str:
    """The chord symbol of the diatonic triad on `root` ("Am", "E" for V in A minor, "Bdim")."""
    c = chord(key, root)
    tonic = key.tonic_near(60)
    pcs = [p % 12 for p in c.midi_notes(key, tonic, list(c.degrees))]
    third, fifth = (pcs[1] - pcs[0]) % 12, (pcs[2] - pcs[0]) % 12
    quality = "m" if (third, fifth) == (3, 7) else "dim" if (third, fifth) == (3, 6) else ""
    quality = "aug" if (third, fifth) == (4, 8) else quality
    names = _SHARP_NAMES if pcs[0] == (key.tonic_pc + 11) % 12 and key.mode == "minor" else None
    return f"{(names or (_FLAT_NAMES if key.uses_flats else _SHARP_NAMES))[pcs[0]]}{quality}"


def chord_pitch_classes(symbol: str) -> tuple[int, set[int]]:
    """Root pitch class and triad pitch classes of a chord symbol ("F#m7" -> (6, {6, 9, 1}));
    extensions are ignored (the arranger writes triads). ValueError for anything else."""
    match = _CHORD_SYMBOL.match(symbol.strip())
    if not match:
        raise ValueError(f"{symbol!r} is not a chord symbol")
    root = _pc(match[1], match[2])
    rest = match[3]
    if rest.startswith("dim") or "m7b5" in rest:
        kind = "dim"
    elif rest.startswith("aug") or rest.startswith("+"):
        kind = "aug"
    elif rest.startswith("m") and not rest.startswith("maj"):
        kind = "minor"
    elif rest.startswith("sus"):
        kind = "sus"
    else:
        kind = "major"
    return root, {(root + i) % 12 for i in _TRIAD[kind]}


def degree_for_symbol(key: Key, symbol: str) -> tuple[int, bool]:
    """The diatonic chord of `key` that best matches `symbol`: (root degree 0..6, exact?).

    The arranger writes diatonic harmony; a chromatic chord ("Bb" in C major) becomes the diatonic
    triad sharing most of its notes (ties: the root nearer by fifths), and `exact` is False."""
    root_pc, pcs = chord_pitch_classes(symbol)
    tonic = key.tonic_near(60)

    def fit(degree: int) -> tuple[int, int]:
        c = chord(key, degree)
        triad = {p % 12 for p in c.midi_notes(key, tonic, list(c.degrees))}
        d_root = (key.tonic_pc + key.steps[degree]) % 12
        fifths = ((d_root - root_pc) * 7) % 12
        return len(triad & pcs) + (2 if d_root == root_pc else 0), -min(fifths, 12 - fifths)

    degree = max(range(7), key=fit)
    c = chord(key, degree)
    exact = {p % 12 for p in c.midi_notes(key, tonic, list(c.degrees))} == pcs
    return degree, exact
