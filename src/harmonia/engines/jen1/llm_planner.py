"""The LLM planner: the LLM helper's `SongPlan` (JSON constrained by the schema, validated and
repaired once by `prompt_tasks.song_plan`), fitted to what jen1 can arrange.

Its instrument names are mapped onto the SoundFont catalog (by name, by words in the name, else by
role), unsupported metres become 4/4, and its bars are rescaled to the requested duration (LLMs
miscount). Every adjustment is written down in the plan's `notes`. Whatever fails here raises, so
the engine can fall back to the rules plan.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from harmonia.engines.jen1.composer import music_length_beats
from harmonia.engines.jen1.genres import find_genre
from harmonia.engines.jen1.interpret import MAX_DURATION_S, MAX_TEMPO, MIN_TEMPO, instruments_in, mood_of
from harmonia.engines.jen1.planner import PlanError, PlannedSong
from harmonia.music.instruments import InstrumentSpec, find_instrument
from harmonia.music.songplan import SongPlan, scale_bars
from harmonia.music.theory import parse_key

if TYPE_CHECKING:
    from harmonia.engines.jen1.input import Jen1Input
    from harmonia.engines.ollama.client import LLMClient

# A role the LLM gave an instrument it did not name clearly -> the catalog instrument to play it.
_ROLE_FALLBACK = {
    "melody": "piano",
    "harmony": "piano",
    "pad": "synth pad",
    "bass": "bass",
    "drums": "drums",
    "percussion": "drums",
    "vocals": "voice",
}


def plan_with_llm(
    client: LLMClient, req: Jen1Input, fallback: PlannedSong, *, budget_s: float | None = None
) -> PlannedSong:
    """Ask the LLM for a SongPlan; user fields win. Raises what `song_plan` raises (InvalidAnswer
    after one repair, BudgetExceeded after `budget_s` (default: the helper's), DependencyDown, ...)
    so the caller can fall back to `fallback`, the rules plan (also the source of the seed and of
    what the text said for certain)."""
    from harmonia.engines.ollama.client import GenerationOptions
    from harmonia.engines.ollama.tasks import DEFAULT_BUDGET_S, PlanOverrides, song_plan

    duration = req.duration_s
    if duration is None and fallback.sources.get("duration_s", "").startswith(("text", "field")):
        duration = fallback.plan.duration_s
    overrides = PlanOverrides(
        tempo_bpm=req.tempo_bpm,
        key=req.key,
        duration_s=duration,
        genre=req.genre,
        mood=req.mood,
        instruments=req.instruments,
    )
    options = GenerationOptions(seed=fallback.seed % 2**31, temperature=0.7)
    plan, _, attempts = song_plan(
        client,
        req.instructions,
        overrides=overrides,
        options=options,
        budget_s=DEFAULT_BUDGET_S if budget_s is None else budget_s,
    )
    notes = [f"planned by the LLM ({client.model}, {attempts} attempt{'s' if attempts > 1 else ''})"]
    if not MIN_TEMPO <= plan.tempo_bpm <= MAX_TEMPO:
        raise PlanError(f"the LLM's tempo {plan.tempo_bpm:g} is outside {MIN_TEMPO:g}..{MAX_TEMPO:g} bpm")
    meter = plan.time_signature if plan.time_signature in ("4/4", "3/4", "6/8", "2/4") else None
    if meter is None:
        notes.append(f"time signature {plan.time_signature} is not supported; 4/4 is used")
        plan.time_signature = "4/4"
    parse_key(plan.key)  # SongPlan already canonicalised it; this is the composer's own check
    target = min(float(duration or plan.duration_s or plan.implied_duration_s), MAX_DURATION_S)
    plan = _fit_bars(plan, target, notes)
    band: list[tuple[InstrumentSpec, str]] = []
    for inst in plan.instruments:
        spec = find_instrument(inst.name) or next(iter(instruments_in(inst.name)), None)
        if inst.role == "fx":
            notes.append(f"{inst.name} (fx) is not arranged")
            continue
        if spec is None:
            spec = find_instrument(_ROLE_FALLBACK[inst.role])
            notes.append(
                f"{inst.name!r} is not in the SoundFont catalog; {spec.name if spec else '?'} plays its part"
            )
        if spec is not None:
            if inst.role in ("drums", "percussion") and not spec.is_drum and spec.center < 50:
                band.append((spec, "bass"))
            elif inst.role in ("drums", "percussion") and not spec.is_drum:
                band.append((spec, "harmony"))
            else:
                band.append((spec, "drums" if spec.is_drum else inst.role))
    if not any(r in ("melody", "vocals") for _, r in band):
        lead = next((s for s, r in band if not s.is_drum and r != "bass"), None) or find_instrument("piano")
        if lead is not None:
            band.insert(0, (lead, "melody"))
            notes.append(f"the plan had no lead; {lead.name} plays the melody")
    vocals = [i for i, (_, r) in enumerate(band) if r == "vocals"]
    for i in vocals[1:]:
        band[i] = (band[i][0], "harmony")
    mood = mood_of(plan.mood) if plan.mood else None
    genre = find_genre(plan.genre) if plan.genre else None
    return PlannedSong(
        plan=plan,
        planner="llm",
        seed=fallback.seed,
        mood=mood or fallback.mood,
        groove=genre.groove if genre else fallback.groove,
        genre=genre or fallback.genre,
        band=band,
        soft_drums=fallback.soft_drums or bool(re.search(r"\b(soft|gentle|quiet)\b", plan.mood.lower())),
        produced=bool((genre or fallback.genre) and (genre or fallback.genre).produced),  # type: ignore[union-attr]
        sources={k: "llm" for k in ("tempo_bpm", "key", "instruments", "sections", "mood", "genre")}
        | {k: v for k, v in fallback.sources.items() if v.startswith("field")}
        | {"seed": fallback.sources.get("seed", "")},
        notes=notes,
    )


def _fit_bars(plan: SongPlan, target_s: float, notes: list[str]) -> SongPlan:
    """Scale the sections' bars so the plan lasts about `target_s` (LLMs miscount)."""
    bar_s = plan.beats_per_bar * 60.0 / plan.tempo_bpm
    want = max(1, round(music_length_beats(target_s, plan.tempo_bpm) / plan.beats_per_bar))
    have = plan.total_bars
    if want != have:
        for section, bars in zip(
            plan.sections, scale_bars([s.bars for s in plan.sections], want), strict=True
        ):
            section.bars = bars
        notes.append(
            f"the LLM's sections had {have} bars ({have * bar_s:.1f} s); "
            f"rescaled to {want} bars for {target_s:g} s"
        )
    plan.duration_s = target_s
    return plan
