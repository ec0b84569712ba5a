"""SongPlan validation, syllable counting, the three LLM tasks (with the one repair) and the
`ollama` engine, against the fake Ollama daemon; with HARMONIA_TEST_OLLAMA_URL set, the
end-to-end task tests run against that real daemon and the scripted ones skip."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from fake_ollama import Answer, FakeOllama, real_ollama
from harmonia.engines.base import LocalContext
from harmonia.engines.ollama.backends import OllamaClient
from harmonia.engines.ollama.client import BudgetExceeded, GenerationOptions
from harmonia.engines.ollama.engine import OllamaEngine, OllamaPayload
from harmonia.engines.ollama.schemas import ENHANCE_SCHEMA, lyrics_schema, plan_schema
from harmonia.engines.ollama.structured import (
    REPAIR_EXCERPT_CHARS,
    InvalidAnswer,
    answer_token_cap,
    extract_json,
)
from harmonia.engines.ollama.tasks import PlanOverrides, enhance_prompt, lyrics, song_plan
from harmonia.errors import InvalidInput, JobCanceled
from harmonia.music.songplan import SongPlan, normalize_chord, normalize_key
from harmonia.music.syllables import count_syllables, word_syllables

REAL = real_ollama()

PLAN = {
    "title": "Salt and Silver",
    "tempo_bpm": 96,
    "key": "D minor",
    "time_signature": "4/4",
    "sections": [
        {
            "name": "verse",
            "bars": 8,
            "chords": ["Dm", "Bb", "F", "C"],
            "lyrics": ["The tide came in", "and took"],
        },
        {"name": "chorus", "bars": 8, "chords": ["F", "C", "Dm", "Bb"], "lyrics": ["Oh the sea"]},
    ],
    "instruments": [
        {"name": "acoustic guitar", "role": "harmony"},
        {"name": "female voice", "role": "vocals"},
    ],
    "mood": "melancholic",
    "genre": "folk",
    "duration_s": 40,
}


@pytest.fixture
def client(daemon: FakeOllama | None) -> Iterator[OllamaClient]:
    if daemon is not None:
        daemon.reset()
    url, model = REAL if REAL else (daemon.url, "llama3.2")  # type: ignore[union-attr]
    with OllamaClient(url, model, timeout_s=300 if REAL else 5) as c:
        yield c


def messages_of(fake: FakeOllama, index: int) -> list[dict[str, str]]:
    return fake.generations()[index].body["messages"]


# --- SongPlan -----------------------------------------------------------------------------------


def test_song_plan_accepts_the_canonical_form() -> None:
    plan = SongPlan.model_validate(PLAN)
    assert plan.key == "D minor" and plan.total_bars == 16 and plan.beats_per_bar == 4
    assert plan.implied_duration_s == pytest.approx(40.0)
    assert SongPlan.model_validate(plan.model_dump()) == plan


def test_song_plan_repairs_near_misses() -> None:
    plan = SongPlan.model_validate(
        {
            "title": "Loop",
            "tempo": "120 BPM",
            "key": "Am",
            "meter": [6, 8],
            "sections": [
                {"name": " Verse ", "bars": "8 bars", "chords": "A minor - F - C - G7"},
                {
                    "name": "Chorus",
                    "length_bars": 8.0,
                    "progression": "F|C|Gsus4|Am",
                    "lyrics": "line one\n\nline two",
                },
            ],
            "instruments": ["Rhodes piano", "drum kit", "electric bass"],
            "duration": "0:24",
            "unknown_extra": "ignored",
        }
    )
    assert (plan.tempo_bpm, plan.key, plan.time_signature, plan.duration_s) == (120, "A minor", "6/8", 24)
    assert plan.sections[0].name == "verse" and plan.sections[0].chords == ["Am", "F", "C", "G7"]
    assert plan.sections[1].chords == ["F", "C", "Gsus4", "Am"] and plan.sections[1].lyrics == [
        "line one",
        "line two",
    ]
    assert [(i.name, i.role) for i in plan.instruments] == [
        ("Rhodes piano", "harmony"),
        ("drum kit", "drums"),
        ("electric bass", "bass"),
    ]


@pytest.mark.parametrize(
    ("raw", "key"),
    [("a minor", "A minor"), ("F♯ dorian", "F# minor"), ("Bb", "Bb major"), ("E flat major", "Eb major")],
)
def test_keys_are_canonical(raw: str, key: str) -> None:
    assert normalize_key(raw) == key


@pytest.mark.parametrize(
    ("raw", "chord"),
    [("Cmaj", "C"), ("Cmaj7", "Cmaj7"), ("D-7", "Dm7"), ("B°7", "Bdim7"), ("CM7", "Cmaj7"), ("G/B", "G/B")],
)
def test_chords_are_canonical(raw: str, chord: str) -> None:
    assert normalize_chord(raw) == chord


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": "H major"}, "key 'H major'"),
        ({"key": "C bluesy"}, "unknown mode"),
        ({"tempo_bpm": 500}, "less than or equal to 300"),
        ({"time_signature": "4/5"}, "1, 2, 4, 8, 16 or 32"),
        ({"instruments": [{"name": "kazoo", "role": "hype"}]}, "role 'hype' is not one of"),
        ({"sections": [{"name": "verse", "bars": 8, "chords": ["I", "V", "vi", "IV"]}]}, "roman numeral"),
        ({"sections": [{"name": "verse", "bars": 80, "chords": ["C"]}]}, "make the bars add up to about 16"),
        ({"sections": []}, "at least 1 item"),
    ],
)
def test_song_plan_errors_say_what_to_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        SongPlan.model_validate({**PLAN, **change})
    assert message in str(info.value)


def test_missing_duration_is_derived_from_the_bars() -> None:
    plan = SongPlan.model_validate({**PLAN, "duration_s": None, "tempo_bpm": 120, "time_signature": "3/4"})
    assert plan.duration_s == pytest.approx(16 * 3 * 60 / 120)


def test_schema_for_format_is_plain_json_schema() -> None:
    schema = SongPlan.model_json_schema()
    assert schema["type"] == "object"
    assert {"tempo_bpm", "key", "sections", "instruments"} <= set(schema["required"])
    json.dumps(schema)


# --- syllables and JSON extraction --------------------------------------------------------------


def test_syllable_counts() -> None:
    assert count_syllables("The fire burns in every heart") == 1 + 2 + 1 + 1 + 3 + 1
    assert count_syllables("Beautiful morning, don't you cry!") == 3 + 2 + 1 + 1 + 1
    assert word_syllables("zorbly") == 2  # not in the dictionary: vowel groups
    assert word_syllables("glimbstone") == 2  # heuristic drops the silent final e
    assert count_syllables("") == 0


def test_extract_json_tolerates_fences_and_prose() -> None:
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Sure! Here it is: {"a": {"b": 2}} Enjoy.') == {"a": {"b": 2}}
    with pytest.raises(ValueError, match="not JSON"):
        extract_json("no braces at all")
    with pytest.raises(ValueError, match="not an object"):
        extract_json("[1, 2]")


# --- tasks against the fake daemon --------------------------------------------------------------


def test_enhance_prompt_returns_fields_and_sends_the_schema(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push(
        json.dumps(
            {
                "prompt": "Lo-fi hip hop at 80 BPM with dusty piano and soft drums, warm tape hiss",
                "genre": "lo-fi hip hop",
                "instruments": "piano, drums, bass",
                "tempo_bpm": "80 bpm",
                "mood": "relaxed",
                "production": "tape saturation",
            }
        )
    )
    result, completion, attempts = enhance_prompt(client, "chill beat", duration_s=30)
    assert result.tempo_bpm == 80 and result.instruments == ["piano", "drums", "bass"] and attempts == 1
    # what the prompt did not name is appended, so MusicGen hears every field
    assert result.prompt == (
        "Lo-fi hip hop at 80 BPM with dusty piano and soft drums, warm tape hiss. "
        "bass, relaxed, tape saturation"
    )
    sent = fake.generations()[-1].body
    assert sent["format"] == ENHANCE_SCHEMA and sent["options"]["num_predict"] == answer_token_cap(
        ENHANCE_SCHEMA
    )
    assert "chill beat" in sent["messages"][-1]["content"] and "30 seconds" in sent["messages"][-1]["content"]
    assert completion.done_reason == "stop"


def test_song_plan_invalid_answer_is_repaired_once(fake: FakeOllama, client: OllamaClient) -> None:
    bad = {**PLAN, "sections": [{"name": "verse", "bars": 16, "chords": ["i", "VI", "III", "VII"]}]}
    fake.push(json.dumps(bad), json.dumps(PLAN))
    plan, _, attempts = song_plan(client, "a sad folk song about the sea")
    assert attempts == 2 and plan.title == "Salt and Silver"
    first, second = messages_of(fake, 0), messages_of(fake, 1)
    assert second[: len(first)] == first
    assert second[len(first)]["role"] == "assistant"
    assert json.loads(second[len(first)]["content"]) == bad  # quoted compactly
    assert "roman numeral" in second[-1]["content"] and second[-1]["role"] == "user"


def test_song_plan_non_json_answer_is_repaired(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push("I think a folk song in D minor would be lovely!", json.dumps(PLAN))
    plan, _, attempts = song_plan(client, "a sad folk song")
    assert attempts == 2 and plan.key == "D minor"
    assert "not JSON" in messages_of(fake, 1)[-1]["content"]


def test_song_plan_rejected_after_second_invalid_answer(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push("not json", '{"title": "x"}', json.dumps(PLAN))
    with pytest.raises(InvalidAnswer, match=r"invalid after one repair: .*sections: Field required"):
        song_plan(client, "anything")
    assert len(fake.generations()) == 2 and fake.pending() == 1


def test_song_plan_broken_stream_is_asked_again(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push(Answer(json.dumps(PLAN), mode="cut"), json.dumps(PLAN))
    plan, _, attempts = song_plan(client, "a sad folk song")
    assert attempts == 2 and plan.genre == "folk"
    assert messages_of(fake, 0) == messages_of(fake, 1)
    fake.push(Answer(json.dumps(PLAN), mode="malformed"), Answer(json.dumps(PLAN), mode="malformed"))
    with pytest.raises(InvalidAnswer, match="not JSON"):
        song_plan(client, "a sad folk song")


def test_song_plan_overrides_win_and_are_told_to_the_model(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push(json.dumps(PLAN))
    overrides = PlanOverrides(tempo_bpm=100, genre="sea shanty", instruments=["accordion"])
    plan, _, _ = song_plan(client, "a song", overrides=overrides, options=GenerationOptions(seed=5))
    assert plan.tempo_bpm == 100 and plan.genre == "sea shanty"
    prompt = messages_of(fake, 0)[-1]["content"]
    assert '"tempo_bpm": 100.0' in prompt and "accordion" in prompt
    sent = fake.generations()[0].body
    # the user's values are constants of the schema, and the answer is capped at what it allows
    assert sent["format"]["properties"]["tempo_bpm"] == {"const": 100.0}
    assert sent["format"]["properties"]["genre"] == {"const": "sea shanty"}
    assert sent["options"] == {"seed": 5, "num_predict": answer_token_cap(sent["format"])}


def test_song_plan_bars_are_fitted_to_the_duration_locally(fake: FakeOllama, client: OllamaClient) -> None:
    # 16 bars at 96 BPM last 40 s; the user wants 10 s: the arithmetic is done here, not repaired
    fake.push(json.dumps(PLAN))
    plan, _, attempts = song_plan(client, "a short song", overrides=PlanOverrides(duration_s=10))
    assert attempts == 1 and plan.duration_s == 10 and [s.bars for s in plan.sections] == [2, 2]
    assert plan.implied_duration_s == pytest.approx(10)
    # the model's own duration is honoured the same way, and fewer bars than sections drops sections
    fake.push(json.dumps({**PLAN, "duration_s": "0:03"}))
    plan, _, attempts = song_plan(client, "a jingle")
    assert attempts == 1 and plan.duration_s == 3 and [s.name for s in plan.sections] == ["verse"]


def test_song_plan_adds_the_instruments_the_model_left_out(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push(json.dumps(PLAN))
    overrides = PlanOverrides(instruments=["accordion", "Acoustic Guitar", "bass guitar"])
    plan, _, _ = song_plan(client, "a shanty", overrides=overrides)
    assert [(i.name, i.role) for i in plan.instruments] == [
        ("acoustic guitar", "harmony"),
        ("female voice", "vocals"),
        ("accordion", "harmony"),
        ("bass guitar", "bass"),
    ]


def test_lyrics_counts_syllables_and_checks_the_structure(fake: FakeOllama, client: OllamaClient) -> None:
    wrong = {"title": "Sea", "sections": [{"name": "verse", "lines": ["a"]}]}
    right = {
        "title": "Sea",
        "sections": [
            {"name": "Verse", "lines": ["The tide came in at dawn", "and took the boats away"]},
            {"name": "chorus", "lines": "Oh the sea, the sea\nwill carry me home"},
        ],
    }
    fake.push(json.dumps(wrong), json.dumps(right))
    result, _, attempts = lyrics(
        client, "the sea", ["verse", "chorus"], lines_per_section=2, syllables_per_line=6
    )
    assert attempts == 2
    assert [s.name for s in result.sections] == ["verse", "chorus"]
    assert [line.syllables for line in result.sections[0].lines] == [6, 6]
    assert [line.text for line in result.sections[1].lines] == ["Oh the sea, the sea", "will carry me home"]
    assert [line.syllables for line in result.sections[1].lines] == [5, 5]
    assert "exactly 2 sections (verse, chorus, in this order)" in messages_of(fake, 1)[-1]["content"]


def test_lyrics_schema_names_the_sections_and_lines_are_cut_at_whole_words(
    fake: FakeOllama, client: OllamaClient
) -> None:
    cut = "The harbour lights are burning low tonight and I"  # 48 characters: the grammar stopped it
    fake.push(json.dumps({"title": "Home", "sections": [{"name": "x", "lines": [cut, "short", "extra"]}]}))
    result, _, attempts = lyrics(client, "home", ["Chorus"], lines_per_section=2, syllables_per_line=8)
    assert attempts == 1 and result.sections[0].name == "chorus"  # named here, by position
    assert [line.text for line in result.sections[0].lines] == [
        "The harbour lights are burning low tonight and",
        "short",
    ]
    schema = fake.generations()[-1].body["format"]
    assert schema == lyrics_schema(["chorus"], 2, 48)
    (part,) = schema["properties"]["sections"]["prefixItems"]
    assert part["properties"]["name"] == {"const": "chorus"}
    assert part["properties"]["lines"]["minItems"] == part["properties"]["lines"]["maxItems"] == 2


def _unbounded(schema: object, where: str = "") -> list[str]:
    """Places in a schema where an answer could grow without limit."""
    if not isinstance(schema, dict):
        return []
    if "const" in schema or "enum" in schema:
        return []
    kind = schema.get("type")
    found = []
    if kind == "string" and "maxLength" not in schema:
        found.append(where or "answer")
    if kind == "number" or (kind == "integer" and not {"minimum", "maximum"} <= set(schema)):
        found.append(where)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(where)
        found += _unbounded(schema.get("items"), where + "[]")
        for i, sub in enumerate(schema.get("prefixItems") or []):
            found += _unbounded(sub, f"{where}[{i}]")
    if kind == "object":
        assert schema.get("additionalProperties") is False and set(schema["required"]) == set(
            schema["properties"]
        )
        for key, sub in schema["properties"].items():
            found += _unbounded(sub, f"{where}.{key}")
    return found


@pytest.mark.parametrize(
    "schema",
    [
        ENHANCE_SCHEMA,
        plan_schema({}),
        plan_schema({"tempo_bpm": 90.0, "key": "A minor", "duration_s": 20.0}),
        lyrics_schema(["verse", "chorus", "verse", "chorus"], 4, 60),
    ],
    ids=["enhance", "plan", "plan-fixed", "lyrics"],
)
def test_every_task_schema_bounds_the_answer(schema: dict[str, Any]) -> None:
    assert _unbounded(schema) == []
    assert 100 < answer_token_cap(schema) < 1500


def test_token_cap_follows_the_schema() -> None:
    word = {"type": "string", "maxLength": 10}
    one = {"type": "object", "properties": {"w": word}}
    assert answer_token_cap(one) == 7 + 1 * 3 + 8  # (1 + 12 chars) / 2, one key, the margin
    many = {"type": "object", "properties": {"w": {"type": "array", "items": word, "maxItems": 10}}}
    assert answer_token_cap(many) == 61 + 11 * 3 + 8
    assert answer_token_cap({"type": "object", "properties": {"w": {"type": "string"}}}) > answer_token_cap(
        one
    )


def test_repair_quotes_a_bounded_excerpt(fake: FakeOllama, client: OllamaClient) -> None:
    # an answer that runs on (a server ignoring the schema) must not be sent back whole: that is how
    # a repair overflowed SmolLM2's 4096-token context on llama.cpp
    fake.push("la " * 5000, json.dumps(PLAN))
    plan, _, attempts = song_plan(client, "a sad folk song")
    assert attempts == 2 and plan.title == "Salt and Silver"
    first, repair = fake.generations()
    quoted = repair.body["messages"][-2]
    assert quoted["role"] == "assistant" and quoted["content"].endswith("…(cut)")
    assert len(quoted["content"]) <= REPAIR_EXCERPT_CHARS + 10
    assert len(json.dumps(repair.body["messages"])) < len(json.dumps(first.body["messages"])) + 2000
    assert repair.body["options"]["num_predict"] == first.body["options"]["num_predict"]


def test_task_budget_covers_the_repair(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push('{"title": "no sections"}', Answer(json.dumps(PLAN), mode="slow", delay_s=0.3))
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as info:
        song_plan(client, "a sad folk song", budget_s=1.0)
    assert 1.0 <= time.monotonic() - started < 1.6
    message = str(info.value)
    assert "song plan was not ready within its 1 s budget" in message
    assert "the first answer was invalid: tempo_bpm: Field required" in message
    assert len(fake.generations()) == 2


# --- the engine ---------------------------------------------------------------------------------


def test_engine_runs_each_task_with_a_json_artifact(fake: FakeOllama, client: OllamaClient) -> None:
    engine = OllamaEngine(client)
    progress: list[float] = []
    fake.push(json.dumps(PLAN))
    payload = OllamaPayload.model_validate(
        {"task": "song_plan", "instructions": "a sad folk song", "seed": 9}
    )
    result = engine.run(payload, LocalContext(on_progress=lambda f, m: progress.append(f)))
    assert result.output["task"] == "song_plan" and result.output["attempts"] == 1
    assert SongPlan.model_validate(result.output["result"]).title == "Salt and Silver"
    (artifact,) = result.artifacts
    assert artifact.name == "plan.json" and artifact.content_type == "application/json"
    assert json.loads(artifact.data) == result.output["result"]
    assert progress[0] == 0.0 and progress[-1] == 1.0
    assert fake.generations()[-1].body["options"]["seed"] == 9

    fake.push(json.dumps({"prompt": "ambient drones", "genre": "ambient"}))
    out = engine.run({"task": "enhance_prompt", "idea": "space"}, LocalContext())  # type: ignore[arg-type]
    assert out.output["result"]["prompt"] == "ambient drones" and out.artifacts[0].name == "prompt.json"

    fake.push(json.dumps({"title": "T", "sections": [{"name": "chorus", "lines": ["la la la"]}]}))
    out = engine.run({"task": "lyrics", "theme": "joy", "structure": ["chorus"]}, LocalContext())  # type: ignore[arg-type]
    assert out.output["result"]["sections"][0]["lines"][0] == {"text": "la la la", "syllables": 3}


def test_engine_rejects_huge_and_invalid_payloads(client: OllamaClient) -> None:
    engine = OllamaEngine(client, max_prompt_chars=100)
    with pytest.raises(InvalidInput) as info:
        engine.run(
            OllamaPayload.model_validate({"task": "song_plan", "instructions": "x" * 101}), LocalContext()
        )
    assert info.value.field == "instructions" and "limit is 100" in info.value.message
    with pytest.raises(InvalidInput) as info:
        engine.run({"task": "lyrics", "theme": "t", "lines_per_section": 99}, LocalContext())  # type: ignore[arg-type]
    assert info.value.field == "lines_per_section"
    with pytest.raises(InvalidInput):
        engine.run({"task": "sing"}, LocalContext())  # type: ignore[arg-type]


class CancelAfter(LocalContext):
    def __init__(self, checks: int) -> None:
        super().__init__()
        self.left = checks

    def check(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise JobCanceled("canceled")


def test_engine_cancel_stops_mid_answer(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push(json.dumps(PLAN))  # long enough for many chunks
    with pytest.raises(JobCanceled):
        OllamaEngine(client).run(
            OllamaPayload.model_validate({"task": "song_plan", "instructions": "x"}), CancelAfter(1)
        )
    assert len(fake.generations()) == 1  # no repair request after a cancel


def test_engine_info_and_readiness(client: OllamaClient) -> None:
    engine = OllamaEngine(client)
    assert engine.name == "ollama" and engine.input_model is OllamaPayload
    assert engine.info()["model"] == client.model
    assert engine.check_ready()["model"] == client.model


# --- against a real daemon only -----------------------------------------------------------------

real_only = pytest.mark.skipif(
    REAL is None, reason="set HARMONIA_TEST_OLLAMA_URL to run against a real Ollama"
)


@real_only
def test_real_song_plan(client: OllamaClient) -> None:
    plan, completion, attempts = song_plan(
        client,
        "a 30 second lo-fi hip hop beat with piano and soft drums",
        options=GenerationOptions(temperature=0, seed=1),
    )
    assert plan.sections and plan.instruments and 1 <= attempts <= 2
    assert completion.stats["completion_tokens"] > 0


@real_only
def test_real_lyrics_and_prompt(client: OllamaClient) -> None:
    result, _, _ = lyrics(
        client, "the sea at night", ["verse", "chorus"], options=GenerationOptions(temperature=0, seed=1)
    )
    assert [s.name for s in result.sections] == ["verse", "chorus"]
    assert all(line.syllables > 0 for s in result.sections for line in s.lines)
    prompt, _, _ = enhance_prompt(client, "rainy jazz cafe", options=GenerationOptions(temperature=0, seed=1))
    assert len(prompt.prompt) > 20
