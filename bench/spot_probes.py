"""Probes behind the spotting choices of issue 27 (docs/RESULTS.md, "Grey looks and the
drawing's own ink threshold"): what the drawings look like, where counts go wrong, and which
exemplar templates look like a wire.

    python bench/spot_probes.py stats                      # Otsu ink threshold, coloured share, per set
    python bench/spot_probes.py counts --copy scan --draw 1 --model runs/demo_start/demo_from_universe/model.pt
    python bench/spot_probes.py errors --copy clean --draw 0   # where misses, false detections, wrong counts come from
    python bench/spot_probes.py errors --copy clean --draw 0 --per-class   # the same, thresholds and boxes calibrated
    python bench/spot_probes.py wire --draws 10            # each train exemplar's template against a plain stroke
    python bench/spot_probes.py learned --draws 2          # the rule against a small model fitted on train drawings
    python bench/spot_probes.py scales                     # template correlation between template scales (generated)

``stats`` reads the valid and test drawings and their robustness copies (made by
``bench/spotting.py``'s ``robust_split`` when missing); ``counts`` spots one exemplar draw of a
valid copy with the chosen settings and lists the classes counted 5 or more off on a drawing;
``errors`` sorts that draw's symbols (found and counted, found below the count threshold,
another class on it, its class nearby with a box of IoU < 0.5, no detection kept, no
candidate), its counted false detections and its wrong counts, by class; ``wire`` needs no model.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou, nms

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import spotting as B  # noqa: E402
from symclr_ft.data.components import ComponentConfig, drawing_ink_threshold, sparse_sample  # noqa: E402
from symclr_ft.use.spot.calibration import calibrate_for  # noqa: E402
from symclr_ft.use.spot.config import SpotConfig  # noqa: E402
from symclr_ft.use.spot.drawings import list_drawings, open_drawing, open_rgb  # noqa: E402
from symclr_ft.use.spot.looks import coloured_share, softened, to_grey  # noqa: E402
from symclr_ft.use.spot.pipeline import embed_exemplars, model_and_size, pick_coco_exemplars  # noqa: E402
from symclr_ft.use.spot.scoring import class_evidence, class_similarity  # noqa: E402
from symclr_ft.use.spot.template import same_place_suppression  # noqa: E402
from symclr_ft.use.spot.template import FACTORS, _level, exemplar_picture, resized  # noqa: E402


def stats(args) -> None:
    adaptive = ComponentConfig(adaptive_ink_threshold=True, ink_threshold=255)  # Otsu's own value, uncapped
    for split in ("valid", "test"):
        clean = args.data / split / "_annotations.coco.json"
        for copy in ("clean", "scan", "thinner", "thicker"):
            gt = clean if copy == "clean" else B.robust_split(clean, copy, args.cache)
            rows = [np.asarray(open_drawing(d)) for d in list_drawings(gt)]
            otsu = [drawing_ink_threshold(rgb, adaptive) for rgb in rows]
            share = [100 * coloured_share(rgb) for rgb in rows]
            print(f"{split} {copy}: {len(rows)} drawings, Otsu threshold {min(otsu)}-{max(otsu)}, "
                  f"coloured pixels {min(share):.2f}-{max(share):.2f}%", flush=True)


def spotted(args) -> tuple[list, list, dict, list, SpotConfig, dict]:
    """One exemplar draw (``--draw``) of a valid copy (``--copy``) spotted with the chosen
    settings: (drawings, COCO results, class names by id, the picked exemplars, config,
    the candidates with template evidence)."""
    from symclr_ft.use.spot.objectness import fit_objectness

    exemplar_json = args.data / "train" / "_annotations.coco.json"
    cfg = SpotConfig(**B.choose(json.loads(args.choose_from.read_text()))) if args.choose_from else SpotConfig()
    cfg = replace(cfg, **B.config_overrides(args.set))
    objectness = fit_objectness(exemplar_json, cfg, seed=0)
    cfg = replace(cfg, box_padding=objectness.box_padding)
    net, size, _ = model_and_size(args.model, None)
    picked = pick_coco_exemplars(exemplar_json, 1, args.draw)
    ex = embed_exemplars(net, picked, size, cfg)
    if getattr(args, "per_class", False):  # as --count-score per-class: thresholds and box sizes calibrated
        calibration = calibrate_for(net, ex, size, cfg, objectness, args.draw, exemplar_json, {p[2] for p in picked})
        cfg = replace(cfg, class_count_scores=calibration.thresholds, class_box_scales=calibration.box_scales)
        print(f"calibrated: {calibration.summary()}; box scales {calibration.box_scales}", flush=True)
    clean = args.data / "valid" / "_annotations.coco.json"
    gt = clean if args.copy == "clean" else B.robust_split(clean, args.copy, args.cache)
    drawings = list_drawings(gt)
    cands = B.cached_candidates(net, args.model, drawings, size, cfg, args.cache, objectness, tag=f"{exemplar_json}|[]")
    rgbs = B.drawing_pixels(drawings, cfg)
    looks = B.drawing_looks(ex, drawings, rgbs)
    scored = B.templated(net, cands, drawings, rgbs, looks, size, cfg)
    results = B.draw_results(scored, drawings, ex, cfg, looks, rgbs)
    return drawings, results, dict(zip(ex.category_ids, ex.class_names)), picked, cfg, scored


def counts(args) -> None:
    drawings, results, names, picked, cfg, _ = spotted(args)
    off = collections.defaultdict(list)  # class -> (counted, true) on drawings 5 or more off
    for d in drawings:
        counted = collections.Counter(r["category_id"] for r in results
                                      if r["image_id"] == d.image_id and r["score"] >= cfg.count_score_of(names[r["category_id"]]))
        truth = collections.Counter(c for c, _ in d.truth)
        for cat in set(counted) | set(truth):
            if abs(counted[cat] - truth[cat]) >= 5:
                off[names.get(cat, str(cat))].append((counted[cat], truth[cat]))
    for name, pairs in sorted(off.items(), key=lambda kv: -sum(abs(a - b) for a, b in kv[1])):
        exemplar = [f"{p[2].name} {p[3]}" for p in picked if p[1] == name]
        print(f"{name}: {len(pairs)} drawings 5+ off, counted - true = {sum(a - b for a, b in pairs)} "
              f"(counted, true: {pairs[:6]}); exemplar {exemplar}", flush=True)


def xyxy(boxes: list) -> torch.Tensor:
    return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32).reshape(-1, 4)


def errors(args) -> None:
    """Where the misses, the counted false detections and the wrong counts come from."""
    drawings, results, names, _, cfg, scored = spotted(args)

    def name(cat: int) -> str:
        return names.get(cat, f"class {cat} (no exemplar)")

    truths, falses, wrong = collections.Counter(), collections.Counter(), collections.defaultdict(list)
    pairs = 0
    for d in drawings:
        rows = [r for r in results if r["image_id"] == d.image_id]
        labels, scores = [r["category_id"] for r in rows], [r["score"] for r in rows]
        iou = box_iou(xyxy([b for _, b in d.truth]), xyxy([r["bbox"] for r in rows]))
        near = box_iou(xyxy([b for _, b in d.truth]), scored[d.image_id].boxes)
        for i, (cat, _) in enumerate(d.truth):
            mine = [j for j in range(len(rows)) if labels[j] == cat and iou[i, j] >= 0.5]
            if mine:
                counted = max(scores[j] for j in mine) >= cfg.count_score_of(name(cat))
                kind = "found, counted" if counted else "found, below the count threshold"
            elif any(iou[i, j] >= 0.5 for j in range(len(rows))):
                kind = "another class's detection on it"
            elif any(labels[j] == cat and iou[i, j] >= 0.2 for j in range(len(rows))):
                kind = "its class nearby, box IoU < 0.5"
            elif near.shape[1] and near[i].max() >= 0.3:
                kind = "a candidate there, no detection kept"
            else:
                kind = "no candidate"
            truths[(kind, name(cat))] += 1
        for j in range(len(rows)):
            if scores[j] < cfg.count_score_of(name(labels[j])) or any(c == labels[j] and iou[i, j] >= 0.5 for i, (c, _) in enumerate(d.truth)):
                continue
            on = iou[:, j].max() if iou.shape[0] else 0.0
            falses[("on another symbol" if on >= 0.5 else "partly on a symbol" if on >= 0.1 else "background", name(labels[j]))] += 1
        counted = collections.Counter(labels[j] for j in range(len(rows)) if scores[j] >= cfg.count_score_of(name(labels[j])))
        truth = collections.Counter(c for c, _ in d.truth if c in names)
        for cat in set(counted) | set(truth):
            pairs += 1
            if counted[cat] != truth[cat]:
                wrong[name(cat)].append(counted[cat] - truth[cat])
    print(f"valid {args.copy}, draw {args.draw}: {sum(truths.values())} symbols, {len(results)} detections", flush=True)
    for title, table in (("symbols", truths), ("counted false detections", falses)):
        kinds = collections.Counter()
        for (kind, _), n in table.items():
            kinds[kind] += n
        for kind, n in kinds.most_common():
            top = sorted(((m, c) for (k, c), m in table.items() if k == kind), reverse=True)[:3]
            print(f"{title}: {kind} {n} ({', '.join(f'{c} {m}' for m, c in top)})")
    print(f"counts: {pairs - sum(map(len, wrong.values()))} of {pairs} (drawing, class) pairs exact")
    for cat, diffs in sorted(wrong.items(), key=lambda kv: -len(kv[1]))[: args.top]:
        print(f"  {cat}: {len(diffs)} wrong, counted - true {sorted(diffs)}")


def wire_correlation(picture: np.ndarray, blur: float) -> float:
    """The best correlation of a template picture with a plain straight stroke (1-3 px,
    horizontal or vertical, as bright as the picture's ink, blurred alike): how much it would
    match every wire."""
    h, w = picture.shape
    ink = float(np.percentile(picture, 99))
    best = 0.0
    for width in (1, 2, 3):
        canvas = np.zeros((3 * h, 3 * w), np.uint8)
        middle = 3 * h // 2 - width // 2
        canvas[middle : middle + width, :] = ink
        canvas = cv2.GaussianBlur(canvas, (0, 0), blur)
        for c in (canvas, np.ascontiguousarray(np.rot90(canvas))):
            best = max(best, float(cv2.matchTemplate(c, picture, cv2.TM_CCOEFF_NORMED).max()))
    return best


def wire(args) -> None:
    cfg = SpotConfig(**B.config_overrides(args.set))
    exemplar_json = args.data / "train" / "_annotations.coco.json"
    rows = []
    for seed in range(args.draws):
        for _cat, name, path, bbox in pick_coco_exemplars(exemplar_json, 1, seed):
            image = open_rgb(path)
            values = []
            for look in (image, softened(to_grey(image))):
                picture = exemplar_picture(np.asarray(look), bbox, cfg.crop_padding)
                level = _level(min(picture.shape), cfg)
                values.append(wire_correlation(resized(picture, 1 / FACTORS[level], cfg.template_blur), cfg.template_blur))
            rows.append((max(values), seed, name, *values))
    for top, seed, name, colour, grey in sorted(rows, reverse=True)[: args.top]:
        print(f"draw {seed} {name}: colour template {colour:.2f}, grey softened {grey:.2f}")


# --------------------------------------------------------------------------- learned: a small model


PAIR_FEATURES = ("similarity", "similarity_margin", "correlation", "correlation_margin", "objectness",
                 "template_only", "log_area_ratio", "rule_score")


def margin(values: torch.Tensor) -> torch.Tensor:
    """Each entry (N, C) minus the best other class's on its row: how clearly a class beats its look-alikes."""
    if values.shape[1] < 2:
        return values + 1
    top = values.topk(2, dim=1).values
    return values - torch.where(values >= top[:, :1], top[:, 1:2], top[:, :1])


def pair_features(cands, ex, cfg: SpotConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (candidate, class) pair's evidence (N, C, F; columns PAIR_FEATURES), the rule's
    score (N, C) and its box for each class (N, C, 4)."""
    rule, sizes = class_evidence(cands, ex, cfg)
    sim, _ = class_similarity(cands, ex)
    n, classes = rule.shape
    corr = cands.correlation if cands.correlation is not None else torch.zeros((n, classes))
    template_only = cands.from_template if cands.from_template is not None else torch.zeros(n, dtype=torch.bool)
    wh = (cands.boxes[:, 2:] - cands.boxes[:, :2]).clamp(min=1)
    area_ratio = torch.log(wh.prod(dim=1, keepdim=True) / sizes.clamp(min=1).prod(dim=2))
    columns = [sim, margin(sim), corr, margin(corr), cands.objectness.unsqueeze(1).expand(n, classes),
               template_only.float().unsqueeze(1).expand(n, classes), area_ratio, rule]
    centre = ((cands.boxes[:, :2] + cands.boxes[:, 2:]) / 2).unsqueeze(1)
    return torch.stack(columns, dim=2), rule, torch.cat([centre - sizes / 2, centre + sizes / 2], dim=2)


def detections_of(per_class: torch.Tensor, eligible: torch.Tensor, boxes: torch.Tensor, cfg: SpotConfig):
    """score_candidates' steps on a score matrix: best eligible class per candidate, its box,
    class-agnostic NMS and same-place suppression. (candidate indices, labels, boxes, scores)."""
    scores, labels = per_class.masked_fill(~eligible, -2.0).max(dim=1)
    chosen = boxes[torch.arange(labels.shape[0]), labels]
    keep = eligible.any(dim=1).nonzero().flatten()
    kept = nms(chosen[keep], scores[keep], cfg.nms_iou)
    kept = keep[kept[same_place_suppression(chosen[keep][kept], scores[keep][kept])]]
    return kept, labels[kept], chosen[kept], scores[kept]


def true_pairs(boxes: torch.Tensor, truth: torch.Tensor, truth_labels: torch.Tensor) -> torch.Tensor:
    """(N, C) whether class c's box at candidate n overlaps a true box of class c at IoU >= 0.5."""
    true = torch.zeros(boxes.shape[:2], dtype=torch.bool)
    for c in torch.unique(truth_labels).tolist():
        true[:, c] = box_iou(boxes[:, c], truth[truth_labels == c]).max(dim=1).values >= 0.5
    return true


def fitted(rows: np.ndarray, truth: np.ndarray, kind: str):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(rows, truth)
    return HistGradientBoostingClassifier(max_iter=150, max_leaf_nodes=15, min_samples_leaf=40,
                                          random_state=0).fit(rows, truth)


def learned(args) -> None:
    """The rule against a small model of the evidence fitted on 30 annotated train drawings
    (the per-class calibration's drawings; never valid), scored on valid: (a) every
    (candidate, class) pair the rule keeps, P(its box is true) as the score; (b) the rule's
    detections after NMS re-scored by P(true detection), alone and averaged with the rule."""
    from symclr_ft.use.spot.calibration import calibration_drawings, labelled_pages
    from symclr_ft.use.spot.objectness import fit_objectness
    from symclr_ft.use.spot.pipeline import drawing_evidence, to_coco_results

    exemplar_json = args.data / "train" / "_annotations.coco.json"
    gt = args.data / "valid" / "_annotations.coco.json"
    cfg = SpotConfig(**B.config_overrides(args.set))
    objectness = fit_objectness(exemplar_json, cfg, max_drawings=30, seed=0)
    cfg = replace(cfg, box_padding=objectness.box_padding)
    net, size, _ = model_and_size(args.model, None)
    drawings = list_drawings(gt)
    present = {c for d in drawings for c, _ in d.truth}
    cands = B.cached_candidates(net, args.model, drawings, size, cfg, args.cache, objectness, tag=f"{exemplar_json}|[]")
    rgbs = B.drawing_pixels(drawings, cfg)
    table = collections.defaultdict(list)
    for draw in range(args.draws):
        picked = [p for p in pick_coco_exemplars(exemplar_json, 1, draw) if p[0] in present]
        ex = embed_exemplars(net, picked, size, cfg)
        looks = B.drawing_looks(ex, drawings, rgbs)
        scored = B.templated(net, cands, drawings, rgbs, looks, size, cfg)
        pair_x, pair_y, det_x, det_y = [], [], [], []
        with torch.no_grad():
            for page in labelled_pages(calibration_drawings(exemplar_json, {p[2] for p in picked}, 30, draw), ex, []):
                c, usable, _, _ = drawing_evidence(net, page.rgb, ex, size, cfg, objectness)
                rows, rule, boxes = pair_features(c, usable, cfg)
                true = true_pairs(boxes, xyxy(page.boxes), torch.tensor(page.labels, dtype=torch.long))
                eligible = rule >= cfg.min_score
                pair_x.append(rows[eligible])
                pair_y.append(true[eligible])
                kept, labels, _, _ = detections_of(rule, eligible, boxes, cfg)
                det_x.append(rows[kept, labels])
                det_y.append(true[kept, labels])
        data = {k: (torch.cat(x).double().numpy(), torch.cat(y).numpy())
                for k, x, y in (("pairs", pair_x, pair_y), ("detections", det_x, det_y))}
        models = {(how, kind): fitted(*data[how], kind) for how in data for kind in ("logistic", "boosted")}
        results = collections.defaultdict(list)
        for d in drawings:
            rows, rule, boxes = pair_features(scored[d.image_id], looks[d.image_id], cfg)
            eligible = rule >= cfg.min_score
            kept, labels, chosen, scores = detections_of(rule, eligible, boxes, cfg)
            variants = {"rule": scores}
            for kind in ("logistic", "boosted"):
                p = models["detections", kind].predict_proba(rows[kept, labels].double().numpy())[:, 1] if len(kept) else []
                variants[f"re-scored detections, {kind}"] = torch.tensor(p, dtype=torch.float32).reshape(-1)
                variants[f"re-scored detections, {kind}, averaged with the rule"] = (variants[f"re-scored detections, {kind}"] + scores) / 2
                prob = torch.full_like(rule, -1.0)
                prob[eligible] = torch.from_numpy(models["pairs", kind].predict_proba(rows[eligible].double().numpy())[:, 1]).float()
                _, plabels, pboxes, pscores = detections_of(prob, eligible, boxes, cfg)
                results[f"pairs, {kind}"] += to_coco_results({"boxes": pboxes, "scores": pscores, "labels": plabels}, d.image_id, ex)
            for name, s in variants.items():
                results[name] += to_coco_results({"boxes": chosen, "scores": s, "labels": labels}, d.image_id, ex)
        for name, res in results.items():
            ap = B.coco_scores(gt, res, sorted(present), [d.image_id for d in drawings])["ap50"]
            table[name].append(ap)
        print(f"draw {draw}: {len(data['pairs'][1])} pairs ({int(data['pairs'][1].sum())} true), "
              f"{len(data['detections'][1])} detections ({int(data['detections'][1].sum())} true); AP50 "
              + ", ".join(f"{k} {v[-1]:.3f}" for k, v in table.items()), flush=True)
    for name, values in table.items():
        print(f"| {name} | {' | '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} |")


def scales(args) -> None:
    """Template correlation of a symbol drawn at a scale between template_scales (generated
    symbols, no data, no model): each of the 12 generated designs drawn at 40 px as the exemplar
    and at each scale on a drawing, the best correlation of its class at the symbol's box, mean
    over designs, for three (template_min_side, template_blur) settings: (12, 1), (24, 1), (24, 2)."""
    from PIL import Image

    from symclr_ft.data import synth
    from symclr_ft.use.spot.template import make_templates, match_templates

    designs = synth.symbol_designs(12)
    settings = [(12, 1.0), (24, 1.0), (24, 2.0)]
    shown = (0.7, 0.85, 1.0, 1.2, 1.25, 1.4)
    print("| template min side, blur | " + " | ".join(f"{s}x" for s in shown) + " |")
    print("|---" * (len(shown) + 1) + "|")
    for side, blur in settings:
        cfg = replace(SpotConfig(), template_min_side=side, template_blur=blur)
        means = []
        for scale in shown:
            values = []
            for design in designs:
                exemplar = Image.new("RGB", (60, 60), (255, 255, 255))
                exemplar.paste((200, 0, 0), (10, 10), synth.draw_symbol(design, 40))
                templates = make_templates([(0, exemplar_picture(np.asarray(exemplar), [10, 10, 40, 40], 0.1))], 1, cfg)
                size = int(round(40 * scale))
                drawing = Image.new("RGB", (200, 200), (255, 255, 255))
                drawing.paste((200, 0, 0), (50, 50), synth.draw_symbol(design, size))
                box = torch.tensor([[50, 50, 50 + size, 50 + size]], dtype=torch.float32)
                values.append(float(match_templates(np.asarray(drawing), templates, box, cfg).correlation[0, 0]))
            means.append(float(np.mean(values)))
        print(f"| {side}, {blur:g} | " + " | ".join(f"{m:.3f}" for m in means) + " |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("probe", choices=["stats", "counts", "errors", "wire", "learned", "scales"])
    p.add_argument("--data", type=Path, default=B.DATA / "firefighting")
    p.add_argument("--cache", type=Path, default=Path("runs/spotting/cache"))
    p.add_argument("--model", type=Path, default=Path("runs/demo_start/demo_from_universe/model.pt"))
    p.add_argument("--choose-from", type=Path, default=None,
                   help="bench/spotting.py --tune's output to choose the scoring from (default: SpotConfig's, the chosen ones)")
    p.add_argument("--copy", default="scan", help="counts, errors: clean or a robustness copy of valid")
    p.add_argument("--draw", type=int, default=1, help="counts, errors: the exemplar draw (seed)")
    p.add_argument("--draws", type=int, default=10, help="wire, learned: draws 0..N-1")
    p.add_argument("--per-class", action="store_true",
                   help="counts, errors: per-class thresholds and box sizes calibrated first, as --count-score per-class")
    p.add_argument("--top", type=int, default=15, help="wire, errors: the highest N rows")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="SpotConfig overrides, as bench/spotting.py --set")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    {"stats": stats, "counts": counts, "errors": errors, "wire": wire, "learned": learned, "scales": scales}[args.probe](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
