"""Probes behind the spotting choices of issue 27 (docs/RESULTS.md, "Grey looks and the
drawing's own ink threshold"): what the drawings look like, where counts go wrong, and which
exemplar templates look like a wire.

    python bench/spot_probes.py stats                      # Otsu ink threshold, coloured share, per set
    python bench/spot_probes.py counts --copy scan --draw 1 --model runs/demo_start/demo_from_universe/model.pt
    python bench/spot_probes.py wire --draws 10            # each train exemplar's template against a plain stroke

``stats`` reads the valid and test drawings and their robustness copies (made by
``bench/spotting.py``'s ``robust_split`` when missing); ``counts`` spots one exemplar draw of a
valid copy with the chosen settings and lists the classes counted 5 or more off on a drawing;
``wire`` needs no model.
"""

from __future__ import annotations

import argparse
import collections
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import spotting as B  # noqa: E402
from symclr_ft.data.components import ComponentConfig, drawing_ink_threshold, sparse_sample  # noqa: E402
from symclr_ft.use.spot.config import SpotConfig  # noqa: E402
from symclr_ft.use.spot.drawings import list_drawings, open_drawing, open_rgb  # noqa: E402
from symclr_ft.use.spot.looks import GREY_SPREAD, softened, to_grey  # noqa: E402
from symclr_ft.use.spot.pipeline import embed_exemplars, model_and_size, pick_coco_exemplars  # noqa: E402
from symclr_ft.use.spot.template import FACTORS, _level, _resized, exemplar_picture  # noqa: E402


def coloured_share(rgb: np.ndarray) -> float:
    """The share of pixels (looks.grey_drawing's sample) whose channels are GREY_SPREAD apart."""
    sample = sparse_sample(rgb)
    spread = sample.max(axis=-1).astype(np.int16) - sample.min(axis=-1)
    return float(np.count_nonzero(spread >= GREY_SPREAD)) / spread.size


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


def counts(args) -> None:
    from symclr_ft.use.spot.objectness import fit_objectness

    exemplar_json = args.data / "train" / "_annotations.coco.json"
    cfg = SpotConfig(**B.choose(__import__("json").loads(args.choose_from.read_text())))
    objectness = fit_objectness(exemplar_json, cfg, seed=0)
    cfg = replace(cfg, box_padding=objectness.box_padding)
    net, size, _ = model_and_size(args.model, None)
    clean = args.data / "valid" / "_annotations.coco.json"
    gt = clean if args.copy == "clean" else B.robust_split(clean, args.copy, args.cache)
    drawings = list_drawings(gt)
    cands = B.cached_candidates(net, args.model, drawings, size, cfg, args.cache, objectness, tag=f"{exemplar_json}|[]")
    rgbs = B.drawing_pixels(drawings, cfg)
    picked = pick_coco_exemplars(exemplar_json, 1, args.draw)
    ex = embed_exemplars(net, picked, size, cfg)
    looks = B.drawing_looks(ex, drawings, rgbs)
    results = B.draw_results(B.templated(net, cands, drawings, rgbs, looks, size, cfg), drawings, ex, cfg, looks)
    names = dict(zip(ex.category_ids, ex.class_names))
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
    cfg = SpotConfig()
    exemplar_json = args.data / "train" / "_annotations.coco.json"
    rows = []
    for seed in range(args.draws):
        for _cat, name, path, bbox in pick_coco_exemplars(exemplar_json, 1, seed):
            image = open_rgb(path)
            values = []
            for look in (image, softened(to_grey(image))):
                picture = exemplar_picture(np.asarray(look), bbox, cfg.crop_padding)
                level = _level(min(picture.shape), cfg)
                values.append(wire_correlation(_resized(picture, 1 / FACTORS[level], cfg.template_blur), cfg.template_blur))
            rows.append((max(values), seed, name, *values))
    for top, seed, name, colour, grey in sorted(rows, reverse=True)[: args.top]:
        print(f"draw {seed} {name}: colour template {colour:.2f}, grey softened {grey:.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("probe", choices=["stats", "counts", "wire"])
    p.add_argument("--data", type=Path, default=B.DATA / "firefighting")
    p.add_argument("--cache", type=Path, default=Path("runs/spotting/cache"))
    p.add_argument("--model", type=Path, default=Path("runs/demo_start/demo_from_universe/model.pt"))
    p.add_argument("--choose-from", type=Path, default=Path("runs/spotting/tune/tune_valid.json"))
    p.add_argument("--copy", default="scan", help="counts: clean or a robustness copy of valid")
    p.add_argument("--draw", type=int, default=1, help="counts: the exemplar draw (seed)")
    p.add_argument("--draws", type=int, default=10, help="wire: draws 0..N-1")
    p.add_argument("--top", type=int, default=15, help="wire: the highest N rows")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    {"stats": stats, "counts": counts, "wire": wire}[args.probe](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
