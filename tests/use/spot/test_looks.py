"""Grey looks of the exemplars (symclr_ft/use/spot/looks.py, pipeline.grey_looks_of): which
drawings are grey, what the grey looks are (checked against embedding the grey and softened
pictures directly), that spotting uses them on grey drawings only, with feature kernels too and
with the grey scoring settings, and that the command suggests feature matching for grey drawings."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.looks import grey_drawing, softened, to_grey
from symclr_ft.use.spot.pipeline import (
    crop_for_model, embed_crops, embed_exemplars, exemplars_for, pick_coco_exemplars, spot_pixels,
)
from symclr_ft.use.spot.robustness import transform
from symclr_ft.use.spot.spotting import ink_candidates, with_feature_matches, with_templates
from symclr_ft.use.spot.template import exemplar_picture
from use.spot.test_spotting import SIZE, canvas, exemplar_sheet, net, plant, run, spot_cmd, tiny_model  # noqa: F401 (fixtures)


def drawing() -> tuple[Image.Image, list[list[float]]]:
    image = canvas(320, 200)
    return image, [plant(image, 1, 40, 40), plant(image, 2, 200, 100)]


def test_coloured_drawings_are_not_grey_and_their_grey_copies_are():
    image, boxes = drawing()
    assert not grey_drawing(np.asarray(image))
    assert grey_drawing(np.asarray(to_grey(image)))
    assert grey_drawing(np.asarray(transform(image, boxes, "scan", seed=0)[0]))
    buffer = io.BytesIO()  # a grey page saved as a colour JPEG: chroma noise, still grey
    to_grey(image).save(buffer, format="JPEG", quality=30)
    assert grey_drawing(np.asarray(Image.open(buffer).convert("RGB")))


def test_grey_and_softened_looks_are_the_pictures_made_grey_and_blurred():
    image, _ = drawing()
    grey = np.asarray(to_grey(image))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert np.array_equal(grey[..., 0], np.asarray(image.convert("L")))
    assert np.array_equal(np.asarray(softened(to_grey(image))),
                          np.asarray(to_grey(image).filter(ImageFilter.GaussianBlur(1.0))))


def test_grey_looks_are_the_embeddings_of_the_grey_and_softened_exemplars(net, tmp_path):
    folder, boxes = exemplar_sheet(tmp_path, [0, 1, 2])
    picked = pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0)
    cfg = SpotConfig()
    ex = embed_exemplars(net, picked, SIZE, cfg)
    sheet = Image.open(folder / "sheet.png").convert("RGB")
    for k, look in enumerate((to_grey(sheet), softened(to_grey(sheet)))):
        crops = torch.stack([crop_for_model(look, box, SIZE, cfg.crop_padding) for box in boxes])
        expected = embed_crops(net, crops, cfg.batch_size)  # upright turn: the first block of each look
        got = ex.grey.features[k * 4 * len(boxes) : k * 4 * len(boxes) + len(boxes)]
        assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(ex.grey.labels, ex.labels.repeat(2)) and ex.grey.grey is None
    soft = np.asarray(softened(to_grey(sheet)))
    assert [k for k, _ in ex.grey.templates.pictures] == [0, 1, 2]
    for (_, picture), box in zip(ex.grey.templates.pictures, boxes):
        assert np.array_equal(picture, exemplar_picture(soft, box, cfg.crop_padding))
    assert embed_exemplars(net, picked, SIZE, SpotConfig(grey_looks=False)).grey is None


def test_spotting_matches_grey_looks_on_grey_drawings_only(net, tmp_path):
    folder, _ = exemplar_sheet(tmp_path, [0, 1, 2])
    ex = embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, SpotConfig())
    image, boxes = drawing()
    scan = np.asarray(transform(image, boxes, "scan", seed=0)[0])
    assert exemplars_for(np.asarray(image), ex) is ex and exemplars_for(scan, ex) is ex.grey
    # on the scan, spotting with the exemplars equals spotting with their grey looks as the exemplars
    plain = SpotConfig(grey_looks=False)
    looked = spot_pixels(net, scan, ex, SIZE, SpotConfig())[0]
    direct = spot_pixels(net, scan, ex.grey, SIZE, plain)[0]
    assert torch.equal(looked["boxes"], direct["boxes"]) and torch.equal(looked["scores"], direct["scores"])
    coloured = spot_pixels(net, np.asarray(image), ex, SIZE, SpotConfig())[0]
    assert torch.equal(coloured["scores"], spot_pixels(net, np.asarray(image), ex, SIZE, plain)[0]["scores"])


def test_grey_looks_carry_the_softened_exemplars_feature_kernels(net, tmp_path):
    """With feature matching on, a grey drawing is matched with the kernels of the exemplars
    made grey and softened (before, its looks had none and feature matching did nothing)."""
    folder, boxes = exemplar_sheet(tmp_path, [0, 1, 2])
    cfg = SpotConfig(feature_match=True)
    ex = embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, cfg)
    soft = softened(to_grey(Image.open(folder / "sheet.png").convert("RGB")))
    expected = torch.stack([crop_for_model(soft, box, SIZE, cfg.crop_padding) for box in boxes])
    assert torch.equal(ex.grey.kernels.crops, expected)
    assert torch.equal(ex.grey.kernels.labels, ex.kernels.labels)
    image, planted = drawing()
    scan = np.asarray(transform(image, planted, "scan", seed=0)[0])
    looks = exemplars_for(scan, ex)
    cands = with_feature_matches(net, scan, with_templates(net, scan, ink_candidates(net, scan, SIZE, cfg), looks, SIZE, cfg),
                                 looks, SIZE, cfg)
    assert cands.feature_correlation is not None
    assert cands.feature_correlation.shape == (cands.boxes.shape[0], 3) and cands.feature_correlation.max() > 0


def test_the_command_suggests_feature_matching_for_grey_drawings(tiny_model, tmp_path):
    """symclr-spot names the grey drawings (a scan copy) and suggests --feature-match for them;
    not for a coloured drawing, a blank page, or when feature matching is already on."""
    folder, _ = exemplar_sheet(tmp_path, [0, 1, 2])
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    image, planted = drawing()
    image.save(drawings / "coloured.png")
    transform(image, planted, "scan", seed=0)[0].save(drawings / "scan.png")
    Image.new("RGB", (200, 160), (255, 255, 255)).save(drawings / "blank.png")
    said = run(spot_cmd(tiny_model, folder, drawings, tmp_path / "out"))
    assert said.returncode == 0, said.stderr[-2000:]
    hints = [line for line in said.stdout.splitlines() if "--feature-match" in line]
    assert hints == ["1 of 3 drawings are grey (scans, photocopies, greyscale exports; scan.png): --feature-match "
                     "finds more symbols on those, at several times the time"]
    on = run(spot_cmd(tiny_model, folder, drawings, tmp_path / "out_fm", "--feature-match"))
    assert on.returncode == 0, on.stderr[-2000:]
    assert "--feature-match" not in on.stdout


def test_grey_drawings_are_scored_with_the_grey_scoring_settings(net, tmp_path):
    folder, _ = exemplar_sheet(tmp_path, [0, 1, 2])
    cfg = SpotConfig(grey_scoring={"template_weight": 1.0, "template_floor": 0.3})
    ex = embed_exemplars(net, pick_coco_exemplars(folder / "_annotations.coco.json", 1, 0), SIZE, cfg)
    image, boxes = drawing()
    scan = np.asarray(transform(image, boxes, "scan", seed=0)[0])
    # on the scan: as if those were the settings, and not what the coloured settings give
    grey = spot_pixels(net, scan, ex, SIZE, cfg)[0]
    direct = spot_pixels(net, scan, ex, SIZE, replace(cfg, grey_scoring={}, template_weight=1.0, template_floor=0.3))[0]
    coloured_rule = spot_pixels(net, scan, ex, SIZE, replace(cfg, grey_scoring={}))[0]
    assert grey["scores"].numel() > 0
    assert torch.equal(grey["boxes"], direct["boxes"]) and torch.equal(grey["scores"], direct["scores"])
    assert not (grey["scores"].shape == coloured_rule["scores"].shape
                and torch.equal(grey["scores"], coloured_rule["scores"]))
    # on the coloured drawing the grey settings change nothing
    rgb = np.asarray(image)
    assert torch.equal(spot_pixels(net, rgb, ex, SIZE, cfg)[0]["scores"],
                       spot_pixels(net, rgb, ex, SIZE, replace(cfg, grey_scoring={}))[0]["scores"])


def test_grey_scoring_holds_only_scoring_settings():
    assert SpotConfig().for_drawing(True).template_weight == SpotConfig().grey_scoring["template_weight"]
    assert SpotConfig().for_drawing(False) == SpotConfig()
    with pytest.raises(ValueError, match="tile"):
        SpotConfig(grey_scoring={"tile": 512})
