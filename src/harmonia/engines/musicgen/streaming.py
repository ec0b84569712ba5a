"""Streaming MusicGen output: finished frames decoded in chunks while generation goes on."""

from __future__ import annotations

import base64
from typing import Any, Protocol

import numpy as np

from harmonia.audio import encode as audio_io
from harmonia.engines.base import RunContext


class CodeDecoder(Protocol):
    """What the streamer needs of the engine: its rates and EnCodec's decode."""

    sample_rate: int
    frame_rate: int

    def decode_audio(self, codes: Any) -> np.ndarray: ...


class AudioStreamer:
    """Decodes finished frames of one request in windows and publishes them as `audio_chunk` events.

    EnCodec's decoder looks a few frames ahead and carries LSTM state, so each chunk is decoded
    with `context` frames before it and held back by `lookahead` frames; the final chunk comes
    from the full decode, so the stream ends exactly where the returned file does.
    """

    CONTEXT_FRAMES = 50
    LOOKAHEAD_FRAMES = 4

    def __init__(self, engine: CodeDecoder, ctx: RunContext, chunk_s: float) -> None:
        self.engine, self.ctx = engine, ctx
        self.chunk = max(1, round(chunk_s * engine.frame_rate))
        self.hop = engine.sample_rate // engine.frame_rate
        self.emitted = 0  # frames already published
        self.index = 0

    def feed(self, codes_fn: Any) -> None:
        codes = codes_fn()
        usable = int(codes.shape[-1]) - self.LOOKAHEAD_FRAMES
        if usable - self.emitted < self.chunk:
            return
        start = max(0, self.emitted - self.CONTEXT_FRAMES)
        audio = self.engine.decode_audio(codes[:, start:])
        a = (self.emitted - start) * self.hop
        self._publish(audio[a : (usable - start) * self.hop], self.emitted)
        self.emitted = usable

    def flush(self, full_audio: np.ndarray) -> None:
        rest = full_audio[self.emitted * self.hop :]
        if rest.shape[0]:
            self._publish(rest, self.emitted, final=True)

    def _publish(self, audio: np.ndarray, start_frame: int, final: bool = False) -> None:
        sr = self.engine.sample_rate
        data = audio_io.encode(audio, sr, "wav")
        self.ctx.event(
            "audio_chunk",
            {
                "index": self.index,
                "start_s": round(start_frame / self.engine.frame_rate, 4),
                "duration_s": round(audio.shape[0] / sr, 4),
                "sample_rate": sr,
                "format": "wav",
                "final": final,
                "audio_b64": base64.b64encode(data).decode("ascii"),
            },
        )
        self.index += 1
