"""Template matching as a candidate source and a score (symclr_ft/use/spot/template.py): symbols
at another scale, turned, on a scanned copy, across tile borders; and the union of sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from symclr_ft.data import synth
from symclr_ft.errors import UserError
from symclr_ft.use.spot.candidates import candidate_boxes, pad_boxes
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.robustness import transform
from symclr_ft.use.spot.spotting import (
    embed_exemplars, ink_candidates, pick_coco_exemplars, score_candidates, with_templates,
)
from symclr_ft.use.spot.template import exemplar_picture, make_templates, match_templates
from use.spot.test_spotting import SIZE, canvas, exemplar_sheet, net, tiny_model  # noqa: F401 (fixtures)

PAD = SpotConfig().box_padding


def planted(image: Image.Image, design: int, x: int, y: int, size: int = 30, turn: int = 0,
            colour=None) -> list[float]:
    """Paste design ``design`` at (x, y), ``turn`` quarter turns; its annotation-like box (the
    ink box grown by ``box_padding``, as the exemplar sheet's boxes are)."""
    d = synth.symbol_designs(12)[design]
    mask = synth.draw_symbol(d, size).rotate(90 * turn, expand=True)
    image.paste(colour or d.colour, (x, y), mask)
    ix0, iy0, ix1, iy1 = mask.getbbox()
    w, h = ix1 - ix0, iy1 - iy0
    return [x + ix0 - PAD * w, y + iy0 - PAD * h, w * (1 + 2 * PAD), h * (1 + 2 * PAD)]


def xyxy(box: list[float]) -> torch.Tensor:
    return torch.tensor([[box[0], box[1], box[0] + box[2], box[1] + box[3]]])


@pytest.fixture(scope="module")
def sheet(tmp_path_factory):
    """Exemplars of designs 0, 1, 2 (class indices 0, 1, 2) and their template pictures."""
    folder, boxes = exemplar_sheet(tmp_path_factory.mktemp("templates"), [0, 1, 2])
    rgb = np.asarray(Image.open(folder / "sheet.png").convert("RGB"))
    return folder, [(k, exemplar_picture(rgb, box, 0.1)) for k, box in enumerate(boxes)]


def drawing_with(design_size: int, turn: int) -> tuple[Image.Image, list[list[float]]]:
    """A 300 x 220 drawing: design 1 (the one looked for) as given, designs 0 and 2 upright."""
    image = canvas(300, 220)
    ImageDraw.Draw(image).line([(0, 120), (299, 120)], fill=synth.WIRE_COLOURS[1])
    boxes = [planted(image, 1, 140, 40, design_size, turn), planted(image, 0, 40, 140), planted(image, 2, 220, 140)]
    return image, boxes


@pytest.mark.parametrize("case", ["scale0.75", "scale1.35", "quarter turn", "scanned copy"])
def test_template_peak_finds_the_symbol(sheet, case):
    """The best peak of the class looked for lies on it (IoU >= 0.5 with its box at its scale
    and turn), above the candidate threshold. (Which class it is, is the features' call: the
    blurred pictures of two circles correlate well.)"""
    _, pictures = sheet
    cfg = SpotConfig()
    size, turn = {"scale0.75": (22, 0), "scale1.35": (40, 0), "quarter turn": (30, 1), "scanned copy": (30, 3)}[case]
    image, boxes = drawing_with(size, turn)
    if case == "scanned copy":
        image, boxes = transform(image, boxes, "scan", seed=3)
        fixed = SpotConfig(adaptive_ink_threshold=False)
        assert len(candidate_boxes(np.asarray(image), fixed)) == 0  # the fixed ink threshold sees nothing
    ev = match_templates(np.asarray(image), make_templates(pictures, 3, cfg), torch.zeros((0, 4)), cfg)
    mine = ev.peak_labels == 1
    best = int(torch.argmax(torch.where(mine, ev.peak_scores, torch.tensor(-2.0))))
    assert box_iou(ev.peaks[best : best + 1], xyxy(boxes[0])).item() >= 0.5
    assert ev.peak_scores[best] >= cfg.template_peak


def test_tiled_matching_equals_one_pass(sheet):
    """A symbol on a tile border is found once, by the tile owning its centre: the peaks and
    the correlations at given boxes are those of matching the whole drawing at once."""
    _, pictures = sheet
    image = canvas(700, 300)
    for k, x in enumerate((110, 240, 260, 500)):
        planted(image, k % 3, x, 120 + 20 * k)
    rgb = np.asarray(image)
    boxes = torch.tensor([[100.0, 110, 160, 170], [245, 150, 290, 200]])
    whole_cfg, tiled_cfg = SpotConfig(tile=4096), SpotConfig(tile=256, tile_overlap=100)
    templates = make_templates(pictures, 3, whole_cfg)
    whole = match_templates(rgb, templates, boxes, whole_cfg)
    tiled = match_templates(rgb, templates, boxes, tiled_cfg)
    key = lambda ev: sorted(zip(map(tuple, ev.peaks.tolist()), ev.peak_labels.tolist(), ev.peak_scores.tolist()))
    assert len(key(tiled)) == len(key(whole)) > 0
    for a, b in zip(key(tiled), key(whole)):
        assert a[:2] == b[:2] and abs(a[2] - b[2]) < 1e-4
    assert torch.allclose(tiled.correlation, whole.correlation, atol=1e-4)


def test_union_finds_a_symbol_only_templates_propose(net, sheet):
    """A faint symbol (ink contrast below ``ink_threshold``) has no ink candidate; template
    matching proposes it and it is spotted with its class; ink candidates stay in the union."""
    folder, _ = sheet
    cfg = SpotConfig()
    image = canvas(300, 220)
    faint = planted(image, 1, 140, 40, colour=(70, 40, 70))  # 54-60 levels above the paper
    clear = planted(image, 2, 40, 130)
    rgb = np.asarray(image)
    ex = embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, cfg)
    ink = ink_candidates(net, rgb, SIZE, cfg)
    assert ink.boxes.shape[0] and box_iou(ink.boxes, xyxy(faint)).max() < 0.5
    union = with_templates(net, rgb, ink, ex, SIZE, cfg)
    n = ink.boxes.shape[0]
    assert torch.equal(union.boxes[:n], ink.boxes) and not union.from_template[:n].any()
    assert union.from_template[n:].any()
    assert box_iou(union.boxes[union.from_template], xyxy(faint)).max() >= 0.5
    dets = score_candidates(union, ex, cfg)
    counted = dets["scores"] >= cfg.count_score
    for box, label in ((faint, 1), (clear, 2)):
        hits = box_iou(dets["boxes"][counted], xyxy(box))[:, 0] >= 0.5
        assert hits.sum() == 1 and dets["labels"][counted][hits].item() == label


def test_scanned_copy_is_spotted_where_ink_finds_nothing(net, sheet):
    """A grey, skewed, blurred, noisy JPEG copy: with the fixed ink threshold and without
    templates nothing is spotted, with them every planted symbol is, with its class."""
    folder, _ = sheet
    image, boxes = drawing_with(30, 0)
    image, boxes = transform(image, boxes, "scan", seed=1)
    rgb = np.asarray(image)
    ex = embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, SpotConfig())
    for templates in (False, True):
        cfg = SpotConfig(templates=templates, adaptive_ink_threshold=False)
        dets = score_candidates(with_templates(net, rgb, ink_candidates(net, rgb, SIZE, cfg), ex, SIZE, cfg), ex, cfg)
        counted = dets["scores"] >= cfg.count_score
        if not templates:
            assert not counted.any()
            continue
        for box, label in zip(boxes, (1, 0, 2)):
            hits = box_iou(dets["boxes"][counted], xyxy(box))[:, 0] >= 0.5
            assert hits.sum() == 1 and dets["labels"][counted][hits].item() == label


def test_same_place_suppression_keeps_one_box_per_symbol():
    """Concentric boxes 0.7x apart (IoU 0.49: plain NMS keeps both) become one, the better;
    touching neighbours both stay."""
    from symclr_ft.use.spot.template import same_place_suppression

    boxes = torch.tensor([[0.0, 0, 40, 40], [6, 6, 34, 34], [40, 0, 80, 40], [100, 100, 110, 110]])
    scores = torch.tensor([0.6, 0.9, 0.8, 0.1])
    assert box_iou(boxes[:1], boxes[1:2]).item() < 0.5
    assert same_place_suppression(boxes, scores).tolist() == [1, 2, 3]


def test_a_drawing_over_the_budget_is_matched_with_coarser_templates(sheet):
    """Over ``template_budget`` the templates are reduced further (1.5x or 2x a level) until
    they fit, and still propose the symbol (a peak of its class on it; telling classes apart at
    that resolution is left to the features)."""
    from symclr_ft.use.spot.template import within_budget

    _, pictures = sheet
    cfg = SpotConfig(template_min_side=8)
    templates = make_templates(pictures, 3, cfg)
    pixels = 300 * 220
    tight = SpotConfig(template_min_side=8, template_budget=0.6 * templates.cost(pixels))
    coarse = within_budget(templates, pixels, tight)
    assert coarse.shift >= 1 and coarse.cost(pixels) <= tight.template_budget
    image, boxes = drawing_with(30, 0)
    ev = match_templates(np.asarray(image), templates, torch.zeros((0, 4)), tight)
    on_it = box_iou(ev.peaks, xyxy(boxes[0]))[:, 0] >= 0.5
    assert (on_it & (ev.peak_labels == 1)).any()


def test_the_drawings_own_ink_threshold_proposes_the_scanned_symbols(sheet):
    """The same scanned copy: with the drawing's own (Otsu) ink threshold, the default, the ink
    source proposes every planted symbol again (IoU >= 0.5 with its padded ink box)."""
    image, boxes = drawing_with(30, 0)
    image, boxes = transform(image, boxes, "scan", seed=1)
    cfg = SpotConfig()
    found = pad_boxes(candidate_boxes(np.asarray(image), cfg), cfg.box_padding, image.width, image.height)
    for box in boxes:
        assert box_iou(found, xyxy(box)).max() >= 0.5


def test_templates_are_matched_at_the_coarsest_level_that_keeps_template_min_side():
    """A 48 px exemplar at 1x: with template_min_side 12 the drawing is reduced 4x (12 px left),
    with 24 only 2x (24 px); every template keeps at least that many pixels on its shorter side
    and the finer one costs more. symclr-spot's --template-min-side sets it (default 12)."""
    from symclr_ft.use.spot.spotting import build_parser
    from symclr_ft.use.spot.template import FACTORS

    picture = np.zeros((48, 48), np.uint8)
    picture[8:40, 20:28] = 255  # a T: no quarter turn of it looks like another's
    picture[8:16, 8:40] = 255
    fine, coarse = (make_templates([(0, picture)], 1, SpotConfig(template_min_side=s, template_scales=(1.0,)))
                    for s in (24, 12))
    assert {FACTORS[t.level] for t in coarse.items} == {4.0} and {FACTORS[t.level] for t in fine.items} == {2.0}
    assert all(min(t.picture.shape) == 24 for t in fine.items) and all(min(t.picture.shape) == 12 for t in coarse.items)
    assert fine.cost(800 * 700) > coarse.cost(800 * 700)
    required = ["--model", "m.pt", "--exemplars", "e", "--drawings", "d", "--out", "o"]
    assert build_parser().parse_args(required).template_min_side == SpotConfig().template_min_side == 12
    assert build_parser().parse_args([*required, "--template-min-side", "24"]).template_min_side == 24
    with pytest.raises(UserError, match="--template-min-side: '2' is outside the range"):
        build_parser().parse_args([*required, "--template-min-side", "2"])
