"""jen1's parts made by the diffusion models: a backing track from Stable Audio or ACE-Step, or the
whole song (vocals included) from ACE-Step.

- Stable Audio backing: one clip per section (merged to at least a few seconds, and split where a
  section is longer than a clip may be), prompted from the plan and the section's name, joined
  with short crossfades.
- ACE-Step backing: one instrumental call for the whole piece, with the plan's tempo, key and metre.
- ACE-Step song: one call with the plan's prompt and the lyric sheet built from the arrangement's
  sections (`[verse]`, `[chorus]`, ... with their lines), the piece's exact duration; the result is
  the only stem, so the mix masters it.
Each returns a stem and a description of it for `plan.json`; engine errors propagate to the caller,
which falls back to the SoundFont and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harmonia.audio import encode
from harmonia.audio.mix import Stem
from harmonia.audio.resample import resample
from harmonia.engines.base import RunContext
from harmonia.engines.jen1.arrange import Arrangement
from harmonia.engines.jen1.planner import PlannedSong
from harmonia.errors import EngineError

_MIN_SECTION_S = 2.0  # sections shorter than this are merged into the next one
_CLIP_S = 40.0  # Stable Audio pieces stay under Open 1.0's 47.55 s window
_JOIN_S = 0.05  # crossfade between two Stable Audio pieces


class Span:
    """A RunContext for one call inside a part: progress maps into [lo, hi] of the part's span."""

    def __init__(self, ctx: RunContext, lo: float, hi: float) -> None:
        self.ctx, self.lo, self.hi = ctx, lo, hi

    def progress(self, fraction: float, message: str = "") -> None:
        self.ctx.progress(self.lo + (self.hi - self.lo) * min(max(fraction, 0.0), 1.0), message)

    def check(self) -> None:
        self.ctx.check()

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self.ctx.event(kind, data)


def musicgen_prompt(song: PlannedSong) -> str:
    """The plan in a generative model's words: genre, mood, tempo, key, instruments."""
    plan = song.plan
    instruments = ", ".join(dict.fromkeys(s.name for s, r in song.band if r not in ("vocals", "melody")))
    parts = [
        plan.genre or "instrumental",
        plan.mood or song.mood,
        f"{plan.tempo_bpm:g} bpm",
        plan.key,
        instruments,
        "soft drums" if song.soft_drums else "",
        "instrumental backing track",
    ]
    return ", ".join(p for p in parts if p)


def merged_sections(arrangement: Arrangement, total_s: float) -> list[tuple[str, float, float]]:
    """(name, start, end) of the sections, the short ones merged into the next; the last runs to the end."""
    spans: list[tuple[str, float, float]] = []
    for s in arrangement.sections:
        end = s.end_s
        if spans and (spans[-1][2] - spans[-1][1]) < _MIN_SECTION_S:
            name, start, _ = spans.pop()
            spans.append((name, start, end))
        else:
            spans.append((s.name, s.start_s, end))
    if spans:
        name, start, _ = spans[-1]
        spans[-1] = (name, start, total_s)  # the last section runs through the release
        if len(spans) > 1 and total_s - start < _MIN_SECTION_S:
            spans.pop()
            name, start, _ = spans.pop()
            spans.append((name, start, total_s))
    return spans


def lyric_sheet(arrangement: Arrangement) -> str:
    """The arrangement's sections as an ACE-Step lyric sheet: a `[name]` tag per section, its lines."""
    blocks = []
    for section in arrangement.sections:
        lines = [line for line in section.lyrics if line.strip()]
        blocks.append("\n".join([f"[{section.name}]", *lines]))
    return "\n\n".join(blocks)


def _meta(song: PlannedSong) -> dict[str, Any]:
    plan = song.plan
    beats = plan.time_signature.split("/")[0]
    return {
        "bpm": min(max(round(plan.tempo_bpm), 30), 300),
        "key": plan.key,
        "time_signature": beats if beats in ("2", "3", "4", "6") else None,
    }


def _audio(result: Any, rate: int) -> np.ndarray:
    decoded = encode.decode(result.artifacts[0].data)
    return resample(decoded.audio, decoded.sample_rate, rate)


def acestep_part(
    engine: Any,
    song: PlannedSong,
    arrangement: Arrangement,
    prompt: str,
    ctx: RunContext,
    rate: int,
    *,
    sing: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The whole song (`sing`) or an instrumental backing from ACE-Step, at `rate`."""
    from harmonia.engines.acestep.input import AceStepInput

    seconds = arrangement.score.duration_s
    lyrics = lyric_sheet(arrangement) if sing else ""
    payload = AceStepInput.model_validate(
        {"prompt": prompt, "lyrics": lyrics, "duration_s": min(max(seconds, 1.0), 600.0),
         "seed": song.seed % 2**32, **{k: v for k, v in _meta(song).items() if v is not None}}
    )  # fmt: skip
    result = engine.run(payload, Span(ctx, 0.0, 1.0))
    about = {
        "prompt": prompt,
        "lyrics": lyrics,
        "seconds": round(seconds, 3),
        "model": result.output.get("model"),
    }
    return _audio(result, rate), about


def stable_audio_backing(
    engine: Any,
    song: PlannedSong,
    spans: list[tuple[str, float, float]],
    prompt: str,
    ctx: RunContext,
    rate: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A backing track from Stable Audio: a clip per section (split under its window), crossfaded."""
    from harmonia.engines.stable_audio.input import StableAudioInput

    # a local engine knows its checkpoint's window once loaded; a remote one is taken to be Open 1.0's
    if hasattr(engine, "load"):
        engine.load()
    limit = min(float(engine.info().get("max_clip_s", _CLIP_S)) - _JOIN_S, _CLIP_S)
    pieces: list[tuple[str, float, float]] = []
    for name, start, end in spans:
        count = max(1, int(np.ceil((end - start) / limit)))
        step = (end - start) / count
        pieces += [(name, start + i * step, start + (i + 1) * step) for i in range(count)]
    out: np.ndarray | None = None
    join = round(_JOIN_S * rate)
    for i, (name, start, end) in enumerate(pieces):
        ctx.check()
        payload = StableAudioInput.model_validate(
            {"prompt": f"{prompt}, {name}", "negative_prompt": "vocals, singing, speech, low quality",
             "duration_s": end - start + (_JOIN_S if i < len(pieces) - 1 else 0.0),
             "seed": (song.seed + i) % 2**32}
        )  # fmt: skip
        clip = _audio(engine.run(payload, Span(ctx, i / len(pieces), (i + 1) / len(pieces))), rate)
        if out is None:
            out = clip
            continue
        fade = np.linspace(0.0, 1.0, join, dtype=np.float32)[:, None]
        overlap = out[-join:] * (1.0 - fade) + clip[:join] * fade
        out = np.concatenate([out[:-join], overlap, clip[join:]])
    if out is None:
        raise EngineError("the arrangement has no sections to make a backing track for")
    about = {"prompt": prompt, "clips": [{"section": n, "start_s": round(a, 3), "seconds": round(b - a, 3)}
                                         for n, a, b in pieces]}  # fmt: skip
    return out, about


def generated_stem(name: str, role: str, audio: np.ndarray, frames: int) -> Stem:
    """A generated track cut or padded to the piece's length."""
    fitted = np.zeros((frames, audio.shape[1]), dtype=np.float32)
    n = min(frames, audio.shape[0])
    fitted[:n] = audio[:n]
    return Stem(name=name, role=role, audio=fitted)
