"""The `jen1` job payload: free-text instructions plus optional fields that override the text.

The model validates itself completely at submission: it runs the (cheap, deterministic) rule
planner, so an out-of-range or self-contradictory request is a 422 before anything is queued.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from harmonia.engines.base import AliasedInput, Line, Word
from harmonia.engines.jen1.interpret import (
    MAX_DURATION_S,
    MAX_TEMPO,
    MIN_DURATION_S,
    MIN_TEMPO,
)
from harmonia.music.instruments import find_instrument, known_names
from harmonia.music.songplan import normalize_chord
from harmonia.music.theory import parse_key

MAX_LYRICS_CHARS = 4000


class SectionIn(BaseModel):
    """A requested section: its name, and optionally its length, chords and lyric lines."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=40, examples=["verse", "chorus"])
    bars: int | None = Field(None, ge=1, le=128)
    chords: list[Word] | None = Field(None, min_length=1, max_length=64, examples=[["Am", "F", "C", "G"]])
    lyrics: list[Line] | None = Field(None, max_length=64)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return value.lower()

    @field_validator("chords")
    @classmethod
    def _chords(cls, value: list[str] | None) -> list[str] | None:
        return [normalize_chord(c) for c in value] if value is not None else None


class Jen1Input(AliasedInput):
    """`instructions` says what to make; the optional fields override what the text implies."""

    model_config = ConfigDict(extra="forbid")

    instructions: str = Field(min_length=1, max_length=2000, examples=["render violin"])
    duration_s: float | None = Field(
        None, ge=MIN_DURATION_S, le=MAX_DURATION_S, validation_alias=AliasChoices("duration_s", "duration")
    )
    tempo_bpm: float | None = Field(None, ge=MIN_TEMPO, le=MAX_TEMPO)
    key: str | None = Field(None, max_length=32, examples=["D minor", "F# major"])
    instruments: list[Word] | None = Field(None, min_length=1, max_length=8)
    genre: str | None = Field(None, min_length=1, max_length=80, examples=["lo-fi hip hop", "folk"])
    mood: str | None = Field(None, min_length=1, max_length=80, examples=["sad", "uplifting"])
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    lyrics: (
        Annotated[str, StringConstraints(max_length=MAX_LYRICS_CHARS)]
        | Annotated[list[Line], Field(max_length=256)]
        | None
    ) = Field(
        None, description="lines to sing; a blank line separates stanzas (spread over the sung sections)"
    )
    sections: list[SectionIn] | None = Field(
        None, min_length=1, max_length=32, description="the form, e.g. ['intro', 'verse', 'chorus']"
    )
    engine: Literal["auto", "render", "musicgen", "stable-audio", "acestep"] = Field(
        "auto",
        description="render: SoundFont parts only; musicgen / stable-audio / acestep: that model's backing "
        "track (acestep: the whole song when lyrics are sung); auto: decide from the style and what is here",
    )
    output: Literal["wav", "flac"] = "wav"
    stems: bool = Field(False, description="also return each part as its own audio file")
    loudness_lufs: float = Field(-14.0, ge=-30.0, le=-8.0, description="integrated loudness of the master")

    @field_validator("instructions")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("instructions must not be blank")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            parse_key(value)
        return value

    @field_validator("instruments")
    @classmethod
    def _instruments(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if find_instrument(name) is None:
                raise ValueError(f"unknown instrument {name!r}; known: {', '.join(known_names())}")
        return value

    @field_validator("lyrics")
    @classmethod
    def _lyrics(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is None:
            return None
        size = len(value) if isinstance(value, str) else sum(len(line) for line in value)
        if size > MAX_LYRICS_CHARS:
            raise ValueError(f"lyrics are {size} characters; at most {MAX_LYRICS_CHARS}")
        text = value if isinstance(value, str) else "".join(value)
        if not text.strip():
            raise ValueError("lyrics are blank")
        return value

    @field_validator("sections", mode="before")
    @classmethod
    def _section_names(cls, value: Any) -> Any:
        # ["intro", "verse"] is shorthand for [{"name": "intro"}, {"name": "verse"}]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value
