"""Spotting benchmark: COCO AP and counting of symclr-spot against multi-scale template matching.

    flock /work/team/cpu.lock python bench/spotting.py --split test [--draws 10] [--out DIR]
    flock /work/team/cpu.lock python bench/spotting.py --split valid --tune      # choose settings

Protocol (issue 18): drawings of ``--split`` (firefighting), exemplars drawn from the train
split, 1 per class, ``--draws`` seeded draws (seed = draw number): mean and 95% interval of COCO
AP50 and AP@[.5:.95] (pycocotools), per-class AP50, and counting (share of (drawing, class)
pairs with an exact count; mean absolute count error). Settings:

* trained classes: the main model, every class;
* held-out folds: each fold model (trained without its fold's classes) with exemplars and
  ground truth of its fold's classes only;
* template matching (cv2.matchTemplate, normalised cross-correlation, 3 scales x 4 turns, same
  exemplars, same NMS and box rule) as the reference row;
* music pages (muscima test split, exemplars from its train split), capped (``--music-pages``,
  ``--max-candidates``) so the run stays affordable.

The crops of a drawing's candidates are embedded once per model (cached under ``--cache``); each
exemplar draw then only embeds its exemplars. Speed and memory have their own mode:
``--speed`` (seconds per drawing, end to end, 2 threads) and ``--big`` (a 10,000 x 10,000 px
drawing, tiled, peak RSS).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import resource
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from symclr_ft.coco import load_coco  # noqa: E402
from symclr_ft.spot import (  # noqa: E402
    Candidates, Drawing, Exemplars, SpotConfig, _open_rgb, count_detections, drawing_candidates,
    embed_exemplars, list_drawings, model_and_size, pick_coco_exemplars, score_candidates,
    to_coco_results,
)
from symclr_ft.spot_report import exact_count_share  # noqa: E402

DATA = REPO.parent / "shared" / "data"
T95 = {n: t for n, t in [(2, 12.71), (3, 4.30), (4, 3.18), (5, 2.78), (6, 2.57), (7, 2.45), (8, 2.36), (9, 2.31), (10, 2.26)]}


# --------------------------------------------------------------------------- scoring


def coco_scores(gt_json: Path, results: list[dict], cat_ids: list[int], image_ids: list[int]) -> dict:
    """pycocotools AP50, AP@[.5:.95] and per-class AP50 over ``cat_ids`` and ``image_ids``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        if not results:
            return {"ap50": 0.0, "ap": 0.0, "per_class_ap50": {}}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.catIds = cat_ids
        ev.params.imgIds = image_ids
        ev.params.maxDets = [1, 10, 1000]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (T iou, R recall, K class), all areas, 1000 dets
    per_class = {}
    for k, cat in enumerate(cat_ids):
        p = prec[0, :, k]
        if (p > -1).any():
            per_class[gt.cats[cat]["name"]] = float(p[p > -1].mean())
    valid = prec[prec > -1]
    ap50 = prec[0][prec[0] > -1]
    return {"ap50": float(ap50.mean()) if ap50.size else 0.0, "ap": float(valid.mean()) if valid.size else 0.0,
            "per_class_ap50": per_class}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the t 95% interval over draws."""
    v = np.asarray(values, float)
    if v.size < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(T95.get(v.size, 1.96) * v.std(ddof=1) / math.sqrt(v.size))


# --------------------------------------------------------------------------- candidate cache


def cached_candidates(net, model_path: Path, drawings: list[Drawing], image_size: int, cfg: SpotConfig,
                      cache: Path) -> dict[int, Candidates]:
    """Candidates and crop features of every drawing, computed once per (model, settings)."""
    keyed = {k: v for k, v in asdict(cfg).items() if k not in ("min_score", "count_score", "nms_iou", "box_mode", "class_agnostic_nms")}
    stat = model_path.stat()
    key = hashlib.sha1(json.dumps([str(model_path), stat.st_size, stat.st_mtime, image_size, keyed,
                                   [str(d.path) for d in drawings]], default=str).encode()).hexdigest()[:16]
    path = cache / f"cands-{key}.pt"
    if path.is_file():
        data = torch.load(path, weights_only=True)
        return {int(k): Candidates(v["boxes"], v["features"]) for k, v in data.items()}
    out = {}
    start = time.time()
    for d in drawings:
        with torch.no_grad():
            c = drawing_candidates(net, _open_rgb(d.path), image_size, cfg)
        out[d.image_id] = c
    print(f"  embedded candidates of {len(drawings)} drawings in {time.time() - start:.0f} s "
          f"({sum(c.boxes.shape[0] for c in out.values()) / max(1, len(out)):.0f} per drawing)", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({str(k): {"boxes": v.boxes, "features": v.features} for k, v in out.items()}, path)
    return out


def restrict(ex: Exemplars, keep_ids: set[int]) -> Exemplars:
    mask = torch.tensor([ex.category_ids[int(l)] in keep_ids for l in ex.labels], dtype=torch.bool)
    return Exemplars(ex.features[mask], ex.labels[mask], ex.sizes[mask], ex.class_names, ex.category_ids)


def run_draw(cands: dict[int, Candidates], drawings, ex: Exemplars, cfg: SpotConfig, gt_json: Path,
             cat_ids: list[int], score_fn=None) -> dict:
    """One exemplar draw scored: AP, per-class AP, counting."""
    results = []
    for d in drawings:
        c = cands[d.image_id]
        dets = score_fn(c, ex, cfg) if score_fn else score_candidates(c, ex, cfg)
        results.extend(to_coco_results(dets, d.image_id, ex))
    scores = coco_scores(gt_json, results, cat_ids, [d.image_id for d in drawings])
    sub = Exemplars(ex.features, ex.labels, ex.sizes, ex.class_names, ex.category_ids)
    sub.category_ids = list(ex.category_ids)
    counts = count_detections([r for r in results if r["category_id"] in set(cat_ids)], cfg.count_score)
    truth_drawings = [replace(d, truth=[t for t in d.truth if t[0] in set(cat_ids)]) for d in drawings]
    fake = Exemplars(ex.features, ex.labels, ex.sizes, [str(c) for c in cat_ids], cat_ids)
    exact, mae = exact_count_share(truth_drawings, fake, counts)
    return {**scores, "exact_counts": exact, "count_mae": mae, "detections": len(results)}
