"""Loading and checking an openvpi DiffSinger voicebank folder (the layout OpenUtau uses).

A voicebank is a folder with `dsconfig.yaml` (which names the acoustic ONNX model and the phoneme
inventory), a grapheme-to-phoneme dictionary (`dsdict.yaml` or openvpi's `dictionary.txt`), a
vocoder (`dsvocoder/vocoder.yaml` + its ONNX model) and, optionally, variance models in
sub-folders with their own `dsconfig.yaml`: `dsdur/` (phoneme durations) and `dsvariance/`
(energy, breathiness, voicing, tension). See docs/diffsinger.md for the format and its sources.

Everything that can be wrong with a voicebank is found here, at load time, and reported as
`EngineUnavailable` with one line naming the file: a service refuses to start rather than failing
its first request. `check_voicebank` runs the same checks without opening the ONNX models, cheaply
enough for `GET /v1/models` to report a broken voicebank as unavailable, with the reason. All
checkpoint I/O of the engine lives in this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harmonia.engines.diffsinger.dictionary import PhonemeDictionary, find_dictionary, load_dictionary
from harmonia.errors import EngineUnavailable

VARIANCE_NAMES = ("energy", "breathiness", "voicing", "tension")


class _Range(BaseModel):
    range: tuple[float, float] = (-5.0, 5.0)


class _Augmentation(BaseModel):
    random_pitch_shifting: _Range = Field(default_factory=_Range)


class MelSpec(BaseModel):
    """The mel and frame specification, declared by the acoustic model and by the vocoder (must agree)."""

    model_config = ConfigDict(extra="ignore")

    sample_rate: int = 44100
    hop_size: int = 512
    win_size: int = 2048
    fft_size: int = 2048
    num_mel_bins: int = 128
    mel_fmin: float = 40
    mel_fmax: float = 16000
    mel_base: str = "10"
    mel_scale: str = "slaney"


class DsConfig(MelSpec):
    """The keys of `dsconfig.yaml` that inference reads (acoustic and variance exports share it)."""

    phonemes: str = "phonemes.txt"
    languages: str | None = None
    use_lang_id: bool = False
    acoustic: str | None = None
    vocoder: str | None = None
    speakers: list[str] | None = None
    hidden_size: int = 256
    use_key_shift_embed: bool = False
    use_speed_embed: bool = False
    use_energy_embed: bool = False
    use_breathiness_embed: bool = False
    use_voicing_embed: bool = False
    use_tension_embed: bool = False
    augmentation_args: _Augmentation = Field(default_factory=_Augmentation)
    use_continuous_acceleration: bool = False
    use_shallow_diffusion: bool | None = None
    use_variable_depth: bool | None = None
    max_depth: float = -1
    # variance exports
    linguistic: str | None = None
    dur: str | None = None
    pitch: str | None = None
    variance: str | None = None
    predict_dur: bool = True

    @property
    def frame_s(self) -> float:
        return self.hop_size / self.sample_rate

    @property
    def max_depth_fraction(self) -> float:
        """Shallow-diffusion depth limit as a fraction of the full schedule (1000 steps unless continuous)."""
        if self.max_depth < 0:
            return 1.0
        return self.max_depth if self.use_continuous_acceleration else self.max_depth / 1000.0


class VocoderConfig(MelSpec):
    """`vocoder.yaml`: the vocoder's model file and the mel it expects."""

    name: str = "vocoder"
    model: str = "model.onnx"


@dataclass
class OnnxModel:
    """An ONNX session with its declared inputs (name -> (onnx type, shape)) and outputs."""

    path: Path
    session: Any
    inputs: dict[str, tuple[str, list[Any]]]
    outputs: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise EngineUnavailable(
                f"{self.path}: model needs inputs this engine cannot supply: {sorted(missing)}"
            )
        values = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})
        return dict(zip(self.outputs, values, strict=True))


@dataclass
class AuxModels:
    """A variance export (`dsdur/` or `dsvariance/`): its config, tokens, models and speakers."""

    root: Path
    config: DsConfig
    phonemes: dict[str, int]
    languages: dict[str, int]
    linguistic: OnnxModel
    dur: OnnxModel | None = None
    variance: OnnxModel | None = None
    speakers: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Voicebank:
    root: Path
    name: str
    config: DsConfig
    phonemes: dict[str, int]
    languages: dict[str, int]
    dictionary: PhonemeDictionary
    acoustic: OnnxModel
    vocoder: OnnxModel
    vocoder_config: VocoderConfig
    speakers: dict[str, np.ndarray]
    duration: AuxModels | None
    variance: AuxModels | None
    providers: list[str]

    @property
    def needed_variances(self) -> list[str]:
        return [v for v in VARIANCE_NAMES if v in self.acoustic.inputs]


def _fail(path: Path, reason: str) -> EngineUnavailable:
    return EngineUnavailable(f"voicebank file {path}: {reason}")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise _fail(path, "not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping at the top level")
    return data


def _parse(model: type[BaseModel], path: Path) -> Any:
    try:
        return model.model_validate(_read_yaml(path))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise _fail(path, f"bad value for '{where}': {err['msg']}") from exc


def load_phonemes(path: Path) -> dict[str, int]:
    """Phoneme inventory: `phonemes.json` ({name: id}) or `phonemes.txt` (one name per line, id = line)."""
    if not path.is_file():
        raise _fail(path, "phoneme inventory not found")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
                raise _fail(path, "expected a JSON object of phoneme -> integer id")
            table = {str(k): int(v) for k, v in data.items()}
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            table = {line.strip(): i for i, line in enumerate(lines) if line.strip()}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot be read ({exc})") from exc
    if "SP" not in table:
        raise _fail(path, "the phoneme inventory has no 'SP' (rest) phoneme")
    return table


def _load_languages(root: Path, config: DsConfig, cfg_path: Path) -> dict[str, int]:
    if not config.use_lang_id:
        return {}
    if not config.languages:
        raise _fail(cfg_path, "use_lang_id is true but 'languages' is not set")
    path = root / config.languages
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(path, f"cannot be read ({exc})") from exc
    return {str(k): int(v) for k, v in data.items()}


def _load_speakers(root: Path, config: DsConfig, cfg_path: Path) -> dict[str, np.ndarray]:
    """Speaker embeddings: `<name>.emb` files of `hidden_size` float32 values, keyed by short name."""
    speakers: dict[str, np.ndarray] = {}
    for full in config.speakers or []:
        path = root / f"{full}.emb"
        if not path.is_file():
            raise _fail(path, f"speaker embedding listed in {cfg_path.name} not found")
        emb = np.fromfile(path, dtype=np.float32)
        if emb.size != config.hidden_size:
            raise _fail(path, f"expected {config.hidden_size} float32 values, found {emb.size}")
        speakers[full.rsplit(".", 1)[-1]] = emb
    return speakers


def open_session(path: Path, providers: list[str]) -> OnnxModel:
    import onnxruntime as ort

    if not path.is_file():
        raise _fail(path, "ONNX model not found")
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the exported graphs warn about unused initializers; not actionable
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        raise _fail(path, f"not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from exc
    inputs = {i.name: (i.type, list(i.shape)) for i in session.get_inputs()}
    return OnnxModel(path, session, inputs, [o.name for o in session.get_outputs()])


def _model_file(path: Path, providers: list[str]) -> OnnxModel:
    """The cheap stand-in for `open_session` that `check_voicebank` uses: the file is there and not
    empty; its graph is not read (that means parsing every weight of the model)."""
    if not path.is_file():
        raise _fail(path, "ONNX model not found")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file, not an ONNX model")
    return OnnxModel(path, None, {}, [])


def _require_io(model: OnnxModel, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    if model.session is None:  # checked, not opened: its inputs and outputs are not known
        return
    for name in inputs:
        if name not in model.inputs:
            raise _fail(model.path, f"has no input '{name}' (inputs: {sorted(model.inputs)})")
    for name in outputs:
        if name not in model.outputs:
            raise _fail(model.path, f"has no output '{name}' (outputs: {model.outputs})")


Opener = Callable[[Path, list[str]], OnnxModel]


def _load_aux(folder: Path, providers: list[str], kind: str, open_model: Opener) -> AuxModels:
    cfg_path = folder / "dsconfig.yaml"
    config: DsConfig = _parse(DsConfig, cfg_path)
    if not config.linguistic:
        raise _fail(cfg_path, "missing key 'linguistic'")
    model_key = "dur" if kind == "dur" else "variance"
    model_file = getattr(config, model_key)
    if not model_file:
        raise _fail(cfg_path, f"missing key '{model_key}'")
    aux = AuxModels(
        root=folder,
        config=config,
        phonemes=load_phonemes(folder / config.phonemes),
        languages=_load_languages(folder, config, cfg_path),
        linguistic=open_model(folder / config.linguistic, providers),
        speakers=_load_speakers(folder, config, cfg_path),
    )
    _require_io(aux.linguistic, ("tokens",), ("encoder_out", "x_masks"))
    model = open_model(folder / model_file, providers)
    if kind == "dur":
        _require_io(model, ("encoder_out", "x_masks", "ph_midi"), ("ph_dur_pred",))
        aux.dur = model
    else:
        _require_io(model, ("encoder_out", "ph_dur", "pitch", "retake"), ())
        aux.variance = model
    return aux


def _load_vocoder(
    root: Path, config: DsConfig, providers: list[str], open_model: Opener
) -> tuple[VocoderConfig, OnnxModel]:
    folder = root / "dsvocoder"
    if not (folder / "vocoder.yaml").is_file() and config.vocoder:
        # dsconfig's `vocoder` names a vocoder package; accept it beside or inside the voicebank.
        for candidate in (root / config.vocoder, root.parent / config.vocoder):
            if (candidate / "vocoder.yaml").is_file():
                folder = candidate
                break
    voc_path = folder / "vocoder.yaml"
    voc: VocoderConfig = _parse(VocoderConfig, voc_path)
    model = open_model(folder / voc.model, providers)
    _require_io(model, ("mel", "f0"), ("waveform",))
    # mel_base may differ (the engine converts log10 <-> ln); the rest must match
    for key in ("sample_rate", "hop_size", "num_mel_bins", "win_size", "fft_size", "mel_scale"):
        ours, theirs = getattr(voc, key), getattr(config, key)
        if ours != theirs:
            raise _fail(voc_path, f"{key} {ours} does not match the acoustic model's {theirs}")
    for key in ("mel_fmin", "mel_fmax"):
        if not math.isclose(getattr(voc, key), getattr(config, key), abs_tol=1e-3):
            raise _fail(voc_path, f"{key} does not match the acoustic model's")
    for base, path in ((voc.mel_base, voc_path), (config.mel_base, root / "dsconfig.yaml")):
        if base not in ("10", "e"):
            raise _fail(path, f"mel_base must be '10' or 'e', not {base!r}")
    return voc, model


def _character_name(root: Path) -> str:
    path = root / "character.yaml"
    if path.is_file():
        name = _read_yaml(path).get("name")
        if isinstance(name, str) and name.strip():
            return name.strip()
    return root.name


def load_voicebank(root: Path, providers: list[str]) -> Voicebank:
    """Load and check every file of the voicebank at `root`; raise `EngineUnavailable` naming the bad one."""
    voicebank = _read(root, providers, check=False)
    return cast(Voicebank, voicebank)


def check_voicebank(root: Path) -> None:
    """The cheap part of `load_voicebank`, for availability reports: every config parses, agrees
    with the others and names files that exist (ONNX models present and not empty, a dictionary
    present). No ONNX session is opened. Raises `EngineUnavailable` naming the bad file."""
    _read(root, [], check=True)


def _read(root: Path, providers: list[str], *, check: bool) -> Voicebank | None:
    open_model: Opener = _model_file if check else open_session
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _fail(root, "voicebank folder not found")
    cfg_path = root / "dsconfig.yaml"
    config: DsConfig = _parse(DsConfig, cfg_path)
    for key in ("acoustic", "phonemes"):
        if not getattr(config, key):
            raise _fail(cfg_path, f"missing key '{key}'")
    phonemes = load_phonemes(root / config.phonemes)
    acoustic = open_model(root / str(config.acoustic), providers)
    _require_io(acoustic, ("tokens", "durations", "f0"), ("mel",))
    vocoder_config, vocoder = _load_vocoder(root, config, providers, open_model)
    duration = None
    if (root / "dsdur").is_dir():
        duration = _load_aux(root / "dsdur", providers, "dur", open_model)
    variance = None
    if (root / "dsvariance").is_dir():
        variance = _load_aux(root / "dsvariance", providers, "variance", open_model)
    needed = [v for v in VARIANCE_NAMES if v in acoustic.inputs]
    if needed and variance is None:
        raise _fail(
            root / "dsvariance" / "dsconfig.yaml", f"the acoustic model needs {needed} but no variance model"
        )
    if variance is not None and variance.variance is not None:
        for name in needed:
            if f"{name}_pred" not in variance.variance.outputs:
                raise _fail(
                    variance.variance.path, f"does not predict '{name}' which the acoustic model needs"
                )
    languages = _load_languages(root, config, cfg_path)
    speakers = _load_speakers(root, config, cfg_path)
    if check:  # the dictionary can be large (a YAML of every word): only found here, read at load
        find_dictionary(root)
        return None
    return Voicebank(
        root=root,
        name=_character_name(root),
        config=config,
        phonemes=phonemes,
        languages=languages,
        dictionary=load_dictionary(root, phonemes, config.phonemes),
        acoustic=acoustic,
        vocoder=vocoder,
        vocoder_config=vocoder_config,
        speakers=speakers,
        duration=duration,
        variance=variance,
        providers=providers,
    )
