"""Template correlation refined at each candidate's best classes (symclr_ft/use/spot/refine.py):
scales between the template scales, look-alike classes, turns, the drawing's edge, the shortlist
rule, and the whole scoring with it on."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

from symclr_ft.data import synth
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.records import Candidates
from symclr_ft.use.spot.refine import fine_correlation, refine_candidates, turns_for
from symclr_ft.use.spot.spotting import embed_exemplars, ink_candidates, pick_coco_exemplars, score_candidates, with_templates
from symclr_ft.use.spot.template import exemplar_picture, make_templates, match_templates
from use.spot.test_spotting import SIZE, net, tiny_model  # noqa: F401 (fixtures)
from use.spot.test_template import drawing_with, sheet, xyxy  # noqa: F401 (fixtures)

def design_on_white(design: int, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Generated design ``design`` drawn black at ``size`` px on white, and its ink box."""
    mask = synth.draw_symbol(synth.symbol_designs(12)[design], size)
    image = Image.new("RGB", mask.size, (255, 255, 255))
    image.paste((0, 0, 0), (0, 0), mask)
    return np.asarray(image), mask.getbbox()


def design_picture(design: int, size: int) -> np.ndarray:
    """The exemplar ink picture of design ``design`` at ``size`` px."""
    rgb, (x0, y0, x1, y1) = design_on_white(design, size)
    return exemplar_picture(rgb, [x0, y0, x1 - x0, y1 - y0], 0.1)


def placed(rgb: np.ndarray, shape: tuple[int, int], x: int, y: int) -> np.ndarray:
    """A white drawing of ``shape`` (h, w) with ``rgb`` pasted at (x, y) (clipped at the edges)."""
    drawing = np.full((*shape, 3), 255, np.uint8)
    h, w = min(rgb.shape[0], shape[0] - y), min(rgb.shape[1], shape[1] - x)
    drawing[y:y + h, x:x + w] = rgb[:h, :w]
    return drawing


def test_a_symbol_between_the_template_scales_is_matched_at_its_own():
    """Each of the 12 generated designs, exemplar at 40 px, drawn at 0.85x and 1.2x, with the
    coarse match's size being the exemplar's (scale 1): the scale search finds it (mean
    correlation >= 0.8, box within 10% of the symbol's), where the exemplar's own scale alone
    does not (the reference: template_refine_scales=(1.0,))."""
    cfg = SpotConfig()
    only_one = replace(cfg, template_refine_scales=(1.0,))
    for rel in (0.85, 1.2):
        searched, fixed = [], []
        for design in range(12):
            picture = design_picture(design, 40)
            small, (sx0, sy0, sx1, sy1) = design_on_white(design, round(40 * rel))
            drawing = placed(small, (160, 160), 50, 40)
            centre = (50 + (sx0 + sx1) / 2, 40 + (sy0 + sy1) / 2)
            size = (float(picture.shape[1]), float(picture.shape[0]))
            value, found = fine_correlation(drawing, picture, centre, size, cfg)
            searched.append(value)
            fixed.append(fine_correlation(drawing, picture, centre, size, only_one)[0])
            assert abs(found[0] / (sx1 - sx0) - 1) < 0.1 + 1 / (sx1 - sx0)
        assert np.mean(searched) >= 0.8 and np.mean(searched) > np.mean(fixed) + 0.2


def boxed_symbol(side: int, dot: bool, line: int) -> np.ndarray:
    """A box with a bar across it, and for the other class a dot above the bar: look-alikes."""
    rgb = np.full((side, side, 3), 255, np.uint8)
    cv2.rectangle(rgb, (2, 2), (side - 3, side - 3), (0, 0, 0), line)
    cv2.line(rgb, (2, side // 2), (side - 3, side // 2), (0, 0, 0), line)
    if dot:
        cv2.circle(rgb, (side // 2, side // 4), side // 16, (0, 0, 0), -1)
    return rgb


def test_a_look_alike_class_is_told_apart_better_than_by_the_coarse_match():
    """A 48 px symbol with a dot, drawn with lines a pixel thicker than its exemplar, and the
    look-alike class without the dot: the coarse match (template_min_side 12) scores the two
    classes almost alike; the refined correlation at full resolution ranks the dotted class
    first, by a wider margin."""
    cfg = SpotConfig(template_refine_min_side=48)
    pictures = [(k, exemplar_picture(boxed_symbol(48, dot, 2), None, 0.0)) for k, dot in enumerate((True, False))]
    drawing = placed(boxed_symbol(48, True, 3), (200, 200), 70, 60)
    coarse = match_templates(drawing, make_templates(pictures, 2, cfg), torch.tensor([[70.0, 60, 118, 108]]), cfg)
    refined = [fine_correlation(drawing, p, (94.0, 84.0), (48.0, 48.0), cfg)[0] for _, p in pictures]
    coarse_gap = float(coarse.correlation[0, 0] - coarse.correlation[0, 1])
    assert refined[0] > refined[1] and refined[0] - refined[1] > 3 * max(coarse_gap, 0.0)


def test_turns_follow_the_box_orientation():
    wide = (10, 30)  # (h, w)
    assert turns_for(wide, (30.0, 10.0)) == (0, 2)
    assert turns_for(wide, (10.0, 30.0)) == (1, 3)
    assert turns_for((20, 21), (21.0, 20.0)) == (0, 1, 2, 3)


def test_a_turned_symbol_at_the_drawings_edge_is_matched():
    """Design 5 (twice as wide as tall) turned a quarter, its top 2 px of ink cut off by the
    drawing's edge: the window off the drawing counts as paper, the turns tried are the odd ones
    (the box is tall), and the turned template still matches."""
    rgb, (x0, y0, x1, y1) = design_on_white(5, 40)
    picture = design_picture(5, 40)
    turned = np.ascontiguousarray(np.rot90(rgb))  # (r, c) -> (W - 1 - c, r)
    bx0, by0, bx1, by1 = y0, rgb.shape[1] - x1, y1, rgb.shape[1] - x0  # the ink box after the turn
    cut = by0 + 2
    drawing = placed(turned, (120 + cut, 120), 0, 0)[cut:]
    size = (float(picture.shape[0]), float(picture.shape[1]))  # turned: (w, h) swapped
    assert turns_for(picture.shape, size) == (1, 3)
    value, found = fine_correlation(drawing, picture, ((bx0 + bx1) / 2, (by0 + by1) / 2 - cut), size, SpotConfig())
    assert value >= 0.8 and found[1] > 1.5 * found[0]


def test_only_the_shortlist_is_refined_and_the_rest_cannot_overtake_it():
    """Candidate 0 (a symbol of class 1) scores classes [0.9, 0.8, 0.7]; with a shortlist of 2,
    classes 0 and 1 get fine_correlation's values (and sizes, with template_refine_sizes), class
    2 is capped at the lower of them. Candidate 1 has no template match of its shortlisted
    classes (size 0) and keeps its coarse evidence."""
    cfg = SpotConfig(template_refine_classes=2, template_refine_sizes=True)
    pictures = [(k, design_picture(k, 40)) for k in range(3)]
    rgb, _ = design_on_white(1, 40)
    drawing = placed(rgb, (200, 200), 20, 20)
    boxes = torch.tensor([[20.0, 20, 60, 60], [120, 120, 160, 160]])
    sizes = torch.tensor([[(float(p.shape[1]), float(p.shape[0])) for _, p in pictures]] * 2)
    sizes[1, :2] = 0
    cands = Candidates(boxes, torch.zeros(2, 4), torch.ones(2), torch.full((2, 3), 0.95), sizes)
    per_class = torch.tensor([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]])
    out = refine_candidates(drawing, cands, per_class, pictures, cfg)
    for c in (0, 1):
        expected = fine_correlation(drawing, pictures[c][1], (40.0, 40.0), tuple(sizes[0, c].tolist()), cfg)
        assert out.correlation[0, c].item() == np.float32(expected[0])
        assert out.template_sizes[0, c].tolist() == [np.float32(v) for v in expected[1]]
    assert out.correlation[0, 1] > out.correlation[0, 0]  # the symbol is class 1's
    assert out.correlation[0, 2] == out.correlation[0, :2].min()
    assert torch.equal(out.correlation[1], cands.correlation[1]) and torch.equal(out.template_sizes[1], sizes[1])
    assert torch.equal(cands.correlation, torch.full((2, 3), 0.95))  # the input is left as it was
    kept = refine_candidates(drawing, cands, per_class, pictures, replace(cfg, template_refine_sizes=False))
    assert torch.equal(kept.correlation, out.correlation) and torch.equal(kept.template_sizes, sizes)


def test_scoring_with_refinement_spots_every_symbol_with_its_class(net, sheet):
    """The whole scoring with ``template_refine`` on: each planted symbol (the looked-for one
    at 0.85x, turned) counted once, with its class; with no detection scoring
    ``template_refine_from``, the detections are exactly those of the scoring without it."""
    folder, _ = sheet
    image, boxes = drawing_with(26, 1)
    rgb = np.asarray(image)
    cfg = SpotConfig(template_refine=True)
    ex = embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, cfg)
    cands = with_templates(net, rgb, ink_candidates(net, rgb, SIZE, cfg), ex, SIZE, cfg)
    dets = score_candidates(cands, ex, cfg, rgb)
    counted = dets["scores"] >= cfg.count_score
    for box, label in zip(boxes, (1, 0, 2)):
        hits = box_iou(dets["boxes"][counted], xyxy(box))[:, 0] >= 0.5
        assert hits.sum() == 1 and dets["labels"][counted][hits].item() == label
    # nothing scoring template_refine_from: the detections are those without refinement
    untouched = score_candidates(cands, ex, replace(cfg, template_refine_from=1.01), rgb)
    plain = score_candidates(cands, ex, replace(cfg, template_refine=False), rgb)
    assert all(torch.equal(untouched[k], plain[k]) for k in ("boxes", "scores", "labels"))
    assert not torch.equal(dets["scores"], plain["scores"])  # refinement changed the scores it saw


def test_symclr_spot_turns_refinement_on_with_an_option():
    from symclr_ft.use.spot.spotting import build_parser

    required = ["--model", "m.pt", "--exemplars", "e", "--drawings", "d", "--out", "o"]
    assert build_parser().parse_args(required).refine_templates is SpotConfig().template_refine
    assert build_parser().parse_args([*required, "--refine-templates"]).refine_templates is True
