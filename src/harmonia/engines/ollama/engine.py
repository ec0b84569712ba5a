"""The `ollama` engine: runs the helper tasks (`tasks.py`) as jobs and behind `harmonia serve
ollama`. Its payload is one task, chosen by the `task` field."""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from harmonia.config import OllamaSettings
from harmonia.engines.base import ArtifactData, EngineResult, RunContext, Word
from harmonia.engines.ollama.backends import build_llm_client
from harmonia.engines.ollama.client import Chunk, GenerationOptions, LLMClient
from harmonia.engines.ollama.tasks import (
    DEFAULT_BUDGET_S,
    DEFAULT_MAX_PROMPT_CHARS,
    PlanOverrides,
    enhance_prompt,
    lyrics,
    song_plan,
)
from harmonia.errors import InvalidInput


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
