"""MusicGen engine on a tiny random checkpoint: loading, parity with `generate()`, batching, seeds,
continuation, long durations, streaming and bad input."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import AutoProcessor, MusicgenForConditionalGeneration  # noqa: E402

from harmonia.audio import encode as audio_io  # noqa: E402
from harmonia.config import MusicgenSettings  # noqa: E402
from harmonia.engines.base import EngineResult, LocalContext  # noqa: E402
from harmonia.engines.musicgen.decode import Conditioning, FastDecoder, RowSpec  # noqa: E402
from harmonia.engines.musicgen.engine import MusicgenEngine, MusicgenOptions  # noqa: E402
from harmonia.engines.musicgen.input import MusicgenInput  # noqa: E402
from harmonia.errors import EngineUnavailable, InvalidInput, JobCanceled  # noqa: E402

TEXTS = ["solo piano melody", "fast loud rock drums with synth bass"]


@pytest.fixture(scope="module")
def engine(tiny_musicgen: Path):
    settings = MusicgenSettings(
        model=str(tiny_musicgen), max_batch_size=4, max_wait_ms=300, max_duration_s=10
    )
    eng = MusicgenEngine(
        settings, options=MusicgenOptions(quantize="none", window_s=1.0, overlap_s=0.4, tick_every=5)
    )
    eng.load()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def hf(tiny_musicgen: Path):
    model = MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen).eval()
    return model, AutoProcessor.from_pretrained(tiny_musicgen)


def hf_codes(model, **kwargs) -> torch.Tensor:
    """The codes `generate()` hands to EnCodec `(B, K, frames)`, seen on their way to the codec."""
    seen = []  # stereo checkpoints decode left and right codebooks in two calls
    original = model.audio_encoder.decode

    def spy(codes, *args, **kw):
        seen.append(codes.clone())
        return original(codes, *args, **kw)

    model.audio_encoder.decode = spy  # an instance attribute on the library's object, removed below
    try:
        model.generate(**kwargs)
    finally:
        del model.audio_encoder.decode
    if len(seen) == 2:
        left, right = seen[0][0], seen[1][0]
        return torch.stack([left, right], dim=2).reshape(left.shape[0], -1, left.shape[-1])
    return seen[0][0]


def text_conditioning(model, processor) -> tuple[Conditioning, dict]:
    """The decoder's conditioning for TEXTS (padded to one length), as the engine computes it."""
    enc = processor(text=TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        h = (
            model.enc_to_dec_proj(model.text_encoder(**enc).last_hidden_state)
            * enc["attention_mask"][..., None]
        )
    return Conditioning(h, enc["attention_mask"]), enc


def wav_b64(audio: np.ndarray, sr: int = 32000) -> str:
    return base64.b64encode(audio_io.encode(audio, sr, "wav")).decode()


def test_loads_from_disk_through_the_engine(engine: MusicgenEngine) -> None:
    info = engine.info()
    assert info["loaded"] and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["sample_rate"] == 32000 and info["frame_rate"] == 50 and info["num_codebooks"] == 4


@pytest.mark.parametrize("sampled", [False, True])
def test_fast_decoder_gives_the_tokens_of_generate(hf, sampled: bool) -> None:
    model, processor = hf
    cond, enc = text_conditioning(model, processor)
    assert int(enc["attention_mask"].min()) == 0  # rows of different lengths: padding is exercised
    n_new = 40
    params = dict(temperature=0.8, top_k=50, top_p=0.9) if sampled else {}
    torch.manual_seed(11)
    ref = hf_codes(model, **enc, max_new_tokens=n_new, do_sample=sampled, guidance_scale=3.0, **params)
    rows = [
        RowSpec(new_frames=n_new - 3, guidance_scale=3.0, **(params or {"temperature": 0.0})) for _ in TEXTS
    ]
    gen = torch.Generator().manual_seed(11) if sampled else None
    out = FastDecoder(model).decode(cond, rows, generator=gen)
    assert torch.equal(torch.stack(out), ref)


def test_engine_greedy_tokens_match_generate(engine: MusicgenEngine, hf) -> None:
    model, processor = hf
    frames = 30
    [codes] = engine.generate_codes([MusicgenInput(text=TEXTS[0], duration_s=frames / 50, temperature=0)])
    enc = processor(text=[TEXTS[0]], padding=True, return_tensors="pt")
    ref = hf_codes(model, **enc, max_new_tokens=frames + 3, do_sample=False, guidance_scale=3.0)
    assert torch.equal(codes, ref[0])


def test_continuation_matches_generate_with_an_audio_prompt(engine: MusicgenEngine, hf) -> None:
    model, processor = hf
    rng = np.random.default_rng(0)
    prompt = (
        0.3 * np.sin(np.arange(9600) * 2 * np.pi * 220 / 32000) + 0.05 * rng.standard_normal(9600)
    ).astype(np.float32)
    b64 = wav_b64(prompt)
    as_sent = audio_io.decode(base64.b64decode(b64)).audio[:, 0]  # what the engine reads back (PCM16)
    frames = 25
    [codes] = engine.generate_codes(
        [MusicgenInput(text=TEXTS[1], duration_s=frames / 50, temperature=0, audio_prompt=b64)]
    )
    enc = processor(text=[TEXTS[1]], padding=True, return_tensors="pt")
    ref = hf_codes(
        model, **enc, input_values=torch.from_numpy(as_sent).view(1, 1, -1),
        max_new_tokens=frames + 3, do_sample=False, guidance_scale=3.0,
    )  # fmt: skip
    assert codes.shape[-1] == 15 + frames  # 0.3 s of prompt (15 frames) kept in front
    assert torch.equal(codes, ref[0])
    result = engine.run(
        MusicgenInput(text=TEXTS[1], duration_s=0.5, audio_prompt=b64, seed=3), LocalContext()
    )
    assert result.output["prompt_s"] == 0.3 and result.output["duration_s"] == pytest.approx(0.8)


def test_concurrent_requests_share_forward_passes(engine: MusicgenEngine) -> None:
    durations = [0.5, 0.8, 0.6]
    results: dict[int, object] = {}
    steps_before = engine.stats()["decode_steps"]

    def call(i: int) -> None:
        results[i] = engine.run(
            MusicgenInput(text=TEXTS[i % 2], duration_s=durations[i], seed=i), LocalContext()
        )

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outs = [results[i].output for i in range(3)]
    assert {o["batch_size"] for o in outs} == {3} and len({o["batch_id"] for o in outs}) == 1
    for o, d in zip(outs, durations, strict=True):
        assert o["duration_s"] == pytest.approx(d)
    # One decode serves all three: forward passes = the longest request's steps, not the sum.
    steps = engine.stats()["decode_steps"] - steps_before
    assert steps == round(max(durations) * 50) + 3
    assert engine.stats()["last_batch_size"] == 3


def test_seed_reproducible_alone_or_in_a_batch(engine: MusicgenEngine) -> None:
    req = MusicgenInput(text=TEXTS[0], duration_s=0.5, seed=1234, top_k=0, temperature=1.2)
    a = engine.run(req, LocalContext())
    b = engine.run(req, LocalContext())
    assert a.artifacts[0].data == b.artifacts[0].data and a.output["seed"] == 1234
    c = engine.run(req.model_copy(update={"seed": 1235}), LocalContext())
    assert c.artifacts[0].data != a.artifacts[0].data
    alone = engine.generate_codes([req])[0]
    together = engine.generate_codes([req.model_copy(update={"seed": 9, "text": TEXTS[1]}), req])[1]
    assert torch.equal(alone, together)


def test_long_duration_uses_windowed_continuation(engine: MusicgenEngine) -> None:
    result = engine.run(MusicgenInput(text=TEXTS[0], duration_s=2.5, seed=5), LocalContext())
    out = result.output
    assert out["windows"] == 4  # 1.0 s window, 0.4 s overlap: 1.0 + 0.6 + 0.6 + 0.3
    audio = audio_io.decode(result.artifacts[0].data)
    assert audio.sample_rate == 32000 and audio.audio.shape[0] == 2.5 * 32000
    assert float(np.sqrt(np.mean(audio.audio**2))) > 1e-4


def test_streaming_publishes_chunks_that_add_up(engine: MusicgenEngine) -> None:
    events: list[dict] = []
    progress: list[float] = []
    ctx = LocalContext(on_progress=lambda f, m: progress.append(f), on_event=lambda k, d: events.append(d))
    engine.options = MusicgenOptions(window_s=1.0, overlap_s=0.4, tick_every=5, stream_chunk_s=0.3)
    try:
        result = engine.run(MusicgenInput(text=TEXTS[0], duration_s=1.6, seed=2, stream=True), ctx)
    finally:
        engine.options = MusicgenOptions(window_s=1.0, overlap_s=0.4, tick_every=5)
    assert len(events) >= 3 and events[-1]["final"] and not events[0]["final"]
    assert [e["index"] for e in events] == list(range(len(events)))
    chunks = [audio_io.decode(base64.b64decode(e["audio_b64"])).audio for e in events]
    full = audio_io.decode(result.artifacts[0].data).audio
    assert sum(c.shape[0] for c in chunks) == full.shape[0]
    assert events[1]["start_s"] == pytest.approx(chunks[0].shape[0] / 32000)
    assert progress and progress == sorted(progress) and max(progress) <= 1.0


def test_a_canceled_request_leaves_its_batch_mates_alone(engine: MusicgenEngine) -> None:
    class CancelAfter(LocalContext):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def progress(self, fraction: float, message: str = "") -> None:
            self.calls += 1
            if self.calls > 2:
                raise JobCanceled("canceled by test")

    out: dict[str, object] = {}

    def call(name: str, ctx) -> None:
        try:
            out[name] = engine.run(MusicgenInput(text=TEXTS[0], duration_s=0.8, seed=1), ctx)
        except JobCanceled as exc:
            out[name] = exc

    threads = [
        threading.Thread(target=call, args=("canceled", CancelAfter())),
        threading.Thread(target=call, args=("kept", LocalContext())),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(out["canceled"], JobCanceled)
    assert out["kept"].output["batch_size"] == 2 and out["kept"].output["duration_s"] == pytest.approx(0.8)


def test_stereo_checkpoint_gives_stereo_audio_and_matches_generate(tiny_musicgen_stereo: Path) -> None:
    eng = MusicgenEngine(
        MusicgenSettings(model=str(tiny_musicgen_stereo), max_wait_ms=0),
        options=MusicgenOptions(quantize="none"),
    )
    try:
        result = eng.run(MusicgenInput(text="jazz", duration_s=0.5, temperature=0), LocalContext())
        audio = audio_io.decode(result.artifacts[0].data)
        assert audio.audio.shape == (16000, 2)
        model = MusicgenForConditionalGeneration.from_pretrained(tiny_musicgen_stereo).eval()
        enc = AutoProcessor.from_pretrained(tiny_musicgen_stereo)(text=["jazz"], return_tensors="pt")
        ref = hf_codes(model, **enc, max_new_tokens=25 + 3, do_sample=False, guidance_scale=3.0)
        [codes] = eng.generate_codes([MusicgenInput(text="jazz", duration_s=0.5, temperature=0)])
        assert torch.equal(codes, ref[0])
    finally:
        eng.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "   "}, "text"),
        ({"text": "x" * 2001}, "text"),
        ({"text": "ok", "duration_s": 0}, "duration_s"),
        ({"text": "ok", "top_p": 0}, "top_p"),
        ({"text": "ok", "temperature": -1}, "temperature"),
        ({"text": "ok", "seed": -5}, "seed"),
        ({"text": "ok", "format": "mp3"}, "format"),
        ({"text": "ok", "bogus": 1}, "bogus"),
    ],
)
def test_schema_rejects_bad_input(body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        MusicgenInput.model_validate(body)
    assert info.value.errors()[0]["loc"][0] == field


def test_engine_rejects_bad_input_with_the_field(engine: MusicgenEngine) -> None:
    with pytest.raises(InvalidInput) as info:
        engine.run(MusicgenInput(text="ok", duration_s=11), LocalContext())
    assert info.value.field == "duration_s"
    with pytest.raises(InvalidInput) as info:
        engine.run(MusicgenInput(text="ok", audio_prompt="not base64!"), LocalContext())
    assert info.value.field == "audio_prompt"
    with pytest.raises(InvalidInput) as info:  # longer than the window allows
        engine.run(
            MusicgenInput(text="ok", audio_prompt=wav_b64(np.zeros(32000, np.float32))), LocalContext()
        )
    assert info.value.field == "audio_prompt"


def test_missing_or_foreign_model_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="does not exist"):
        MusicgenEngine(MusicgenSettings(model=str(tmp_path / "nope"))).load()
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    eng = MusicgenEngine(MusicgenSettings(model=str(tmp_path)))
    with pytest.raises(EngineUnavailable, match="not MusicGen"):
        eng.load()
    with pytest.raises(EngineUnavailable):  # the failure is remembered, not retried per request
        eng.run(MusicgenInput(text="ok"), LocalContext())


def test_fused_products_share_the_models_weights(hf) -> None:
    model, _ = hf
    first = FastDecoder(model)
    sa = model.decoder.model.decoder.layers[0].self_attn
    qkv = first.packed.layers[0].qkv.weight
    assert sa.k_proj.weight.untyped_storage().data_ptr() == qkv.untyped_storage().data_ptr()
    assert torch.equal(qkv[sa.q_proj.weight.shape[0] :][: sa.k_proj.weight.shape[0]], sa.k_proj.weight)
    again = FastDecoder(model)  # a second decoder on the same model reuses the fused storage
    assert again.packed.layers[0].qkv.weight.data_ptr() == qkv.data_ptr()


def test_int8_decoder_follows_the_float_one(hf) -> None:
    model, processor = hf
    cond, _ = text_conditioning(model, processor)
    fp32, int8 = FastDecoder(model), FastDecoder(model, quantize="int8")
    rows = [RowSpec(new_frames=20, guidance_scale=3.0, temperature=0.0) for _ in TEXTS]
    codes = torch.stack(fp32.decode(cond, rows))
    ref, free = fp32.teacher_forced_scores(cond, codes)
    got, _ = int8.teacher_forced_scores(cond, codes)
    assert int(free.sum()) == codes.numel()
    # Scoring the greedy sequence in one pass gives back the greedy choices...
    assert torch.equal(ref[free].argmax(-1), codes.reshape(-1))
    # ...and int8 mostly agrees with them, but not exactly (it is a different model).
    agree = (got[free].argmax(-1) == codes.reshape(-1)).float().mean().item()
    assert 0.8 < agree and not torch.equal(got, ref)


def test_quantize_auto_is_int8_on_cpu_only() -> None:
    from harmonia.engines.musicgen.loader import resolve_quantize

    assert resolve_quantize("auto", torch.device("cpu")) == "int8"
    assert resolve_quantize("auto", torch.device("cuda")) == "none"
    assert resolve_quantize("none", torch.device("cpu")) == "none"
    with pytest.raises(EngineUnavailable, match="CPU option"):
        resolve_quantize("int8", torch.device("cuda"))


def test_int8_option_generates_on_cpu(tiny_musicgen: Path) -> None:
    settings = MusicgenSettings(model=str(tiny_musicgen), max_wait_ms=0)
    eng = MusicgenEngine(settings, options=MusicgenOptions(quantize="auto"))
    try:
        result = eng.run(MusicgenInput(text="jazz", duration_s=0.5, seed=1), LocalContext())
        assert eng.info()["quantize"] == "int8"
        assert audio_io.decode(result.artifacts[0].data).audio.shape == (16000, 1)
    finally:
        eng.close()


def test_the_graph_step_gives_the_tokens_of_the_eager_loop_on_dirty_memory(hf, monkeypatch) -> None:
    """The step a CUDA graph captures (static shapes, whole-cache attention under a mask, finished
    rows riding along) run eagerly on the CPU, with every fresh float buffer full of NaN as reused
    device memory can be: it must give the eager loop's tokens."""
    model, processor = hf
    cond, _ = text_conditioning(model, processor)
    rows = [RowSpec(new_frames=37 - 8 * i, guidance_scale=3.0, temperature=0.0) for i in range(len(TEXTS))]
    eager = FastDecoder(model).decode(cond, rows)

    class EagerGraph:  # replays the captured step's code without CUDA
        def __init__(self, dec: FastDecoder, st: object, generator: object) -> None:
            self.dec, self.st, self.generator = dec, st, generator

        def replay(self) -> None:
            self.dec._step(self.st, self.generator, graph_mode=True)

    empty = torch.empty

    def dirty_empty(*args, **kwargs):
        t = empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    graphed = FastDecoder(model, graph_runner=EagerGraph)
    assert graphed.cuda_graphs  # the graph path, replayed eagerly
    monkeypatch.setattr(torch, "empty", dirty_empty)  # torch's allocator, not ours
    out = graphed.decode(cond, rows)
    monkeypatch.setattr(torch, "empty", empty)
    assert all(torch.equal(a, b) for a, b in zip(eager, out, strict=True))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_windows_and_batches(tiny_musicgen: Path, dtype: str) -> None:
    """The CUDA default dtypes, run on the CPU: the decoder in half precision (text encoder and
    codec stay float32), a continuation window, and a batch of different lengths."""
    settings = MusicgenSettings(model=str(tiny_musicgen), device="cpu", dtype=dtype, max_wait_ms=200)
    eng = MusicgenEngine(settings, options=MusicgenOptions(quantize="none", window_s=1.0, overlap_s=0.4))
    try:
        eng.load()
        assert eng.info()["dtype"] == dtype
        results: dict[float, np.ndarray] = {}

        def run(seconds: float) -> None:
            out = eng.run(
                MusicgenInput(text=f"{seconds} s of jazz", duration_s=seconds, seed=1), LocalContext()
            )
            results[seconds] = audio_io.decode(out.artifacts[0].data).audio

        threads = [threading.Thread(target=run, args=(s,)) for s in (0.6, 1.8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert {s: a.shape for s, a in results.items()} == {0.6: (19200, 1), 1.8: (57600, 1)}
        for audio in results.values():
            assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    finally:
        eng.close()


def test_out_of_memory_splits_the_batch_and_every_request_still_gets_its_audio(tiny_musicgen: Path) -> None:
    sizes: list[int] = []

    class TightMemory(FastDecoder):  # a device with room for one row at a time
        def decode(self, cond, rows, **kwargs):
            sizes.append(len(rows))
            if len(rows) > 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().decode(cond, rows, **kwargs)

    settings = MusicgenSettings(model=str(tiny_musicgen), max_batch_size=4, max_wait_ms=300)
    engine = MusicgenEngine(settings, options=MusicgenOptions(quantize="none"), decoder_factory=TightMemory)
    engine.load()
    splits = engine._batcher.stats.splits
    results: dict[int, EngineResult] = {}
    barrier = threading.Barrier(3)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = engine.run(MusicgenInput(text=f"tune {i}", duration_s=0.5, seed=i), LocalContext())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [0, 1, 2]
    assert all(audio_io.decode(r.artifacts[0].data).audio.shape == (16000, 1) for r in results.values())
    assert max(sizes) > 1 and engine._batcher.stats.splits > splits  # a shared batch failed and was split
    engine.close()
