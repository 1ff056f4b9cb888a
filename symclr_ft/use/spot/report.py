"""What symclr-spot shows a person: overlays (boxes coloured by class; with ground truth, misses
and false positives marked), report.html and the counting scores against ground truth.

report.html is one self-contained page (relative image paths, inline script, no network): a
slider for the global count threshold and one per class redraw the boxes over the drawings,
the counts table and, with ground truth, the misses and false positives at once; "Save
thresholds" downloads them as the file ``symclr-spot --thresholds`` reads (thresholds.py).
Without script the page shows the counts table and the overlays at the run's thresholds.
Counting has one rule, :func:`is_counted`, which the page's script repeats."""

from __future__ import annotations

import colorsys
import html
import json
import math
from importlib import resources

import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from symclr_ft.errors import UserError
from symclr_ft.use.spot.drawings import open_drawing

MISS_COLOUR = (255, 255, 255)  # ground-truth box that no counted detection found
FALSE_COLOUR = (255, 0, 255)  # counted detection that matches no ground-truth box
MATCH_IOU = 0.5
# the review script inlined into report.html (a file of its own so that it reads as JavaScript)
PAGE_SCRIPT = resources.files("symclr_ft.use.spot").joinpath("report_page.js").read_text()


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
table{{border-collapse:collapse;margin:12px 0}}
td,th{{border:1px solid #aaa;padding:2px 6px;font-size:13px}} td.off{{background:#fdd}}
.sw{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}
figure{{margin:16px 0}} .why{{color:#a40}}
.layout{{display:flex;align-items:flex-start;gap:16px}} main{{flex:1;min-width:0}}
aside{{flex:0 0 360px;position:sticky;top:0;max-height:100vh;overflow:auto;font-size:13px}}
aside table{{margin:4px 0}} aside th{{text-align:left;font-weight:normal}} aside td{{white-space:nowrap}}
aside input[type=range]{{width:120px;vertical-align:middle}}
aside tr.own th{{font-weight:bold}} aside code{{word-break:break-all}} aside pre{{font-size:12px}}
.sheet{{position:relative;display:inline-block;max-width:100%;border:1px solid #888;line-height:0}}
.sheet img{{display:block;max-width:100%;height:auto}}
.sheet svg{{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none}}</style></head><body>
<h1>symclr-spot: {n_drawings} drawings, <span id="total">{n_counted}</span> symbols counted</h1>
<p>Counted: <span id="rule">{rule}</span>. {legend}</p>
<div class="layout">
<aside id="review" hidden><h2>Count thresholds</h2>
<p><label>every class: <input type="range" id="t-global" min="-1" max="1" step="0.01">
<output id="v-global"></output></label></p>
<table><thead><tr><th>class</th><th>threshold</th><th>counted{gt_note}</th><th></th></tr></thead>
<tbody id="class-sliders"></tbody></table>
<p><button type="button" id="save">Save thresholds</button> downloads <code>{thresholds_file}</code>; to
count with them (counts.csv, overlays), run again with the file where your browser saved it:</p>
<p><code id="command"></code></p>
<details><summary>the file</summary><pre id="thresholds-json"></pre></details></aside>
<main><h2>Counts (found{gt_note})</h2>{table}
{skipped}
<h2>Drawings</h2>{figures}</main></div>
<script type="application/json" id="spot-data">{data}</script>
<script>{script}</script>
</body></html>
"""


OVERLAY_MAX_SIDE = 4096  # px: a larger drawing is shown reduced (a 300 dpi A0 sheet: by 4)


def reduced_for_overlay(image: Image.Image, rows: list[dict], truth) -> tuple[Image.Image, list[dict], list | None]:
    """A drawing larger than OVERLAY_MAX_SIDE reduced by a whole factor for its overlay, with
    its detections and ground truth boxes scaled alike (drawing and saving 140 megapixels
    would take longer than spotting them)."""
    factor = overlay_factor(image)
    if factor <= 1:
        return image, rows, truth
    scale = lambda box: [v / factor for v in box]  # noqa: E731
    rows = [{**r, "bbox": scale(r["bbox"])} for r in rows]
    truth = None if truth is None else [(cat, scale(box)) for cat, box in truth]
    return image.reduce(factor), rows, truth


THRESHOLDS_FILE = "thresholds.json"  # the name report.html's "Save thresholds" downloads


def overlay_factor(image: Image.Image) -> int:
    """The whole factor by which a drawing is reduced for its overlay (1: not reduced)."""
    return max(1, -(-max(image.size) // OVERLAY_MAX_SIDE))


def count_thresholds(cfg, ex) -> dict[int, float]:
    """category_id -> the score from which a detection of that class is counted."""
    return {cat: cfg.count_score_of(name) for cat, name in zip(ex.category_ids, ex.class_names)}


def is_counted(row: dict, min_score: float, per_class: dict[int, float] | None = None) -> bool:
    """Whether a detection counts: its score is at least its class's threshold (``per_class``,
    category_id -> threshold), or ``min_score`` for a class without one. The one rule of
    counts.csv, the report, ``Spots.counts`` (and, in JavaScript, report.html's sliders)."""
    return row["score"] >= (per_class or {}).get(row["category_id"], min_score)


def count_detections(results: list[dict], min_score: float,
                     per_class: dict[int, float] | None = None) -> dict[tuple[int, int], int]:
    """(image_id, category_id) -> number of counted detections (:func:`is_counted`)."""
    counts: dict[tuple[int, int], int] = {}
    for r in results:
        if is_counted(r, min_score, per_class):
            key = (r["image_id"], r["category_id"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def _figure(k: int, d, overlay: str, plain: str, size: tuple[int, int], tally: dict, why: str | None) -> str:
    """One drawing on the page: the overlay with its boxes baked in (what a page without
    script shows); the script swaps in ``plain`` and draws the boxes over it."""
    note = f"{tally['found']} found"
    if d.truth is not None:
        note += f", {tally['false']} false (magenta cross), {tally['missed']} missed (white box)"
    why_html = f' <span class="why">&mdash; {html.escape(why)}</span>' if why else ""
    name = html.escape(d.file_name)
    return (f'<figure id="fig-{k}"><div class="sheet"><img src="{overlay}" data-plain="{plain}" '
            f'width="{size[0]}" height="{size[1]}" alt="{name}"></div>'
            f'<figcaption>{name}: <span class="tally">{note}</span>{why_html}</figcaption></figure>')


def _drawing_data(d, results: list[dict], figure: int | None = None, image: str | None = None, factor: int = 1,
                  size: tuple[int, int] = (0, 0)) -> dict:
    """What the script needs of one drawing: every detection written (``[category_id, score,
    x, y, w, h]`` in the drawing's pixels, so any threshold can be shown), its ground truth,
    and the figure (the plain image, its size and reduction factor) to draw them on."""
    return {
        "id": d.image_id, "file": d.file_name, "figure": figure, "image": image, "factor": factor,
        "width": size[0], "height": size[1],
        "dets": [[r["category_id"], r["score"], *r["bbox"]] for r in results],
        "truth": None if d.truth is None else [[cat, *box] for cat, box in d.truth],
    }


def _rule_text(cfg) -> str:
    own = len(cfg.class_count_scores)
    return f"score &ge; {cfg.count_score:.3f}" + (
        f", {own} class{'es with their' if own > 1 else ' with its'} own threshold" if own else "")


def _script_json(data: dict) -> str:
    """JSON safe inside a script element: no ``</script>`` or ``<!--`` can end or bend it."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def _write_figure(out, k: int, d, rows: list[dict], colours: dict, cfg, per_class: dict[int, float],
                  why: str | None) -> tuple[str, dict]:
    """overlays/<k>.png (the counted boxes baked in) and overlays/plain/<k>.png (without,
    for the script; both reduced alike for a large sheet); the figure's HTML and its data."""
    image = open_drawing(d)
    factor = overlay_factor(image)
    counted = [r for r in rows if is_counted(r, cfg.count_score, per_class)]
    image, scaled, truth = reduced_for_overlay(image, counted, d.truth)
    overlay, tally = draw_overlay(image, scaled, colours, truth)
    name, plain = f"overlays/{k:05d}.png", f"overlays/plain/{k:05d}.png"
    overlay.save(out / name)
    image.convert("RGB").save(out / plain)
    return _figure(k, d, name, plain, image.size, tally, why), _drawing_data(d, rows, k, plain, factor, image.size)


def write_report(out, drawings, ex, results: list[dict], cfg, skipped, empty: dict[str, str] | None = None,
                 command: str | None = None) -> None:
    """The overlays of every readable drawing (:func:`_write_figure`) and report.html beside
    them, with the detections and thresholds its script needs; ``empty`` (file name ->
    why) says under a drawing why nothing was found there; ``command`` is the symclr-spot
    command line the page tells to run again with the saved thresholds."""
    (out / "overlays" / "plain").mkdir(parents=True)
    colours = dict(zip(ex.category_ids, class_colours(len(ex.category_ids))))
    per_class = count_thresholds(cfg, ex)
    by_image: dict[int, list] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    figures, page_drawings = [], []
    for k, d in enumerate(drawings):
        mine = by_image.get(d.image_id, [])
        try:
            why = (empty or {}).get(d.file_name)
            figure, drawing_data = _write_figure(out, k, d, mine, colours, cfg, per_class, why)
        except UserError:  # listed in skipped.csv and on the page
            drawing_data, figure = _drawing_data(d, mine), ""
        figures.append(figure)
        page_drawings.append(drawing_data)
    has_truth = any(d.truth is not None for d in drawings)
    skipped_html = "" if not skipped else "<h2>Skipped</h2><ul>" + "".join(
        f"<li>{html.escape(w)}: {html.escape(r)}</li>" for w, r in skipped) + "</ul>"
    counts = count_detections(results, cfg.count_score, per_class)
    lowest = min([cfg.min_score, cfg.count_score, *cfg.class_count_scores.values()])
    data = {
        "count_score": cfg.count_score, "class_count_scores": dict(cfg.class_count_scores),
        "box_scales": dict(cfg.class_box_scales),
        "slider_min": max(-1.0, math.floor(lowest * 100) / 100),
        "classes": [{"id": c, "name": n, "colour": "rgb({},{},{})".format(*colours[c])}
                    for c, n in zip(ex.category_ids, ex.class_names)],
        "drawings": page_drawings, "thresholds_file": THRESHOLDS_FILE,
        "command": command or f"symclr-spot <the same arguments> --thresholds {THRESHOLDS_FILE}",
        "false_colour": "rgb({},{},{})".format(*FALSE_COLOUR), "miss_colour": "rgb({},{},{})".format(*MISS_COLOUR),
    }
    page = PAGE.format(
        n_drawings=len(drawings), n_counted=sum(counts.values()), rule=_rule_text(cfg),
        legend="Boxes in the class colour; with ground truth a magenta cross marks a false positive and a "
        "white box a missed symbol." if has_truth else "Boxes in the class colour.",
        gt_note=" / true" if has_truth else "", table=_counts_table(drawings, ex, counts),
        skipped=skipped_html, figures="".join(figures), thresholds_file=THRESHOLDS_FILE,
        data=_script_json(data), script=PAGE_SCRIPT,
    )  # fmt: skip
    (out / "report.html").write_text(page)
