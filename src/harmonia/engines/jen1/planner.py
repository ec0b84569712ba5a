"""Planning: a jen1 request -> a `SongPlan` (what to compose) plus the decisions behind it.

Two backends produce the same `PlannedSong`:

- `plan_with_rules` (offline, deterministic): the interpreter reads the text (instruments, tempo,
  key, mood, metre, duration), a genre preset fills what the text leaves open (a lo-fi beat gets a
  bass and a boom-bap groove; a folk song a guitar), the form is laid out in bars (intro, verse,
  chorus, outro for songs; one through-composed section otherwise) and each section gets a
  functional diatonic progression written as chord symbols. Lyrics are spread over the sung
  sections.
- `plan_llm.plan_with_llm`: the LLM helper answers with JSON constrained by `SongPlan`'s schema (validated,
  repaired once, else rejected). Its instrument names are mapped onto the SoundFont catalog, its
  chords onto diatonic harmony, and its bars stretched to the requested duration; every such
  adjustment is written down in `notes`.

A `PlannedSong` states its own best effort: `sources` says where each choice came from, `notes`
lists what was substituted, added or ignored. `plan.json` is that document.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harmonia.engines.jen1.composer import assign_roles, music_length_beats, plan_phrases, progression
from harmonia.engines.jen1.genres import SONG_WORDS, Genre, detect_genre, find_genre
from harmonia.engines.jen1.interpret import (
    MAX_DURATION_S,
    Interpretation,
    InterpretError,
    interpret,
)
from harmonia.engines.jen1.style import METERS, Meter
from harmonia.errors import InvalidInput
from harmonia.music.instruments import InstrumentSpec, find_instrument
from harmonia.music.score import Phrase
from harmonia.music.songplan import Instrument, Section, SongPlan, normalize_chord
from harmonia.music.theory import chord_symbol

if TYPE_CHECKING:
    from harmonia.engines.jen1.input import Jen1Input

SONG_DEFAULT_DURATION_S = 30.0
VOICES = ("voice", "female voice", "male voice", "choir")
_SUNG_SECTIONS_SKIP = ("intro", "outro", "interlude", "solo", "break", "instrumental")
_NO_DRUMS = re.compile(r"\b(?:no|without|minus|except)\s+(?:any\s+|the\s+)?(?:drums?|percussion|beat)")
_HALF_CADENCE_SECTIONS = ("intro", "verse", "pre-chorus", "prechorus", "bridge", "build")


@dataclass
class PlannedSong:
    """A validated plan and everything the arranger needs that the schema does not carry."""

    plan: SongPlan
    planner: str  # "rules" | "llm"
    seed: int
    mood: str  # the composer's mood vocabulary (interpret.MOOD_MODE keys)
    groove: str
    genre: Genre | None
    band: list[tuple[InstrumentSpec, str]]  # catalog instrument and SongPlan role, per plan.instruments
    soft_drums: bool = False
    produced: bool = False  # a style where `engine: auto` prefers a MusicGen backing
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def has_vocals(self) -> bool:
        return any(role == "vocals" for _, role in self.band)

    @property
    def lyrics(self) -> list[str]:
        return [line for s in self.plan.sections for line in s.lyrics]

    def as_json(self) -> dict[str, Any]:
        """plan.json: the SongPlan's own fields (it validates as a SongPlan) plus the decisions."""
        doc = self.plan.model_dump(mode="json")
        doc.update(
            planner=self.planner,
            seed=self.seed,
            composer_mood=self.mood,
            groove=self.groove,
            catalog=[
                {"name": spec.name, "role": role, "program": spec.program, "is_drum": spec.is_drum}
                for spec, role in self.band
            ],
            sources=dict(self.sources),
            notes=list(self.notes),
        )
        return doc


class PlanError(InterpretError):
    """The request contradicts itself beyond repair (e.g. explicit bars that cannot fit the duration)."""


# --- the rule-based planner ----------------------------------------------------------------------


@dataclass
class _Reading:
    """What the planner reads from a request before it writes anything: its genre, whether it is a
    song, the interpretation of its text and fields, and where each value came from."""

    text: str
    notes: list[str]
    genre: Genre | None
    lyrics_lines: list[list[str]]
    song: bool
    interp: Interpretation
    sources: dict[str, str]
    meter: Meter
    total_bars: int


def check_plannable(req: Jen1Input) -> None:
    """What submission checks (the registry runs it after schema validation): the request can be
    planned, so "render violin for 2 hours" is refused with a 422 at once, not after queueing.
    It reads the request and lays out its sections as the planner does, without writing the plan;
    InvalidInput keeps the field the planner blames."""
    try:
        reading = _read(req)
        _sections_layout(req, reading.song, reading.total_bars, reading.interp, reading.meter.beats, {})
    except InterpretError as exc:
        raise InvalidInput(str(exc), exc.field) from exc


def _read(req: Jen1Input) -> _Reading:
    text = " ".join(req.instructions.lower().split())
    notes: list[str] = []
    genre, genre_word = _genre(req, text, notes)
    lyrics_lines = _lyric_lines(req.lyrics)
    song = bool(
        (genre is not None and genre.song_form) or SONG_WORDS.search(text) or lyrics_lines or req.sections
    )
    interp = interpret(
        req.instructions,
        duration_s=req.duration_s,
        tempo_bpm=req.tempo_bpm,
        key=req.key,
        instruments=req.instruments,
        seed=req.seed,
        mood=req.mood,
        default_mood=genre.mood if genre else None,
        default_tempo=genre.tempo_bpm if genre else None,
        default_duration=SONG_DEFAULT_DURATION_S if song else None,
    )
    sources = dict(interp.sources)
    if genre is not None:
        sources["genre"] = "field 'genre'" if req.genre else f"word '{genre_word}'"
    if req.mood and sources.get("mood") != "field 'mood'":
        notes.append(f"mood {req.mood!r} is not one the composer knows; it reads the text's mood instead")
    meter = METERS[interp.time_signature]
    total_bars = max(1, round(music_length_beats(interp.duration_s, interp.tempo_bpm) / meter.beats))
    return _Reading(text, notes, genre, lyrics_lines, song, interp, sources, meter, total_bars)


def plan_with_rules(req: Jen1Input) -> PlannedSong:
    """The offline planner. Raises `InterpretError` (-> 422) for out-of-range or contradictory
    requests; everything else is a best effort stated in `notes`."""
    r = _read(req)
    text, notes, genre, lyrics_lines, song, interp, sources = (
        r.text, r.notes, r.genre, r.lyrics_lines, r.song, r.interp, r.sources
    )  # fmt: skip
    meter, total_bars = r.meter, r.total_bars
    band = _band(interp, genre, req, song, bool(lyrics_lines), sources, notes)
    if not any(v.startswith(("text", "word", "genre")) for v in sources.values()):
        notes.append("no musical terms recognised in the instructions: defaults (and any fields) were used")
    duration = interp.duration_s
    layout = _sections_layout(req, song, total_bars, interp, meter.beats, sources)
    if layout[1] is not None:
        duration = layout[1]
    sections = _write_sections(layout[0], interp, lyrics_lines, band, notes)
    plan = SongPlan(
        title=_title(req.instructions),
        tempo_bpm=interp.tempo_bpm,
        key=interp.key.name,
        time_signature=f"{interp.time_signature[0]}/{interp.time_signature[1]}",
        sections=sections,
        instruments=[Instrument(name=spec.name, role=role) for spec, role in band],  # type: ignore[arg-type]
        mood=req.mood or interp.mood,
        genre=(req.genre or (genre.name if genre else "")),
        duration_s=duration,
    )
    return PlannedSong(
        plan=plan,
        planner="rules",
        seed=interp.seed,
        mood=interp.mood,
        groove=genre.groove if genre else "basic",
        genre=genre,
        band=band,
        soft_drums=bool(re.search(r"\b(soft|gentle|light|quiet|brushed)\s+(drums|beat|percussion)", text)),
        produced=bool(genre and genre.produced),
        sources=sources,
        notes=notes,
    )


def _genre(req: Jen1Input, text: str, notes: list[str]) -> tuple[Genre | None, str | None]:
    if req.genre:
        genre = find_genre(req.genre)
        if genre is None:
            notes.append(f"genre {req.genre!r} has no preset; it is kept as a label only")
        return genre, req.genre
    return detect_genre(text)


def _lyric_lines(lyrics: str | list[str] | None) -> list[list[str]]:
    """Lyrics -> stanzas of lines (a blank line separates stanzas in a string)."""
    if not lyrics:
        return []
    if isinstance(lyrics, list):
        lines = [line.strip() for line in lyrics if line.strip()]
        return [lines] if lines else []
    stanzas = [
        [ln.strip() for ln in block.splitlines() if ln.strip()] for block in re.split(r"\n\s*\n", lyrics)
    ]
    return [s for s in stanzas if s]


def _band(
    interp: Interpretation,
    genre: Genre | None,
    req: Jen1Input,
    song: bool,
    has_lyrics: bool,
    sources: dict[str, str],
    notes: list[str],
) -> list[tuple[InstrumentSpec, str]]:
    """The catalog instruments and their SongPlan roles."""
    named = list(interp.instruments)
    defaulted = sources["instruments"].startswith("default")
    if defaulted and genre is not None:
        named = [s for s in (find_instrument(n) for n, _ in genre.band) if s is not None]
        sources["instruments"] = f"genre '{genre.name}'"
    elif genre is not None and not req.instruments:
        # Fill the roles the genre expects and the request left empty (a bass for a beat, ...).
        have_chords = any(s.polyphonic for s in named if s.name not in VOICES)
        have_bass = any(s.center < 50 for s in named if not s.is_drum)
        for name, role in genre.band:
            spec = find_instrument(name)
            if spec is None or spec in named:
                continue
            if (role in ("harmony", "pad") and not have_chords) or (role == "bass" and not have_bass):
                named.append(spec)
                notes.append(f"added {spec.name} ({role}): a {genre.name} arrangement expects one")
                have_chords = have_chords or role in ("harmony", "pad")
                have_bass = have_bass or role == "bass"
    kit = find_instrument("drums")
    if (
        genre is not None
        and not req.instruments
        and kit is not None
        and any(n == "drums" for n, _ in genre.band)
        and not any(s.is_drum for s in named)
        and not _NO_DRUMS.search(" ".join(req.instructions.lower().split()))
    ):
        named.append(kit)
        notes.append(f"added drums: a {genre.name} arrangement has a groove")
    if has_lyrics and not any(s.name in VOICES for s in named):
        voice = find_instrument("voice")
        if voice is not None:
            named.insert(0, voice)
            notes.append("lyrics were given without a voice: added a voice to sing them")
    drums = [s for s in named if s.is_drum][:1]
    voices = [s for s in named if s.name in VOICES and s.name != "choir"]
    lead_voice = voices[0] if voices and (song or has_lyrics) else None
    others = [s for s in named if not s.is_drum and s is not lead_voice]
    band: list[tuple[InstrumentSpec, str]] = []
    if lead_voice is not None:
        band.append((lead_voice, "vocals"))
    genre_roles = {n: r for n, r in (genre.band if genre else ())}
    for spec, role in assign_roles(others):
        if role == "melody" and lead_voice is not None:
            role = "harmony"
        elif role == "melody" and genre_roles.get(spec.name) == "pad" and len(others) > 1:
            role = "pad"
        elif role in ("accompaniment", "harmony"):
            role = "pad" if genre_roles.get(spec.name) == "pad" else "harmony"
        band.append((spec, role))
    lead = next((s for s, r in band if r in ("melody", "vocals")), None)
    if lead is not None and lead.polyphonic and not any(r in ("harmony", "pad") for _, r in band):
        band.append((lead, "harmony"))  # a keyboard or guitar alone plays tune and chords
    band.extend((d, "drums") for d in drums)
    return band


def _sections_layout(
    req: Jen1Input,
    song: bool,
    total_bars: int,
    interp: Interpretation,
    beats_per_bar: float,
    sources: dict[str, str],
) -> tuple[list[tuple[str, int, Any]], float | None]:
    """[(name, bars, requested section or None)] and a new duration when explicit bars set it."""
    bar_s = beats_per_bar * 60.0 / interp.tempo_bpm
    if req.sections:
        fixed = sum(s.bars or 0 for s in req.sections)
        open_ = [s for s in req.sections if s.bars is None]
        if not open_:
            implied = fixed * bar_s + min(1.0, 0.15 * fixed * bar_s)
            if req.duration_s is not None and abs(fixed - total_bars) > max(1, 0.05 * total_bars):
                raise PlanError(
                    f"the sections add up to {fixed} bars ({fixed * bar_s:.1f} s at "
                    f"{interp.tempo_bpm:g} bpm) but duration_s is {req.duration_s:g}; "
                    f"about {total_bars} bars fit",
                    field="sections",
                )
            sources["duration_s"] = "field 'sections' (bars)"
            if implied > MAX_DURATION_S:
                raise PlanError(
                    f"the sections last {implied:.0f} s; at most {MAX_DURATION_S:g} s", "sections"
                )
            return [(s.name, s.bars or 1, s) for s in req.sections], (None if req.duration_s else implied)
        left = total_bars - fixed
        if left < len(open_):
            raise PlanError(
                f"{total_bars} bars fit the duration, too few for these sections "
                f"({fixed} fixed + at least one for each of {len(open_)} more)",
                field="sections",
            )
        share = [left // len(open_) + (1 if i < left % len(open_) else 0) for i in range(len(open_))]
        it = iter(share)
        return [(s.name, s.bars if s.bars is not None else next(it), s) for s in req.sections], None
    if not song or total_bars < 8:
        if total_bars <= 32:
            return [("theme" if not song else "verse", total_bars, None)], None
        # a long through-composed piece: sections of 16 bars (a plan section holds <= 64 chords)
        sizes = [16] * (total_bars // 16)
        sizes[-1] += total_bars - 16 * len(sizes)
        return [(f"part {i + 1}", b, None) for i, b in enumerate(sizes)], None
    intro = outro = 2
    middle = total_bars - intro - outro
    chunk = 4 if middle < 16 else 8
    count = max(1, middle // chunk)
    sizes = [chunk] * count
    sizes[-1] += middle - chunk * count
    names = ["verse" if i % 2 == 0 else "chorus" for i in range(count)]
    if count >= 4:
        names[-2] = "bridge"
    layout = [("intro", intro, None), *((n, b, None) for n, b in zip(names, sizes, strict=True))]
    return [*layout, ("outro", outro, None)], None


def _write_sections(
    layout: list[tuple[str, int, Any]],
    interp: Interpretation,
    stanzas: list[list[str]],
    band: list[tuple[InstrumentSpec, str]],
    notes: list[str],
) -> list[Section]:
    rng = random.Random(interp.seed ^ 0xC40D)
    key = interp.key
    by_name: dict[tuple[str, int], list[str]] = {}
    sections: list[Section] = []
    for index, (name, bars, given) in enumerate(layout):
        last = index == len(layout) - 1
        if given is not None and given.chords:
            chords = [normalize_chord(c) for c in given.chords]
        elif bars > 64:  # the schema holds 64 chords a section: one chord per bar-pair (or more)
            step = -(-bars // 64)
            phrases = plan_phrases(-(-bars // step))
            chords = [chord_symbol(key, r) for r in progression(key, phrases, rng)]
        elif (name, bars) in by_name and not last:
            chords = by_name[(name, bars)]  # a repeated verse or chorus keeps its harmony
        else:
            phrases = plan_phrases(bars)
            if not last and name.lower() in _HALF_CADENCE_SECTIONS:
                p = phrases[-1]  # the section hands over on the dominant
                phrases[-1] = Phrase(p.first_bar, p.bars, "half")
            chords = [chord_symbol(key, r) for r in progression(key, phrases, rng)]
            by_name[(name, bars)] = chords
        lyrics = list(given.lyrics) if given is not None and given.lyrics else []
        sections.append(Section(name=name, bars=bars, chords=chords, lyrics=lyrics))
    if stanzas and not any(s.lyrics for s in sections):
        sung = [s for s in sections if s.name not in _SUNG_SECTIONS_SKIP] or sections
        if len(stanzas) == 1 and len(sung) > 1:
            lines = stanzas[0]
            per = max(1, -(-len(lines) // len(sung)))
            stanzas = [lines[i : i + per] for i in range(0, len(lines), per)]
        for i, section in enumerate(sung):
            section.lyrics = list(stanzas[i % len(stanzas)])
    if any(s.lyrics for s in sections) and not any(r == "vocals" for _, r in band):
        notes.append("lyrics are kept in the plan, but no voice sings them")
    return sections


def _title(instructions: str) -> str:
    words = " ".join(instructions.split())
    words = re.sub(
        r"^(please\s+)?(make|write|compose|create|generate|render|play|give me)\s+", "", words, flags=re.I
    )
    title = words[:60].rstrip(" ,.;") or "Untitled"
    return title[0].upper() + title[1:]
