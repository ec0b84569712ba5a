"""Genre presets for the rule-based planner: what a "lo-fi beat" or a "folk song" implies.

A preset names the band it usually has (each instrument with its SongPlan role), a typical tempo
and mood, a drum groove and whether a MusicGen backing track suits it. The planner only fills in
what the request leaves open: instruments named in the text or the fields always win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Genre:
    name: str
    words: tuple[str, ...]
    tempo_bpm: float
    band: tuple[tuple[str, str], ...]  # (catalog instrument, SongPlan role)
    mood: str | None = None
    groove: str = "basic"
    produced: bool = False  # a produced/electronic style: `engine: auto` prefers a MusicGen backing
    song_form: bool = True  # intro/verse/chorus/outro rather than one through-composed section


GENRES: tuple[Genre, ...] = (
    Genre("lo-fi hip hop", ("lo-fi hip hop", "lofi hip hop", "lo-fi", "lofi", "lo fi", "chillhop"), 80,
          (("electric piano", "harmony"), ("bass", "bass"), ("drums", "drums")), "calm", "boom_bap", True),
    Genre("hip hop", ("hip hop", "hip-hop", "hiphop", "rap", "boom bap", "trap"), 90,
          (("piano", "harmony"), ("bass", "bass"), ("drums", "drums")), None, "boom_bap", True),
    Genre("folk", ("folk", "campfire", "sea shanty", "shanty"), 92,
          (("steel guitar", "harmony"), ("voice", "melody")), None, "basic"),
    Genre("jazz", ("jazz", "swing", "bebop", "big band", "lounge"), 132,
          (("piano", "harmony"), ("double bass", "bass"), ("drums", "drums"), ("saxophone", "melody")),
          None, "swing"),
    Genre("blues", ("blues", "bluesy"), 84,
          (("electric guitar", "melody"), ("piano", "harmony"), ("bass", "bass"), ("drums", "drums")),
          None, "rock"),
    Genre("rock", ("rock", "punk", "grunge", "metal"), 128,
          (("electric guitar", "harmony"), ("bass", "bass"), ("drums", "drums")), "energetic", "rock", True),
    Genre("pop", ("pop", "radio", "catchy"), 112,
          (("piano", "harmony"), ("synth pad", "pad"), ("bass", "bass"), ("drums", "drums")),
          "happy", "rock", True),
    Genre("electronic", ("electronic", "edm", "house", "techno", "dance", "synthwave", "trance", "disco"),
          124, (("synth lead", "melody"), ("synth pad", "pad"), ("bass", "bass"), ("drums", "drums")),
          "energetic", "four_on_floor", True),
    Genre("ambient", ("ambient", "drone", "meditation", "soundscape"), 66,
          (("synth pad", "pad"), ("piano", "melody")), "calm", "basic", True, False),
    Genre("country", ("country", "bluegrass", "western"), 104,
          (("steel guitar", "harmony"), ("fiddle", "melody"), ("bass", "bass"), ("drums", "drums")),
          "happy", "rock"),
    Genre("classical", ("classical", "baroque", "romantic era", "sonata", "nocturne", "etude", "chamber"),
          96, (("piano", "melody"),), None, "basic", False, False),
    Genre("cinematic", ("cinematic", "film score", "soundtrack", "trailer", "orchestral"), 88,
          (("strings", "pad"), ("horn", "melody"), ("cello", "bass"), ("timpani", "percussion")),
          "triumphant", "basic", False, False),
)  # fmt: skip
BY_NAME = {g.name: g for g in GENRES}

# Words that make a request a song with a form (and vocals if a voice is named).
SONG_WORDS = re.compile(r"\b(song|songs|tune|track|beat|anthem|jingle|lullaby|sings?|singing|vocals?)\b")


#: every genre word with its whole-word pattern, compiled once
_WORD_PATTERNS = tuple(
    (genre, word, re.compile(rf"(?<![a-z]){re.escape(word)}(?![a-z])"))
    for genre in GENRES
    for word in genre.words
)


def detect_genre(text: str) -> tuple[Genre | None, str | None]:
    """The genre whose words appear earliest in the (normalised) text: (genre, matched word)."""
    best: tuple[int, int, Genre, str] | None = None
    for genre, word, pattern in _WORD_PATTERNS:
        if word in text:  # a substring test first: most genre words are absent
            m = pattern.search(text)
            if m and (best is None or (m.start(), -len(word)) < (best[0], best[1])):
                best = (m.start(), -len(word), genre, word)
    return (best[2], best[3]) if best else (None, None)


def find_genre(name: str) -> Genre | None:
    """A genre by name or any of its words ("lofi" -> lo-fi hip hop); None when unknown."""
    genre, _ = detect_genre(" ".join(name.lower().split()))
    return genre
