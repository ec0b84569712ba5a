"""Fixtures for engine tests: a tiny random MusicGen checkpoint written to disk once per session.

Real architecture (T5 encoder + offline tokenizer, EnCodec 32 kHz, MusicGen decoder), random
weights, saved with `save_pretrained`; tests load it back through the engine's own loader.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_musicgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from harmonia.engines.musicgen_tiny import make_tiny_musicgen

    return make_tiny_musicgen(tmp_path_factory.mktemp("musicgen") / "tiny")


@pytest.fixture(scope="session")
def tiny_musicgen_stereo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from harmonia.engines.musicgen_tiny import make_tiny_musicgen

    return make_tiny_musicgen(tmp_path_factory.mktemp("musicgen") / "tiny-stereo", stereo=True, seed=1)
