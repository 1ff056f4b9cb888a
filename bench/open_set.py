"""Open-set recognition on classes the model never trained on: "unknown" instead of a wrong label.

    python bench/open_set.py --shards shards --novel runs/novel      # fold models of bench/novel_classes.py
    python bench/open_set.py --shards shards --split valid \
        --model runs/fewshot_lite0_cpu/model.pt          # choosing the score: valid only

The folds are those of ``bench/novel_classes.py`` (``class_folds`` of the split's classes, same
seed): for fold k, the model ``NOVEL/fold{k}/model.pt`` was trained without the fold's classes.
Those classes are the unknowns (never trained, never in the support); the known classes are the
rest. Each draw takes a seeded 1-shot support of the known classes from the train split; the
queries are every crop of the split of a known or a fold class. Reported with scikit-learn
(``symclr_ft.metrics.open_set_summary``), mean over draws and folds:

* AUROC of known vs unknown queries from the score (OpenOOD's first metric);
* FPR at 95% TPR: unknown queries accepted at the threshold that accepts 95% of known ones;
* at the ``--reject auto`` threshold (``symclr_ft.predict.auto_threshold``: support only, for a
  1-shot support from augmented views): known queries accepted and correct (the open-set
  classification rate) against unknown queries accepted, and the known-class accuracy lost
  against the closed set.

Scores (``--scores``): ``max`` is the best cosine similarity to the support (the 1-NN score,
what symclr-predict thresholds); ``margin`` is best minus runner-up similarity. With
``--split valid --model M`` the folds come from the valid split's classes and one model serves
every fold: that model trained on those classes, so its numbers are optimistic; it is only for
choosing the score, never a result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from benchlib import machine, report, table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from novel_classes import class_folds  # noqa: E402
from symclr_ft.data import load_classes, load_split  # noqa: E402
from symclr_ft.distributed import make_accelerator  # noqa: E402
from symclr_ft.evaluate import embed_images  # noqa: E402
from symclr_ft.knn import draw_supports  # noqa: E402
from symclr_ft.metrics import open_set_summary  # noqa: E402
from symclr_ft.model import load_model_file, model_file_info  # noqa: E402
from symclr_ft.predict import (  # noqa: E402
    VIEW_BLUR, VIEW_SCALE_MIN, VIEWS_PER_CROP, Support, augmented_views, auto_threshold, classify,
)

TARGETS = {"auroc": 0.95, "fpr_at_95_tpr": 0.25, "lost": 0.03}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="shards")
    p.add_argument("--novel", default="runs/novel", help="folder of fold{k}/model.pt")
    p.add_argument("--model", default=None, help="one model for every fold (--split valid)")
    p.add_argument("--split", default="test", choices=["test", "valid"])
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--per-fold", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="the folds' seed (novel_classes.py's)")
    p.add_argument("--draws", type=int, default=10, help="seeded 1-shot supports per fold")
    p.add_argument("--scores", nargs="+", default=["max"], choices=["max", "margin"])
    p.add_argument("--view-scale-min", type=float, default=None,
                   help="smallest area of the augmented views (default: predict.VIEW_SCALE_MIN)")
    p.add_argument("--view-blur", action="store_true", default=None, help="blur the views too")
    p.add_argument("--json", default=None, help="also write the mean numbers here")
    p.add_argument("--batch-size", type=int, default=256)
    return p.parse_args(argv)


def embed(accelerator, net, crops, batch_size: int) -> torch.Tensor:
    return embed_images(accelerator, net, [crops.images], batch_size, expected=len(crops))


def one_draw(accelerator, net, pool, queries, q_feats, unknown, draw, args) -> dict:
    """Open-set numbers of one seeded 1-shot support of the known classes (only the drawn
    crops and their views are embedded)."""
    rows = draw_supports(pool.labels, 1, 1, torch.Generator().manual_seed(1000 + draw))[0]
    labels = pool.labels[rows]
    names = [str(c) for c in range(int(pool.labels.max()) + 1)]
    feats = embed_images(accelerator, net, [pool.images[rows]], args.batch_size)
    scale = args.view_scale_min or VIEW_SCALE_MIN
    blur = VIEW_BLUR if args.view_blur is None else args.view_blur
    views = embed_images(accelerator, net, [augmented_views(pool.images[rows], VIEWS_PER_CROP,
                                                            draw, scale, blur)], args.batch_size)
    threshold, _ = auto_threshold(feats, labels, 0.95, views.view(len(rows), VIEWS_PER_CROP, -1))
    pred, best, _, runner_sim = classify(Support(feats, labels, names), q_feats)
    known = ~torch.isin(queries.labels, unknown)
    correct = (pred == queries.labels) & known
    out = {"threshold": threshold}
    for score_name in args.scores:
        score = best if score_name == "max" else best - runner_sim.clamp(min=-1)
        out[score_name] = open_set_summary(score.numpy(), known.numpy(), correct.numpy(),
                                           threshold if score_name == "max" else None)
    if "known_accepted_correct" in out.get("max", {}):
        out["max"]["lost"] = out["max"]["closed_set_accuracy"] - out["max"]["known_accepted_correct"]
    return out


def run_fold(accelerator, net, train, queries, q_feats, fold: list[int], args) -> list[dict]:
    """Every draw of one fold; ``q_feats``: features of all the split's crops."""
    unknown = torch.tensor(fold)
    pool = train.subset(~torch.isin(train.labels, unknown))
    keep = torch.isin(queries.labels, unknown) | torch.isin(queries.labels, torch.unique(pool.labels))
    return [one_draw(accelerator, net, pool, queries.subset(keep), q_feats[keep], unknown, d, args)
            for d in range(args.draws)]


def mean_of(draws: list[dict], score: str, key: str) -> tuple[float, float]:
    values = [d[score][key] for d in draws if key in d[score]]
    return float(np.mean(values)), float(np.std(values))


def main(argv=None) -> None:
    args = parse_args(argv)
    names = load_classes(args.shards)
    model_paths = [Path(args.model)] * args.folds if args.model else [
        Path(args.novel) / f"fold{k}" / "model.pt" for k in range(args.folds)]
    size = model_file_info(model_paths[0])["image_size"]
    train, split = load_split(args.shards, "train", size), load_split(args.shards, args.split, size)
    folds = class_folds(split.labels.numpy(), args.folds, args.per_fold, args.seed)
    accelerator = make_accelerator(mixed_precision="no")
    results = {}
    cache: dict = {}  # one model for every fold (--model): embed the queries once
    for k, (fold, path) in enumerate(zip(folds, model_paths)):
        if path not in cache:
            net = load_model_file(path).eval().to(memory_format=torch.channels_last)
            cache = {path: (net, embed(accelerator, net, split, args.batch_size))}
        net, q_feats = cache[path]
        results[k] = run_fold(accelerator, net, train, split, q_feats, fold, args)
        o = results[k][0]["max"] if "max" in args.scores else results[k][0][args.scores[0]]
        print(f"fold {k} ({', '.join(names[c] for c in fold)}): first draw {json.dumps(o)}",
              flush=True)
    write_report(args, folds, names, results, size)


def write_report(args, folds, names, results: dict, size: int) -> None:
    rows = []
    for score in args.scores:
        for k in list(results) + ["all"]:
            draws = results[k] if k != "all" else [d for r in results.values() for d in r]
            cells = [score, str(k)]
            for key in ("auroc", "fpr_at_95_tpr", "closed_set_accuracy", "known_accepted_correct",
                        "unknown_accepted", "lost"):
                if score != "max" and key not in ("auroc", "fpr_at_95_tpr", "closed_set_accuracy"):
                    cells.append("")
                    continue
                mean, std = mean_of(draws, score, key)
                cells.append(f"{mean:.3f} ± {std:.3f}" if key == "auroc" else
                             f"{100 * mean:.1f} ± {100 * std:.1f}")
            rows.append(cells)
    everything = [d for r in results.values() for d in r]
    verdicts = []
    if "max" in args.scores:
        for key, target in TARGETS.items():
            mean = mean_of(everything, "max", key)[0]
            ok = mean >= target if key == "auroc" else mean <= target
            verdicts.append(f"{key} {mean:.3f} (target {'>=' if key == 'auroc' else '<='} "
                            f"{target}): {'met' if ok else '**missed**'}")
    models = args.model or f"{args.novel}/fold{{k}}/model.pt"
    body = "\n".join([
        f"Machine: {machine('cpu')}.",
        f"Split {args.split}, {args.folds} folds of {args.per_fold} unknown classes "
        f"(novel_classes.class_folds, seed {args.seed}); models {models}; {size} px; "
        f"{args.draws} seeded 1-shot supports of the known classes per fold; "
        f"auto threshold at 95% TPR from {VIEWS_PER_CROP} augmented views per support crop "
        f"(smallest area {args.view_scale_min or VIEW_SCALE_MIN}, blur "
        f"{VIEW_BLUR if args.view_blur is None else args.view_blur}).",
        "", "Fold classes: " + "; ".join(
            f"{k}: {', '.join(names[c] for c in fold)}" for k, fold in enumerate(folds)),
        "", table(["score", "fold", "AUROC", "FPR@95TPR %", "closed-set known acc %",
                   "known accepted+correct % (auto)", "unknown accepted % (auto)",
                   "known acc lost, points (auto)"], rows),
        "", "Mean ± std over draws (and folds for 'all'). " + "; ".join(verdicts),
    ])
    report("open_set", f"Open set on held-out classes ({args.split})", body)
    if args.json:
        keys = ("auroc", "fpr_at_95_tpr", "closed_set_accuracy", "known_accepted",
                "known_accepted_correct", "unknown_accepted", "lost")
        means = {score: {k: mean_of(everything, score, k)[0] for k in keys
                         if any(k in d[score] for d in everything)} for score in args.scores}
        Path(args.json).write_text(json.dumps({"args": vars(args), "means": means}, indent=1))


if __name__ == "__main__":
    main()
