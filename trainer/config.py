"""training_config.yaml -> one typed, frozen, validated Config record.

Precedence: the defaults written here < the yaml file < command-line overrides
(`section.key=value`, values parsed as YAML). Every unknown or bad key or value
raises ConfigError naming `section.key`, the value and what was expected.

Adding a section is one dataclass plus one line in `Config`; each field says
its type through the annotation and its range through `spec(...)` metadata.
Fields marked `inherit=True` that are left null take the value of the
same-named key in `general` when the config is loaded (e.g. ssl.batch_size).
"""
import dataclasses
import math
import os
import re
import reprlib
import typing
from dataclasses import dataclass, field
from typing import Optional

import yaml

from trainer.errors import ConfigError
from trainer.config_release import BundleConfig, CalibrationConfig, ExportConfig
from trainer.config_rules import spec
from trainer.presets import AUGMENT_PRESETS, AUGMENT_RANGES, ENSEMBLE_VARIANTS


SEED_MAX = 2 ** 32 - 1   # ssl seeds torch generators with seed * 1000003 + epoch, which must stay in 64 bits
# "cpu", "mps", "cuda", "cuda:1", "0" or "0,1"; empty: the first GPU when there is one.
DEVICE = (r"(?i)\s*(|cpu|mps|cuda(:\d+)?|\d+(\s*,\s*\d+)*)\s*", "cpu, mps, cuda:N or GPU ids like 0 or 0,1")
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlevel = 80, 80, 3


@dataclass(frozen=True)
class GeneralConfig:
    device: str = spec("cpu", pattern=DEVICE)    # "cpu", "0", "0,1", "cuda:0", "mps"
    batch_size: int = spec(16, min=1)
    num_workers: int = spec(2, min=0)
    seed: int = spec(0, min=0, max=SEED_MAX)
    imgsz: int = spec(640, min=32)
    output_dir: str = spec("runs")


@dataclass(frozen=True)
class DataConfig:
    taxonomy: Optional[str] = spec(None)           # null: the packaged 36-class taxonomy
    train_fraction: float = spec(0.7, min=0.0, max=1.0)
    val_fraction: float = spec(0.15, min=0.0, max=1.0)
    test_fraction: float = spec(0.15, min=0.0, max=1.0)
    # null: the video/sequence name (file name less its frame number and Roboflow suffix);
    # a regex keeps images sharing its match in one split, e.g. '^(\d+)_' for DeepFish sites.
    group_pattern: Optional[str] = spec(None, regex=True)
    # run-all --data: at most this many train / val images, evenly spread in name order (trainer.data.subset);
    # null: all of them
    max_train_images: Optional[int] = spec(None, min=1)
    max_val_images: Optional[int] = spec(None, min=1)

    def __post_init__(self):
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ConfigError("data.train_fraction + data.val_fraction + data.test_fraction = %g + %g + %g = %g; "
                              "expected the three split ratios to sum to 1"
                              % (self.train_fraction, self.val_fraction, self.test_fraction, total))


@dataclass(frozen=True)
class SynthConfig:
    out_dir: str = spec("data/synth")
    images: int = spec(1000, min=0)
    classes: int = spec(36, min=1)
    seed: Optional[int] = spec(None, min=0, max=SEED_MAX, inherit=True)
    imgsz: int = spec(320, min=32)
    background_fraction: float = spec(0.1, min=0.0, max=1.0)
    val_fraction: float = spec(0.2, min=0.0, max=1.0)
    sequences: int = spec(0, min=0)
    sequence_length: int = spec(0, min=0)


@dataclass(frozen=True)
class SSLConfig:
    model: str = spec("yolov8n.yaml")
    epochs: int = spec(100, min=1)
    batch_size: Optional[int] = spec(None, min=1, inherit=True)
    optimizer: str = spec("adamw", choices=("adamw", "lars", "sgd"))
    lr: float = spec(1.5e-4, min=0.0, min_exclusive=True)
    weight_decay: float = spec(0.1, min=0.0)
    temperature: float = spec(1.0, min=0.0, min_exclusive=True)
    momentum_base: float = spec(0.99, min=0.0, max=1.0)
    proj_hidden_dim: int = spec(4096, min=1)
    proj_dim: int = spec(256, min=1)
    pred_hidden_dim: int = spec(4096, min=1)
    crop_min_scale: float = spec(0.2, min=0.0, max=1.0, min_exclusive=True)
    imgsz: Optional[int] = spec(None, min=32, inherit=True)
    checkpoint_every: int = spec(10, min=1)
    keep_last: int = spec(3, min=1)
    image_budget: Optional[int] = spec(None, min=1)   # images seen in all (epochs x images): fewer epochs on more images


@dataclass(frozen=True)
class BaselineConfig:
    model: str = spec("yolov8m.yaml")
    epochs: int = spec(100, min=1)
    imgsz: Optional[int] = spec(None, min=32, inherit=True)
    batch_size: Optional[int] = spec(None, min=1, inherit=True)
    patience: int = spec(50, min=0)
    save_period: int = spec(10, min=-1)
    keep_last: int = spec(3, min=1)
    ssl_backbone: Optional[str] = spec(None)
    optimizer: str = spec("SGD", choices=("SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp"))
    lr0: float = spec(0.01, min=0.0, min_exclusive=True)
    lrf: float = spec(0.01, min=0.0, min_exclusive=True)
    momentum: float = spec(0.937, min=0.0, max=1.0)
    weight_decay: float = spec(0.0005, min=0.0)
    warmup_epochs: float = spec(3.0, min=0.0)
    mosaic: float = spec(1.0, min=0.0, max=1.0)
    cache: bool = spec(False)
    nbs: int = spec(64, min=1)    # nominal batch: gradients accumulate to it (short CPU runs: batch_size)


@dataclass(frozen=True)
class ActiveConfig:
    k: int = spec(2000, min=1)
    strategy: str = spec("margin", choices=("least_confidence", "entropy", "margin", "disagreement"))
    aggregate: str = spec("sum", choices=("sum", "mean", "max"))
    low_conf: float = spec(0.7, min=0.0, max=1.0)
    conf: float = spec(0.05, min=0.0, max=1.0)
    dedupe_hamming: int = spec(8, min=0, max=64)


@dataclass(frozen=True)
class CriticalSpeciesConfig:
    """Week 4: critical-species oversampling and hard-negative mining (`trainer specialize`)."""
    oversample: int = spec(3, min=1)               # times an image holding a critical class is listed
    iterations: int = spec(3, min=0)               # hard-negative mining rounds
    mine_conf: float = spec(0.25, min=0.0, max=1.0)  # a negative frame is mined when a box scores above this
    max_background_fraction: float = spec(0.1, min=0.0, max=1.0)  # backgrounds' share of the training list
    holdout_fraction: float = spec(0.3, min=0.0, max=1.0, min_exclusive=True)  # negatives never mined: FP/image
    fp_tolerance: float = spec(0.0, min=0.0)       # a round may raise FP per background image by this much
    recall_tolerance: float = spec(0.02, min=0.0, max=1.0)  # ... and lower critical recall by this much
    negatives: Optional[str] = spec(None)          # folder of target-free images; null: the data's backgrounds
    epochs: int = spec(10, min=1)                  # fine-tuning epochs: the oversampled run, then each round
    imgsz: Optional[int] = spec(None, min=32, inherit=True)
    batch_size: Optional[int] = spec(None, min=1, inherit=True)
    lr0: float = spec(0.002, min=0.0, min_exclusive=True)  # fine-tuning: a tenth of training from scratch
    lrf: float = spec(0.1, min=0.0, min_exclusive=True)
    warmup_epochs: float = spec(0.0, min=0.0)      # the weights are trained already: no warmup
    mosaic: float = spec(1.0, min=0.0, max=1.0)
    save_period: int = spec(10, min=-1)
    keep_last: int = spec(3, min=1)


@dataclass(frozen=True)
class EnsembleConfig:
    """Week 5: the variants the device runs, fine-tuned from the specialized weights (`trainer ensemble`)."""
    variants: dict = spec(ENSEMBLE_VARIANTS)       # name -> {threshold: deployed confidence, preset: name}
    presets: dict = spec(AUGMENT_PRESETS)          # name -> ultralytics augmentation hyperparameters
    epochs: int = spec(20, min=1)
    imgsz: Optional[int] = spec(None, min=32, inherit=True)
    batch_size: Optional[int] = spec(None, min=1, inherit=True)
    lr0: float = spec(0.002, min=0.0, min_exclusive=True)
    lrf: float = spec(0.1, min=0.0, min_exclusive=True)
    warmup_epochs: float = spec(0.0, min=0.0)
    patience: int = spec(50, min=0)
    save_period: int = spec(10, min=-1)
    keep_last: int = spec(3, min=1)

    def __post_init__(self):
        for name, preset in self.presets.items():
            where = "ensemble.presets.%s" % name
            if not isinstance(preset, dict):
                raise ConfigError("%s = %s: expected a mapping of hyperparameter: value" % (where, _short.repr(preset)))
            for key, value in preset.items():
                if key not in AUGMENT_RANGES:
                    raise ConfigError("%s.%s: unknown augmentation hyperparameter; valid: %s"
                                      % (where, key, ", ".join(AUGMENT_RANGES)))
                _check_range("%s.%s" % (where, key), value, *AUGMENT_RANGES[key])
        if not self.variants:
            raise ConfigError("ensemble.variants is empty; expected at least one variant, e.g. "
                              "balanced: {threshold: 0.25, preset: medium}")
        for name, variant in self.variants.items():
            where = "ensemble.variants.%s" % name
            if not isinstance(variant, dict) or set(variant) != {"threshold", "preset"}:
                raise ConfigError("%s = %s: expected {threshold: 0..1, preset: one of %s}"
                                  % (where, _short.repr(variant), ", ".join(self.presets)))
            _check_range(where + ".threshold", variant["threshold"], 0.0, 1.0)
            if variant["preset"] not in self.presets:
                raise ConfigError("%s.preset = %r: expected one of ensemble.presets: %s"
                                  % (where, variant["preset"], ", ".join(self.presets)))


@dataclass(frozen=True)
class MultiscaleConfig:
    """Each training batch resized to a random stride multiple in [min, max] (ensemble and shore)."""
    enabled: bool = spec(True)
    min: int = spec(480, min=32)
    max: int = spec(768, min=32)
    stride: int = spec(32, min=1)

    def __post_init__(self):
        for key in ("min", "max"):
            if getattr(self, key) % self.stride:
                raise ConfigError("multiscale.%s = %d: expected a multiple of multiscale.stride (%d)"
                                  % (key, getattr(self, key), self.stride))
        if self.min > self.max:
            raise ConfigError("multiscale.min = %d > multiscale.max = %d; expected min <= max" % (self.min, self.max))


@dataclass(frozen=True)
class ShoreConfig:
    """The gpu-server target: the ensemble recipe on a large model (`trainer ensemble --target gpu-server`)."""
    enabled: bool = spec(False)
    model: str = spec("yolo11x.yaml")
    weights: Optional[str] = spec(None)            # a trained checkpoint of `model` to start from; null: the yaml
    epochs: int = spec(100, min=1)                 # used when starting from the yaml
    imgsz: int = spec(640, min=32)
    batch_size: Optional[int] = spec(None, min=1, inherit=True)


def _check_range(where, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError("%s = %s: expected a number in [%g, %g]" % (where, _short.repr(value), low, high))
    if not low <= value <= high:
        raise ConfigError("%s = %r: expected a value in [%g, %g]" % (where, value, low, high))


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration; one attribute per section."""
    general: GeneralConfig = field(default_factory=GeneralConfig)
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    active: ActiveConfig = field(default_factory=ActiveConfig)
    critical_species: CriticalSpeciesConfig = field(default_factory=CriticalSpeciesConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    multiscale: MultiscaleConfig = field(default_factory=MultiscaleConfig)
    shore: ShoreConfig = field(default_factory=ShoreConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)


def section_types():
    """Dict section name -> its dataclass, in file order."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _check_type(where, value, annotation):
    """The value converted to the annotated type, or ConfigError naming `where`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
    if annotation is float and isinstance(value, str):
        try:    # PyYAML reads 1e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)      # device: 0 means "0"
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }[annotation]
    if not ok:
        raise ConfigError("%s = %s: expected %s, got %s"
                          % (where, _short.repr(value), annotation.__name__, type(value).__name__))
    if annotation is float and not math.isfinite(value):
        raise ConfigError("%s = %r: expected a finite number" % (where, value))
    return float(value) if annotation is float else value


def _check_rules(where, value, rules):
    if value is None:
        return
    low, high = rules["min"], rules["max"]
    if low is not None and (value < low or (rules["min_exclusive"] and value == low)):
        raise ConfigError("%s = %r: expected a value %s %s" % (where, value, ">" if rules["min_exclusive"] else ">=", low))
    if high is not None and value > high:
        raise ConfigError("%s = %r: expected a value <= %s" % (where, value, high))
    if rules["pattern"] is not None and not re.fullmatch(rules["pattern"][0], value):
        raise ConfigError("%s = %r: expected %s" % (where, value, rules["pattern"][1]))
    if rules["choices"] is not None and value not in rules["choices"]:
        raise ConfigError("%s = %r: expected one of %s" % (where, value, ", ".join(rules["choices"])))
    if rules["regex"]:
        try:
            re.compile(value)
        except re.error as e:
            raise ConfigError("%s = %r: expected a regular expression (%s)" % (where, value, e)) from e


def _build_section(name, cls, values):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError("unknown key %s.%s; valid keys in %r: %s"
                          % (name, unknown[0], name, ", ".join(fields)))
    checked = {}
    for key, value in values.items():
        where = "%s.%s" % (name, key)
        checked[key] = _check_type(where, value, hints[key])
        if hints[key] is dict:
            checked[key] = _merge_table(fields[key].default_factory(), checked[key])
        _check_rules(where, checked[key], fields[key].metadata)
    return cls(**checked)


def _merge_table(default, given):
    """A table field: the default's entries updated by the given ones; an entry given as null is removed."""
    merged = dict(default)
    for key, value in given.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _inherit_general(sections):
    """Fill null `inherit=True` fields from the same-named key of `general`."""
    general = sections["general"]
    for name, section in sections.items():
        filled = {f.name: getattr(general, f.name) for f in dataclasses.fields(section)
                  if f.metadata.get("inherit") and getattr(section, f.name) is None}
        if filled:
            sections[name] = dataclasses.replace(section, **filled)
    return sections


def parse_override(text):
    """'section.key=value' -> (section, key, value parsed as YAML)."""
    name, sep, raw = str(text).partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError("override %r: expected section.key=value, e.g. ssl.epochs=5" % text)
    shown = "%s=%s" % (name, _short.repr(raw))
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError("override %s: value is not valid YAML (%s)" % (shown, yaml_problem(e))) from e
    except RecursionError as e:
        raise ConfigError("override %s: value is nested too deeply; expected a plain value" % shown) from e
    except ValueError as e:     # PyYAML's int() refuses more than 4,300 digits
        raise ConfigError("override %s: a number too long to read; expected a value in range" % shown) from e
    return section, key, value


def yaml_problem(error):
    """A PyYAML error on one line: where and what ("line 2, column 7: expected ',' or ']'")."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = "line %d, column %d: " % (mark.line + 1, mark.column + 1) if mark is not None else ""
    return where + " ".join(str(problem).split())


def _read_yaml(path):
    if os.path.isdir(path):
        raise ConfigError("config file %s is a folder; expected a training_config.yaml file" % path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError("cannot read config file %s: %s" % (path, e.strerror or e)) from e
    except UnicodeDecodeError as e:
        raise ConfigError("config file %s is not UTF-8 text (byte 0x%02x at offset %d); save it as UTF-8"
                          % (path, e.object[e.start], e.start)) from e
    except yaml.YAMLError as e:
        raise ConfigError("config file %s is not valid YAML: %s" % (path, yaml_problem(e))) from e
    except ValueError as e:     # PyYAML's int() refuses more than 4,300 digits
        raise ConfigError("config file %s holds a number too long to read (%s); expected values in range"
                          % (path, str(e).split(":")[0])) from e
    except RecursionError as e:
        raise ConfigError("config file %s is nested too deeply; expected section: {key: value}" % path) from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("config file %s: expected a mapping of section -> {key: value}, got %s"
                          % (path, type(raw).__name__))
    return raw


def config_from_dict(raw, overrides=(), origin="config"):
    """A validated Config from a {section: {key: value}} dict plus 'section.key=value' overrides."""
    types = section_types()
    merged = {name: {} for name in types}
    for section, values in (raw or {}).items():
        if section not in types:
            raise ConfigError("%s: unknown section %r; valid sections: %s" % (origin, section, ", ".join(types)))
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError("%s: section %r must be a mapping of key: value, got %s"
                              % (origin, section, type(values).__name__))
        merged[section].update(values)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in types:
            raise ConfigError("override %r: unknown section %r; valid sections: %s"
                              % (text, section, ", ".join(types)))
        merged[section][key] = value
    sections = {name: _build_section(name, cls, merged[name]) for name, cls in types.items()}
    return Config(**_inherit_general(sections))


def load_config(path=None, overrides=()):
    """Defaults < the yaml file at `path` (if given) < overrides like 'ssl.epochs=5'."""
    raw = _read_yaml(path) if path is not None else {}
    return config_from_dict(raw, overrides, origin=str(path) if path is not None else "config")


def config_to_dict(config):
    """Plain {section: {key: value}} dict, in declaration order."""
    return {f.name: dataclasses.asdict(getattr(config, f.name)) for f in dataclasses.fields(config)}


def save_config(config, path):
    """Write the resolved config as YAML (saved beside every output); returns the path."""
    text = "# ReefWatch resolved training config (defaults < file < overrides)\n"
    text += yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise ConfigError("cannot write config to %s: %s" % (path, e.strerror or e)) from e
    return path
