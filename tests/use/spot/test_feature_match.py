"""Feature template matching (symclr_ft/use/spot/feature_match.py): the correlation against a
slow reference, peaks on planted symbols (scaled, turned), symbols the ink candidates miss,
tiled against untiled, and the option off leaving the results as they were."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from symclr_ft.data import synth
from symclr_ft.errors import UserError
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.feature_match import (
    ENERGY_FLOOR, KernelBank, correlate, feature_level, feature_map, match_features,
)
from symclr_ft.use.spot.pipeline import spot_pixels
from symclr_ft.use.spot.spotting import (
    embed_exemplars, ink_candidates, pick_coco_exemplars, score_candidates, with_feature_matches, with_templates,
)
from use.spot.test_spotting import SIZE, canvas, exemplar_sheet, net, run, spot_cmd, tiny_model  # noqa: F401
from use.spot.test_template import drawing_with, planted, xyxy

ON = SpotConfig(feature_match=True)


@pytest.fixture(scope="module")
def sheet(tmp_path_factory):
    """Exemplars of designs 0, 1, 2 (class indices 0, 1, 2) on one sheet."""
    folder, _ = exemplar_sheet(tmp_path_factory.mktemp("features"), [0, 1, 2])
    return folder


@pytest.fixture(scope="module")
def ex(net, sheet):
    return embed_exemplars(net, pick_coco_exemplars(sheet / "_annotations.coco.json", 1, 0), SIZE, ON)


def test_correlation_is_normalised_cross_correlation_of_feature_maps():
    """conv2d over channels and positions, divided by both norms (the window's floored at
    ENERGY_FLOOR of the kernel's), equals the correlation computed window by window."""
    gen = torch.Generator().manual_seed(0)
    fmap, paper = torch.randn(5, 9, 11, generator=gen), torch.randn(5, generator=gen)
    raw = torch.randn(3, 5, 4, 4, generator=gen) * torch.tensor([1.0, 3.0, 0.2]).view(3, 1, 1, 1)
    energy = raw.flatten(1).norm(dim=1)
    bank = KernelBank(32, raw / energy.view(3, 1, 1, 1), energy, torch.zeros(3, dtype=torch.long), torch.zeros(3))
    fmap[:, :4, :4] = paper[:, None, None]  # a blank corner: its windows fall under the floor
    got = correlate(fmap, paper, bank, [0, 1, 2])
    assert got.shape == (3, 6, 8)
    for j in range(3):
        for r in range(6):
            for c in range(8):
                window = fmap[:, r : r + 4, c : c + 4] - paper[:, None, None]
                ref = (window * raw[j]).sum() / (energy[j] * max(window.norm(), ENERGY_FLOOR * energy[j]))
                assert abs(got[j, r, c].item() - ref.item()) < 1e-4


@pytest.mark.parametrize("arch,channels", [("tf_efficientnet_lite0", 40), ("resnet18", 128)])
def test_feature_map_of_stride_8(arch, channels):
    """The stage of stride 8 of a timm EfficientNet and of a ResNet-18; a stride the backbone
    lacks is a one-line error."""
    from symclr_ft.models.backbones import SimCLRNet

    model = SimCLRNet(arch, 16).eval()
    level = feature_level(model, 8)
    fmap = feature_map(model, torch.zeros((1, 3, 64, 96), dtype=torch.uint8), level)
    assert fmap.shape == (1, channels, 8, 12)
    with pytest.raises(UserError, match="no stage of stride 64"):
        feature_level(model, 64)


@pytest.mark.parametrize("case", ["upright", "scale0.75", "scale1.35", "quarter turn"])
def test_best_peak_lies_on_the_planted_symbol(net, ex, case):
    """The best peak of the class looked for lies on the planted symbol (IoU >= 0.5 with its
    box), above the candidate threshold."""
    size, turn = {"upright": (30, 0), "scale0.75": (22, 0), "scale1.35": (40, 0), "quarter turn": (30, 1)}[case]
    image, boxes = drawing_with(size, turn)
    ev = match_features(net, np.asarray(image), ex.kernels, torch.zeros((0, 4)), ON)
    mine = ev.peak_labels == 1
    best = int(torch.argmax(torch.where(mine, ev.peak_scores, torch.tensor(-2.0))))
    assert box_iou(ev.peaks[best : best + 1], xyxy(boxes[0])).item() >= 0.5
    assert ev.peak_scores[best] >= ON.feature_match_peak


def missed_symbol(case: str) -> tuple[Image.Image, list[float], list[float]]:
    """A 300 x 220 drawing where the ink candidates miss design 1: drawn faint (below the ink
    threshold), or crossed by a diagonal wire of its own colour (one component, too large);
    design 2 clear beside it."""
    image = canvas(300, 220)
    if case == "faint":
        target = planted(image, 1, 140, 40, colour=(70, 40, 70))  # 54-60 levels above the paper
    else:
        target = planted(image, 1, 140, 40)
        colour = synth.symbol_designs(12)[1].colour
        ImageDraw.Draw(image).line([(0, 0), (160, 60), (299, 219)], fill=colour, width=2)
    return image, target, planted(image, 2, 40, 130)


@pytest.mark.parametrize("case", ["faint", "on a wire"])
def test_feature_matching_proposes_a_symbol_the_ink_misses(net, ex, case):
    """Without template matching, the symbol the ink candidates miss is proposed by feature
    matching (a feature-only candidate on it, IoU >= 0.5) and detected there with its class;
    the ink candidates stay first in the union, unchanged."""
    image, target, _clear = missed_symbol(case)
    rgb = np.asarray(image)
    cfg = SpotConfig(feature_match=True, templates=False)
    ink = ink_candidates(net, rgb, SIZE, cfg)
    assert ink.boxes.shape[0] == 0 or box_iou(ink.boxes, xyxy(target)).max() < 0.5
    union = with_feature_matches(net, rgb, ink, ex, SIZE, cfg)
    n = ink.boxes.shape[0]
    assert torch.equal(union.boxes[:n], ink.boxes) and not union.from_features[:n].any()
    assert box_iou(union.boxes[union.from_features], xyxy(target)).max() >= 0.5
    dets = score_candidates(union, ex, cfg)
    on_it = box_iou(dets["boxes"], xyxy(target))[:, 0] >= 0.5
    assert on_it.sum() == 1 and dets["labels"][on_it].item() == 1
    without = score_candidates(ink, ex, cfg)
    assert not (box_iou(without["boxes"], xyxy(target))[:, 0] >= 0.5).any()


def test_tiled_matching_gives_the_untiled_peaks(net, ex):
    """Symbols on and near tile borders: cut into tiles, the same peaks as in one pass (each
    within a pixel of the resized drawing, the correlation within 0.02), found once each."""
    image = canvas(900, 200)
    for k, x in enumerate((90, 300, 340, 560, 800)):
        planted(image, k % 3, x, 40 + 25 * (k % 4))
    rgb = np.asarray(image)
    boxes = torch.tensor([[80.0, 30, 140, 90], [320, 50, 400, 120]])
    one_scale = dict(feature_match=True, template_scales=(1.0,))
    whole = match_features(net, rgb, ex.kernels, boxes, SpotConfig(tile=8192, **one_scale))
    tiled = match_features(net, rgb, ex.kernels, boxes, SpotConfig(tile=256, **one_scale))
    assert whole.peaks.shape[0] >= 5 and tiled.peaks.shape[0] == whole.peaks.shape[0]
    scale = 2 ** 0.25  # these exemplars' drawing is resized by at most 2 ** (1/4) (FACTOR_STEPS)
    for b, s, label in zip(whole.peaks, whole.peak_scores, whole.peak_labels):
        same = (tiled.peak_labels == label) & ((tiled.peaks - b).abs().max(dim=1).values <= scale)
        assert same.sum() == 1 and abs(tiled.peak_scores[same].item() - s.item()) < 0.02
    assert torch.allclose(tiled.correlation, whole.correlation, atol=0.02)


def test_option_off_leaves_the_results_unchanged(net, sheet, ex):
    """With ``feature_match`` off, exemplars that carry kernels give exactly the detections of
    exemplars without them (the default path), and on, the ink and template candidates keep
    their boxes and template evidence."""
    image, _target, _clear = missed_symbol("faint")
    rgb = np.asarray(image)
    plain = embed_exemplars(net, pick_coco_exemplars(sheet / "_annotations.coco.json", 1, 0), SIZE, SpotConfig())
    assert plain.kernels is None and ex.kernels is not None
    a, _, note_a = spot_pixels(net, rgb, plain, SIZE, SpotConfig())
    b, _, note_b = spot_pixels(net, rgb, ex, SIZE, SpotConfig())
    for key in ("boxes", "scores", "labels", "best_score"):
        assert torch.equal(a[key], b[key])
    assert note_a == note_b
    base = with_templates(net, rgb, ink_candidates(net, rgb, SIZE, ON), ex, SIZE, ON)
    more = with_feature_matches(net, rgb, base, ex, SIZE, ON)
    n = base.boxes.shape[0]
    assert torch.equal(more.boxes[:n], base.boxes) and torch.equal(more.correlation[:n], base.correlation)
    assert more.feature_correlation.shape == (more.boxes.shape[0], 3)


def test_cli_feature_match_flag(tiny_model, sheet, tmp_path):
    """``symclr-spot --feature-match --no-templates`` detects the faint symbol (class1) that
    the ink candidates miss."""
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    image, target, _clear = missed_symbol("faint")
    image.save(drawings / "faint.png")
    result = run(spot_cmd(tiny_model, sheet, drawings, tmp_path / "out", "--feature-match", "--no-templates"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "detections.json").read_text())
    boxes = torch.tensor([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
                          for r in rows]).reshape(-1, 4)
    on_it = (box_iou(boxes, xyxy(target))[:, 0] >= 0.5).nonzero()[:, 0].tolist()
    assert [rows[i]["category_id"] for i in on_it] == [2]  # class1's COCO id
