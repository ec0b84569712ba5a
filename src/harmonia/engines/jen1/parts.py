"""Rendering jen1's parts: each part of the arrangement becomes an aligned stem.

- Every part is rendered on its own with the `render` engine (SoundFont), so it can be balanced,
  panned and returned as a stem.
- A MusicGen backing track (when a MusicGen engine is present and the request asks for it, or
  `engine: auto` finds the style a produced one) replaces the chords, bass and drums. It is
  prompted from the plan (genre, mood, instruments, tempo, key) and generated section by section,
  each continuing the audio of the one before (MusicGen's audio prompt), so the sections join.
  Stable Audio or ACE-Step can make the backing instead (asked for by name; `auto` takes the
  first present of MusicGen, Stable Audio, ACE-Step), and ACE-Step the whole song, vocals
  included, when lyrics are sung and it is present (`jen1_generated`).
- Vocals: with a singing engine and lyrics, the melody of the sections with lyrics is sung (words
  laid syllable by syllable on the melody's notes); elsewhere, or without a singer, the lead
  instrument plays the melody.
An optional engine that fails is a stated fallback (`notes`), never a failed job; a cancel or a
time limit (`JobStopped`) always stops the whole run.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pretty_midi

from harmonia.audio import encode
from harmonia.audio.mix import Stem
from harmonia.audio.resample import resample as _resample
from harmonia.engines.base import RunContext
from harmonia.engines.jen1 import generated as gen
from harmonia.engines.jen1.arrange import Arrangement
from harmonia.engines.jen1.generated import merged_sections, musicgen_prompt
from harmonia.engines.jen1.planner import PlannedSong
from harmonia.engines.render.engine import RenderEngine
from harmonia.errors import HarmoniaError, JobStopped
from harmonia.music.score import Part

EngineProvider = Callable[[], Any]  # returns a loaded engine; raises EngineUnavailable when absent
BACKING_ROLES = ("accompaniment", "pad", "harmony", "bass", "drums")
LABELS = {"musicgen": "MusicGen", "stable-audio": "Stable Audio", "acestep": "ACE-Step"}
_CONTEXT_S = 3.0  # audio of the previous section given to MusicGen as the start of the next
_WORD_RE = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


class _Span:
    """A RunContext for one stage: inner progress maps into [lo, hi] under one stage label."""

    def __init__(self, ctx: RunContext, lo: float, hi: float, label: str) -> None:
        self.ctx, self.lo, self.hi, self.label = ctx, lo, hi, label

    def progress(self, fraction: float, message: str = "") -> None:
        self.ctx.progress(self.lo + (self.hi - self.lo) * min(max(fraction, 0.0), 1.0), self.label)

    def check(self) -> None:
        self.ctx.check()

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if kind != "audio_chunk":  # a backing track's raw chunks are not jen1's output
            self.ctx.event(kind, data)


@dataclass
class RenderedParts:
    stems: list[Stem]
    parts: list[dict[str, Any]] = field(default_factory=list)  # what made each stem
    notes: list[str] = field(default_factory=list)


def part_midi(part: Part, tempo_bpm: float) -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm, resolution=480)
    inst = pretty_midi.Instrument(
        program=part.instrument.program, is_drum=part.instrument.is_drum, name=part.instrument.name
    )
    inst.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start_s, n.end_s) for n in part.notes]
    midi.instruments.append(inst)
    return midi


def stem_name(index: int, part: Part) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", part.instrument.name.lower()).strip("-")
    return f"{index + 1:02d}-{slug}-{part.role}"


class PartRenderer:
    def __init__(
        self,
        render: RenderEngine,
        musicgen: EngineProvider | None = None,
        singer: EngineProvider | None = None,
        stable_audio: EngineProvider | None = None,
        acestep: EngineProvider | None = None,
    ) -> None:
        self.render = render
        self.musicgen = musicgen
        self.singer = singer
        self.acestep = acestep
        # the models that can make a backing track, in the order `engine: auto` prefers them
        self.generators = {"musicgen": musicgen, "stable-audio": stable_audio, "acestep": acestep}

    def backing_model(self, engine: str, song: PlannedSong) -> str | None:
        """The model that makes the backing track: the one asked for, or with `auto` in a produced
        style the first one available here; None: the SoundFont plays every part."""
        if engine in self.generators:
            return engine if self.generators[engine] is not None else None
        if engine == "auto" and song.produced:
            return next((name for name, provider in self.generators.items() if provider is not None), None)
        return None

    def sings_whole_song(self, engine: str, arrangement: Arrangement) -> bool:
        """ACE-Step makes the whole song when vocals and lyrics are asked for and it is here (auto or
        asked for by name)."""
        lyrics = arrangement.vocal_lead and any(s.lyrics for s in arrangement.sections)
        return self.acestep is not None and engine in ("auto", "acestep") and lyrics

    def run(
        self,
        arrangement: Arrangement,
        song: PlannedSong,
        engine: str,
        ctx: RunContext,
        span: tuple[float, float],
    ) -> RenderedParts:
        score = arrangement.score
        sr = self.render.sample_rate
        frames = round(score.duration_s * sr)
        out = RenderedParts(stems=[])
        if self.sings_whole_song(engine, arrangement):
            label = "the whole song, vocals included (acestep)"
            ctx.event("stage", {"stage": "part", "index": 1, "of": 1, "label": label})
            ctx.progress(span[0], label)
            if self._generated("acestep", True, arrangement, song, _Span(ctx, *span, label), frames, out):
                out.notes.append(
                    "the whole song, vocals included, was made by ACE-Step: vocals and lyrics were asked "
                    "for and ACE-Step is available (score and MIDI: the plan it was prompted from)"
                )
                return out
        model = self.backing_model(engine, song)
        backing = model is not None
        if engine in self.generators and model is None:
            out.notes.append(f"engine {engine!r} was asked for, but no {LABELS[engine]} engine is available "
                             "here: every part is rendered with the SoundFont")  # fmt: skip
        elif model is not None:
            why = "asked for" if engine == model else f"a produced style ({song.plan.genre or song.mood})"
            out.notes.append(f"backing track: {LABELS[model]} ({why}); the SoundFont plays the other parts")
        sing = (
            arrangement.vocal_lead and self.singer is not None and any(s.lyrics for s in arrangement.sections)
        )
        if arrangement.vocal_lead and not sing:
            why = "no singing engine is available" if self.singer is None else "the plan has no lyrics"
            lead = next((p.instrument.name for p in score.parts if p.role == "melody"), "an instrument")
            out.notes.append(f"vocals: {why}; {lead} (SoundFont) plays the melody")
        # Work units: a SoundFont part 1, a sung part 3, the backing 4 (MusicGen is the slow one).
        jobs: list[tuple[str, Any, float]] = []
        if backing:
            jobs.append(("backing", None, 4.0))
        for part in score.parts:
            if backing and part.role in BACKING_ROLES:
                continue
            if sing and part.role == "melody":
                jobs.append(("vocals", part, 3.0))
            jobs.append(("part", part, 1.0))
        lo, hi = span
        unsung: dict[int, Part] = {}
        total = sum(w for *_, w in jobs) or 1.0
        done = 0.0
        for index, (kind, part, weight) in enumerate(jobs):
            a = lo + (hi - lo) * done / total
            b = lo + (hi - lo) * (done + weight) / total
            done += weight
            label = f"part {index + 1}/{len(jobs)}: " + (
                f"backing track ({model})" if kind == "backing" else
                f"{part.instrument.name} vocals (diffsinger)" if kind == "vocals" else
                f"{part.instrument.name} ({part.role})"
            )  # fmt: skip
            ctx.event("stage", {"stage": "part", "index": index + 1, "of": len(jobs), "label": label})
            ctx.progress(a, label)
            sub = _Span(ctx, a, b, label)
            if kind == "backing":
                made = (
                    self._backing(arrangement, song, sub, frames, out) if model == "musicgen"
                    else self._generated(str(model), False, arrangement, song, sub, frames, out)
                )  # fmt: skip
                if not made:
                    backing = False  # render what the backing would have played
                    for p in score.parts:
                        if p.role in BACKING_ROLES:
                            self._soundfont(p, score.tempo_bpm, sub, frames, out)
            elif kind == "vocals":
                sung = self._vocals(arrangement, part, song, sub, frames, out)
                if sung is not None:  # the instrument keeps only the notes nobody sings
                    unsung[id(part)] = Part(
                        part.instrument, part.role, [n for n in part.notes if not sung(n.start_s)]
                    )
            else:
                self._soundfont(unsung.get(id(part), part), score.tempo_bpm, sub, frames, out)
        return out

    # --- SoundFont -------------------------------------------------------------------------------

    def _soundfont(self, part: Part, tempo: float, ctx: RunContext, frames: int, out: RenderedParts) -> None:
        if not part.notes:
            return
        rendered = self.render.render_midi(
            part_midi(part, tempo), ctx, tail_s=2.0, progress_range=(0.0, 1.0), trim=False
        )
        name = stem_name(len(out.stems), part)
        out.stems.append(Stem(name=name, role=part.role, audio=rendered.audio[:frames]))
        out.parts.append(
            {"stem": name, "instrument": part.instrument.name, "role": part.role, "engine": "render",
             "program": part.instrument.program, "notes": len(part.notes)}
        )  # fmt: skip

    # --- MusicGen backing --------------------------------------------------------------------------

    def _backing(
        self, arrangement: Arrangement, song: PlannedSong, ctx: RunContext, frames: int, out: RenderedParts
    ) -> bool:
        from harmonia.engines.musicgen.input import MusicgenInput

        sr = self.render.sample_rate
        prompt = musicgen_prompt(song)
        spans = merged_sections(arrangement, frames / sr)
        pieces: list[np.ndarray] = []
        mg_rate = 0
        meta = []
        try:
            engine = self.musicgen() if self.musicgen is not None else None
            if engine is None:
                return False
            for i, (name, start, end) in enumerate(spans):
                ctx.check()
                audio_prompt = None
                if pieces:
                    tail = pieces[-1][-int(_CONTEXT_S * mg_rate) :]
                    audio_prompt = base64.b64encode(encode.encode(tail, mg_rate, "wav")).decode()
                payload = MusicgenInput.model_validate(
                    {
                        "text": f"{prompt}, {name}",
                        "duration_s": max(0.5, end - start),
                        "seed": (song.seed + i) % 2**32,
                        "audio_prompt": audio_prompt,
                    }
                )
                sub = _Span(ctx, i / len(spans), (i + 1) / len(spans), getattr(ctx, "label", "backing"))
                result = engine.run(payload, sub)
                decoded = encode.decode(result.artifacts[0].data)
                mg_rate = decoded.sample_rate
                prompt_s = float(result.output.get("prompt_s", 0.0)) if audio_prompt else 0.0
                new = decoded.audio[round(prompt_s * mg_rate) :]
                pieces.append(new)
                meta.append(
                    {
                        "section": name,
                        "start_s": round(start, 3),
                        "seconds": round(len(new) / mg_rate, 3),
                        "continued": audio_prompt is not None,
                    }
                )
        except JobStopped:
            raise
        except HarmoniaError as exc:
            out.notes.append(f"MusicGen backing failed ({exc}); the SoundFont plays the backing parts")
            return False
        audio = _resample(np.concatenate(pieces), mg_rate, sr)
        name = f"{len(out.stems) + 1:02d}-musicgen-backing"
        out.stems.append(Stem(name=name, role="backing", audio=audio[:frames]))
        out.parts.append({"stem": name, "instrument": "musicgen", "role": "backing", "engine": "musicgen",
                          "prompt": prompt, "sections": meta})  # fmt: skip
        return True

    # --- Stable Audio / ACE-Step -------------------------------------------------------------------

    def _generated(
        self, model: str, sing: bool, arrangement: Arrangement, song: PlannedSong, ctx: RunContext,
        frames: int, out: RenderedParts,
    ) -> bool:  # fmt: skip
        """A backing track (or with `sing`, ACE-Step's whole song) as a stem; False: fall back."""
        sr, what = self.render.sample_rate, "song" if sing else "backing"
        prompt = musicgen_prompt(song)
        provider = self.generators[model]
        try:
            engine = provider() if provider is not None else None
            if engine is None:
                return False
            if model == "acestep":
                prompt = prompt.replace("instrumental backing track", "song with vocals") if sing else prompt
                audio, about = gen.acestep_part(engine, song, arrangement, prompt, ctx, sr, sing=sing)
            else:
                spans = merged_sections(arrangement, frames / sr)
                audio, about = gen.stable_audio_backing(engine, song, spans, prompt, ctx, sr)
        except JobStopped:
            raise
        except HarmoniaError as exc:
            instead = "the parts are rendered one by one" if sing else "the SoundFont plays the backing parts"
            out.notes.append(f"{LABELS[model]} {what} failed ({exc}); {instead}")
            return False
        name = f"{len(out.stems) + 1:02d}-{model}-{what}"
        out.stems.append(gen.generated_stem(name, what, audio, frames))
        out.parts.append({"stem": name, "instrument": model, "role": what, "engine": model, **about})
        return True

    # --- vocals ------------------------------------------------------------------------------------

    def _vocals(
        self,
        arrangement: Arrangement,
        melody: Part,
        song: PlannedSong,
        ctx: RunContext,
        frames: int,
        out: RenderedParts,
    ) -> Callable[[float], bool] | None:
        """Sing the melody of the sections with lyrics; returns "is this time sung?" or None."""
        from harmonia.engines.diffsinger.input import SingingRequest

        sr = self.render.sample_rate
        try:
            singer = self.singer() if self.singer is not None else None
            if singer is None:
                return None
            known = _dictionary(singer)
            notes, sung_spans, substituted = lay_lyrics(arrangement, melody, known)
            if not notes:
                return None
            request = SingingRequest.model_validate({"notes": notes, "tempo": arrangement.score.tempo_bpm})
            result = singer.run(request, ctx)
        except JobStopped:
            raise
        except HarmoniaError as exc:
            out.notes.append(f"singing failed ({exc}); {melody.instrument.name} (SoundFont) plays the melody")
            return None
        decoded = encode.decode(result.artifacts[0].data)
        audio = _resample(decoded.audio, decoded.sample_rate, sr)
        offset = -round(float(result.output.get("time_offset_s", 0.0)) * sr)
        name = f"{len(out.stems) + 1:02d}-vocals"
        out.stems.append(Stem(name=name, role="vocals", audio=audio, offset_frames=offset))
        out.parts.append(
            {
                "stem": name,
                "instrument": melody.instrument.name,
                "role": "vocals",
                "engine": "diffsinger",
                "notes": len(notes),
                "sections": [s[0] for s in sung_spans],
            }
        )
        if substituted:
            out.notes.append(
                "words the voicebank cannot pronounce are sung as a vocalise: "
                + ", ".join(sorted(substituted)[:12])
            )
        return lambda t: any(a - 1e-6 <= t < b - 1e-6 for _, a, b in sung_spans)


def _dictionary(singer: Any) -> Callable[[str], bool] | None:
    """`word -> pronounceable?` for a local DiffSinger engine; None when it cannot be asked (remote)."""
    voicebank = getattr(singer, "voicebank", None)
    dictionary = getattr(voicebank, "dictionary", None)
    if dictionary is None:
        return None
    return lambda word: dictionary.lookup(word) is not None


def lay_lyrics(
    arrangement: Arrangement, melody: Part, known: Callable[[str], bool] | None
) -> tuple[list[dict[str, Any]], list[tuple[str, float, float]], set[str]]:
    """Lay each section's lyrics on its melody notes: a word per syllable count of notes (the first
    carries the word, the rest slur), lines repeating until the section's notes are used.
    Unpronounceable words become a vocalise ("la"). Returns singing notes, sung spans, substitutes."""
    from harmonia.music.syllables import word_syllables

    seconds_per_beat = 60.0 / arrangement.score.tempo_bpm
    vocalise = "la" if known is None or known("la") else next(
        (w for w in ("a", "ah", "na", "la") if known(w)), "la"
    )  # fmt: skip
    notes: list[dict[str, Any]] = []
    spans: list[tuple[str, float, float]] = []
    substituted: set[str] = set()
    for section in arrangement.sections:
        if not section.lyrics:
            continue
        words = [w.lower() for line in section.lyrics for w in _WORD_RE.findall(line)]
        mine = [n for n in melody.notes if section.start_s - 1e-6 <= n.start_s < section.end_s - 1e-6]
        if not words or not mine:
            continue
        spans.append((section.name, section.start_s, section.end_s))
        w_index, remaining = 0, 0
        for note in mine:
            if remaining == 0:
                word = words[w_index % len(words)]
                w_index += 1
                if known is not None and not known(word):
                    substituted.add(word)
                    word = vocalise
                remaining = max(1, word_syllables(word))
                lyric = word
            else:
                lyric = "-"
            remaining -= 1
            notes.append({
                "lyric": lyric,
                "note": int(note.pitch),
                "beats": round(max(note.end_s - note.start_s, 0.05) / seconds_per_beat, 4),
                "start": round(note.start_s / seconds_per_beat, 4),
            })  # fmt: skip
    return notes, spans, substituted
