"""Open-set recognition on classes the model never trained on: "unknown" instead of a wrong label.

    python bench/open_set.py --shards shards --novel runs/novel      # fold models of bench/novel_classes.py
    python bench/open_set.py --shards shards --split valid \
        --model runs/fewshot_lite0_cpu/model.pt          # choosing the score: valid only

The folds are those of ``bench/novel_classes.py`` (``class_folds`` of the split's classes, same
seed): for fold k, the model ``NOVEL/fold{k}/model.pt`` was trained without the fold's classes.
Those classes are the unknowns (never trained, never in the support); the known classes are the
rest. Each draw takes a seeded 1-shot support of the known classes from the train split; the
queries are every crop of the split of a known or a fold class. Reported with scikit-learn
(``symclr_ft.eval.metrics.open_set_summary``), mean over draws and folds:

* AUROC of known vs unknown queries from the score (OpenOOD's first metric);
* FPR at 95% TPR: unknown queries accepted at the threshold that accepts 95% of known ones;
* at the ``--reject auto`` threshold (``symclr_ft.use.rejection.auto_threshold``: support only, for a
  1-shot support from augmented views): known queries accepted and correct (the open-set
  classification rate) against unknown queries accepted, and the known-class accuracy lost
  against the closed set.

Scores (``--scores``, candidates for choosing on the valid folds):

* ``max``: the best cosine similarity to the support (the 1-NN score); ``margin``: best minus
  runner-up similarity;
* ``support_views``: what symclr-predict thresholds (``rejection.view_scores``): the best
  similarity to a class's mean of its crop and augmented views (``views_proto_t``, chosen);
* ``classnorm`` / ``zscore``: ``max`` minus the mean (and over the spread) of the predicted
  class's augmented views against its crop: classes whose drawings vary a lot get a lower bar;
* ``energyT``: ``T * logsumexp(class similarities / T)`` (the energy score over cosine logits);
* ``views_max`` / ``views_proto``: the augmented views join the support, as more neighbours or
  in one class mean with the crop; ``views_max_t`` / ``views_proto_t``: the same scores, with
  the label of ``max`` (nearest crop) and its threshold (a view against its crop alone: its
  sibling views come from the same drawing and would flatter it).

Every score but ``margin`` gets a support-only threshold at 95% of the views taken as known
queries (``max`` keeps ``predict.auto_threshold``). ``--tta`` averages every feature over the
four quarter turns.
With ``--split valid --model M`` the folds come from the valid split's classes and one model serves
every fold: that model trained on those classes, so its numbers are optimistic; it is only for
choosing the score, never a result. ``--split valid --novel DIR`` with the fold models of
``bench/novel_classes.py --split valid`` is the fair place to choose.
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
from symclr_ft.data.shardset import load_classes, load_split  # noqa: E402
from symclr_ft.distributed import native_precision, make_accelerator  # noqa: E402
from symclr_ft.eval.embedding import embed_images  # noqa: E402
from symclr_ft.eval.knn import class_similarity, draw_supports  # noqa: E402
from symclr_ft.eval.metrics import open_set_summary  # noqa: E402
from symclr_ft.models.backbones import load_model_file, model_file_info  # noqa: E402
from symclr_ft.use.predict import Support, classify  # noqa: E402
from symclr_ft.use.rejection import (  # noqa: E402
    VIEW_BLUR, VIEW_SCALE_MIN, VIEWS_PER_CROP, augmented_views, auto_threshold, view_prototypes,
)

SCORES = ["max", "support_views", "margin", "classnorm", "zscore", "energy0.02", "energy0.05", "energy0.1",
          "views_max", "views_proto", "views_max_t", "views_proto_t"]
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
    p.add_argument("--scores", nargs="+", default=["max"], choices=SCORES)
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="embedding precision (symclr-predict's default: auto)")
    p.add_argument("--feature-layers", default=None,
                   help="features from these EfficientNet stages, e.g. 4+5+head (multilayer.py)")
    p.add_argument("--tta", action="store_true",
                   help="features averaged over the four quarter turns (queries, support, views)")
    p.add_argument("--view-scale-min", type=float, default=None,
                   help="smallest area of the augmented views (default: predict.VIEW_SCALE_MIN)")
    p.add_argument("--view-blur", action="store_true", default=None, help="blur the views too")
    p.add_argument("--json", default=None, help="also write the mean numbers here")
    p.add_argument("--batch-size", type=int, default=256)
    return p.parse_args(argv)


def embed(accelerator, net, crops, args) -> torch.Tensor:
    return embed_images(accelerator, net, [crops.images], args.batch_size, tta_rot90=args.tta,
                        expected=len(crops), precision=args.precision)


def candidate_scores(s_feats, s_labels, views, q_feats, classes: int) -> dict:
    """Every candidate known-vs-unknown score of one draw, on valid only to choose among them.

    ``s_feats`` (N, D) support crops, ``views`` (N, V, D) augmented views of each, ``q_feats``
    (Q, D). Per candidate: (score of each query, its predicted class, score of each view taken
    as a known query) -- the last places a support-only threshold. A view is never compared
    with itself."""
    n, v, d = views.shape
    flat = views.reshape(n * v, d)
    view_labels = s_labels.repeat_interleave(v)
    out = {}

    def best_of(sim_q, sim_v, labels):
        q = class_similarity(sim_q, labels, classes)
        w = class_similarity(sim_v, labels, classes)
        return q, w

    # 1-NN on the crops alone: "max" (today's score), and the class-centred versions of it.
    q_cls, v_cls = best_of(q_feats @ s_feats.T, flat @ s_feats.T, s_labels)
    q_best, q_pred = q_cls.max(dim=1)
    v_best = v_cls.max(dim=1).values
    out["max"] = (q_best, q_pred, v_best)
    self_sim = (views * s_feats[:, None, :]).sum(-1)  # (N, V): each view against its crop
    mean_c = torch.zeros(classes).index_put_((s_labels,), self_sim.mean(1))
    std_c = torch.ones(classes).index_put_((s_labels,), self_sim.std(1).clamp(min=1e-3))
    v_pred = v_cls.argmax(dim=1)
    out["classnorm"] = (q_best - mean_c[q_pred], q_pred, v_best - mean_c[v_pred])
    out["zscore"] = ((q_best - mean_c[q_pred]) / std_c[q_pred], q_pred,
                     (v_best - mean_c[v_pred]) / std_c[v_pred])
    for t in (0.02, 0.05, 0.1):
        finite_q, finite_v = q_cls.clamp(min=-1), v_cls.clamp(min=-1)
        out[f"energy{t}"] = (t * torch.logsumexp(finite_q / t, 1), q_pred,
                             t * torch.logsumexp(finite_v / t, 1))
    # The views join the support: nearest of crop or views (a view never meets itself).
    bank, bank_labels = torch.cat([s_feats, flat]), torch.cat([s_labels, view_labels])
    sim_v = flat @ bank.T
    sim_v[:, n:] -= 3 * torch.eye(n * v)  # itself out
    q_cls, v_cls = best_of(q_feats @ bank.T, sim_v, bank_labels)
    q_best, q_pred = q_cls.max(dim=1)
    out["views_max"] = (q_best, q_pred, v_cls.max(dim=1).values)
    # A prototype per class from its crop and views, as symclr-predict makes it (the view's own
    # class mean without it would need one per view; only the threshold would move).
    protos, present = view_prototypes(s_feats, s_labels, views, classes)
    q_sc = (q_feats @ protos.T).masked_fill(~present, float("-inf"))
    v_sc = (flat @ protos.T).masked_fill(~present, float("-inf"))
    q_best, q_pred = q_sc.max(dim=1)
    out["views_proto"] = (q_best, q_pred, v_sc.max(dim=1).values)
    # The same two scores, but the label is still the nearest crop's (the closed-set rule) and
    # the threshold today's: a view scored against its crop alone, never its sibling views,
    # which come from the same drawing and would flatter it (marked by a None view score).
    crop_pred = out["max"][1]
    out["views_max_t"] = (out["views_max"][0], crop_pred, None)
    out["views_proto_t"] = (out["views_proto"][0], crop_pred, None)
    return out


def one_draw(accelerator, net, pool, queries, q_feats, unknown, draw, args) -> dict:
    """Open-set numbers of one seeded 1-shot support of the known classes (only the drawn
    crops and their views are embedded)."""
    rows = draw_supports(pool.labels, 1, 1, torch.Generator().manual_seed(1000 + draw))[0]
    labels = pool.labels[rows]
    classes = int(pool.labels.max()) + 1
    names = [str(c) for c in range(classes)]
    tta = args.tta
    feats = embed_images(accelerator, net, [pool.images[rows]], args.batch_size, tta,
                         precision=args.precision)
    scale = args.view_scale_min or VIEW_SCALE_MIN
    blur = VIEW_BLUR if args.view_blur is None else args.view_blur
    views = embed_images(accelerator, net, [augmented_views(pool.images[rows], VIEWS_PER_CROP,
                                                            draw, scale, blur)], args.batch_size,
                         tta, precision=args.precision).view(len(rows), VIEWS_PER_CROP, -1)
    threshold, _ = auto_threshold(feats, labels, 0.95, views)
    pred, best, _, runner_sim = classify(Support(feats, labels, names), q_feats)
    known = ~torch.isin(queries.labels, unknown)
    out = {"threshold": threshold}
    candidates = {}
    if set(args.scores) - {"max", "margin"}:
        candidates = candidate_scores(feats, labels, views, q_feats, classes)
    for score_name in args.scores:
        if score_name == "max":
            score, pred_s, cut = best, pred, threshold
        elif score_name == "support_views":  # what symclr-predict --reject compares
            score = Support(feats, labels, names, views=views).scores(q_feats, best)
            pred_s, cut = pred, threshold
        elif score_name == "margin":
            score, pred_s, cut = best - runner_sim.clamp(min=-1), pred, None
        else:
            score, pred_s, view_score = candidates[score_name]
            cut = threshold if view_score is None else float(
                torch.quantile(view_score.double(), 0.05))
        correct = (pred_s == queries.labels) & known
        out[score_name] = open_set_summary(score.numpy(), known.numpy(), correct.numpy(), cut)
        if "known_accepted_correct" in out[score_name]:
            o = out[score_name]
            o["lost"] = o["closed_set_accuracy"] - o["known_accepted_correct"]
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
    args.precision = native_precision(args.mixed_precision)
    names = load_classes(args.shards)
    model_paths = [Path(args.model)] * args.folds if args.model else [
        Path(args.novel) / f"fold{k}" / "model.pt" for k in range(args.folds)]
    size = model_file_info(model_paths[0])["image_size"]
    train, split = load_split(args.shards, "train", size), load_split(args.shards, args.split, size)
    folds = class_folds(split.labels.numpy(), args.folds, args.per_fold, args.seed)
    accelerator = make_accelerator()
    results = {}
    cache: dict = {}  # one model for every fold (--model): embed the queries once
    for k, (fold, path) in enumerate(zip(folds, model_paths)):
        if path not in cache:
            net = load_model_file(path).eval().to(memory_format=torch.channels_last)
            if args.feature_layers is not None:
                net.feature_layers = args.feature_layers
            cache = {path: (net, embed(accelerator, net, split, args))}
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
                if score == "margin" and key not in ("auroc", "fpr_at_95_tpr", "closed_set_accuracy"):
                    cells.append("")
                    continue
                mean, std = mean_of(draws, score, key)
                cells.append(f"{mean:.3f} ± {std:.3f}" if key == "auroc" else
                             f"{100 * mean:.1f} ± {100 * std:.1f}")
            rows.append(cells)
    everything = [d for r in results.values() for d in r]
    verdicts = []
    for score in [s for s in args.scores if s != "margin"]:
        for key, target in TARGETS.items():
            mean = mean_of(everything, score, key)[0]
            ok = mean >= target if key == "auroc" else mean <= target
            verdicts.append(f"{score}: {key} {mean:.3f} (target {'>=' if key == 'auroc' else '<='} "
                            f"{target}): {'met' if ok else '**missed**'}")
    models = args.model or f"{args.novel}/fold{{k}}/model.pt"
    body = "\n".join([
        f"Machine: {machine('cpu')}.",
        f"Split {args.split}, {args.folds} folds of {args.per_fold} unknown classes "
        f"(novel_classes.class_folds, seed {args.seed}); models {models}; {size} px"
        f"{', features averaged over quarter turns' if args.tta else ''}, embedded in "
        f"{args.precision}; "
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
