"""A piece sounds in the key it was asked for, measured on the audio: Krumhansl-Schmuckler key
estimation on the chroma of the rendered mix (rules planner, SoundFont parts, the mixer: the real
render path). Short pieces are the hard case: two bars at a slow tempo must still open on the
tonic and cadence home, and the ear (here, the estimator) must hear the tonic, not the dominant."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from harmonia.audio import encode
from harmonia.audio.features import KK_MAJOR, KK_MINOR, chroma, estimate_key, key_correlations
from harmonia.engines.base import LocalContext
from harmonia.engines.jen1.arrange import arrange
from harmonia.engines.jen1.engine import Jen1Engine
from harmonia.engines.jen1.input import Jen1Input
from harmonia.engines.jen1.planner import plan_with_rules
from harmonia.engines.render.engine import RenderEngine
from harmonia.music.songplan import SongPlan
from harmonia.music.theory import parse_key

NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# The issue's own requests ("... slow piano piece in D minor, 8 seconds" read as C# minor, "... in
# G major" as B minor), more keys and modes, and other line-ups at 6-10 s (one to three bars).
CASES = [
    *(
        f"render a slow piano piece in {key}, {seconds} seconds"
        for key in ("D minor", "G major", "A minor", "Eb major", "F# minor", "C major", "B minor")
        for seconds in (8, 10)
    ),
    *(
        f"{what} in {key}, {seconds} seconds"
        for what in ("a lo-fi hip hop beat", "a violin tune", "string quartet")
        for key in ("E minor", "Bb major", "C# minor")
        for seconds in (6, 8, 10)
    ),
]


@pytest.fixture(scope="module")
def jen1() -> Jen1Engine:
    return Jen1Engine(RenderEngine())


@pytest.mark.parametrize("instructions", CASES)
def test_short_pieces_sound_in_the_key_asked_for(jen1: Jen1Engine, instructions: str) -> None:
    result = jen1.run({"instructions": instructions}, LocalContext())
    files = {a.name: a for a in result.artifacts}
    asked = re.search(r" in (\S+ (?:major|minor))", instructions)
    assert asked is not None
    want = parse_key(asked[1])
    score = json.loads(files["score.json"].data)
    assert parse_key(score["key"]) == want
    # the harmony opens on the tonic and cadences home
    chords = score["chords"]
    assert chords[0] in ("I", "i") and chords[-2] == "V" and chords[-1] in ("I", "i"), chords
    mix = encode.decode(files["mix.wav"].data)
    profile = chroma(mix.audio, mix.sample_rate)
    tonic, mode, r = estimate_key(profile)
    shares = " ".join(f"{NAMES[i]} {profile[i]:.2f}" for i in np.argsort(profile)[::-1][:4])
    assert (NAMES[tonic], mode) == (NAMES[want.tonic_pc], want.mode), f"heard {shares} (r={r:.2f})"


def test_key_estimate_on_known_profiles() -> None:
    for tonic in range(12):
        assert estimate_key(np.roll(KK_MAJOR, tonic))[:2] == (tonic, "major")
        assert estimate_key(np.roll(KK_MINOR, tonic))[:2] == (tonic, "minor")
    # a tonic triad with its scale around it: C major, not G major or A minor
    c_major = np.array([5, 0, 1, 0, 3, 1, 0, 4, 0, 1, 0, 0.5])
    assert estimate_key(c_major)[:2] == (0, "major")
    scores = key_correlations(c_major)
    assert scores[(0, "major")] > scores[(7, "major")] and scores[(0, "major")] > scores[(9, "minor")]
    assert estimate_key(np.zeros(12))[2] == 0.0  # silence has no key


def test_two_bar_plans_hold_the_whole_cadence() -> None:
    song = plan_with_rules(Jen1Input(instructions="render a slow piano piece in D minor, 8 seconds"))
    (section,) = song.plan.sections
    assert section.bars == 2 and section.chords == ["Dm", "Gm", "A", "Dm"]
    score = arrange(song).score
    # i iv | V i: the second bar holds two chords, and the tonic keeps the longer share
    assert [(b.index, b.chord.roman) for b in score.bars] == [(0, "i"), (0, "iv"), (1, "V"), (1, "i")]
    assert score.bar_count == 2 and score.bars[-1].length > score.bars[-2].length


def test_a_plan_with_more_chords_than_bars_plays_them_all() -> None:
    """The schema says chords spread evenly over a section's bars; before, chords past one a bar
    were silently dropped (an LLM plan of 'Am F C G' in two bars played Am and C)."""
    song = plan_with_rules(Jen1Input(instructions="render violin in A minor, 8 seconds"))
    plan = SongPlan.model_validate(
        {
            **song.plan.model_dump(),
            "duration_s": None,
            "sections": [{"name": "a", "bars": 2, "chords": ["Am", "F", "C", "G"]}],
        }
    )
    song.plan = plan
    arrangement = arrange(song)
    assert [b.chord.roman for b in arrangement.score.bars] == ["i", "VI", "III", "VII"]
    assert [b.index for b in arrangement.score.bars] == [0, 0, 1, 1]
    # more chords than beats: at most one a beat is played, and the plan's notes say so
    plan = SongPlan.model_validate(
        {
            **song.plan.model_dump(),
            "duration_s": None,
            "sections": [{"name": "a", "bars": 2, "chords": ["Am", "F", "C", "G", "E"] * 2}],
        }
    )
    song.plan = plan
    arrangement = arrange(song)
    first_bar = [b for b in arrangement.score.bars if b.index == 0]
    assert [b.length for b in first_bar] == [1.0, 1.0, 1.0, 1.0]
    assert any("at most one chord a beat" in n for n in arrangement.notes)
