"""The instrument catalog: names people use -> General MIDI program, playable range, role hints.

`low`/`high` is the comfortable range (MIDI numbers) a composed part should stay in, narrower than
the instrument's full compass: melodies written there sound idiomatic on the GM SoundFont too.
GM program numbers are 0-based here, as in MIDI files and `pretty_midi`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pretty_midi


@dataclass(frozen=True)
class InstrumentSpec:
    name: str
    program: int
    low: int
    high: int
    polyphonic: bool = False
    is_drum: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def center(self) -> int:
        return (self.low + self.high) // 2


CATALOG: tuple[InstrumentSpec, ...] = (
    InstrumentSpec("piano", 0, 36, 96, polyphonic=True, aliases=("grand piano", "acoustic piano", "keys")),
    InstrumentSpec("electric piano", 4, 40, 88, polyphonic=True, aliases=("rhodes", "e-piano", "epiano")),
    InstrumentSpec("harpsichord", 6, 41, 89, polyphonic=True),
    InstrumentSpec("celesta", 8, 60, 96, polyphonic=True),
    InstrumentSpec("glockenspiel", 9, 72, 100, aliases=("glock",)),
    InstrumentSpec("music box", 10, 60, 96, polyphonic=True),
    InstrumentSpec("vibraphone", 11, 53, 89, polyphonic=True, aliases=("vibes",)),
    InstrumentSpec("marimba", 12, 48, 84, polyphonic=True),
    InstrumentSpec("xylophone", 13, 65, 96),
    InstrumentSpec("tubular bells", 14, 60, 77, aliases=("chimes", "bells")),
    InstrumentSpec("dulcimer", 15, 55, 84, polyphonic=True),
    InstrumentSpec("organ", 19, 36, 84, polyphonic=True, aliases=("church organ", "pipe organ")),
    InstrumentSpec("accordion", 21, 53, 89, polyphonic=True),
    InstrumentSpec("harmonica", 22, 60, 84),
    InstrumentSpec("guitar", 24, 40, 76, polyphonic=True, aliases=("acoustic guitar", "classical guitar")),
    InstrumentSpec("steel guitar", 25, 40, 76, polyphonic=True, aliases=("folk guitar",)),
    InstrumentSpec("electric guitar", 27, 40, 79, polyphonic=True, aliases=("clean guitar",)),
    InstrumentSpec("bass", 33, 28, 55, aliases=("bass guitar", "electric bass")),
    InstrumentSpec("violin", 40, 55, 88, aliases=("violins",)),
    InstrumentSpec("viola", 41, 48, 79, aliases=("violas",)),
    InstrumentSpec("cello", 42, 36, 69, aliases=("violoncello", "cellos")),
    InstrumentSpec("double bass", 43, 28, 55, aliases=("contrabass", "upright bass", "string bass")),
    InstrumentSpec("pizzicato strings", 45, 40, 84, aliases=("pizzicato",)),
    InstrumentSpec("harp", 46, 36, 91, polyphonic=True),
    InstrumentSpec("timpani", 47, 40, 55),
    InstrumentSpec("strings", 48, 43, 84, polyphonic=True, aliases=("string ensemble", "string section")),
    InstrumentSpec("choir", 52, 48, 79, polyphonic=True, aliases=("voices", "chorus")),
    InstrumentSpec("voice", 53, 52, 76, aliases=("vocal", "vocals", "singer", "lead vocal", "lead vocals")),
    # Sung ranges (A3-F5, C3-G4): a melody written for them is singable, and DiffSinger sings it.
    InstrumentSpec("female voice", 53, 57, 77, aliases=("female vocals", "female singer", "woman's voice")),
    InstrumentSpec("male voice", 53, 48, 67, aliases=("male vocals", "male singer", "man's voice")),
    InstrumentSpec("trumpet", 56, 55, 82, aliases=("trumpets",)),
    InstrumentSpec("trombone", 57, 40, 70, aliases=("trombones",)),
    InstrumentSpec("tuba", 58, 28, 55),
    InstrumentSpec("horn", 60, 41, 77, aliases=("french horn", "horns")),
    InstrumentSpec("brass", 61, 48, 79, polyphonic=True, aliases=("brass section",)),
    InstrumentSpec("soprano sax", 64, 56, 87, aliases=("soprano saxophone",)),
    InstrumentSpec("saxophone", 65, 49, 80, aliases=("sax", "alto sax", "alto saxophone")),
    InstrumentSpec("tenor sax", 66, 44, 75, aliases=("tenor saxophone",)),
    InstrumentSpec("oboe", 68, 58, 89),
    InstrumentSpec("english horn", 69, 52, 81, aliases=("cor anglais",)),
    InstrumentSpec("bassoon", 70, 34, 67),
    InstrumentSpec("clarinet", 71, 50, 86),
    InstrumentSpec("piccolo", 72, 74, 101),
    InstrumentSpec("flute", 73, 60, 93, aliases=("flutes",)),
    InstrumentSpec("recorder", 74, 72, 96),
    InstrumentSpec("pan flute", 75, 60, 93, aliases=("panpipes", "pan pipes")),
    InstrumentSpec("ocarina", 79, 72, 96),
    InstrumentSpec("synth lead", 81, 48, 84, aliases=("synth", "synthesizer", "lead synth")),
    InstrumentSpec("synth pad", 89, 48, 84, polyphonic=True, aliases=("pad", "warm pad")),
    InstrumentSpec("sitar", 104, 48, 77),
    InstrumentSpec("banjo", 105, 48, 81, polyphonic=True),
    InstrumentSpec("koto", 107, 55, 84, polyphonic=True),
    InstrumentSpec("kalimba", 108, 60, 88, polyphonic=True),
    InstrumentSpec("bagpipe", 109, 67, 81, aliases=("bagpipes",)),
    InstrumentSpec("fiddle", 110, 55, 88),
    InstrumentSpec("steel drums", 114, 60, 84, aliases=("steel drum", "steel pan")),
    InstrumentSpec("drums", 0, 35, 81, is_drum=True, aliases=("drum kit", "drum set", "percussion")),
)

_BY_NAME: dict[str, InstrumentSpec] = {}
for _spec in CATALOG:
    for _key in (_spec.name, *_spec.aliases):
        _BY_NAME[_key] = _spec
del _spec, _key


def known_names() -> list[str]:
    """Canonical catalog names, for error messages and /info."""
    return [spec.name for spec in CATALOG]


def _normalize(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def find_instrument(name: str) -> InstrumentSpec | None:
    """Look a name up in the catalog (case, spaces, dashes and underscores don't matter)."""
    key = _normalize(name)
    return _BY_NAME.get(key) or _BY_NAME.get(key.replace(" ", "-")) or _BY_NAME.get(key.rstrip("s"))


def resolve_program(name_or_program: str | int) -> tuple[int, bool, str]:
    """Map a catalog name, a full GM name ("Acoustic Grand Piano") or a 0..127 program number
    to `(program, is_drum, display_name)`. Raises ValueError for anything else."""
    if isinstance(name_or_program, int) or (
        isinstance(name_or_program, str) and name_or_program.strip().isdigit()
    ):
        program = int(name_or_program)
        if not 0 <= program <= 127:
            raise ValueError(f"program {program} is outside 0..127")
        return program, False, pretty_midi.program_to_instrument_name(program)
    spec = find_instrument(name_or_program)
    if spec is not None:
        return spec.program, spec.is_drum, spec.name
    gm_names = {_normalize(n): p for p, n in enumerate(pretty_midi.constants.INSTRUMENT_MAP)}
    program = gm_names.get(_normalize(name_or_program), -1)
    if program < 0:
        raise ValueError(
            f"unknown instrument {name_or_program!r}; known: {', '.join(known_names())}, "
            "any General MIDI name, or a program number 0..127"
        )
    return program, False, pretty_midi.program_to_instrument_name(program)
