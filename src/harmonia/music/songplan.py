"""`SongPlan`: the structured plan of a song that jen1 arranges and renders.

A plan comes either from jen1's rule-based planner or from an LLM asked for JSON matching
`SongPlan.model_json_schema()`. LLM answers are often near misses ("Am" for "A minor", "120 BPM"
for 120, a chord list as one string, instruments as bare names), so the validators here turn the
common near misses into the canonical form and reject everything else with a message precise
enough to be sent back to the model as a repair request.

Canonical forms: `key` is "<Root> major|minor" with the root spelled with `#` or `b` ("F# minor");
church modes map to the major/minor with the same tonic third (dorian -> minor, mixolydian -> major).
`time_signature` is "N/D". Chords are chord symbols ("Am7", "G/B", "Bbmaj7"), never roman numerals.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["melody", "harmony", "bass", "drums", "percussion", "pad", "vocals", "fx"]
ROLES: tuple[str, ...] = ("melody", "harmony", "bass", "drums", "percussion", "pad", "vocals", "fx")

_ROLE_SYNONYMS = {
    "lead": "melody",
    "lead_melody": "melody",
    "main_melody": "melody",
    "counter_melody": "melody",
    "countermelody": "melody",
    "solo": "melody",
    "chords": "harmony",
    "chord": "harmony",
    "rhythm": "harmony",
    "comping": "harmony",
    "accompaniment": "harmony",
    "backing": "harmony",
    "bassline": "bass",
    "bass_line": "bass",
    "sub_bass": "bass",
    "drum": "drums",
    "drum_kit": "drums",
    "beat": "drums",
    "beats": "drums",
    "perc": "percussion",
    "pads": "pad",
    "atmosphere": "pad",
    "texture": "pad",
    "ambient": "pad",
    "vocal": "vocals",
    "voice": "vocals",
    "singer": "vocals",
    "lead_vocal": "vocals",
    "lead_vocals": "vocals",
    "backing_vocals": "vocals",
    "effects": "fx",
    "sfx": "fx",
}
# Used only when an instrument arrives as a bare name: its role is guessed from words in the name.
_ROLE_BY_WORD = (
    ("vocal", "vocals"),
    ("voice", "vocals"),
    ("singer", "vocals"),
    ("choir", "vocals"),
    ("drum", "drums"),
    ("kit", "drums"),
    ("bass", "bass"),
    ("percussion", "percussion"),
    ("conga", "percussion"),
    ("shaker", "percussion"),
    ("pad", "pad"),
    ("string", "pad"),
    ("lead", "melody"),
    ("flute", "melody"),
    ("violin", "melody"),
    ("sax", "melody"),
    ("trumpet", "melody"),
)

_MODE_TO_SCALE = {
    "": "major",
    "maj": "major",
    "major": "major",
    "ionian": "major",
    "lydian": "major",
    "mixolydian": "major",
    "m": "minor",
    "min": "minor",
    "minor": "minor",
    "aeolian": "minor",
    "dorian": "minor",
    "phrygian": "minor",
    "locrian": "minor",
}
_KEY_RE = re.compile(r"^([A-Ga-g])\s*(#|b|sharp|flat)?\s*(.*)$")
_ROOT = r"[A-G](?:#|b)?"
# What may follow a chord root: qualities, extensions and alterations; checked after normalising.
_CHORD_RE = re.compile(rf"^({_ROOT})((?:maj|dim|aug|sus|add|alt|m|[0-9]|[#b+]|\(|\))*)(?:/({_ROOT}))?$")
_ROMAN_RE = re.compile(
    r"^(?:b|#)?(?:VII|VI|IV|V|III|II|I|vii|vi|iv|v|iii|ii|i)(?:°|o|\+|dim|aug|maj7|7|9|6)*$"
)
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?)?\s*$", re.I)
_CLOCK_RE = re.compile(r"^\s*([0-9]+):([0-5][0-9])\s*$")
_NUMBER_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:bpm)?\s*$", re.I)

MAX_SECTIONS = 64
MAX_BARS_PER_SECTION = 128
MAX_TOTAL_BARS = 512
MAX_DURATION_S = 600.0


def normalize_key(value: str) -> str:
    """'Am' / 'a minor' / 'F♯ dorian' / 'Bb' -> 'A minor' / 'A minor' / 'F# minor' / 'Bb major'."""
    text = value.strip().replace("♯", "#").replace("♭", "b")
    match = _KEY_RE.match(text)
    if not match:
        raise ValueError(f"key {value!r} is not a key such as 'C major' or 'A minor'")
    letter, accidental, mode = match.groups()
    accidental = {"sharp": "#", "flat": "b", None: ""}.get(accidental, accidental)
    mode = re.sub(r"\s*key$", "", mode.strip(), flags=re.I)
    scale = _MODE_TO_SCALE.get(mode if mode in ("m", "M") else mode.lower())
    if mode == "M":
        scale = "major"
    if scale is None:
        raise ValueError(f"key {value!r}: unknown mode {mode!r}; use 'major' or 'minor'")
    return f"{letter.upper()}{accidental} {scale}"


def normalize_chord(value: str) -> str:
    """'A minor' -> 'Am', 'Cmaj' -> 'C', 'F♯m7' -> 'F#m7', 'D-7' -> 'Dm7', 'BΔ7' -> 'Bmaj7'."""
    text = value.strip().replace("♯", "#").replace("♭", "b").replace("Δ", "maj").replace("°", "dim")
    text = text.replace("ø", "m7b5")
    for word, short in (("diminished", "dim"), ("augmented", "aug"), ("major", "maj"), ("minor", "m")):
        text = re.sub(rf"\s*{word}", short, text, flags=re.I)
    text = re.sub(r"(?i)min", "m", text).replace(" ", "")
    text = re.sub(r"^([A-Ga-g][#b]?)M", r"\1maj", text)  # 'CM7' is C major seventh
    if _ROMAN_RE.match(text) and not re.match(r"^[A-G]", text):
        raise ValueError(
            f"chord {value!r} is a roman numeral; write chord symbols in the plan's key, e.g. 'Am', 'G7'"
        )
    if len(text) >= 2 and text[0] in "ABCDEFG" and text[1:2] == "-":
        text = text[0] + "m" + text[2:]
    match = _CHORD_RE.match(text[:1].upper() + text[1:]) if text else None
    if not match or len(text) > 16:
        raise ValueError(f"chord {value!r} is not a chord symbol such as 'C', 'Am7', 'G/B' or 'Bbmaj7'")
    root, quality, bass = match.groups()
    quality = re.sub(r"^maj(?![0-9])", "", quality)  # 'Cmaj' is plain C; 'Cmaj7' keeps its 'maj'
    return f"{root}{quality}" + (f"/{bass}" if bass else "")


def parse_duration_s(value: Any) -> Any:
    """'30s' / '30 seconds' / '1:30' / '2 min' -> seconds; numbers pass through."""
    if not isinstance(value, str):
        return value
    clock = _CLOCK_RE.match(value)
    if clock:
        return int(clock.group(1)) * 60 + int(clock.group(2))
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"duration {value!r} is not a number of seconds")
    number = float(match.group(1))
    unit = (match.group(2) or "s").lower()
    return number * 60 if unit.startswith("m") else number


def scale_bars(bars: list[int], want: int) -> list[int]:
    """Section lengths scaled in proportion to add up to `want` bars, each at least one bar (LLMs
    miscount); with fewer bars wanted than there are sections, each section gets one bar."""
    have = sum(bars)
    scaled = [max(1, round(b * want / have)) for b in bars]
    while sum(scaled) > want and max(scaled) > 1:
        scaled[scaled.index(max(scaled))] -= 1
    while sum(scaled) < want:
        scaled[scaled.index(max(scaled))] += 1
    return scaled


def _split_chords(value: Any) -> Any:
    if isinstance(value, str):
        parts = re.split(r"\s*[,|]\s*|\s+(?:-|\u2013|->|\u2192)\s+", value.strip())
        out: list[str] = []
        for part in parts:
            # 'A minor' must stay one chord; a space-separated run like 'C G Am F' must not.
            joined = re.sub(r"\s+(minor|min|major|maj)\b", r"\1", part.strip(), flags=re.I)
            out.extend(p for p in joined.split() if p)
        return out
    return value


class Section(BaseModel):
    """A contiguous part of the song: its name, length in bars, the chords that fill it, lyric lines."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=40, description="e.g. intro, verse, chorus, bridge, outro")
    bars: int = Field(ge=1, le=MAX_BARS_PER_SECTION, validation_alias=AliasChoices("bars", "length_bars"))
    chords: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="chord symbols in order, spread evenly over the section's bars, e.g. ['Am','F','C','G']",
        validation_alias=AliasChoices("chords", "chord_progression", "progression"),
    )
    lyrics: list[str] = Field(
        default_factory=list, max_length=64, description="lyric lines sung in this section; empty if none"
    )

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("bars", mode="before")
    @classmethod
    def _bars(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.match(r"^\s*([0-9]+)\s*(?:bars?|measures?)?\s*$", value, re.I)
            if not match:
                raise ValueError(f"bars {value!r} is not a whole number of bars")
            return int(match.group(1))
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("chords", mode="before")
    @classmethod
    def _chords_list(cls, value: Any) -> Any:
        return _split_chords(value)

    @field_validator("chords")
    @classmethod
    def _chords(cls, value: list[str]) -> list[str]:
        return [normalize_chord(c) for c in value]

    @field_validator("lyrics", mode="before")
    @classmethod
    def _lyrics(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [line.strip() for line in value.splitlines() if line.strip()]
        if isinstance(value, list):
            return [line.strip() for line in value if not isinstance(line, str) or line.strip()]
        return value


class Instrument(BaseModel):
    """One voice of the arrangement and the job it does."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field(
        min_length=1, max_length=60, description="e.g. piano, acoustic guitar, drums, female voice"
    )
    role: Role = Field(description="what the instrument plays: " + ", ".join(ROLES))

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        key = re.sub(r"[\s\-]+", "_", value.strip().lower())
        key = _ROLE_SYNONYMS.get(key, key)
        if key not in ROLES:
            raise ValueError(f"role {value!r} is not one of: {', '.join(ROLES)}")
        return key


def role_for_name(name: str) -> str:
    """The role an instrument named only by `name` most likely plays ('bass guitar' -> bass)."""
    lowered = name.lower()
    return next((role for word, role in _ROLE_BY_WORD if word in lowered), "harmony")


class SongPlan(BaseModel):
    """What to compose: tempo, key, meter, the section list with chords and lyrics, the band, the mood."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)

    title: str = Field("Untitled", min_length=1, max_length=120)
    tempo_bpm: float = Field(
        ge=20,
        le=300,
        description="beats per minute",
        validation_alias=AliasChoices("tempo_bpm", "tempo", "bpm"),
    )
    key: str = Field(description="tonic and scale, e.g. 'C major' or 'F# minor'")
    time_signature: str = Field(
        "4/4",
        description="e.g. '4/4', '3/4', '6/8'",
        validation_alias=AliasChoices("time_signature", "meter"),
    )
    sections: list[Section] = Field(min_length=1, max_length=MAX_SECTIONS)
    instruments: list[Instrument] = Field(min_length=1, max_length=16)
    mood: str = Field("", max_length=80)
    genre: str = Field("", max_length=80)
    duration_s: float | None = Field(
        None,
        gt=0,
        le=MAX_DURATION_S,
        description="target length in seconds; should match the bars at this tempo",
        validation_alias=AliasChoices("duration_s", "duration", "duration_seconds", "length_s"),
    )

    @field_validator("tempo_bpm", mode="before")
    @classmethod
    def _tempo(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _NUMBER_RE.match(value)
            if not match:
                raise ValueError(f"tempo {value!r} is not a number of beats per minute")
            return float(match.group(1))
        return value

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> Any:
        return normalize_key(value) if isinstance(value, str) else value

    @field_validator("time_signature", mode="before")
    @classmethod
    def _meter(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) == 2:
            value = f"{value[0]}/{value[1]}"
        if not isinstance(value, str):
            return value
        text = {"common time": "4/4", "cut time": "2/2"}.get(value.strip().lower(), value)
        match = re.match(r"^\s*([0-9]{1,2})\s*[/:\-]\s*([0-9]{1,2})\s*$", text)
        if not match:
            raise ValueError(f"time signature {value!r} is not like '4/4' or '6/8'")
        top, bottom = int(match.group(1)), int(match.group(2))
        if not 1 <= top <= 32 or bottom not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"time signature {value!r}: need 1-32 beats over 1, 2, 4, 8, 16 or 32")
        return f"{top}/{bottom}"

    @field_validator("instruments", mode="before")
    @classmethod
    def _instruments(cls, value: Any) -> Any:
        # Near misses: {"piano": "harmony"} or ["piano", "drums"] instead of [{"name", "role"}].
        if isinstance(value, dict):
            return [{"name": name, "role": role} for name, role in value.items()]
        if isinstance(value, list):
            return [{"name": v, "role": role_for_name(v)} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("duration_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration_s(value)

    @property
    def beats_per_bar(self) -> float:
        """Quarter-note beats in one bar (6/8 -> 3.0), which is what `tempo_bpm` counts."""
        top, bottom = (int(p) for p in self.time_signature.split("/"))
        return top * 4 / bottom

    @property
    def total_bars(self) -> int:
        return sum(s.bars for s in self.sections)

    @property
    def implied_duration_s(self) -> float:
        """How long the sections last at the plan's tempo and meter."""
        return self.total_bars * self.beats_per_bar * 60.0 / self.tempo_bpm

    def fitted(self, duration_s: float) -> SongPlan:
        """A copy lasting about `duration_s`: the bars scaled to fit (the arithmetic LLMs get wrong);
        when fewer bars fit than there are sections, the sections that do not fit are left out."""
        bar_s = self.beats_per_bar * 60.0 / self.tempo_bpm
        want = max(1, round(duration_s / bar_s))
        sections = [s.model_copy() for s in self.sections[:want]]
        for section, bars in zip(sections, scale_bars([s.bars for s in sections], want), strict=True):
            section.bars = bars
        return self.model_copy(update={"sections": sections, "duration_s": duration_s})

    @model_validator(mode="after")
    def _consistent(self) -> SongPlan:
        if self.total_bars > MAX_TOTAL_BARS:
            raise ValueError(f"sections add up to {self.total_bars} bars; at most {MAX_TOTAL_BARS}")
        implied = self.implied_duration_s
        if implied > MAX_DURATION_S:
            raise ValueError(
                f"sections last {implied:.0f} s at {self.tempo_bpm:g} BPM; at most {MAX_DURATION_S:.0f} s"
            )
        if self.duration_s is None:
            self.duration_s = round(implied, 3)
            return self
        bar_s = self.beats_per_bar * 60.0 / self.tempo_bpm
        # LLMs are poor at arithmetic, so only a gross mismatch is an error; jen1 fits the rest.
        if not self.duration_s / 1.5 - bar_s <= implied <= self.duration_s * 1.5 + bar_s:
            want = max(1, round(self.duration_s / bar_s))
            raise ValueError(
                f"sections total {self.total_bars} bars = {implied:.1f} s at {self.tempo_bpm:g} BPM in "
                f"{self.time_signature}, but duration_s is {self.duration_s:g}; make the bars add up to "
                f"about {want} or change duration_s"
            )
        return self
