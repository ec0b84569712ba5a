"""The composer's style tables: the metres (bar length, strong beats, one-bar rhythm patterns for
melodies and cadences) and how each mood shapes density, velocity, legato and register."""

from __future__ import annotations

from dataclasses import dataclass

MIN_NOTE_S = 0.13  # shorter notes smear on SoundFont instruments with slow attacks


@dataclass(frozen=True)
class Meter:
    beats: float  # bar length in quarter notes
    strong: tuple[float, ...]
    rhythms: tuple[tuple[float, ...], ...]
    cadence_rhythms: tuple[tuple[float, ...], ...]


METERS: dict[tuple[int, int], Meter] = {
    (4, 4): Meter(
        4.0,
        (0.0, 2.0),
        (
            (1, 1, 1, 1), (2, 1, 1), (1, 1, 2), (1.5, 0.5, 1, 1), (1, 0.5, 0.5, 1, 1),
            (0.5, 0.5, 1, 1, 1), (1, 1, 0.5, 0.5, 1), (3, 1), (1.5, 0.5, 2), (0.5, 0.5, 0.5, 0.5, 2),
            (1, 0.5, 0.5, 2), (0.75, 0.25, 1, 2), (1, 1, 1.5, 0.5), (0.5, 0.5, 0.5, 0.5, 1, 1),
        ),
        ((2, 2), (1, 1, 2), (1.5, 0.5, 2), (4,)),
    ),
    (3, 4): Meter(
        3.0,
        (0.0,),
        (
            (1, 1, 1), (2, 1), (1.5, 0.5, 1), (1, 0.5, 0.5, 1), (0.5, 0.5, 1, 1), (1, 2),
            (0.5, 0.5, 0.5, 0.5, 1), (1, 1, 0.5, 0.5),
        ),
        ((1, 2), (2, 1), (3,)),
    ),
    (6, 8): Meter(
        3.0,
        (0.0, 1.5),
        (
            (1.5, 1.5), (1, 0.5, 1, 0.5), (1, 0.5, 1.5), (0.5, 0.5, 0.5, 1, 0.5), (1.5, 1, 0.5),
            (0.5, 0.5, 0.5, 1.5), (1, 0.5, 0.5, 0.5, 0.5),
        ),
        ((1, 0.5, 1.5), (3,)),
    ),
    (2, 4): Meter(
        2.0,
        (0.0,),
        ((1, 1), (0.5, 0.5, 1), (1.5, 0.5), (1, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5), (0.75, 0.25, 1)),
        ((1, 1), (2,)),
    ),
}  # fmt: skip

# How much each mood prefers busy bars (positive) or long notes (negative); base velocity.
MOOD_DENSITY = {
    "sad": -0.35, "calm": -0.4, "romantic": -0.2, "dark": -0.15, "mysterious": -0.1,
    "neutral": 0.0, "happy": 0.15, "playful": 0.3, "energetic": 0.3, "triumphant": 0.05,
}  # fmt: skip
MOOD_VELOCITY = {
    "sad": 66, "calm": 60, "romantic": 70, "dark": 76, "mysterious": 68, "neutral": 80,
    "happy": 88, "playful": 84, "energetic": 100, "triumphant": 96,
}  # fmt: skip
# Fraction of its slot a melody note sounds: legato for slow moods, detached for playful ones.
MOOD_LEGATO = {"sad": 0.97, "calm": 0.97, "romantic": 0.96, "playful": 0.62, "energetic": 0.82}
MOOD_REGISTER = {"sad": -2, "dark": -3, "happy": 2, "playful": 3, "triumphant": 2}
