"""The LLM helper tasks. Each is a function of an `LLMClient` (so jen1 can call it directly) and a
payload of the `ollama` engine (`engine.py`: they run as queued jobs and behind `harmonia serve
ollama`):

- `enhance_prompt`: a short idea -> a rich MusicGen prompt plus the fields it names.
- `song_plan`: instructions -> a `SongPlan` (the schema jen1 consumes).
- `lyrics`: theme + section structure -> lyric lines per section with syllable counts per line.

Answers are requested as JSON constrained by a tight JSON schema built for the request (every
string, list and number bounded; keys, metres, roles and section names as enums; the values
the user fixed as constants), so that a model as small as SmolLM2-135M, decoding under the schema's
grammar, produces a usable answer; they are then validated with the lenient models (`SongPlan`...)
and repaired once (`structured.ask_structured`, which also bounds tokens, time and the repair).
What a model cannot be trusted with is done here, locally: bar arithmetic against the duration,
section names and counts, syllable counts (`music/syllables.py`), a prompt that names every field
it was built from. The schemas are in `schemas.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harmonia.config import OllamaSettings
from harmonia.engines.base import Word
from harmonia.engines.ollama.client import Chunk, Completion, GenerationOptions, LLMClient
from harmonia.engines.ollama.schemas import ENHANCE_SCHEMA, lyrics_schema, plan_schema
from harmonia.engines.ollama.structured import ask_structured
from harmonia.music.songplan import SongPlan, normalize_key, parse_duration_s, role_for_name
from harmonia.music.syllables import count_syllables

DEFAULT_MAX_PROMPT_CHARS = 8000
DEFAULT_BUDGET_S: float = OllamaSettings.model_fields["task_budget_s"].default
_DURATION_KEYS = ("duration_s", "duration", "duration_seconds", "length_s")  # SongPlan's aliases

# --- task results -------------------------------------------------------------------------------


class EnhancedPrompt(BaseModel):
    """A MusicGen prompt and the musical fields it was built from."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    prompt: str = Field(min_length=1, max_length=1200, description="the MusicGen prompt, 1-3 sentences")
    genre: str = Field("", max_length=80)
    instruments: list[str] = Field(default_factory=list, max_length=16)
    tempo_bpm: float | None = Field(None, ge=20, le=300)
    mood: str = Field("", max_length=80)
    production: str = Field("", max_length=200, description="mix and sound, e.g. 'warm tape saturation'")

    @field_validator("tempo_bpm", mode="before")
    @classmethod
    def _tempo(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.match(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:bpm)?\s*$", value, re.I)
            return float(match.group(1)) if match else value
        return value

    @field_validator("instruments", mode="before")
    @classmethod
    def _instruments(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class LyricLine(BaseModel):
    text: str
    syllables: int


class LyricSection(BaseModel):
    name: str
    lines: list[LyricLine]


class Lyrics(BaseModel):
    title: str
    sections: list[LyricSection]


class _LyricsAnswer(BaseModel):
    """What the model is asked for; syllables are counted here, never taken from the model."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, title="LyricsAnswer")

    class Part(BaseModel):
        model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
        name: str = Field(min_length=1, max_length=40)
        lines: list[str] = Field(min_length=1, max_length=32)

        @field_validator("lines", mode="before")
        @classmethod
        def _lines(cls, value: Any) -> Any:
            if isinstance(value, str):
                value = value.splitlines()
            return (
                [v for v in value if not isinstance(v, str) or v.strip()]
                if isinstance(value, list)
                else value
            )

    title: str = Field("Untitled", min_length=1, max_length=120)
    sections: list[Part] = Field(min_length=1, max_length=64)


# --- the tasks ----------------------------------------------------------------------------------

_ENHANCE_SYSTEM = (
    "You write prompts for MusicGen, a text-to-music model. From the user's idea, write a JSON object: "
    "prompt is one to three sentences describing the music (genre, instruments, tempo, mood, sound); "
    "genre; instruments, a short list of instrument names; tempo_bpm, the tempo in beats per minute; "
    "mood; production, the sound of the mix, such as 'warm tape saturation'."
)
_PLAN_SYSTEM = (
    "You are a composer planning a song for an arranger. Write a JSON object with the song's title, "
    "genre, mood, tempo_bpm, key, time_signature, duration_s (seconds), instruments (each with a name "
    "and a role) and sections in order (each with a name, its length in bars, its chords as chord "
    "symbols such as Am, F, C, G7, and lyrics: sung lines only when the song has vocals, else none)."
)
_LYRICS_SYSTEM = (
    "You are a lyricist. Write singable lyrics about the user's theme: short lines with a steady meter "
    "and natural stress, in the requested language. Write a JSON object with a title and the sections "
    "in the requested order, each with its lines."
)


def enhance_prompt(
    client: LLMClient,
    idea: str,
    *,
    duration_s: float | None = None,
    model: str | None = None,
    options: GenerationOptions | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
    budget_s: float | None = DEFAULT_BUDGET_S,
) -> tuple[EnhancedPrompt, Completion, int]:
    """A short idea -> an `EnhancedPrompt` (prompt text plus genre, instruments, tempo, mood...).

    The prompt is completed locally with whichever of its fields it does not mention, so it always
    names the genre, instruments, tempo, mood and production it was built from."""
    user = f"Idea: {idea}" + (f"\nLength: {duration_s:g} seconds." if duration_s else "")
    messages = [{"role": "system", "content": _ENHANCE_SYSTEM}, {"role": "user", "content": user}]
    answer, completion, attempts = ask_structured(
        client,
        messages,
        EnhancedPrompt,
        what="prompt",
        schema=ENHANCE_SCHEMA,
        model=model,
        options=options,
        on_chunk=on_chunk,
        budget_s=budget_s,
    )
    return _completed(answer), completion, attempts


def _completed(answer: EnhancedPrompt) -> EnhancedPrompt:
    """Distinct instruments, and a prompt that names every field (appended when it does not)."""
    instruments: list[str] = []
    for name in answer.instruments:
        if name.lower() not in (i.lower() for i in instruments):
            instruments.append(name)
    text = answer.prompt.lower()

    def unsaid(value: str) -> bool:
        return bool(value) and value.lower() not in text

    missing = [answer.genre] if unsaid(answer.genre) else []
    missing += [name for name in instruments if unsaid(name)]
    if answer.tempo_bpm and f"{answer.tempo_bpm:g}" not in text:
        missing.append(f"{answer.tempo_bpm:g} BPM")
    missing += [value for value in (answer.mood, answer.production) if unsaid(value)]
    prompt = answer.prompt.rstrip(" .") + (". " + ", ".join(missing) if missing else "")
    return answer.model_copy(update={"instruments": instruments, "prompt": prompt[:1200]})


def _whole_words(line: Any, limit: int) -> Any:
    """A line the schema's length limit cut off (it is exactly that long), back to its last whole
    word; the word that was cut may have been whole, but a lyric line is better a word short."""
    if not isinstance(line, str) or len(line) != limit or " " not in line.strip():
        return line
    return line.strip()[: line.strip().rfind(" ")].rstrip(" ,;:-")


class PlanOverrides(BaseModel):
    """Fields the user fixed; they replace whatever the model answered (and are told to it)."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, max_length=120)
    tempo_bpm: float | None = Field(None, ge=20, le=300)
    key: Word | None = None
    time_signature: Word | None = None
    genre: str | None = Field(None, max_length=80)
    mood: str | None = Field(None, max_length=80)
    duration_s: float | None = Field(None, gt=0, le=600)
    instruments: list[Word] | None = Field(None, max_length=16, description="names that must be in the band")


def song_plan(
    client: LLMClient,
    instructions: str,
    *,
    overrides: PlanOverrides | None = None,
    model: str | None = None,
    options: GenerationOptions | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
    budget_s: float | None = DEFAULT_BUDGET_S,
) -> tuple[SongPlan, Completion, int]:
    """Instructions -> a validated `SongPlan`; user-fixed fields win over the model's answer.

    Done locally, not trusted to the model: the sections' bars are scaled to the duration (the
    user's, else the model's), and instruments the user asked for are added when it left them out."""
    fixed = overrides.model_dump(exclude_none=True) if overrides else {}
    band = fixed.pop("instruments", None) or []
    if "key" in fixed:
        try:
            fixed["key"] = normalize_key(fixed["key"])
        except ValueError:
            pass  # validation names the bad key
    user = f"Instructions: {instructions}"
    if fixed:
        user += "\nUse exactly these values: " + json.dumps(fixed)
    if band:
        user += "\nThe instruments must include: " + ", ".join(band)

    def prepare(data: dict[str, Any]) -> dict[str, Any]:
        merged = {**data, **fixed}
        durations = [merged.pop(k) for k in _DURATION_KEYS if k in merged]  # the user's comes first
        target = parse_duration_s(durations[0]) if durations and durations[0] is not None else None
        plan = SongPlan.model_validate(merged)  # without a duration its bars imply one
        if target is not None:
            plan = plan.fitted(float(target))
        names = " ".join(i.name.lower() for i in plan.instruments)
        extra = [{"name": n, "role": role_for_name(n)} for n in band if n.lower() not in names]
        return {**plan.model_dump(), "instruments": [*plan.model_dump()["instruments"], *extra]}

    messages = [{"role": "system", "content": _PLAN_SYSTEM}, {"role": "user", "content": user}]
    return ask_structured(
        client,
        messages,
        SongPlan,
        what="song plan",
        schema=plan_schema(fixed),
        model=model,
        options=options,
        prepare=prepare,
        on_chunk=on_chunk,
        budget_s=budget_s,
    )


def lyrics(
    client: LLMClient,
    theme: str,
    structure: list[str],
    *,
    lines_per_section: int = 4,
    syllables_per_line: int | None = None,
    language: str = "English",
    model: str | None = None,
    options: GenerationOptions | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
    budget_s: float | None = DEFAULT_BUDGET_S,
) -> tuple[Lyrics, Completion, int]:
    """Theme + section names -> `Lyrics` with a syllable count for every line.

    The sections are named locally, by position (a model that returns the right number of sections
    need not also spell their names), extra lines are dropped, and syllables are counted here."""
    wanted = [s.strip().lower() for s in structure]
    user = (
        f"Theme: {theme}\nSections, in order: {', '.join(wanted)}\nLines per section: {lines_per_section}"
        f"\nLanguage: {language}"
    )
    if syllables_per_line:
        user += f"\nAim for about {syllables_per_line} syllables per line."
    line_chars = min(80, max(24, 6 * syllables_per_line)) if syllables_per_line else 60

    def prepare(data: dict[str, Any]) -> dict[str, Any]:
        parts = [s for s in data.get("sections") or [] if isinstance(s, dict)]
        if len(parts) != len(wanted):
            raise ValueError(
                f"there must be exactly {len(wanted)} sections ({', '.join(wanted)}, in this order); "
                f"the answer has {len(parts)}"
            )
        named = [{**part, "name": name} for part, name in zip(parts, wanted, strict=True)]
        for part in named:
            if isinstance(part.get("lines"), list):
                part["lines"] = [_whole_words(line, line_chars) for line in part["lines"][:lines_per_section]]
        return {**data, "sections": named}

    messages = [{"role": "system", "content": _LYRICS_SYSTEM}, {"role": "user", "content": user}]
    answer, completion, attempts = ask_structured(
        client,
        messages,
        _LyricsAnswer,
        what="lyrics",
        schema=lyrics_schema(wanted, lines_per_section, line_chars),
        model=model,
        options=options,
        prepare=prepare,
        on_chunk=on_chunk,
        budget_s=budget_s,
    )
    sections = [
        LyricSection(
            name=part.name.lower(),
            lines=[LyricLine(text=line, syllables=count_syllables(line)) for line in part.lines],
        )
        for part in answer.sections
    ]
    return Lyrics(title=answer.title, sections=sections), completion, attempts
