"""Fixtures for engine tests: tiny random MusicGen, ACE-Step and Stable Audio checkpoints written to
disk once per session, and the Ollama daemon the LLM tests talk to (the fake one, or a real one when
HARMONIA_TEST_OLLAMA_URL is set).

Real architecture (T5 encoder + offline tokenizer, EnCodec 32 kHz, MusicGen decoder), random
weights, saved with `save_pretrained`; tests load it back through the engine's own loader.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_ollama import FakeOllama, real_ollama


@pytest.fixture(scope="session")
def tiny_musicgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from harmonia.engines.musicgen.tiny import make_tiny_musicgen

    return make_tiny_musicgen(tmp_path_factory.mktemp("musicgen") / "tiny")


@pytest.fixture(scope="session")
def tiny_musicgen_stereo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from harmonia.engines.musicgen.tiny import make_tiny_musicgen

    return make_tiny_musicgen(tmp_path_factory.mktemp("musicgen") / "tiny-stereo", stereo=True, seed=1)


@pytest.fixture(scope="session")
def tiny_acestep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ACE-Step 1.5 turbo: DiT, condition encoder, Qwen3 text encoder + BPE tokenizer, 48 kHz VAE."""
    pytest.importorskip("diffusers")
    from harmonia.engines.acestep.tiny import make_tiny_acestep

    return make_tiny_acestep(tmp_path_factory.mktemp("acestep") / "tiny")


@pytest.fixture(scope="session")
def tiny_stable_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stable Audio Open: DiT, projection, T5 encoder + tokenizer, 44.1 kHz VAE, 2.97 s window."""
    pytest.importorskip("diffusers")
    from harmonia.engines.stable_audio.tiny import make_tiny_stable_audio

    return make_tiny_stable_audio(tmp_path_factory.mktemp("stable-audio") / "tiny")


REAL_OLLAMA = real_ollama()  # read at import: the suite clears HARMONIA_* around every test


@pytest.fixture(scope="module")
def daemon() -> Iterator[FakeOllama | None]:
    """The fake daemon, or None when the suite runs against a real Ollama."""
    if REAL_OLLAMA:
        yield None
        return
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def fake(daemon: FakeOllama | None) -> FakeOllama:
    """The fake daemon, emptied; tests that script answers use it and skip against a real one."""
    if daemon is None:
        pytest.skip("needs scripted answers; not possible against a real Ollama")
    daemon.reset()
    return daemon
