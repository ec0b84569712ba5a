"""The voicebank's grapheme-to-phoneme dictionary: lyric -> phonemes, and which phonemes are vowels.

Two formats are read:
- OpenUtau `dsdict.yaml`: `symbols: [{symbol, type}]` (type `vowel` marks vowels; stop, fricative,
  nasal, liquid, ... are consonants) and `entries: [{grapheme, phonemes: [...]}]`.
- openvpi `dictionary.txt`: one `<syllable>\\t<ph1> <ph2> ...` per line. It carries no phoneme types;
  openvpi dictionaries are two-part (onset consonant + vowel), so the last phoneme of each
  syllable is taken as its vowel.

`SP` (rest) and `AP` (breath) are always vowels, as in OpenUtau: they carry a note's timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harmonia.errors import EngineUnavailable

ALWAYS_VOWELS = frozenset({"SP", "AP"})


@dataclass
class PhonemeDictionary:
    path: Path
    entries: dict[str, list[str]] = field(default_factory=dict)
    vowels: set[str] = field(default_factory=set)

    def lookup(self, lyric: str) -> list[str] | None:
        """Phonemes of a lyric: exact match first, then case-insensitive."""
        found = self.entries.get(lyric)
        if found is None:
            found = self.entries.get(lyric.lower())
        return list(found) if found is not None else None

    def is_vowel(self, phoneme: str) -> bool:
        return phoneme in ALWAYS_VOWELS or phoneme in self.vowels

    def __len__(self) -> int:
        return len(self.entries)


def _bad(path: Path, reason: str) -> EngineUnavailable:
    return EngineUnavailable(f"voicebank file {path}: {reason}")


def _load_yaml_dict(path: Path) -> PhonemeDictionary:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _bad(path, f"not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise _bad(path, "expected a mapping with an 'entries' list")
    result = PhonemeDictionary(path)
    for i, sym in enumerate(data.get("symbols") or []):
        if not isinstance(sym, dict) or "symbol" not in sym:
            raise _bad(path, f"symbols[{i}] has no 'symbol'")
        if str(sym.get("type", "")).lower() == "vowel":
            result.vowels.add(str(sym["symbol"]))
    for i, entry in enumerate(data["entries"]):
        phonemes = entry.get("phonemes") if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or "grapheme" not in entry
            or not isinstance(phonemes, list)
            or not phonemes
        ):
            raise _bad(path, f"entries[{i}] needs 'grapheme' and a non-empty 'phonemes' list")
        result.entries[str(entry["grapheme"])] = [str(p) for p in phonemes]
    if not data.get("symbols"):
        _infer_vowels(result)
    return result


def _load_txt_dict(path: Path) -> PhonemeDictionary:
    result = PhonemeDictionary(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise _bad(path, "not UTF-8 text") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        syllable, sep, phones = line.partition("\t")
        if not sep or not phones.split():
            raise _bad(path, f"line {n} is not '<syllable><TAB><phonemes>'")
        result.entries[syllable.strip()] = phones.split()
    _infer_vowels(result)
    return result


def _infer_vowels(result: PhonemeDictionary) -> None:
    result.vowels.update(phones[-1] for phones in result.entries.values())


def find_dictionary(root: Path) -> Path:
    """The voicebank's dictionary file: dsdict.yaml, dsdur/dsdict.yaml or dictionary.txt."""
    for candidate in (root / "dsdict.yaml", root / "dsdur" / "dsdict.yaml", root / "dictionary.txt"):
        if candidate.is_file():
            return candidate
    raise _bad(
        root / "dsdict.yaml", "no dictionary found (also looked for dsdur/dsdict.yaml, dictionary.txt)"
    )


def load_dictionary(root: Path, phonemes: dict[str, int], inventory: str) -> PhonemeDictionary:
    """Find and read the voicebank's dictionary (dsdict.yaml, dsdur/dsdict.yaml or dictionary.txt);
    its vowels must be in `phonemes` (the inventory read from the file named `inventory`)."""
    path = find_dictionary(root)
    result = _load_txt_dict(path) if path.suffix == ".txt" else _load_yaml_dict(path)
    if not result.entries:
        raise _bad(result.path, "the dictionary has no entries")
    if not any(result.is_vowel(p) and p in phonemes for p in result.vowels):
        raise _bad(result.path, f"none of its vowels is in the phoneme inventory {inventory}")
    return result
