"""The rule-based interpreter: free-text instructions (+ explicit overrides) -> an `Interpretation`.

It reads instruments, tempo, key/mode, mood, metre and duration from plain words ("a slow piano
piece in D minor, 20 seconds", "fast happy flute and cello duet at 140 bpm"). Every choice records
where it came from in `sources`, so the result states its own best effort. It is deterministic:
the same text and overrides always give the same interpretation. Later, an LLM planner can produce
the same structure; this stays the offline fallback.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass, field

from harmonia.music.instruments import CATALOG, InstrumentSpec, find_instrument
from harmonia.music.theory import Key, Mode, parse_key

MIN_DURATION_S = 1.0
MAX_DURATION_S = 300.0
MIN_TEMPO = 30.0
MAX_TEMPO = 300.0
MAX_PARTS = 8
DEFAULT_DURATION_S = 14.0

# Word -> tempo in BPM; multi-word phrases are matched before their parts.
TEMPO_WORDS: dict[str, float] = {
    "very slow": 50, "extremely slow": 46, "largo": 50, "grave": 46, "lento": 54,
    "slow": 66, "slowly": 66, "adagio": 70, "ballad": 72,
    "laid back": 84, "unhurried": 80, "andante": 88, "walking": 92,
    "moderate": 100, "moderately": 100, "moderato": 104, "medium": 100, "mid tempo": 100,
    "allegretto": 116, "upbeat": 124, "lively": 132,
    "fast": 144, "quick": 144, "quickly": 144, "allegro": 138, "brisk": 132,
    "very fast": 176, "presto": 180, "vivace": 168, "rapid": 168, "frantic": 184,
}  # fmt: skip

MOOD_WORDS: dict[str, tuple[str, ...]] = {
    "sad": ("sad", "melancholy", "melancholic", "sorrowful", "mournful", "tragic", "lonely", "somber",
            "sombre", "gloomy", "grief", "tearful", "wistful", "nostalgic", "longing", "heartbroken"),
    "dark": ("dark", "ominous", "sinister", "eerie", "scary", "spooky", "menacing", "haunting", "tense"),
    "mysterious": ("mysterious", "mystical", "enigmatic", "magical"),
    "calm": ("calm", "peaceful", "gentle", "serene", "soft", "tender", "relaxing", "relaxed", "soothing",
             "dreamy", "quiet", "lullaby", "ambient", "meditative"),
    "romantic": ("romantic", "love", "loving", "sweet", "lyrical", "warm", "wedding"),
    "happy": ("happy", "joyful", "joyous", "cheerful", "bright", "sunny", "uplifting", "hopeful", "glad",
              "merry", "festive"),
    "playful": ("playful", "whimsical", "bouncy", "cute", "fun", "funny", "quirky", "silly"),
    "energetic": ("energetic", "exciting", "driving", "intense", "powerful", "aggressive", "furious",
                  "wild", "action"),
    "triumphant": ("triumphant", "heroic", "epic", "majestic", "grand", "victorious", "proud", "march",
                   "fanfare", "anthem"),
}  # fmt: skip
MOOD_MODE: dict[str, Mode] = {
    "sad": "minor", "dark": "minor", "mysterious": "minor", "calm": "major", "romantic": "major",
    "happy": "major", "playful": "major", "energetic": "minor", "triumphant": "major", "neutral": "major",
}  # fmt: skip
MOOD_TEMPO: dict[str, float] = {
    "sad": 70, "dark": 76, "mysterious": 84, "calm": 76, "romantic": 80, "happy": 116, "playful": 126,
    "energetic": 144, "triumphant": 112, "neutral": 100,
}  # fmt: skip
ENSEMBLES: dict[str, tuple[str, ...]] = {
    "string quartet": ("violin", "violin", "viola", "cello"),
    "string trio": ("violin", "viola", "cello"),
    "piano trio": ("violin", "cello", "piano"),
    "brass quintet": ("trumpet", "trumpet", "horn", "trombone", "tuba"),
    "wind quintet": ("flute", "oboe", "clarinet", "horn", "bassoon"),
    "orchestra": ("flute", "strings", "horn", "cello", "double bass"),
    "orchestral": ("flute", "strings", "horn", "cello", "double bass"),
}
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty": 40, "forty five": 45, "fifty": 50, "sixty": 60, "ninety": 90,
}  # fmt: skip
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "h": 3600, "hr": 3600, "hour": 3600, "min": 60, "minute": 60}
_NUM = r"(\d+(?:\.\d+)?|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + ")"
_DURATION_RE = re.compile(
    rf"\b(?:(half an?|half a)\s+(minute|hour)|{_NUM}(?:\s+and\s+a\s+half)?\s*-?\s*"
    r"(seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h)\b(\s+and\s+a\s+half)?)"
    # "80s pop" is a decade, not 80 seconds
    r"(?!\s*(?:style|pop|rock|music|disco|hip|funk|synth|vibes?|sound|era|retro|jazz)\b)"
)
_BARS_RE = re.compile(rf"\b{_NUM}\s*-?\s*(bars?|measures?)\b")
_BPM_RE = re.compile(
    r"\b(\d+(?:\.\d+)?)\s*-?\s*(?:bpm|beats per minute|beats a minute)\b|\btempo (?:of )?(\d+)\b"
)
_KEY_RE = re.compile(
    r"\b([a-g])\s*(#|♯|♭|-?sharp|-?flat|b(?=\s*(?:major|minor|maj|min)\b))?\s*(major|minor)\b"
)
_KEY_IN_RE = re.compile(r"\bin ([A-G])(#|♯|b|♭)?(?=[\s,.;!?]|$)")
_METER_RE = re.compile(r"\b([2346])\s*/\s*([48])\b")
_NEGATION_RE = re.compile(r"\b(?:no|without|not|except|minus)\s+(?:any\s+|a\s+|an\s+|the\s+)?$")


class InterpretError(ValueError):
    """The instructions ask for something out of range; `field` names the payload field to blame."""

    def __init__(self, message: str, field: str = "instructions") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Interpretation:
    instructions: str
    instruments: tuple[InstrumentSpec, ...]
    tempo_bpm: float
    key: Key
    mood: str
    time_signature: tuple[int, int]
    duration_s: float
    seed: int
    sources: dict[str, str] = field(default_factory=dict)


def derive_seed(instructions: str) -> int:
    """A 31-bit seed from the instructions (case and spacing ignored): same text, same music."""
    norm = " ".join(instructions.lower().split())
    return int.from_bytes(hashlib.sha256(norm.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _normalize(text: str) -> str:
    text = text.replace("♯", "#").replace("♭", "b").replace("\u2013", "-")  # en dash
    return " ".join(text.lower().split())


def _number(token: str) -> float:
    return float(_NUMBER_WORDS[token]) if token in _NUMBER_WORDS else float(token)


def parse_duration(text: str) -> tuple[float, str] | None:
    """The first duration in `text` in seconds, adjacent mentions summed ("1 minute 30 seconds")."""
    total, parts, last_end = 0.0, [], -1
    for m in _DURATION_RE.finditer(text):
        if last_end >= 0 and not re.fullmatch(r"\s*(?:and|,)?\s*", text[last_end : m.start()]):
            break
        if m.group(1):  # "half a minute", "half an hour"
            seconds = 0.5 * _UNIT_S[m.group(2)]
        else:
            count = _number(m.group(3)) + (0.5 if " and a half" in m.group(0) else 0.0)
            seconds = count * _UNIT_S[m.group(4).rstrip("s") or "s"]
        total += seconds
        parts.append(m.group(0))
        last_end = m.end()
    return (total, " ".join(parts)) if parts else None


@functools.cache
def _phrase_patterns(phrases: tuple[str, ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Each phrase with its whole-word pattern, longest first (compiled once per vocabulary)."""
    ordered = sorted(phrases, key=len, reverse=True)
    return tuple((p, re.compile(rf"(?<![a-z]){re.escape(p)}(?![a-z])")) for p in ordered)


def _find_phrases(text: str, phrases: tuple[str, ...]) -> list[tuple[int, str]]:
    """Longest-first whole-word matches of `phrases`, each span used once: [(position, phrase)]."""
    taken = [False] * len(text)
    found: list[tuple[int, str]] = []
    for phrase, pattern in _phrase_patterns(phrases):
        if phrase not in text:  # a substring test first: most of a vocabulary is absent
            continue
        for m in pattern.finditer(text):
            if not any(taken[m.start() : m.end()]):
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
                found.append((m.start(), phrase))
    return sorted(found)


@functools.cache
def _instrument_names() -> tuple[str, ...]:
    return tuple([n for spec in CATALOG for n in (spec.name, *spec.aliases)] + list(ENSEMBLES))


@functools.cache
def _mood_words() -> dict[str, str]:
    return {w: mood for mood, ws in MOOD_WORDS.items() for w in ws}


def _instruments_from_text(text: str) -> list[InstrumentSpec]:
    names = _instrument_names()
    chosen: list[InstrumentSpec] = []
    excluded: set[str] = set()
    for pos, phrase in _find_phrases(text, names):
        negated = bool(_NEGATION_RE.search(text[max(0, pos - 20) : pos]))
        specs = [find_instrument(n) for n in ENSEMBLES.get(phrase, (phrase,))]
        for spec in specs:
            if spec is None:
                continue
            if negated:
                excluded.add(spec.name)
            elif phrase in ENSEMBLES or spec not in chosen:
                chosen.append(spec)
    return [spec for spec in chosen if spec.name not in excluded][:MAX_PARTS]


def _mood(text: str) -> tuple[str, str | None]:
    words = _mood_words()
    found = _find_phrases(text, tuple(words))
    if not found:
        return "neutral", None
    return words[found[0][1]], found[0][1]


def mood_of(text: str) -> str | None:
    """The composer mood a free mood label implies ("melancholic, dreamy" -> "sad"); None if none."""
    if text.strip().lower() in MOOD_MODE:
        return text.strip().lower()
    mood, word = _mood(_normalize(text))
    return mood if word else None


def instruments_in(text: str) -> list[InstrumentSpec]:
    """Catalog instruments named in `text`, in order ("warm rhodes and upright bass" -> [electric
    piano, double bass]); negated ones ("no drums") are left out."""
    return _instruments_from_text(_normalize(text))


def interpret(
    instructions: str,
    *,
    duration_s: float | None = None,
    tempo_bpm: float | None = None,
    key: str | None = None,
    instruments: list[str] | None = None,
    seed: int | None = None,
    mood: str | None = None,
    default_mood: str | None = None,
    default_tempo: float | None = None,
    default_duration: float | None = None,
) -> Interpretation:
    """Read `instructions`; explicit arguments override what the text implies.

    `mood` (a free label, mapped through the mood words) overrides the text's mood; the `default_*`
    values (a genre's, say) replace the built-in defaults where the text says nothing.

    Raises InterpretError (field "instructions") when the text asks for an out-of-range duration
    or tempo, and ValueError for a bad `key` string or unknown `instruments` names.
    """
    text = _normalize(instructions)
    sources: dict[str, str] = {}
    sources["seed"] = "field 'seed'" if seed is not None else "derived from the instructions"
    seed = derive_seed(instructions) if seed is None else seed

    mood_word: str | None
    if mood is not None and (field_mood := mood_of(mood)) is not None:
        mood, mood_word = field_mood, None
        sources["mood"] = "field 'mood'"
    else:
        mood, mood_word = _mood(text)
        sources["mood"] = f"word '{mood_word}'" if mood_word else "default"
        if not mood_word and default_mood in MOOD_MODE:
            mood = default_mood
            sources["mood"] = "genre"

    # --- instruments
    if instruments:
        specs: list[InstrumentSpec] = []
        for name in instruments:
            spec = find_instrument(name)
            if spec is None:
                raise ValueError(f"unknown instrument {name!r}")
            specs.append(spec)
        sources["instruments"] = "field 'instruments'"
    else:
        specs = _instruments_from_text(text)
        sources["instruments"] = "text" if specs else "default (piano)"
        specs = specs or [find_instrument("piano")]  # type: ignore[list-item]

    # --- metre
    meter = (4, 4)
    sources["time_signature"] = "default"
    if m := _METER_RE.search(text):
        meter = (int(m.group(1)), int(m.group(2)))
        sources["time_signature"] = f"text '{m.group(0)}'"
    elif m := re.search(r"\b(waltz|minuet|mazurka|jig|barcarolle|lilt|lilting)\b", text):
        meter = (6, 8) if m.group(1) in ("jig", "barcarolle", "lilt", "lilting") else (3, 4)
        sources["time_signature"] = f"word '{m.group(1)}'"

    # --- tempo
    if tempo_bpm is not None:
        tempo = float(tempo_bpm)
        sources["tempo_bpm"] = "field 'tempo_bpm'"
    elif m := _BPM_RE.search(text):
        tempo = float(m.group(1) or m.group(2))
        if not MIN_TEMPO <= tempo <= MAX_TEMPO:
            raise InterpretError(
                f"the requested tempo ({m.group(0)}) is out of range: {MIN_TEMPO:.0f}..{MAX_TEMPO:.0f} bpm"
            )
        sources["tempo_bpm"] = f"text '{m.group(0)}'"
    elif found := _find_phrases(text, tuple(TEMPO_WORDS)):
        tempo = TEMPO_WORDS[found[0][1]]
        sources["tempo_bpm"] = f"word '{found[0][1]}'"
    elif default_tempo is not None:
        # A genre's tempo, nudged by the mood (a sad folk song is slower than a plain one).
        tempo = round(default_tempo * min(1.1, max(0.9, MOOD_TEMPO[mood] / MOOD_TEMPO["neutral"])))
        sources["tempo_bpm"] = f"genre, mood '{mood}'"
    else:
        tempo = MOOD_TEMPO[mood]
        sources["tempo_bpm"] = f"mood '{mood}'" if mood != "neutral" else "default"

    # --- key
    rng = random.Random(seed ^ 0x5EED)
    if key is not None:
        parsed = parse_key(key)  # ValueError -> field "key"
        sources["key"] = "field 'key'"
    elif m := _KEY_RE.search(text):
        parsed = parse_key(f"{m.group(1)}{(m.group(2) or '').replace('-', '')} {m.group(3)}")
        sources["key"] = f"text '{m.group(0)}'"
    elif m := _KEY_IN_RE.search(" ".join(instructions.split())):
        parsed = parse_key(f"{m.group(1)}{m.group(2) or ''}")
        sources["key"] = f"text '{m.group(0)}'"
    else:
        if m := re.search(r"\b(major|minor)\b", text):
            mode: Mode = m.group(1)  # type: ignore[assignment]
            sources["key"] = f"word '{m.group(1)}', tonic from seed"
        else:
            mode = MOOD_MODE[mood]
            sources["key"] = f"mood '{mood}', tonic from seed"
        tonics = ("C", "G", "D", "F", "A", "Bb", "Eb") if mode == "major" else ("A", "D", "E", "G", "C", "B")
        parsed = parse_key(f"{rng.choice(tonics)} {mode}")

    # --- duration
    if duration_s is not None:
        duration = float(duration_s)
        sources["duration_s"] = "field 'duration_s'"
    elif parsed_duration := parse_duration(text):
        duration, said = parsed_duration
        sources["duration_s"] = f"text '{said}'"
    elif m := _BARS_RE.search(text):
        beats = _number(m.group(1)) * meter[0] * 4 / meter[1]
        duration = beats * 60.0 / tempo + 1.0
        sources["duration_s"] = f"text '{m.group(0)}' at {tempo:g} bpm"
        said = m.group(0)
    else:
        duration = default_duration or DEFAULT_DURATION_S
        sources["duration_s"] = "default"
    if not MIN_DURATION_S <= duration <= MAX_DURATION_S:
        raise InterpretError(
            f"the requested duration ({sources['duration_s'].removeprefix('text ')}, {duration:g} s) is out "
            f"of range: {MIN_DURATION_S:g}..{MAX_DURATION_S:g} s"
        )

    return Interpretation(
        instructions=instructions,
        instruments=tuple(specs),
        tempo_bpm=round(float(tempo), 3),
        key=parsed,
        mood=mood,
        time_signature=meter,
        duration_s=round(float(duration), 3),
        seed=seed,
        sources=sources,
    )


# Compile the vocabularies' patterns now, at import, not on the first request that reads a text.
for _vocabulary in (_instrument_names(), tuple(_mood_words()), tuple(TEMPO_WORDS)):
    _phrase_patterns(_vocabulary)
