"""What the LLM helper's tasks ask the model for: a tight JSON schema per request.

Every property is required (a grammar built from the schema then fixes the keys and their order, so
the model only fills in values), every string, list and number is bounded (which bounds the answer's
tokens: `structured.answer_token_cap`), and known sets are enums: the keys, the metres jen1
arranges, the roles, the section names; chords follow a chord-symbol pattern. Values the user fixed
are constants. A server that decodes under the schema (Ollama, llama.cpp, vLLM) can then only write
a usable answer, even from a 135M-parameter model. The answers are validated with the lenient models
(`SongPlan`, `prompt_tasks.EnhancedPrompt`...), which also take the near misses of servers that
ignore the schema.
"""

from __future__ import annotations

from typing import Any

from harmonia.music.songplan import ROLES


def _text(most: int, least: int = 1) -> dict[str, Any]:
    return {"type": "string", "minLength": least, "maxLength": most}


def _items(item: dict[str, Any], most: int, least: int = 1) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": least, "maxItems": most}


def _record(**properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


ENHANCE_SCHEMA = {
    "title": "EnhancedPrompt",
    **_record(
        prompt=_text(320, 20),
        genre=_text(40),
        instruments=_items(_text(30), 5),
        tempo_bpm={"type": "integer", "minimum": 40, "maximum": 220},
        mood=_text(40),
        production=_text(80),
    ),
}

_KEY_SCALES = (
    "C major minor|C# minor|Db major|D major minor|Eb major minor|E major minor|F major minor|"
    "F# major minor|G major minor|G# minor|Ab major|A major minor|Bb major minor|B major minor"
)
# The 24 keys, each spelled the way SongPlan writes it (enharmonics as musicians usually spell them).
KEYS = tuple(
    f"{root} {scale}"
    for entry in _KEY_SCALES.split("|")
    for root, *scales in [entry.split()]
    for scale in scales
)
METERS = ("4/4", "3/4", "6/8", "2/4")  # the metres jen1 arranges
SECTION_NAMES = ("intro", "verse", "pre-chorus", "chorus", "bridge", "solo", "breakdown", "outro")
_CHORD = {
    "type": "string",
    "maxLength": 7,
    "pattern": r"^(A|Bb|B|C|C#|Db|D|Eb|E|F|F#|G|Ab)(m|7|m7|maj7|sus2|sus4|dim)?$",
}


def plan_schema(fixed: dict[str, Any]) -> dict[str, Any]:
    """The SongPlan the model is asked for; `fixed` (the user's values) become constants."""

    def pinned(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"const": fixed[name]} if name in fixed else schema

    section = _record(
        name={"enum": list(SECTION_NAMES)},
        bars={"type": "integer", "minimum": 1, "maximum": 16},
        chords=_items(_CHORD, 4),
        lyrics=_items(_text(48), 4, 0),
    )
    instrument = _record(name=_text(30), role={"enum": list(ROLES)})
    return {
        "title": "SongPlan",
        **_record(
            title=pinned("title", _text(40)),
            genre=pinned("genre", _text(30)),
            mood=pinned("mood", _text(30)),
            tempo_bpm=pinned("tempo_bpm", {"type": "integer", "minimum": 40, "maximum": 220}),
            key=pinned("key", {"enum": list(KEYS)}),
            time_signature=pinned("time_signature", {"enum": list(METERS)}),
            duration_s=pinned("duration_s", {"type": "integer", "minimum": 4, "maximum": 600}),
            instruments=_items(instrument, 5),
            sections=_items(section, 6),
        ),
    }


def lyrics_schema(names: list[str], lines: int, line_chars: int) -> dict[str, Any]:
    """One section per requested name, in order, each with exactly `lines` lines."""
    parts = [_record(name={"const": n}, lines=_items(_text(line_chars, 3), lines, lines)) for n in names]
    return {
        "title": "LyricsAnswer",
        **_record(
            title=_text(60),
            sections={
                "type": "array",
                "prefixItems": parts,  # with maxItems, no room for more (llama.cpp rejects items: false)
                "minItems": len(parts),
                "maxItems": len(parts),
            },
        ),
    }
