"""The `noop` diagnostic model: does no music, only the job mechanics (progress, sleep, failure).

It exists for operators and benchmarks: queue round-trip latency, drain tests, fault injection.
Its output is an echo of its input, never audio.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from harmonia.engines.base import ArtifactData, EngineResult, RunContext
from harmonia.errors import EngineError, RetryableError


class NoopInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sleep_s: float = Field(0.0, ge=0.0, le=3600.0, description="seconds to spend, in steps")
    steps: int = Field(1, ge=1, le=10_000, description="progress reports while sleeping")
    fail: Literal["none", "error", "retryable"] = Field("none", description="fail on purpose")
    note: str = Field("", max_length=1000, description="echoed back in the output")
    artifact: bool = Field(False, description="also write a small JSON artifact")


class NoopEngine:
    name: ClassVar[str] = "noop"
    input_model: ClassVar[type[BaseModel]] = NoopInput

    def run(self, payload: BaseModel, ctx: RunContext) -> EngineResult:
        p = NoopInput.model_validate(payload)
        step = p.sleep_s / p.steps
        for i in range(p.steps):
            ctx.check()
            if step:
                time.sleep(step)
            if p.steps > 1:
                ctx.progress((i + 1) / p.steps, f"step {i + 1}/{p.steps}")
        if p.fail == "error":
            raise EngineError("noop asked to fail")
        if p.fail == "retryable":
            raise RetryableError("noop asked to fail (retryable)")
        output: dict[str, Any] = {"note": p.note, "steps": p.steps}
        artifacts = (
            [ArtifactData("echo.json", p.model_dump_json().encode(), "application/json")]
            if p.artifact
            else []
        )
        return EngineResult(artifacts=artifacts, output=output)

    def info(self) -> dict[str, Any]:
        return {"model": "noop"}
