"""Scoring (symclr_ft/use/spot/scoring.py): the drawing's own exemplars raise the symbols that
look like a class's best match on the drawing, and only those."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.pipeline import Candidates, Exemplars
from symclr_ft.use.spot.scoring import (
    combined, evidence, own_exemplar_seeds, score_candidates, with_own_exemplars,
)
from symclr_ft.use.spot.template import exemplar_picture, ink_picture, paper_colour
from use.spot.test_spotting import canvas
from use.spot.test_template import planted, xyxy

OWN = SpotConfig(own_exemplars=True, own_exemplar_score=0.85)


def test_seeds_are_each_class_best_match_above_the_threshold():
    per_class = torch.tensor([[0.90, 0.10, 0.0],   # class 0's best, above 0.85
                              [0.95, 0.96, 0.0],   # class 1's best (its best class is 1, not 0)
                              [0.20, 0.86, 0.0],   # class 1, but not its best
                              [0.10, 0.20, 0.8]])  # class 2 below the threshold: no seed
    assert own_exemplar_seeds(per_class, 0.85) == {0: 0, 1: 1}
    assert own_exemplar_seeds(per_class, 0.97) == {}
    assert own_exemplar_seeds(torch.zeros((0, 3)), 0.5) == {}


@pytest.fixture(scope="module")
def drawing():
    """Design 1 twice (A, the seed, and B), design 0 once (C); their boxes."""
    image = canvas(320, 220)
    boxes = [planted(image, 1, 40, 40), planted(image, 1, 200, 40), planted(image, 0, 120, 140)]
    return np.asarray(image), torch.cat([xyxy(b) for b in boxes])


def candidates(boxes: torch.Tensor) -> Candidates:
    e1, e2 = torch.eye(4)[0], torch.eye(4)[1]
    return Candidates(boxes, torch.stack([e1, e1, e2]), torch.ones(3))


def test_a_symbol_like_the_seed_inherits_its_score_scaled_by_the_likeness(drawing):
    rgb, boxes = drawing
    per_class = torch.tensor([[0.10, 0.90],   # A: class 1's seed
                              [0.10, 0.55],   # B: the same symbol, which the foreign exemplar matched less well
                              [0.60, 0.30]])  # C: another symbol; class 0 has no seed (0.60 < 0.85)
    sizes = (boxes[:, 2:] - boxes[:, :2]).unsqueeze(1).expand(-1, 2, -1).clone()
    raised, new_sizes = with_own_exemplars(rgb, candidates(boxes), per_class, sizes, OWN)
    # B: 0.9 * (0.25 * similarity 1 + 0.75 * template evidence of its own copy's picture)
    seed_picture = exemplar_picture(rgb, [*boxes[0, :2].tolist(), *(boxes[0, 2:] - boxes[0, :2]).tolist()], 0.1)
    ink = ink_picture(rgb, paper_colour(rgb))
    x0, y0 = (int(round(v)) for v in boxes[1, :2].tolist())
    direct = cv2.matchTemplate(ink[y0:y0 + seed_picture.shape[0], x0:x0 + seed_picture.shape[1]], seed_picture,
                               cv2.TM_CCOEFF_NORMED).max()  # the same picture, unblurred: an upper bound
    assert 0.7 < raised[1, 1] <= 0.9 * float(combined(torch.tensor(1.0), evidence(torch.tensor(direct), OWN.template_floor),
                                                      OWN.template_weight, OWN.score_rule)) + 1e-4
    assert raised[0, 1] == pytest.approx(0.9, abs=0.01)  # the seed keeps its own score (it matches itself)
    assert raised[2, 1] < 0.5  # C does not look like the seed: below any count threshold
    assert torch.equal(raised[:, 0], per_class[:, 0])  # no seed for class 0: its column as it was
    assert torch.equal(new_sizes[:, 0], sizes[:, 0])


def test_nothing_changes_without_the_pixels_or_with_the_option_off(drawing):
    rgb, boxes = drawing
    ex = Exemplars(torch.eye(4)[:2], torch.tensor([0, 1]), torch.tensor([[30.0, 30.0], [30.0, 30.0]]), ["a", "b"], [1, 2])
    cands = candidates(boxes)
    off = score_candidates(cands, ex, replace(OWN, own_exemplars=False), rgb)
    for dets in (score_candidates(cands, ex, OWN), off):
        assert torch.equal(dets["scores"], off["scores"]) and torch.equal(dets["labels"], off["labels"])
    on = score_candidates(cands, ex, OWN, rgb)  # every symbol already scores 1: nothing can inherit more
    assert torch.allclose(on["scores"], off["scores"]) and torch.equal(on["labels"], off["labels"])


def test_a_class_box_scale_scales_only_that_class_boxes_about_their_centre():
    """``class_box_scales`` (from per-class calibration) multiplies the size of the class's
    boxes, centred where they were; other classes keep the exemplar's size."""
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [100.0, 10.0, 120.0, 30.0]])
    feats = torch.eye(4)[:2]
    ex = Exemplars(feats, torch.tensor([0, 1]), torch.tensor([[10.0, 8.0], [12.0, 12.0]]), ["a", "b"], [1, 2])
    cfg = SpotConfig(templates=False)
    plain = score_candidates(Candidates(boxes, feats, torch.ones(2)), ex, cfg)
    scaled = score_candidates(Candidates(boxes, feats, torch.ones(2)), ex, replace(cfg, class_box_scales={"a": 1.5}))
    order = plain["labels"].argsort()
    plain_boxes, scaled_boxes = plain["boxes"][order], scaled["boxes"][scaled["labels"].argsort()]
    assert torch.allclose(plain_boxes[0], torch.tensor([15.0, 16.0, 25.0, 24.0]))
    assert torch.allclose(scaled_boxes[0], torch.tensor([12.5, 14.0, 27.5, 26.0]))  # 15 x 12, same centre
    assert torch.allclose(scaled_boxes[1], plain_boxes[1])  # class b untouched
