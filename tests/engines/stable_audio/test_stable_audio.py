"""Stable Audio engine on a tiny random checkpoint built by the tests: the real `StableAudioPipeline`
(T5, DiT, cosine DPM-Solver with Brownian noise, Oobleck VAE) loaded from disk, 44.1 kHz stereo of
the requested duration, seeds, negative prompts, progress per step, cancel, the checkpoint's window."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

pytest.importorskip("diffusers")

from harmonia.audio import encode as audio_io
from harmonia.config import StableAudioSettings
from harmonia.engines.base import EngineResult, LocalContext
from harmonia.engines.stable_audio.engine import StableAudioEngine
from harmonia.engines.stable_audio.input import StableAudioInput
from harmonia.errors import EngineUnavailable, InvalidInput, JobCanceled
from helpers import RecordingContext

SR = 44100


class CancelOnProgress(RecordingContext):
    check_on_progress = True


@pytest.fixture(scope="module")
def engine(tiny_stable_audio: Path):
    eng = StableAudioEngine(StableAudioSettings(model=str(tiny_stable_audio), max_wait_ms=300))
    eng.load()
    yield eng
    eng.close()


def run(engine: StableAudioEngine, ctx=None, **fields) -> EngineResult:
    body = {"prompt": "tech house drum loop", "duration_s": 1.0, "steps": 6, **fields}
    return engine.run(StableAudioInput(**body), ctx or LocalContext())


def audio_of(result: EngineResult) -> np.ndarray:
    decoded = audio_io.decode(result.artifacts[0].data)
    assert decoded.sample_rate == SR
    return decoded.audio


def test_loads_and_reports_the_checkpoints_window(engine: StableAudioEngine) -> None:
    info = engine.info()
    assert info["loaded"] and info["device"] == "cpu" and info["sample_rate"] == SR and info["channels"] == 2
    assert info["max_clip_s"] == pytest.approx(64 * 2048 / SR, abs=1e-3)  # 64 latents of a 2048x VAE hop


@pytest.mark.parametrize("seconds", [0.5, 2.25])
def test_stereo_clip_of_the_requested_duration(engine: StableAudioEngine, seconds: float) -> None:
    result = run(engine, duration_s=seconds, seed=1)
    audio = audio_of(result)
    assert audio.shape == (round(seconds * SR), 2)
    assert float(np.sqrt(np.mean(audio**2))) > 1e-4
    assert result.output["duration_s"] == seconds and result.output["steps"] == 6


def test_seeds_and_negative_prompts(engine: StableAudioEngine) -> None:
    a, b = run(engine, seed=9), run(engine, seed=9)
    assert a.artifacts[0].data == b.artifacts[0].data and a.output["seed"] == 9
    assert run(engine, seed=10).artifacts[0].data != a.artifacts[0].data
    negative = run(engine, seed=9, negative_prompt="low quality")
    assert negative.output["negative_prompt"] is True
    assert not np.allclose(audio_of(negative), audio_of(a))


def test_progress_after_every_step_and_cancel_between_steps(engine: StableAudioEngine) -> None:
    ctx = RecordingContext()
    run(engine, ctx, steps=4, seed=1)
    assert [m for _, m in ctx.progress_calls] == [f"step {i}/4" for i in range(1, 5)]
    stop = CancelOnProgress(cancel_after=2)  # the batcher's check, then one step
    with pytest.raises(JobCanceled):
        run(engine, stop, steps=30, seed=1)
    assert [m for _, m in stop.progress_calls] == ["step 1/30", "step 2/30"]


def test_batch_mates_share_a_call_when_their_settings_match(engine: StableAudioEngine) -> None:
    calls_before = engine.stats()["pipeline_calls"]
    results: dict[int, EngineResult] = {}
    barrier = threading.Barrier(3)
    bodies = [
        {"seed": 1},
        {"seed": 2, "prompt": "rain on a tin roof"},
        {"seed": 3, "negative_prompt": "noise"},  # its own call: guidance against another prompt
    ]

    def call(i: int) -> None:
        barrier.wait()
        results[i] = run(engine, **bodies[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[i].output["call_size"] for i in range(3)] == [2, 2, 1]
    assert len({results[i].output["batch_id"] for i in range(3)}) == 1
    assert engine.stats()["pipeline_calls"] - calls_before == 2
    alone = audio_of(run(engine, seed=2, prompt="rain on a tin roof"))
    assert np.allclose(audio_of(results[1]), alone, atol=2e-3)


def test_limits_name_the_field(engine: StableAudioEngine) -> None:
    with pytest.raises(InvalidInput) as info:
        run(engine, duration_s=3.5)  # past the tiny checkpoint's 2.97 s window
    assert info.value.field == "duration_s" and "2.97" in info.value.message
    with pytest.raises(InvalidInput) as info:
        run(engine, steps=501)  # over max_steps
    assert info.value.field == "steps"
    for body, field in [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "ok", "duration_s": 0}, "duration_s"),
        ({"prompt": "ok", "guidance_scale": 30}, "guidance_scale"),
        ({"prompt": "ok", "negative_prompt": "x" * 2001}, "negative_prompt"),
        ({"prompt": "ok", "lyrics": "la"}, "lyrics"),
    ]:
        with pytest.raises(ValidationError) as err:
            StableAudioInput.model_validate(body)
        assert err.value.errors()[0]["loc"][0] == field


def test_foreign_checkpoint_is_one_clear_error(tiny_acestep: Path) -> None:
    eng = StableAudioEngine(StableAudioSettings(model=str(tiny_acestep)))
    with pytest.raises(EngineUnavailable, match=r"is a 'AceStepPipeline' checkpoint, not Stable Audio"):
        eng.load()
    eng.close()
