"""Few-shot recognition of classes the model never trained on, end to end.

    python bench/novel_classes.py --config configs/fewshot_cpu.yaml [--folds 3] [--per-fold 10] [overrides]

The test split's classes are split into class-disjoint folds (seeded). For each fold the model
is trained with every crop of the fold's classes removed (from train and valid), then evaluated
1-shot and 5-shot among the fold's classes only: support from their train crops, queries their
test crops (the evaluation module's protocol: mean of N episodes). Reported: the mean over
folds, and each fold. Results go to runs/novel/summary.{json,md}.

``--split valid`` draws the folds from the valid split's classes and queries valid crops
instead: the same protocol for choosing settings without looking at the test split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from symclr_ft.data.batches import input_rule  # noqa: E402
from symclr_ft.config import load_config  # noqa: E402
from symclr_ft.data.shardset import iter_shard, load_classes, load_split, shard_paths  # noqa: E402
from symclr_ft.distributed import make_accelerator  # noqa: E402
from symclr_ft.eval.fewshot import evaluate_model  # noqa: E402
from symclr_ft.models.backbones import load_model_file  # noqa: E402
from symclr_ft.data.shardwriter import ShardSequence  # noqa: E402


def class_folds(labels: np.ndarray, folds: int, per_fold: int, seed: int) -> list[list[int]]:
    present = np.unique(labels)
    if folds * per_fold > len(present):
        raise SystemExit(f"{folds} folds of {per_fold} need {folds * per_fold} classes in the split, have {len(present)}")
    order = np.random.default_rng(seed).permutation(present)
    return [sorted(order[i * per_fold : (i + 1) * per_fold].tolist()) for i in range(folds)]


def write_without(source: Path, out: Path, removed: set[int]) -> int:
    """Copy the train and valid shards without the crops of ``removed`` classes."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    kept = 0
    for split in ("train", "valid"):
        shard = ShardSequence(out, split, shard_size=10**9)
        for path in shard_paths(source, split):
            for key, fields in iter_shard(path):
                if int(fields["cls"]) not in removed:
                    shard.write(key, fields)
        shard.close()
        kept += shard.count if split == "train" else 0
    shutil.copy(source / "classes.json", out / "classes.json")
    (out / "stats.json").write_text(json.dumps({"splits": {"train": {"crops": kept}}}))
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/fewshot_cpu.yaml"))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--per-fold", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/novel")
    parser.add_argument("--split", default="test", choices=["test", "valid"],
                        help="split whose classes form the folds and whose crops are the queries")
    parser.add_argument("--classes-only", action="store_true",
                        help="write summary.json with the folds' classes and train nothing (for "
                        "bench/transfer.py --fold-classes: models never trained on firefighting)")
    args, overrides = parser.parse_known_args()
    cfg = load_config(args.config, overrides)
    shards, out = Path(cfg.data.shards), Path(args.out)
    size = cfg.eval.image_size or cfg.data.image_size
    names = load_classes(shards)
    rule = input_rule(cfg)  # how the folds' training reads its crops: the same here
    train, queries = load_split(shards, "train", size, *rule), load_split(shards, args.split, size, *rule)
    folds = class_folds(queries.labels.numpy(), args.folds, args.per_fold, args.seed)
    if args.classes_only:
        out.mkdir(parents=True, exist_ok=True)
        summary = {"folds": [{"fold": k, "classes": [names[c] for c in fold]} for k, fold in enumerate(folds)],
                   "split": args.split, "command": " ".join(sys.argv)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote {out / 'summary.json'}: {len(folds)} folds of {args.per_fold} classes, nothing trained")
        return
    accelerator = make_accelerator(mixed_precision=cfg.train.mixed_precision)
    results = []
    for k, fold in enumerate(folds):
        fold_shards = out / f"fold{k}_shards"
        kept = write_without(shards, fold_shards, set(fold))
        print(f"== fold {k}: classes {[names[c] for c in fold]}; training on {kept} crops", flush=True)
        cmd = [sys.executable, "-m", "symclr_ft.train", "--config", args.config, *overrides,
               f"data.shards={fold_shards}", "eval.split=none", f"run.out_dir={out}",
               f"run.name=fold{k}", "--overwrite"]
        subprocess.run(cmd, cwd=REPO, check=True)
        net = load_model_file(out / f"fold{k}" / "model.pt").to(accelerator.device).eval()
        in_fold = lambda crops: torch.isin(crops.labels, torch.tensor(fold))  # noqa: E731
        metrics = evaluate_model(accelerator, net, train.subset(in_fold(train)), queries.subset(in_fold(queries)),
                                 cfg.eval, names, out / f"fold{k}" / "eval", split_name=args.split)
        history = [json.loads(l) for l in (out / f"fold{k}" / "history.jsonl").read_text().splitlines()]
        results.append({"fold": k, "classes": [names[c] for c in fold], "train_crops": kept,
                        "train_seconds": sum(r["seconds"] for r in history),
                        **{m: metrics[m] for m in metrics if m.startswith(("one_shot", "five_shot", "full_knn"))}})
        print(f"fold {k}: 1-shot {100 * metrics['one_shot']['micro_mean']:.1f}%  "
              f"5-shot {100 * metrics['five_shot']['micro_mean']:.1f}%", flush=True)
    summary = {
        "folds": results,
        "one_shot": float(np.mean([r["one_shot"]["micro_mean"] for r in results])),
        "five_shot": float(np.mean([r["five_shot"]["micro_mean"] for r in results])),
        "one_shot_macro": float(np.mean([r["one_shot"]["macro_mean"] for r in results])),
        "split": args.split,
        "command": " ".join(sys.argv),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["| fold | classes | 1-shot (10-way) | 5-shot (10-way) | train s |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['fold']} | {len(r['classes'])} | {100 * r['one_shot']['micro_mean']:.1f} ± "
                     f"{100 * r['one_shot']['micro_ci95']:.1f}% | {100 * r['five_shot']['micro_mean']:.1f} ± "
                     f"{100 * r['five_shot']['micro_ci95']:.1f}% | {r['train_seconds']:.0f} |")
    lines.append(f"| mean | | {100 * summary['one_shot']:.1f}% | {100 * summary['five_shot']:.1f}% | |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
