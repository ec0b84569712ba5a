"""ACE-Step engine on a tiny random checkpoint built by the tests: the real `AceStepPipeline` loaded
from disk, WAV duration and rate, seeds, progress per diffusion step, cancel between steps,
batching, repaint of a given clip, guidance on base vs turbo checkpoints, and bad input."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

pytest.importorskip("diffusers")

from harmonia.audio import encode as audio_io
from harmonia.config import AceStepSettings
from harmonia.engines.acestep.engine import AceStepEngine
from harmonia.engines.acestep.input import AceStepInput
from harmonia.engines.acestep.tiny import make_tiny_acestep
from harmonia.engines.base import EngineResult, LocalContext
from harmonia.errors import EngineUnavailable, InvalidInput, JobCanceled
from helpers import RecordingContext

SR = 48000
LYRICS = "[verse]\nsoft notes in the morning light\n[chorus]\nmusic fills the air tonight"


class CancelOnProgress(RecordingContext):
    check_on_progress = True  # the runner's context: a progress report is a stop point


@pytest.fixture(scope="module")
def engine(tiny_acestep: Path):
    eng = AceStepEngine(AceStepSettings(model=str(tiny_acestep), max_wait_ms=300, max_duration_s=20))
    eng.load()
    yield eng
    eng.close()


def run(engine: AceStepEngine, ctx=None, **fields) -> EngineResult:
    return engine.run(AceStepInput(**{"prompt": "upbeat synth pop", **fields}), ctx or LocalContext())


def wav(result: EngineResult) -> audio_io.Decoded:
    return audio_io.decode(result.artifacts[0].data)


def clip_b64(seconds: float, freq: float = 220.0, sr: int = 44100) -> str:
    t = np.arange(round(seconds * sr)) / sr
    tone = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return base64.b64encode(audio_io.encode(tone, sr, "wav")).decode()


def test_loads_the_pipeline_from_disk(engine: AceStepEngine) -> None:
    info = engine.info()
    assert info["loaded"] and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["sample_rate"] == SR and info["channels"] == 2 and info["latents_per_second"] == 25.0
    assert info["variant"] == "turbo" and info["guidance"] is False
    assert type(engine.pipe).__name__ == "AceStepPipeline"


@pytest.mark.parametrize(("seconds", "fmt"), [(2.0, "wav"), (1.3, "flac")])
def test_audio_has_the_requested_duration_and_rate(engine: AceStepEngine, seconds: float, fmt: str) -> None:
    result = run(engine, lyrics=LYRICS, duration_s=seconds, seed=1, format=fmt)
    audio = wav(result)
    assert audio.sample_rate == SR and audio.audio.shape == (round(seconds * SR), 2)
    assert result.artifacts[0].content_type == f"audio/{fmt}"
    assert float(np.sqrt(np.mean(audio.audio**2))) > 1e-3  # the VAE's waveform, not silence
    out = result.output
    assert out["duration_s"] == seconds and out["steps"] == 8 and out["task"] == "text2music"
    assert out["instrumental"] is False and out["variant"] == "turbo"


def test_same_seed_same_bytes_other_seed_other_audio(engine: AceStepEngine) -> None:
    a = run(engine, lyrics=LYRICS, duration_s=1.0, seed=42)
    b = run(engine, lyrics=LYRICS, duration_s=1.0, seed=42)
    c = run(engine, lyrics=LYRICS, duration_s=1.0, seed=43)
    assert a.artifacts[0].data == b.artifacts[0].data and a.output["seed"] == 42
    assert c.artifacts[0].data != a.artifacts[0].data
    unseeded = run(engine, duration_s=1.0)
    assert 0 <= unseeded.output["seed"] < 2**32


def test_lyrics_and_prompt_condition_the_audio(engine: AceStepEngine) -> None:
    plain = wav(run(engine, duration_s=1.0, seed=5)).audio
    sung = wav(run(engine, lyrics=LYRICS, duration_s=1.0, seed=5)).audio
    other = wav(run(engine, prompt="slow ambient strings", duration_s=1.0, seed=5)).audio
    assert not np.allclose(plain, sung) and not np.allclose(plain, other)


def test_progress_is_reported_after_every_step(engine: AceStepEngine) -> None:
    ctx = RecordingContext()
    run(engine, ctx, duration_s=1.0, steps=5, seed=1)
    assert [m for _, m in ctx.progress_calls] == [f"step {i}/5" for i in range(1, 6)]
    fractions = [f for f, _ in ctx.progress_calls]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] < 1


def test_cancel_stops_between_steps(engine: AceStepEngine) -> None:
    ctx = CancelOnProgress(cancel_after=3)  # the batcher's check before the run, then two steps
    with pytest.raises(JobCanceled):
        run(engine, ctx, duration_s=1.0, steps=20, seed=1)
    # stopped at the third step's report, seventeen steps before the end
    assert [m for _, m in ctx.progress_calls] == ["step 1/20", "step 2/20", "step 3/20"]


def test_concurrent_requests_share_one_pipeline_call(engine: AceStepEngine) -> None:
    calls_before = engine.stats()["pipeline_calls"]
    results: dict[int, EngineResult] = {}
    barrier = threading.Barrier(3)

    def call(i: int) -> None:
        barrier.wait()
        results[i] = run(engine, prompt=f"song {i}", lyrics=LYRICS if i else "", duration_s=1.0, seed=i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outs = [results[i].output for i in range(3)]
    assert {o["call_size"] for o in outs} == {3} and len({o["batch_id"] for o in outs}) == 1
    assert engine.stats()["pipeline_calls"] - calls_before == 1
    # each row has its own seed: a batch mate gets the audio it gets alone, to float rounding
    alone = wav(run(engine, prompt="song 1", lyrics=LYRICS, duration_s=1.0, seed=1)).audio
    assert np.allclose(wav(results[1]).audio, alone, atol=2e-3)


def test_requests_that_cannot_share_a_call_run_as_separate_calls(engine: AceStepEngine) -> None:
    calls_before = engine.stats()["pipeline_calls"]
    results: dict[float, EngineResult] = {}
    barrier = threading.Barrier(2)

    def call(seconds: float) -> None:
        barrier.wait()
        results[seconds] = run(engine, duration_s=seconds, seed=1)

    threads = [threading.Thread(target=call, args=(s,)) for s in (1.0, 1.5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {s: wav(r).audio.shape[0] for s, r in results.items()} == {1.0: SR, 1.5: round(1.5 * SR)}
    assert results[1.0].output["batch_id"] == results[1.5].output["batch_id"]  # one batch...
    assert engine.stats()["pipeline_calls"] - calls_before == 2  # ...two calls (durations differ)


def test_a_canceled_request_leaves_its_batch_mate_alone(engine: AceStepEngine) -> None:
    out: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def call(name: str, ctx) -> None:
        barrier.wait()
        try:
            out[name] = run(engine, ctx, duration_s=1.0, steps=10, seed=2)
        except JobCanceled as exc:
            out[name] = exc

    threads = [
        threading.Thread(target=call, args=("canceled", CancelOnProgress(cancel_after=2))),
        threading.Thread(target=call, args=("kept", LocalContext())),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(out["canceled"], JobCanceled)
    kept = out["kept"]
    assert isinstance(kept, EngineResult) and kept.output["call_size"] == 2 and kept.output["steps"] == 10


def test_repaint_uses_the_clip_and_keeps_its_length(engine: AceStepEngine) -> None:
    low, high = clip_b64(1.5, 220.0), clip_b64(1.5, 1760.0)
    a = run(engine, audio=low, repaint_start_s=0.5, repaint_end_s=1.0, seed=3)
    assert a.output["task"] == "repaint" and wav(a).audio.shape == (round(1.5 * SR), 2)
    b = run(engine, audio=high, repaint_start_s=0.5, repaint_end_s=1.0, seed=3)
    assert not np.allclose(wav(a).audio, wav(b).audio)  # the source clip conditions the result
    longer = run(engine, audio=low, duration_s=2.5, repaint_start_s=1.5, seed=3)  # extend past the end
    assert wav(longer).audio.shape == (round(2.5 * SR), 2)


def test_guidance_is_refused_on_turbo_and_used_on_base(engine: AceStepEngine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        run(engine, duration_s=1.0, guidance_scale=4.0)
    assert info.value.field == "guidance_scale" and "turbo" in info.value.message
    base = AceStepEngine(AceStepSettings(model=str(make_tiny_acestep(tmp_path / "base", turbo=False))))
    try:
        assert base.info()["loaded"] is False
        plain = run(base, duration_s=1.0, seed=1, guidance_scale=1.0)
        guided = run(base, duration_s=1.0, seed=1, guidance_scale=5.0)
        assert base.info()["variant"] == "base" and guided.output["guidance_scale"] == 5.0
        assert run(base, duration_s=1.0, seed=1).output["guidance_scale"] == 7.0  # the base default
        assert not np.allclose(wav(plain).audio, wav(guided).audio)
    finally:
        base.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "  "}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "ok", "duration_s": 0.5}, "duration_s"),
        ({"prompt": "ok", "duration_s": 601}, "duration_s"),
        ({"prompt": "ok", "steps": 0}, "steps"),
        ({"prompt": "ok", "guidance_scale": 0.5}, "guidance_scale"),
        ({"prompt": "ok", "key": "H major"}, "key"),
        ({"prompt": "ok", "bpm": 1000}, "bpm"),
        ({"prompt": "ok", "time_signature": "5"}, "time_signature"),
        ({"prompt": "ok", "vocal_language": "English"}, "vocal_language"),
        ({"prompt": "ok", "seed": -1}, "seed"),
        ({"prompt": "ok", "format": "mp3"}, "format"),
        ({"prompt": "ok", "bogus": 1}, "bogus"),
        ({"text": "ok"}, "prompt"),
    ],
)
def test_schema_rejects_bad_input(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        AceStepInput.model_validate(body)
    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"repaint_start_s": 1.0}, "repaint_start_s"),  # no clip to repaint
        ({"audio": "AAAA", "repaint_start_s": 2.0, "repaint_end_s": 1.0}, "repaint_end_s"),
    ],
)
def test_cross_field_checks_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        AceStepInput.model_validate({"prompt": "ok", **body})
    assert info.value.field == field


def test_engine_checks_name_the_field(engine: AceStepEngine) -> None:
    cases = [
        ({"duration_s": 25.0}, "duration_s"),  # over this server's max_duration_s (20)
        ({"duration_s": 1.0, "steps": 201}, "steps"),  # over max_steps
        ({"audio": "not base64!"}, "audio"),
        ({"audio": base64.b64encode(b"RIFF....WAVEjunk").decode()}, "audio"),
        ({"audio": clip_b64(1.0), "repaint_start_s": 1.5}, "repaint_start_s"),  # past the clip's end
        ({"audio": clip_b64(21.0, sr=8000)}, "audio"),  # the clip itself is over the limit
    ]
    for fields, field in cases:
        with pytest.raises(InvalidInput) as info:
            run(engine, **fields)
        assert info.value.field == field, fields


def test_missing_or_foreign_checkpoint_is_one_clear_error(
    tmp_path: Path, tiny_stable_audio: Path, tiny_musicgen: Path
) -> None:
    cases = [
        (tmp_path / "nope", "does not exist"),
        (tiny_musicgen, "not a diffusers ACE-Step checkpoint (no model_index.json)"),
        (tiny_stable_audio, "is a 'StableAudioPipeline' checkpoint, not ACE-Step"),
    ]
    for path, message in cases:
        eng = AceStepEngine(AceStepSettings(model=str(path)))
        with pytest.raises(EngineUnavailable) as info:
            eng.load()
        assert message in str(info.value) and str(path) in str(info.value)
        assert "\n" not in str(info.value)
        with pytest.raises(EngineUnavailable):  # remembered, not retried per request
            eng.run(AceStepInput(prompt="ok"), LocalContext())
        eng.close()
