"""Spotting benchmark: COCO AP and counting of symclr-spot against multi-scale template matching.

    python bench/spotting.py --split test [--draws 10] [--robustness all] [--out DIR]
    python bench/spotting.py --split valid --tune [--robustness scan scale0.7]   # choose settings
    python bench/spotting.py --split valid --recall --robustness all          # candidates by source
    python bench/spotting.py --skip trained folds music --big --pdf-set 20 --speed 10
    python bench/spotting.py --split valid --skip folds music --feature-match  # with and without, same draws
    python bench/spotting.py --split valid --skip folds music --per-class      # global vs per-class thresholds

Protocol (issues 18, 27): drawings of ``--split`` (firefighting), exemplars drawn from the train
split, 1 per class, ``--draws`` seeded draws (seed = draw number): mean and 95% interval of COCO
AP50 and AP@[.5:.95] (pycocotools), per-class AP50, and counting (share of (drawing, class)
pairs with an exact count; mean absolute count error). Settings:

* trained classes: the main model, every class;
* ``--robustness``: the same on copies of the split made by ``robustness.transform`` (scan,
  scale 0.7x / 1.4x, turned 90 degrees, line weight +-1 px; seeded by image id, boxes carried
  exactly), exemplars from the unchanged train split; each with template matching as the
  reference row;
* held-out folds: each fold model (trained without its fold's classes) with exemplars and
  ground truth of its fold's classes only;
* template matching (cv2.matchTemplate, normalised cross-correlation, 3 scales x 4 turns, same
  exemplars, same NMS and box rule) as the reference row, on the first ``--template-draws``;
* music pages (muscima test split, exemplars from its train split), capped (``--music-pages``,
  ``--max-candidates``) so the run stays affordable.

The ink candidates of a drawing and their crops' features are computed once per model (cached
under ``--cache``); each exemplar draw then embeds its exemplars and adds its template evidence
(template.py; it depends on the exemplars). ``--tune`` scores every combination of
SCORING_GRID on valid (and its ``--robustness`` copies: the mean AP50 decides); ``--recall``
needs no model (with ``--feature-match`` it does: the feature source is then counted too).
``--feature-match`` (issue 27, feature_match.py) adds feature-map matching to every draw and
reports each setting with and without it on the same draws and candidates, with its mean
seconds per drawing (exemplar kernels made once per draw). ``--per-class`` (issue 27,
calibration.py) calibrates each draw's exemplar set once (the exemplars' split's other
annotated drawings, else the calibration sheet, through the pipeline) and counts with the global
threshold and with the per-class ones: exact counts, count MAE and the AP50 of the counted
detections (those at or above their class's threshold), with the calibration's seconds per draw;
where calibration rescaled some classes' boxes (``calibrate_boxes``), the per-class columns and
"AP50 (all), calibrated boxes" score the same candidates with those boxes. Speed and memory:
``--speed N`` (seconds per valid drawing, end to end, mean and median), ``--big`` (generated
14,000 x 9,900 and 10,000 x 10,000 px sheets, seconds and peak RSS of the ``symclr-spot``
process), ``--pdf-set N`` (an N-page generated PDF, one process against two). Without ``--model`` on disk, those three use ImageNet EfficientNet-lite0 (time
and memory only).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from symclr_ft.data.coco import ANNOTATIONS_FILE, load_coco  # noqa: E402
from symclr_ft.use.spot.robustness import SETTINGS  # noqa: E402
from symclr_ft.use.spot.config import SpotConfig  # noqa: E402
from symclr_ft.use.spot.drawings import DEFAULT_DPI, Drawing, list_drawings, open_drawing, open_rgb  # noqa: E402
from symclr_ft.use.spot.calibration import calibrate_for  # noqa: E402
from symclr_ft.use.spot.report import count_detections, count_thresholds, is_counted  # noqa: E402
from symclr_ft.use.spot.spotting import (  # noqa: E402
    Candidates, Exemplars, drawing_candidates, embed_exemplars, exemplars_for, model_and_size,
    pick_coco_exemplars, score_candidates, to_coco_results, with_feature_matches, with_templates,
)
from symclr_ft.use.spot.report import exact_count_share  # noqa: E402
from symclr_ft.use.spot.looks import grey_drawing  # noqa: E402

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


SCORING_ONLY = ("min_score", "count_score", "class_count_scores", "class_box_scales", "calibrate_boxes", "nms_iou",
                "box_mode", "class_agnostic_nms", "objectness_weight", "score_rule", "grey_looks", "grey_scoring")  # and every template* setting: none of them changes the ink candidates


def cached_candidates(net, model_path: Path, drawings: list[Drawing], image_size: int, cfg: SpotConfig,
                      cache: Path, objectness=None, tag: str = "") -> dict[int, Candidates]:
    """Candidates and crop features of every drawing, computed once per (model, settings)."""
    keyed = {k: v for k, v in asdict(cfg).items() if k not in SCORING_ONLY and not k.startswith("template")}
    if not cfg.adaptive_ink_threshold:  # the fixed threshold: the key of the candidates cached before the option
        del keyed["adaptive_ink_threshold"], keyed["min_ink_threshold"]
    stat = model_path.stat()
    key = hashlib.sha1(json.dumps([str(model_path), stat.st_size, stat.st_mtime, image_size, keyed, tag,
                                   [str(d.path) for d in drawings]], default=str).encode()).hexdigest()[:16]
    path = cache / f"cands-{key}.pt"
    if path.is_file():
        data = torch.load(path, weights_only=True)
        return {int(k): Candidates(v["boxes"], v["features"], v["objectness"]) for k, v in data.items()}
    out = {}
    start = time.time()
    for d in drawings:
        with torch.no_grad():
            c = drawing_candidates(net, open_drawing(d), image_size, cfg, objectness)
        out[d.image_id] = c
    print(f"  embedded candidates of {len(drawings)} drawings in {time.time() - start:.0f} s "
          f"({sum(c.boxes.shape[0] for c in out.values()) / max(1, len(out)):.0f} per drawing)", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({str(k): {"boxes": v.boxes, "features": v.features, "objectness": v.objectness}
                for k, v in out.items()}, path)
    return out


def drawing_looks(ex: Exemplars, drawings, rgbs: dict) -> dict[int, Exemplars]:
    """The exemplars each drawing is matched with, as symclr-spot chooses them per drawing
    (their grey looks on a grey drawing), decided once per draw rather than once per score."""
    return {d.image_id: exemplars_for(rgbs[d.image_id], ex) if d.image_id in rgbs else ex for d in drawings}


def templated(net, cands: dict[int, Candidates], drawings, rgbs: dict, looks: dict[int, Exemplars], image_size: int,
              cfg: SpotConfig) -> dict[int, Candidates]:
    """Each drawing's cached ink candidates with this exemplar draw's template evidence and
    template-only candidates, and with ``feature_match`` its feature-match evidence and
    candidates (they depend on the exemplars, so they are made per draw)."""
    if cfg.templates:
        with torch.no_grad():
            cands = {d.image_id: with_templates(net, rgbs[d.image_id], cands[d.image_id], looks[d.image_id],
                                                image_size, cfg)
                     for d in drawings}
    return feature_matched(net, cands, drawings, rgbs, looks, image_size, cfg)


def feature_matched(net, cands: dict[int, Candidates], drawings, rgbs: dict, looks: dict[int, Exemplars], image_size: int,
                    cfg: SpotConfig) -> dict[int, Candidates]:
    """``cands`` with feature-match evidence and candidates (unchanged without ``feature_match``);
    prints the mean seconds per drawing it took."""
    if not cfg.feature_match:
        return cands
    start, out = time.perf_counter(), {}
    with torch.no_grad():
        for d in drawings:
            out[d.image_id] = with_feature_matches(net, rgbs[d.image_id], cands[d.image_id], looks[d.image_id],
                                                   image_size, cfg)
    seconds = (time.perf_counter() - start) / max(1, len(drawings))
    added = sum(int(c.from_features.sum()) for c in out.values() if c.from_features is not None)
    print(f"  feature matching: {seconds:.2f} s per drawing (mean of {len(drawings)}), "
          f"{added / max(1, len(drawings)):.1f} candidates added per drawing", flush=True)
    FEATURE_SECONDS.append(seconds)
    return out


FEATURE_SECONDS: list[float] = []  # mean seconds per drawing of feature matching, one per draw


def drawing_pixels(drawings, cfg: SpotConfig) -> dict[int, np.ndarray]:
    """RGB arrays of the drawings, kept for template and feature matching of every draw and to
    tell grey drawings (``grey_looks``); none without any of them."""
    needed = cfg.templates or cfg.feature_match or cfg.grey_looks
    return {d.image_id: np.asarray(open_drawing(d)) for d in drawings} if needed else {}


def robust_split(gt_json: Path, setting: str, cache: Path) -> Path:
    """The split of ``gt_json`` under a robustness setting (``robustness.transform``, seeded by
    each image's id; docs in that module), written once as PNG drawings and a COCO json under
    ``cache/robustness/<split>-<setting>/``. Returns the json."""
    from symclr_ft.use.spot.robustness import transform

    out = cache / "robustness" / f"{gt_json.parent.name}-{setting}"
    if (out / ANNOTATIONS_FILE).is_file():
        return out / ANNOTATIONS_FILE
    coco = json.loads(gt_json.read_text())
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for im in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        image, boxes = transform(open_rgb(gt_json.parent / im["file_name"]), [a["bbox"] for a in anns], setting, im["id"])
        im.update(file_name=Path(im["file_name"]).stem + ".png", width=image.width, height=image.height)
        image.save(tmp / im["file_name"])
        for a, box in zip(anns, boxes):
            a.update(bbox=[round(v, 2) for v in box], area=round(box[2] * box[3], 2))
    (tmp / ANNOTATIONS_FILE).write_text(json.dumps(coco))
    tmp.rename(out)
    return out / ANNOTATIONS_FILE


def draw_results(cands: dict[int, Candidates], drawings, ex: Exemplars, cfg: SpotConfig,
                 looks: dict[int, Exemplars], rgbs: dict) -> list[dict]:
    """COCO results of one exemplar draw, each drawing scored against its ``looks``
    (:func:`drawing_looks`) and its pixels ``rgbs`` (the drawing's own exemplars; a grey
    drawing with ``grey_scoring``), as symclr-spot scores it."""
    results = []
    for d in drawings:
        rgb = rgbs[d.image_id]
        dets = score_candidates(cands[d.image_id], looks[d.image_id], cfg.for_drawing(grey_drawing(rgb)), rgb)
        results.extend(to_coco_results(dets, d.image_id, ex))
    return results


def counting(results: list[dict], drawings, cat_ids: list[int], count_score: float,
             per_class: dict[int, float] | None = None) -> tuple[float, float]:
    """Exact-count share and mean absolute count error over (drawing, class) pairs of ``cat_ids``
    (``per_class``: category id -> its own threshold, as symclr-spot counts)."""
    counts = count_detections([r for r in results if r["category_id"] in set(cat_ids)], count_score, per_class)
    truth = [replace(d, truth=[t for t in d.truth if t[0] in set(cat_ids)]) for d in drawings]
    fake = Exemplars(torch.zeros(0), torch.zeros(0), torch.zeros(0), [str(c) for c in cat_ids], cat_ids)
    return exact_count_share(truth, fake, counts)


def run_draw(cands: dict[int, Candidates], drawings, ex: Exemplars, cfg: SpotConfig, gt_json: Path,
             cat_ids: list[int], looks: dict[int, Exemplars], rgbs: dict, calibration=None) -> dict:
    """One exemplar draw scored: AP, per-class AP, counting; with ``calibration`` (of this
    draw's exemplars) also counting with its per-class thresholds, and both thresholds' counted
    AP50 (``--per-class``)."""
    results = draw_results(cands, drawings, ex, cfg, looks, rgbs)
    image_ids = [d.image_id for d in drawings]
    scores = coco_scores(gt_json, results, cat_ids, image_ids)
    exact, mae = counting(results, drawings, cat_ids, cfg.count_score)
    row = {**scores, "exact_counts": exact, "count_mae": mae, "detections": len(results)}
    if calibration is not None:
        per_class = count_thresholds(replace(cfg, class_count_scores=calibration.thresholds), ex)
        counted = [r for r in results if is_counted(r, cfg.count_score)]
        if calibration.box_scales:  # the calibrated box sizes: the same candidates, boxes rescaled
            results = draw_results(cands, drawings, ex, replace(cfg, class_box_scales=calibration.box_scales),
                                   looks, rgbs)
        exact_pc, mae_pc = counting(results, drawings, cat_ids, cfg.count_score, per_class)
        counted_pc = [r for r in results if is_counted(r, cfg.count_score, per_class)]
        calibrated = coco_scores(gt_json, results, cat_ids, image_ids)
        row.update(exact_counts_per_class=exact_pc, count_mae_per_class=mae_pc,
                   ap50_per_class=calibrated["ap50"], per_class_ap50_calibrated=calibrated["per_class_ap50"],
                   counted_ap50=coco_scores(gt_json, counted, cat_ids, image_ids)["ap50"],
                   counted_ap50_per_class=coco_scores(gt_json, counted_pc, cat_ids, image_ids)["ap50"],
                   calibration_s=calibration.seconds, own_thresholds=len(calibration.thresholds),
                   box_scales=len(calibration.box_scales))
    return row


# --------------------------------------------------------------------------- template matching


def template_exemplars(picked: list[tuple]) -> list[tuple[int, np.ndarray]]:
    """(category id, grey template) of each exemplar box, in its four quarter turns."""
    out = []
    for cat_id, _name, path, bbox in picked:
        grey = np.asarray(open_rgb(path).convert("L"))
        x, y, w, h = (int(round(v)) for v in bbox)
        patch = grey[max(0, y) : y + max(1, h), max(0, x) : x + max(1, w)]
        out.extend((cat_id, np.ascontiguousarray(np.rot90(patch, k))) for k in range(4))
    return out


def template_detections(grey: np.ndarray, templates, scales=(0.9, 1.0, 1.1), peak=0.3, cfg=SpotConfig()) -> list[tuple]:
    """Multi-scale normalised cross-correlation; local maxima above ``peak``; same NMS rule as
    symclr-spot. Returns (box xyxy, score, category id)."""
    import cv2
    from torchvision.ops import nms

    boxes, scores, cats = [], [], []
    for cat_id, template in templates:
        for s in scales:
            t = cv2.resize(template, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s != 1.0 else template
            th, tw = t.shape
            if th < 3 or tw < 3 or th > grey.shape[0] or tw > grey.shape[1] or t.std() < 1e-3:
                continue
            r = cv2.matchTemplate(grey, t, cv2.TM_CCOEFF_NORMED)
            local = (r == cv2.dilate(r, np.ones((5, 5), np.uint8))) & (r >= peak)
            ys, xs = np.nonzero(local)
            boxes += [[x, y, x + tw, y + th] for x, y in zip(xs.tolist(), ys.tolist())]
            scores += r[ys, xs].tolist()
            cats += [cat_id] * len(xs)
    if not boxes:
        return []
    b, sc = torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores)
    keep = nms(b, sc, cfg.nms_iou).tolist()
    return [(boxes[i], scores[i], cats[i]) for i in keep]


def template_draw(drawings, picked, gt_json: Path, cat_ids: list[int], greys: dict, cfg: SpotConfig) -> dict:
    templates = template_exemplars(picked)
    results = []
    for d in drawings:
        for (x0, y0, x1, y1), score, cat in template_detections(greys[d.image_id], templates, cfg=cfg):
            results.append({"image_id": d.image_id, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    scores = coco_scores(gt_json, results, cat_ids, [d.image_id for d in drawings])
    exact, mae = counting(results, drawings, cat_ids, cfg.count_score)
    return {**scores, "exact_counts": exact, "count_mae": mae, "detections": len(results)}


# --------------------------------------------------------------------------- settings


def fold_settings(summary: Path, names_by_id: dict[int, str]) -> list[tuple[int, Path, set[int]]]:
    """(fold, model file, COCO ids of its held-out classes) for each fold model present."""
    if not summary.is_file():
        return []
    ids_by_name = {n: i for i, n in names_by_id.items()}
    out = []
    for fold in json.loads(summary.read_text())["folds"]:
        model = summary.parent / f"fold{fold['fold']}" / "model.pt"
        if model.is_file():
            out.append((fold["fold"], model, {ids_by_name[n] for n in fold["classes"] if n in ids_by_name}))
    return out


def evaluate_setting(name: str, model: Path, drawings, exemplar_json: Path, gt_json: Path, classes: set[int],
                     cfg: SpotConfig, draws: int, cache: Path, excluded: set[int] = frozenset(),
                     template_draws: int = 0, keep_per_draw: bool = False, objectness_drawings: int = 30,
                     per_class: bool = False) -> dict:
    """One row of the results table: our method over ``draws`` exemplar draws (and template
    matching over the first ``template_draws``), restricted to ``classes``; ``per_class``: each
    draw's exemplars calibrated once, its detections also counted with their per-class thresholds."""
    from symclr_ft.use.spot.objectness import fit_objectness

    net, size, _ = model_and_size(model, None)
    start = time.time()
    objectness = fit_objectness(exemplar_json, cfg, max_drawings=objectness_drawings, seed=0,
                                ignore_categories=set(excluded))
    fit_s = time.time() - start
    if objectness is not None:
        cfg = replace(cfg, box_padding=objectness.box_padding)
        print(f"  {name}: box padding {cfg.box_padding} fitted on {exemplar_json.parent.name}", flush=True)
    cands = cached_candidates(net, model, drawings, size, cfg, cache, objectness, tag=f"{exemplar_json}|{sorted(excluded)}")
    cat_ids = sorted(classes)
    ours, tm, plain = [], [], []
    greys = {d.image_id: np.asarray(open_rgb(d.path).convert("L")) for d in drawings} if template_draws else {}
    rgbs = drawing_pixels(drawings, cfg)
    without = replace(cfg, feature_match=False)  # the reference row of --feature-match, same draws
    del FEATURE_SECONDS[:]
    for seed in range(draws):
        picked = [p for p in pick_coco_exemplars(exemplar_json, 1, seed) if p[0] in classes]
        ex = embed_exemplars(net, picked, size, cfg)
        calibration = calibrate_for(net, ex, size, cfg, objectness, seed, exemplar_json,
                                    {p[2] for p in picked}) if per_class else None
        looks = drawing_looks(ex, drawings, rgbs)
        base = templated(net, cands, drawings, rgbs, looks, size, without)
        if cfg.feature_match:
            plain.append(run_draw(base, drawings, ex, without, gt_json, cat_ids, looks, rgbs))
        ours.append(run_draw(feature_matched(net, base, drawings, rgbs, looks, size, cfg), drawings, ex, cfg, gt_json,
                             cat_ids, looks, rgbs, calibration))
        if seed < template_draws:
            tm.append(template_draw(drawings, picked, gt_json, cat_ids, greys, cfg))
        print(f"  {name} draw {seed}: AP50 {ours[-1]['ap50']:.3f}" + (f", template {tm[-1]['ap50']:.3f}" if seed < template_draws else "")
              + (f", without feature matching {plain[-1]['ap50']:.3f}" if plain else "")
              + (f"; exact counts {ours[-1]['exact_counts']:.3f} global, {ours[-1]['exact_counts_per_class']:.3f} "
                 f"per-class, AP50 {ours[-1]['ap50_per_class']:.3f} with calibrated boxes ({calibration.summary()}; "
                 f"box scales {calibration.box_scales})"
                 if calibration else ""), flush=True)
    return {"name": name, "model": str(model), "objectness_fit_s": fit_s, "ours": summarise(ours, keep_per_draw),
            "template": summarise(tm, keep_per_draw) if tm else None,
            "ours_on_template_draws": summarise(ours[:template_draws], False) if tm else None,
            "ours_without_feature_match": summarise(plain, keep_per_draw) if plain else None,
            "feature_match_s_per_drawing": float(np.mean(FEATURE_SECONDS)) if FEATURE_SECONDS else None}


PER_CLASS_KEYS = ("exact_counts_per_class", "count_mae_per_class", "ap50_per_class", "counted_ap50",
                  "counted_ap50_per_class", "calibration_s", "own_thresholds", "box_scales")  # --per-class


def summarise(runs: list[dict], keep: bool) -> dict:
    out = {"draws": len(runs)}
    for key in ("ap50", "ap", "exact_counts", "count_mae", *[k for k in PER_CLASS_KEYS if runs and k in runs[0]]):
        out[key] = mean_ci([r[key] for r in runs])
    for key in ("per_class_ap50", "per_class_ap50_calibrated"):  # each class's AP50, mean over draws
        if key == "per_class_ap50" or (runs and key in runs[0]):
            classes = sorted({c for r in runs for c in r[key]})
            out[key] = {c: float(np.mean([r[key].get(c, 0.0) for r in runs])) for c in classes}
    if keep:
        out["runs"] = runs
    return out


SCORING_GRID = {  # what --tune chooses between (on valid)
    "objectness_weight": (0.0, 0.5, 1.0),
    "box_mode": ("exemplar", "candidate"),
    "nms_iou": (0.3, 0.5),
    "score_rule": ("sum", "max"),
    "template_weight": (0.0, 0.25, 0.5, 0.75, 1.0),
    "template_floor": (0.3, 0.5),
    "feature_match_weight": (0.0, 0.25, 0.5),  # only with --feature-match
}
COUNT_SCORES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def scoring_grid(cfg: SpotConfig, narrowed: dict | None = None) -> list[dict]:
    """Every combination of SCORING_GRID, with the values of ``narrowed`` (``--grid``) in place
    of its own for those keys (template rule and floor only once where the template weight is
    0: they do not matter there; none of the template keys without templates)."""
    import itertools

    grid = {**SCORING_GRID, **(narrowed or {})}
    keys = list(grid)
    out, seen = [], set()
    for values in itertools.product(*grid.values()):
        combo = dict(zip(keys, values))
        if combo["template_weight"] == 0 or not cfg.templates:
            combo.update(score_rule="sum", template_floor=0.5, template_weight=0.0)
        if not cfg.feature_match:
            del combo["feature_match_weight"]
        key = tuple(combo.values())
        if key not in seen:
            seen.add(key)
            out.append(combo)
    return out


def tune(args, cfg: SpotConfig) -> list[dict]:
    """Scoring settings on the VALID split (main model, all classes, ``--draws`` draws), and on
    its ``--robustness`` copies if given (the mean AP50 over clean and those is what counts):
    SCORING_GRID, and the count threshold for exact counts."""
    from symclr_ft.use.spot.objectness import fit_objectness

    exemplar_json = args.data / "train" / "_annotations.coco.json"
    objectness = fit_objectness(exemplar_json, cfg, seed=0)
    cfg = replace(cfg, box_padding=objectness.box_padding)
    print(f"box padding {cfg.box_padding}", flush=True)
    net, size, _ = model_and_size(args.model, None)
    clean = args.data / "valid" / "_annotations.coco.json"
    splits = [("clean", clean)] + [(s, robust_split(clean, s, args.cache)) for s in args.robustness]
    prepared = []  # (name, gt json, drawings, class ids, per-draw (exemplars, looks, candidates), pixels)
    for name, gt_json in splits:
        drawings = list_drawings(gt_json)
        cands = cached_candidates(net, args.model, drawings, size, cfg, args.cache, objectness, tag=f"{exemplar_json}|[]")
        rgbs = drawing_pixels(drawings, cfg)
        draws = []
        for seed in range(args.draws):
            ex = embed_exemplars(net, pick_coco_exemplars(exemplar_json, 1, seed), size, cfg)
            looks = drawing_looks(ex, drawings, rgbs)
            draws.append((ex, looks, templated(net, cands, drawings, rgbs, looks, size, cfg)))
        prepared.append((name, gt_json, drawings, sorted({c for d in drawings for c, _ in d.truth}), draws, rgbs))
    rows = []
    for combo in scoring_grid(cfg, grid_overrides(args.grid)):
        c = replace(cfg, **combo, grey_scoring={})  # one setting for every look: each look's columns show its best
        scored = []  # per split: the draws' results and AP (they do not depend on the count threshold)
        for name, gt_json, drawings, cat_ids, draws, rgbs in prepared:
            per_draw = [draw_results(cands, drawings, ex, c, looks, rgbs) for ex, looks, cands in draws]
            scored.append((name, drawings, cat_ids, per_draw,
                           [coco_scores(gt_json, r, cat_ids, [d.image_id for d in drawings]) for r in per_draw]))
        for count_score in args.count_scores or COUNT_SCORES:
            row = {**combo, "count_score": count_score}
            for name, drawings, cat_ids, per_draw, aps in scored:
                row[name] = summarise([{**ap, **dict(zip(("exact_counts", "count_mae"),
                                                         counting(r, drawings, cat_ids, count_score)))}
                                       for r, ap in zip(per_draw, aps)], False)
            for key in ("ap50", "ap", "exact_counts", "count_mae"):  # the mean over clean and copies
                row[key] = [float(np.mean([row[name][key][0] for name, *_ in prepared])), 0.0]
            rows.append(row)
            print("  " + " ".join(f"{k}={v}" for k, v in combo.items()) + f" count>={count_score}: AP50 "
                  f"{row['ap50'][0]:.3f} exact {row['exact_counts'][0]:.3f} ("
                  + ", ".join(f"{name} {row[name]['ap50'][0]:.3f}" for name, *_ in prepared) + ")", flush=True)
    return rows


def _recall(boxes: torch.Tensor, truth: torch.Tensor) -> int:
    """Ground-truth boxes (x0, y0, x1, y1) that some box matches at IoU >= 0.5."""
    from torchvision.ops import box_iou

    if truth.shape[0] == 0 or boxes.shape[0] == 0:
        return 0
    return int((box_iou(truth, boxes).max(dim=1).values >= 0.5).sum())


def candidate_recall(args, cfg: SpotConfig, gt_json: Path, objectness) -> dict:
    """Candidates by source on the split of ``gt_json`` (no model needed): the share of
    ground-truth boxes that the ink candidates (objectness-selected, as embedded), the template
    candidates and their union match at IoU >= 0.5, candidates per drawing, seconds per drawing
    of each source; and the template peaks alone as a detector (AP50, class = the peak's
    exemplar). Exemplars: draw 0 (seed 0), 1 per class, from train."""
    from symclr_ft.use.spot.candidates import candidate_boxes_with_descriptors, pad_boxes, select_candidates
    from symclr_ft.use.spot.spotting import picked_templates
    from symclr_ft.use.spot.template import match_templates

    exemplar_json = args.data / "train" / "_annotations.coco.json"
    cfg = replace(cfg, box_padding=objectness.box_padding)
    picked = pick_coco_exemplars(exemplar_json, 1, 0)
    templates = picked_templates(picked, cfg)
    cat_ids = sorted({p[0] for p in picked})
    drawings = list_drawings(gt_json)[: args.max_drawings or None]
    sources = ["ink", "template", "feature"] if cfg.feature_match else ["ink", "template"]
    found = {k: 0 for k in [*sources, "union"]}
    counts = {k: 0 for k in [*sources, "union"]}
    seconds = {k: 0.0 for k in sources}
    kernels = None
    if cfg.feature_match:  # the one source that needs the model: its exemplar kernels, made once
        from symclr_ft.use.spot.feature_match import match_features

        model, extra = bench_model(args)
        net, size, _ = model_and_size(model, 96 if extra else None)
        start = time.perf_counter()
        kernels = embed_exemplars(net, picked, size, cfg).kernels
        seconds_kernels = time.perf_counter() - start
    truth_total, results = 0, []
    for d in drawings:
        rgb = np.asarray(open_rgb(d.path))
        h, w = rgb.shape[:2]
        truth = torch.tensor([[x, y, x + bw, y + bh] for _, (x, y, bw, bh) in d.truth]).reshape(-1, 4)
        start = time.perf_counter()
        ink, desc = candidate_boxes_with_descriptors(rgb, cfg)
        ink = pad_boxes(select_candidates(ink, desc, objectness, w, h, cfg)[0], cfg.box_padding, w, h)
        middle = time.perf_counter()
        ev = match_templates(rgb, templates, ink, cfg)
        extra = ev.extra
        seconds["ink"] += middle - start
        seconds["template"] += time.perf_counter() - middle
        alone = match_templates(rgb, templates, torch.zeros((0, 4)), cfg).extra
        by_source = [("ink", ink), ("template", alone)]
        union = torch.cat([ink, extra])
        if kernels is not None:
            start = time.perf_counter()
            with torch.no_grad():
                union = torch.cat([union, match_features(net, rgb, kernels, union, cfg).extra])
            seconds["feature"] += time.perf_counter() - start
            with torch.no_grad():
                by_source.append(("feature", match_features(net, rgb, kernels, torch.zeros((0, 4)), cfg).extra))
        for name, boxes in (*by_source, ("union", union)):
            found[name] += _recall(boxes, truth)
            counts[name] += boxes.shape[0]
        truth_total += truth.shape[0]
        keep = torchvision_nms(ev.peaks, ev.peak_scores, cfg.nms_iou)  # one class per place
        for (x0, y0, x1, y1), score, label in zip(ev.peaks[keep].tolist(), ev.peak_scores[keep].tolist(),
                                                  ev.peak_labels[keep].tolist()):
            results.append({"image_id": d.image_id, "category_id": cat_ids[label],
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    present = sorted({c for d in drawings for c, _ in d.truth} & set(cat_ids))
    ap = coco_scores(gt_json, results, present, [d.image_id for d in drawings])
    n = max(1, len(drawings))
    return {"split": args.split, "drawings": len(drawings), "boxes": truth_total, "templates": len(templates.items),
            "recall": {k: v / max(1, truth_total) for k, v in found.items()},
            "candidates_per_drawing": {k: v / n for k, v in counts.items()},
            "seconds_per_drawing": {k: v / n for k, v in seconds.items()},
            "template_peaks_alone": {"ap50": ap["ap50"], "ap": ap["ap"]},
            **({"feature_kernels_s": seconds_kernels} if kernels is not None else {}),
            "config": {k: v for k, v in asdict(cfg).items() if k.startswith(("template", "feature"))}}


def torchvision_nms(boxes, scores, iou):
    from torchvision.ops import nms

    return nms(boxes, scores, iou)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--tune", action="store_true", help="grid of scoring settings on the valid split")
    p.add_argument("--model", type=Path, default=Path("runs/fewshot_lite0_cpu/model.pt"))
    p.add_argument("--folds", type=Path, default=Path("runs/novel/summary.json"))
    p.add_argument("--data", type=Path, default=DATA / "firefighting")
    p.add_argument("--music", type=Path, default=DATA / "muscima")
    p.add_argument("--music-pages", type=int, default=4, help="test pages of the music set (cost cap)")
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--template-draws", type=int, default=3, help="template matching is slow: first N draws")
    p.add_argument("--skip", nargs="*", default=[], choices=["trained", "folds", "music"])
    p.add_argument("--cache", type=Path, default=Path("runs/spotting/cache"))
    p.add_argument("--out", type=Path, default=Path("runs/spotting"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--choose-from", type=Path, default=None,
                   help="tune_valid.json: use its best scoring settings (AP50, then exact counts)")
    p.add_argument("--robustness", nargs="*", default=[], choices=[*SETTINGS, "all"],
                   help="also these copies of the split (robustness.transform; 'all': every one), each with "
                   "template matching as the reference row; with --tune, valid's copies count in the choice")
    p.add_argument("--speed", type=int, default=0, help="also time N valid drawings end to end")
    p.add_argument("--big", action="store_true",
                   help="also generated 14,000 x 9,900 and 10,000 x 10,000 px sheets end to end: time and peak RSS")
    p.add_argument("--pdf-set", type=int, default=0, metavar="PAGES",
                   help="also a generated PDF of PAGES pages, one process against two: time, identical outputs")
    p.add_argument("--recall", action="store_true",
                   help="only candidate recall by source (ink, template, union) on --split; no model needed")
    p.add_argument("--max-drawings", type=int, default=0, help="--recall: the first N drawings (0: all)")
    p.add_argument("--feature-match", action="store_true",
                   help="also feature-map matching (feature_match.py): each setting with and without it on the "
                   "same draws; with --recall, the feature source (needs --model); with --tune, its weight")
    p.add_argument("--per-class", action="store_true",
                   help="also count with per-class thresholds from each draw's exemplars (calibration.py, once per "
                   "draw): exact counts, count MAE and counted AP50 against the global threshold, same detections")
    p.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2",
                   help="--tune: these values of a grid key in place of the grid's own, e.g. box_mode=exemplar")
    p.add_argument("--count-scores", nargs="*", type=float, default=[], metavar="T",
                   help=f"--tune: these count thresholds for exact counts in place of {', '.join(map(str, COUNT_SCORES))}")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="SpotConfig overrides, e.g. template_min_side=8 template_scales=0.8,1.0,1.25 (repeatable; "
                   "the last value of a key counts)")
    return p.parse_args(argv)


def grid_overrides(pairs: list[str]) -> dict:
    """``--grid KEY=V1,V2`` pairs as SCORING_GRID values, each parsed as its SpotConfig field's type."""
    out = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if key not in SCORING_GRID:
            raise SystemExit(f"--grid {pair}: not a key of the tuning grid ({', '.join(SCORING_GRID)})")
        out[key] = tuple(config_overrides([f"{key}={v}"])[key] for v in text.split(","))
    return out


def config_overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as SpotConfig fields, each value parsed as its field's type (tuples
    comma-separated, dicts as JSON)."""
    defaults = asdict(SpotConfig())
    out = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if key not in defaults:
            raise SystemExit(f"--set {pair}: no SpotConfig field {key!r}")
        default = defaults[key]
        if isinstance(default, dict):  # JSON, e.g. grey_scoring={} or grey_scoring={"template_weight":1.0}
            out[key] = json.loads(text)
        elif isinstance(default, tuple):
            out[key] = tuple(type(default[0])(v) for v in text.split(","))
        elif isinstance(default, bool):
            out[key] = text.lower() in ("1", "true", "yes")
        else:
            out[key] = type(default)(text)
    return out


def choose(rows: list[dict]) -> dict:
    """Best valid setting: highest mean AP50 (the scoring keys of SCORING_GRID that the rows
    hold), then among those the count threshold with the most exact counts."""
    keys = [k for k in SCORING_GRID if k in rows[0]]
    best_ap = max(rows, key=lambda r: r["ap50"][0])
    same = [r for r in rows if all(r[k] == best_ap[k] for k in keys)]
    best = max(same, key=lambda r: r["exact_counts"][0])
    return {k: best[k] for k in [*keys, "count_score"]}


def speed(args, cfg: SpotConfig, n: int) -> dict:
    """Seconds per drawing end to end (decode, candidates, embedding, scoring) on ``n`` valid
    drawings, exemplars and objectness model prepared once beforehand (timed apart)."""
    from symclr_ft.use.spot.spotting import spot_drawing
    from symclr_ft.use.spot.objectness import fit_objectness

    exemplar_json = args.data / "train" / "_annotations.coco.json"
    model, extra = bench_model(args)
    net, size, _ = model_and_size(model, 96 if extra else None)
    t0 = time.perf_counter()
    ex = embed_exemplars(net, pick_coco_exemplars(exemplar_json, 1, 0), size, cfg)
    t1 = time.perf_counter()
    objectness = fit_objectness(exemplar_json, cfg, seed=0)
    cfg = replace(cfg, box_padding=objectness.box_padding)
    t2 = time.perf_counter()
    drawings = list_drawings(args.data / "valid" / "_annotations.coco.json")[:n]
    times, sizes = [], []
    for d in drawings:
        start = time.perf_counter()
        with torch.no_grad():
            spot_drawing(net, d, ex, size, cfg, objectness)
        times.append(time.perf_counter() - start)
        sizes.append(open_drawing(d).size)
    return {"drawings": n, "median_s": float(np.median(times)), "mean_s": float(np.mean(times)),
            "max_s": float(np.max(times)), "exemplars_s": t1 - t0, "objectness_fit_s": t2 - t1,
            "mean_size": [float(np.mean([w for w, _ in sizes])), float(np.mean([h for _, h in sizes]))],
            "templates": cfg.templates, "model": str(model), "threads": torch.get_num_threads(),
            "load_at_start": os.getloadavg()[0]}


def pdf_set(args, cfg: SpotConfig, pages: int = 20) -> dict:
    """A ``pages``-page PDF of generated 800 x 700 drawings (lossless palette pages at 150
    dpi), spotted by ``symclr-spot`` with one process and with two (torchrun): seconds of each,
    whether detections.json and counts.csv are identical, and pages done (each once)."""
    import random
    import subprocess
    import tempfile

    from PIL import Image

    from symclr_ft.data import synth

    model, extra = bench_model(args)
    tmp = Path(tempfile.mkdtemp(prefix="spot_pdf_", dir=args.out))
    exemplars = synth.write_synthetic_coco(tmp / "exemplars", classes=12, drawings_per_split={"train": 6},
                                           image_size=(640, 560), seed=0) / "train"
    designs, rng = synth.symbol_designs(12), random.Random(1)
    sheets = [synth.draw_drawing(rng, designs, rng.choices(range(12), k=rng.randint(10, 20)), (800, 700))[0]
              .convert("P", palette=Image.Palette.ADAPTIVE, colors=128) for _ in range(pages)]
    (tmp / "set").mkdir()
    sheets[0].save(tmp / "set" / "set.pdf", save_all=True, append_images=sheets[1:], resolution=DEFAULT_DPI)
    row = {"pages": pages, "model": str(model)}
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for name, launcher in (("one", [sys.executable, "-m"]),
                           ("two", [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "-m"])):
        cmd = [*launcher, "symclr_ft.use.spot.spotting", "--model", str(model), "--exemplars", str(exemplars),
               "--drawings", str(tmp / "set"), "--out", str(tmp / name), *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        row[f"{name}_seconds"] = time.perf_counter() - start
        row[f"{name}_returncode"] = proc.returncode
        row[f"{name}_stderr"] = proc.stderr[-400:] if proc.returncode else ""
    same = all((tmp / "one" / f).read_text() == (tmp / "two" / f).read_text() for f in ("detections.json", "counts.csv"))
    with open(tmp / "two" / "counts.csv") as f:  # the takeoff: every page once, per class
        listed = [(r["page"], r["class"]) for r in csv.DictReader(f)]
    row.update(identical=same, pages_in_takeoff=len({p for p, _ in listed}), rows_unique=len(listed) == len(set(listed)))
    print(f"  PDF set of {pages} pages: one process {row['one_seconds']:.0f} s, two {row['two_seconds']:.0f} s, "
          f"identical outputs: {same}", flush=True)
    shutil.rmtree(tmp)
    return row


BIG_SHEETS = ((14_000, 9_900), (10_000, 10_000))  # an A0 sheet at 300 dpi; issue 18's square
SHEET_CELL = (1_400, 990)  # one generated drawing of the sheet


def generated_sheet(folder: Path, width: int, height: int, seed: int = 0) -> tuple[Path, Path, int]:
    """A large sheet of generated drawings (``synth.draw_drawing`` cells of SHEET_CELL, 10-20
    symbols each, wires and text), and a generated COCO split whose 12 classes are the sheet's
    (the exemplars). Returns (drawings folder, exemplar split, symbols on the sheet)."""
    import random

    from PIL import Image

    from symclr_ft.data import synth

    exemplars = synth.write_synthetic_coco(folder / "exemplars", classes=12, drawings_per_split={"train": 6},
                                           image_size=(640, 560), seed=seed) / "train"
    designs, rng = synth.symbol_designs(12), random.Random(seed)
    sheet = Image.new("RGB", (width, height), synth.BACKGROUND)
    symbols = 0
    for y in range(0, height - SHEET_CELL[1] + 1, SHEET_CELL[1]):
        for x in range(0, width - SHEET_CELL[0] + 1, SHEET_CELL[0]):
            cell, boxes = synth.draw_drawing(rng, designs, rng.choices(range(12), k=rng.randint(10, 20)), SHEET_CELL)
            sheet.paste(cell, (x, y))
            symbols += len(boxes)
    (folder / "drawings").mkdir()
    sheet.save(folder / "drawings" / f"sheet-{width}x{height}.png", compress_level=1)
    return folder / "drawings", exemplars, symbols


def bench_model(args) -> tuple[Path, list[str]]:
    """The model for speed and memory runs: ``--model`` when it exists, else EfficientNet-lite0
    with its ImageNet weights (features untrained for symbols: time and memory only) at 96 px."""
    if args.model.is_file():
        return args.model, []
    from symclr_ft.config import ModelConfig
    from symclr_ft.models.backbones import build_model, save_model_file

    path = args.cache / "imagenet_lite0" / "model.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        net = build_model(ModelConfig(arch="tf_efficientnet_lite0", init="efficientnet_lite0", input_norm="imagenet"))
        save_model_file(net, path, epoch=0)
    print(f"  {args.model} not found: ImageNet EfficientNet-lite0 at 96 px (time and memory only)", flush=True)
    return path, ["--image-size", "96"]


def big_drawing(args, cfg: SpotConfig) -> list[dict]:
    """Each of BIG_SHEETS, generated, spotted end to end by ``symclr-spot`` in a child process
    (2 threads): seconds, and the child's peak RSS from the kernel (``os.wait4``)."""
    import subprocess
    import tempfile

    model, extra = bench_model(args)
    rows = []
    for width, height in BIG_SHEETS:
        tmp = Path(tempfile.mkdtemp(prefix="spot_big_", dir=args.out))
        drawings, exemplars, symbols = generated_sheet(tmp, width, height)
        cmd = [sys.executable, "-m", "symclr_ft.use.spot.spotting", "--model", str(model), "--exemplars",
               str(exemplars), "--drawings", str(drawings), "--out", str(tmp / "out"), *extra]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
        start = time.perf_counter()
        with open(tmp / "stdout.txt", "w") as out, open(tmp / "stderr.txt", "w") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
            _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        found = json.loads((tmp / "out" / "detections.json").read_text()) if (tmp / "out").is_dir() else []
        rows.append({"width": width, "height": height, "symbols": symbols, "returncode": os.waitstatus_to_exitcode(status),
                     "seconds": seconds, "peak_rss_gib": usage.ru_maxrss / 2**20, "cpu_s": usage.ru_utime + usage.ru_stime,
                     "detections": len(found), "counted": sum(r["score"] >= cfg.count_score for r in found),
                     "model": str(model), "stdout": (tmp / "stdout.txt").read_text()[-600:],
                     "stderr": (tmp / "stderr.txt").read_text()[-600:]})
        print(f"  big sheet {width}x{height}: {seconds:.0f} s, peak RSS {rows[-1]['peak_rss_gib']:.2f} GiB, "
              f"{len(found)} detections ({symbols} symbols drawn)", flush=True)
        shutil.rmtree(tmp)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if "all" in args.robustness:
        args.robustness = list(SETTINGS)
    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = SpotConfig()
    if args.choose_from:
        cfg = replace(cfg, **choose(json.loads(args.choose_from.read_text())))
        print(f"settings chosen on valid: {choose(json.loads(args.choose_from.read_text()))}", flush=True)
    cfg = replace(cfg, **config_overrides(args.set))
    if args.feature_match:
        cfg = replace(cfg, feature_match=True)
    if args.recall:
        from symclr_ft.use.spot.objectness import fit_objectness

        objectness = fit_objectness(args.data / "train" / "_annotations.coco.json", cfg, seed=0)
        clean = args.data / args.split / "_annotations.coco.json"
        found = {name: candidate_recall(args, cfg, gt, objectness) for name, gt in
                 [("clean", clean)] + [(r, robust_split(clean, r, args.cache)) for r in args.robustness]}
        (args.out / f"recall_{args.split}.json").write_text(json.dumps(found, indent=1))
        print(json.dumps(found, indent=1))
        return 0
    if args.tune:
        rows = tune(args, cfg)
        (args.out / "tune_valid.json").write_text(json.dumps(rows, indent=1))
        return 0
    report = {"command": " ".join(sys.argv), "split": args.split, "config": asdict(cfg), "settings": []}
    exemplar_json = args.data / "train" / "_annotations.coco.json"
    gt_json = args.data / args.split / "_annotations.coco.json"
    drawings = list_drawings(gt_json)
    present = {c for d in drawings for c, _ in d.truth}
    if "trained" not in args.skip:
        report["settings"].append(evaluate_setting("trained classes", args.model, drawings, exemplar_json, gt_json, present,
                                                   cfg, args.draws, args.cache, template_draws=args.template_draws,
                                                   per_class=args.per_class))
        (args.out / f"spotting_{args.split}.json").write_text(json.dumps(report, indent=1))
    for setting in args.robustness:
        robust_json = robust_split(gt_json, setting, args.cache)
        report["settings"].append(evaluate_setting(
            f"trained classes, {setting}", args.model, list_drawings(robust_json), exemplar_json, robust_json,
            present, cfg, args.draws, args.cache, template_draws=args.template_draws, per_class=args.per_class))
        (args.out / f"spotting_{args.split}.json").write_text(json.dumps(report, indent=1))
    if "folds" not in args.skip:
        names = {c.id: c.name for c in load_coco(gt_json).categories.values()}
        for fold, model, classes in fold_settings(args.folds, names):
            report["settings"].append(evaluate_setting(f"held-out fold {fold}", model, drawings, exemplar_json, gt_json,
                                                       classes & present, cfg, args.draws, args.cache, excluded=classes,
                                                       per_class=args.per_class))
            (args.out / f"spotting_{args.split}.json").write_text(json.dumps(report, indent=1))
    if "music" not in args.skip:
        report["settings"].append(music_setting(args, cfg))
    if args.speed:
        report["speed"] = speed(args, cfg, args.speed)
        print(f"speed: {report['speed']}", flush=True)
    if args.pdf_set:
        report["pdf_set"] = pdf_set(args, cfg, args.pdf_set)
    if args.big:
        report["big"] = big_drawing(args, cfg)
        print(f"big drawing: {report['big']}", flush=True)
    (args.out / f"spotting_{args.split}.json").write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


def music_setting(args, cfg: SpotConfig) -> dict:
    """MUSCIMA++ test pages (first ``--music-pages`` by file name), exemplars from its train."""
    exemplar_json = args.music / "train" / "_annotations.coco.json"
    gt_json = args.music / args.split / "_annotations.coco.json"
    drawings = list_drawings(gt_json)[: args.music_pages]
    present = {c for d in drawings for c, _ in d.truth}
    return evaluate_setting(f"music ({len(drawings)} {args.split} pages)", args.model, drawings, exemplar_json, gt_json,
                            present, cfg, min(args.draws, 3), args.cache, objectness_drawings=args.music_pages * 2,
                            per_class=args.per_class)


def fmt(pair) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


def markdown(report: dict) -> str:
    lines = ["| setting | method | draws | AP50 | AP@[.5:.95] | exact counts | count MAE |", "|---|---|---|---|---|---|---|"]
    for s in report["settings"]:
        ours = "symclr-spot + feature matching" if s.get("ours_without_feature_match") else "symclr-spot"
        for method, block in ((ours, s["ours"]), ("symclr-spot", s.get("ours_without_feature_match")),
                              ("template matching", s["template"]),
                              ("symclr-spot, same draws", s["ours_on_template_draws"])):
            if block:
                lines.append(f"| {s['name']} | {method} | {block['draws']} | {fmt(block['ap50'])} | {fmt(block['ap'])} | "
                             f"{fmt(block['exact_counts'])} | {fmt(block['count_mae'])} |")
    per_class = [s for s in report["settings"] if "exact_counts_per_class" in s["ours"]]
    if per_class:  # --per-class: the same detections counted with the global and the per-class thresholds
        lines += ["", "| setting | draws | AP50 (all) | AP50 (all), calibrated boxes | counted AP50, global | "
                  "counted AP50, per-class | exact counts, global | exact counts, per-class | count MAE, global | "
                  "count MAE, per-class | classes with their own threshold / box scale | calibration s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in per_class:
            b = s["ours"]
            lines.append(f"| {s['name']} | {b['draws']} | {fmt(b['ap50'])} | {fmt(b['ap50_per_class'])} | "
                         f"{fmt(b['counted_ap50'])} | {fmt(b['counted_ap50_per_class'])} | {fmt(b['exact_counts'])} | "
                         f"{fmt(b['exact_counts_per_class'])} | {fmt(b['count_mae'])} | {fmt(b['count_mae_per_class'])} | "
                         f"{b['own_thresholds'][0]:.1f} / {b['box_scales'][0]:.1f} | {b['calibration_s'][0]:.1f} |")
    for s in report["settings"]:
        if s.get("feature_match_s_per_drawing") is not None:
            lines.append(f"\n{s['name']}: feature matching {s['feature_match_s_per_drawing']:.2f} s per drawing (mean)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
