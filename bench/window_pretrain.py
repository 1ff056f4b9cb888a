"""Self-supervised pre-training on random windows of the drawings themselves (no labels).

    python bench/window_pretrain.py --coco ../shared/data/firefighting --out runs/window_pretrain \
        [--windows 6000] [--config configs/fewshot_lite0_cpu.yaml] [overrides]

Why: a few-shot user's drawings hold many symbols nobody has labelled yet (a new legend's
symbols among them). Contrastive learning on windows cut from the *train* drawings, with no
labels, lets the network see those shapes before fine-tuning. Windows are centred on ink (pixels
that differ from the drawing's background) with a side drawn log-uniformly from the range of
symbol sizes, so most windows hold a symbol or part of one, not empty background.

Writes ``OUT/shards`` (one "class" per window, so the class-unique machinery needs no special
case), trains with InfoNCE on them (``eval.split=none``: windows have no labels to evaluate), and
leaves ``OUT/run/model.pt``; fine-tune from it with ``model.init=simclr:OUT/run/model.pt``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from symclr_ft.data.coco import load_export, open_image  # noqa: E402
from symclr_ft.data.shardwriter import ShardSequence, encode_png  # noqa: E402


def ink_mask(gray: np.ndarray, threshold: int = 40) -> np.ndarray:
    """Pixels that differ from the drawing's background (its median grey) by ``threshold``."""
    return np.abs(gray.astype(np.int16) - int(np.median(gray))) > threshold


def sample_windows(
    size: tuple[int, int], ink: np.ndarray, count: int, side_range: tuple[int, int], rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """``count`` square boxes (left, top, right, bottom) inside an image of ``size`` (w, h),
    each centred on an ink pixel, side log-uniform in ``side_range`` (clamped to the image)."""
    width, height = size
    ys, xs = np.nonzero(ink)
    if len(xs) == 0:
        return []
    picks = rng.integers(0, len(xs), count)
    sides = np.exp(rng.uniform(np.log(side_range[0]), np.log(side_range[1]), count)).astype(int)
    boxes = []
    for pick, side in zip(picks, sides):
        side = int(min(side, width, height))
        left = int(np.clip(xs[pick] - side // 2, 0, width - side))
        top = int(np.clip(ys[pick] - side // 2, 0, height - side))
        boxes.append((left, top, left + side, top + side))
    return boxes


def write_window_shards(coco: Path, out: Path, windows: int, seed: int, side_range: tuple[int, int]) -> int:
    """Cut ``windows`` windows (spread evenly over the train drawings) into ``out``."""
    train = load_export(coco).splits[0]
    images = sorted(train.images.values(), key=lambda im: im.file_name)
    rng = np.random.default_rng(seed)
    per_image = -(-windows // len(images))
    out.mkdir(parents=True, exist_ok=True)
    shard = ShardSequence(out, "train", shard_size=10**9)
    for image in images:
        rgb = open_image(train, image)
        ink = ink_mask(np.asarray(rgb.convert("L")))
        for box in sample_windows(rgb.size, ink, min(per_image, windows - shard.count), side_range, rng):
            window = shard.count
            shard.write(f"window-{window:06d}", {"png": encode_png(rgb.crop(box)), "cls": str(window).encode()})
    shard.close()
    written = shard.count
    classes = [{"index": i, "name": f"window-{i:06d}"} for i in range(written)]
    (out / "classes.json").write_text(json.dumps({"classes": classes}))
    (out / "stats.json").write_text(json.dumps({"splits": {"train": {"crops": written}}}))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", default="../shared/data/firefighting")
    parser.add_argument("--out", default="runs/window_pretrain")
    parser.add_argument("--windows", type=int, default=6000)
    parser.add_argument("--min-side", type=int, default=16)
    parser.add_argument("--max-side", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=str(REPO / "configs/fewshot_lite0_cpu.yaml"))
    args, overrides = parser.parse_known_args()
    out = Path(args.out)
    side_range = (args.min_side, args.max_side)
    count = write_window_shards(Path(args.coco), out / "shards", args.windows, args.seed, side_range)
    print(f"{count} windows from the train drawings -> {out / 'shards'}", flush=True)
    command = [
        sys.executable, "-m", "symclr_ft.train", "--config", args.config,
        f"data.shards={out / 'shards'}", "data.sampler=random", "loss.name=infonce",
        "loss.mask_same_class=true", "loss.infonce_weight=0", "eval.split=none",
        f"run.out_dir={out}", "run.name=run", "--overwrite", *overrides,
    ]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


if __name__ == "__main__":
    main()
