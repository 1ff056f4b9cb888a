"""Crop sources: COCO crops cut exactly as make-shards cuts them, image folders, shard splits."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from symclr_ft.data.crops import UnreadableImage, coco_source, folder_source, open_source, shard_source
from symclr_ft.data.shardset import load_classes, load_split
from symclr_ft.errors import UserError


def pixels(source) -> tuple[torch.Tensor, list[int]]:
    crops = list(source.crops)
    return torch.stack([c.load() for c in crops]), [c.label for c in crops]


def test_coco_crops_equal_the_shards_crops(synth_coco, synth_shards):
    reference = load_split(synth_shards, "valid", 24)
    source = coco_source(synth_coco, 24, "valid")
    images, labels = pixels(source)
    assert torch.equal(images, reference.images)
    assert labels == reference.labels.tolist()
    assert source.class_names == load_classes(synth_shards)
    # one split's folder on its own gives the same crops
    alone = open_source(synth_coco / "valid", 24)
    assert torch.equal(pixels(alone)[0], reference.images)


def test_shard_source_streams_what_load_split_holds(synth_shards):
    reference = load_split(synth_shards, "test", 20)
    source = shard_source(synth_shards, "test", 20)
    crops = list(source.crops)
    assert [c.source["key"] for c in crops] == reference.keys
    assert torch.equal(torch.stack([c.load() for c in crops]), reference.images)
    with pytest.raises(UserError, match="name its split"):
        open_source(synth_shards, 20)


def write_png(path, colour, size=(20, 14)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_image_folders_labelled_and_flat(tmp_path):
    write_png(tmp_path / "lab" / "pump" / "a.png", (255, 0, 0))
    write_png(tmp_path / "lab" / "valve" / "b.png", (0, 255, 0))
    write_png(tmp_path / "lab" / "valve" / "c.jpg", (0, 0, 255))
    source = folder_source(tmp_path / "lab", 8)
    images, labels = pixels(source)
    assert source.labelled and source.class_names == ["pump", "valve"] and labels == [0, 1, 1]
    assert images.shape == (3, 3, 8, 8) and images[0, 0].min() == 255
    flat = open_source(tmp_path / "lab" / "valve", 8)
    assert not flat.labelled and [c.label for c in flat.crops] == [-1, -1]


def test_empty_class_folder_and_unreadable_image(tmp_path):
    write_png(tmp_path / "f" / "pump" / "a.png", (255, 0, 0))
    (tmp_path / "f" / "valve").mkdir()
    with pytest.raises(UserError, match="valve: class folder has no image files"):
        folder_source(tmp_path / "f", 8)
    shutil.rmtree(tmp_path / "f" / "valve")
    (tmp_path / "f" / "pump" / "broken.png").write_bytes(b"not a png")
    crops = {c.source["file"].rsplit("/", 1)[1]: c for c in folder_source(tmp_path / "f", 8).crops}
    with pytest.raises(UnreadableImage, match="broken.png: cannot decode image"):
        crops["broken.png"].load()
    with pytest.raises(UserError, match="not found"):
        open_source(tmp_path / "nope", 8)
