"""What symclr-spot shows a person: overlays (boxes coloured by class; with ground truth, misses
and false positives marked), a static report.html (relative image paths, no script, no network)
and the counting scores against ground truth."""

from __future__ import annotations

import colorsys
import html

import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from symclr_ft.errors import UserError
from symclr_ft.use.spot.drawings import open_drawing

MISS_COLOUR = (255, 255, 255)  # ground-truth box that no counted detection found
FALSE_COLOUR = (255, 0, 255)  # counted detection that matches no ground-truth box
MATCH_IOU = 0.5


def class_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` bright, evenly spread hues (readable on dark CAD backgrounds and white pages)."""
    out = []
    for k in range(n):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 1.0)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def _xyxy(bbox: list[float]) -> list[float]:
    return [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]


def match_to_truth(rows: list[dict], truth: list[tuple[int, list[float]]]) -> tuple[list[bool], list[bool]]:
    """Greedy matching by score, same class, IoU >= 0.5 (as COCO AP50 does): which detections
    are true, which ground-truth boxes were found."""
    found = [False] * len(truth)
    true = [False] * len(rows)
    if not rows or not truth:
        return true, found
    iou = box_iou(torch.tensor([_xyxy(r["bbox"]) for r in rows]), torch.tensor([_xyxy(b) for _, b in truth]))
    for i in sorted(range(len(rows)), key=lambda i: -rows[i]["score"]):
        best, best_j = MATCH_IOU, -1
        for j, (cat, _) in enumerate(truth):
            if not found[j] and cat == rows[i]["category_id"] and iou[i, j] >= best:
                best, best_j = float(iou[i, j]), j
        if best_j >= 0:
            found[best_j] = true[i] = True
    return true, found


def draw_overlay(image: Image.Image, rows: list[dict], colours: dict[int, tuple], truth=None) -> tuple[Image.Image, dict]:
    """The drawing with counted detections in their class colour; with ``truth``, false
    positives get a magenta cross and misses a white box. Returns the image and the tallies."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    true, found = match_to_truth(rows, truth) if truth is not None else ([True] * len(rows), [])
    for row, ok in zip(rows, true):
        x0, y0, x1, y1 = _xyxy(row["bbox"])
        draw.rectangle([x0, y0, x1, y1], outline=colours[row["category_id"]], width=3)
        if not ok:
            draw.line([x0, y0, x1, y1], fill=FALSE_COLOUR, width=2)
            draw.line([x0, y1, x1, y0], fill=FALSE_COLOUR, width=2)
    for (cat, bbox), ok in zip(truth or [], found):
        if not ok:
            x0, y0, x1, y1 = _xyxy(bbox)
            draw.rectangle([x0 - 2, y0 - 2, x1 + 2, y1 + 2], outline=MISS_COLOUR, width=2)
    tallies = {"found": sum(true), "false": len(rows) - sum(true), "missed": len(found) - sum(found)}
    return out, tallies


def exact_count_share(drawings, ex, counts: dict) -> tuple[float, float]:
    """Share of (drawing, class) pairs whose count is exact, and the mean absolute count error,
    over the pairs where the class is on the drawing or was counted there (classes of the
    exemplars only; pairs absent from both would inflate the share)."""
    wanted = set(ex.category_ids)
    exact, errors = 0, []
    for d in drawings:
        truth: dict[int, int] = {}
        for cat, _ in d.truth or []:
            if cat in wanted:
                truth[cat] = truth.get(cat, 0) + 1
        for cat in wanted:
            t, p = truth.get(cat, 0), counts.get((d.image_id, cat), 0)
            if t or p:
                errors.append(abs(t - p))
                exact += t == p
    if not errors:
        return 1.0, 0.0
    return exact / len(errors), sum(errors) / len(errors)


def _counts_table(drawings, ex, counts: dict) -> str:
    colours = dict(zip(ex.category_ids, class_colours(len(ex.category_ids))))
    used = [c for c in ex.category_ids if any(counts.get((d.image_id, c)) for d in drawings)]
    names = dict(zip(ex.category_ids, ex.class_names))
    head = "".join(
        f'<th><span class="sw" style="background:rgb{colours[c]}"></span>{html.escape(names[c])}</th>' for c in used
    )
    body = []
    for d in drawings:
        truth: dict[int, int] = {}
        for cat, _ in d.truth or []:
            truth[cat] = truth.get(cat, 0) + 1
        cells = []
        for c in used:
            n = counts.get((d.image_id, c), 0)
            gt = f" / {truth.get(c, 0)}" if d.truth is not None else ""
            cls = ' class="off"' if d.truth is not None and n != truth.get(c, 0) else ""
            cells.append(f"<td{cls}>{n}{gt}</td>")
        body.append(f"<tr><th>{html.escape(d.file_name)}</th>{''.join(cells)}</tr>")
    return f'<table id="counts"><tr><th>drawing</th>{head}</tr>{"".join(body)}</table>'


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>symclr-spot report</title>
<style>body{{font-family:sans-serif;background:#fff;color:#111;margin:16px}}
img{{max-width:100%;border:1px solid #888}} table{{border-collapse:collapse;margin:12px 0}}
td,th{{border:1px solid #aaa;padding:2px 6px;font-size:13px}} td.off{{background:#fdd}}
.sw{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}
figure{{margin:16px 0}} .why{{color:#a40}}</style></head><body>
<h1>symclr-spot: {n_drawings} drawings, {n_counted} symbols counted</h1>
<p>Counted: similarity &ge; {count_score:.3f}. {legend}</p>
<h2>Counts (found{gt_note})</h2>{table}
{skipped}
<h2>Drawings</h2>{figures}
</body></html>
"""


OVERLAY_MAX_SIDE = 4096  # px: a larger drawing is shown reduced (a 300 dpi A0 sheet: by 4)


def reduced_for_overlay(image: Image.Image, rows: list[dict], truth) -> tuple[Image.Image, list[dict], list | None]:
    """A drawing larger than OVERLAY_MAX_SIDE reduced by a whole factor for its overlay, with
    its detections and ground truth boxes scaled alike (drawing and saving 140 megapixels
    would take longer than spotting them)."""
    factor = -(-max(image.size) // OVERLAY_MAX_SIDE)
    if factor <= 1:
        return image, rows, truth
    scale = lambda box: [v / factor for v in box]  # noqa: E731
    rows = [{**r, "bbox": scale(r["bbox"])} for r in rows]
    truth = None if truth is None else [(cat, scale(box)) for cat, box in truth]
    return image.reduce(factor), rows, truth


def write_report(out, drawings, ex, results: list[dict], cfg, skipped, empty: dict[str, str] | None = None) -> None:
    """overlays/<n>.png for every readable drawing and report.html beside them; ``empty``
    (file name -> why) says under a drawing why nothing was found there."""

    (out / "overlays").mkdir()
    colours = dict(zip(ex.category_ids, class_colours(len(ex.category_ids))))
    counted = [r for r in results if r["score"] >= cfg.count_score]
    by_image: dict[int, list] = {}
    for r in counted:
        by_image.setdefault(r["image_id"], []).append(r)
    figures = []
    for k, d in enumerate(drawings):
        try:
            image = open_drawing(d)
        except UserError:
            continue  # listed in skipped.csv and on the page
        image, rows, truth = reduced_for_overlay(image, by_image.get(d.image_id, []), d.truth)
        overlay, tally = draw_overlay(image, rows, colours, truth)
        name = f"overlays/{k:05d}.png"
        overlay.save(out / name)
        note = f"{tally['found']} found" + (
            f", {tally['false']} false (magenta cross), {tally['missed']} missed (white box)" if d.truth is not None else "")
        if (empty or {}).get(d.file_name):
            note += f' &mdash; <span class="why">{html.escape(empty[d.file_name])}</span>'
        figures.append(f'<figure><img src="{name}" alt="{html.escape(d.file_name)}">'
                       f"<figcaption>{html.escape(d.file_name)}: {note}</figcaption></figure>")
    has_truth = any(d.truth is not None for d in drawings)
    skipped_html = "" if not skipped else "<h2>Skipped</h2><ul>" + "".join(
        f"<li>{html.escape(w)}: {html.escape(r)}</li>" for w, r in skipped) + "</ul>"
    page = PAGE.format(
        n_drawings=len(drawings), n_counted=len(counted), count_score=cfg.count_score,
        legend="Boxes in the class colour; with ground truth a magenta cross marks a false positive and a "
        "white box a missed symbol." if has_truth else "Boxes in the class colour.",
        gt_note=" / true" if has_truth else "", table=_counts_table(drawings, ex, count_detections(results, cfg.count_score)),
        skipped=skipped_html, figures="".join(figures),
    )  # fmt: skip
    (out / "report.html").write_text(page)


def count_detections(results: list[dict], min_score: float) -> dict[tuple[int, int], int]:
    """(image_id, category_id) -> number of detections scoring at least ``min_score``."""
    counts: dict[tuple[int, int], int] = {}
    for r in results:
        if r["score"] >= min_score:
            key = (r["image_id"], r["category_id"])
            counts[key] = counts.get(key, 0) + 1
    return counts
