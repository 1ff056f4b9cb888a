"""Procedural glyph classes: deterministic, as many as asked, never blank."""

import numpy as np
import torch

from symclr_ft.data import glyphs
from symclr_ft.data.shardset import load_classes, load_split
from symclr_ft.data.shards import encode_png


def test_classes_and_instances_are_deterministic():
    a, b = glyphs.glyph_class(5, seed=1), glyphs.glyph_class(5, seed=1)
    assert a == b and glyphs.glyph_class(6, seed=1) != a and glyphs.glyph_class(5, seed=2) != a
    assert encode_png(glyphs.render_glyph(a, 3, seed=1)) == encode_png(glyphs.render_glyph(b, 3, seed=1))
    assert encode_png(glyphs.render_glyph(a, 3, seed=1)) != encode_png(glyphs.render_glyph(a, 4, seed=1))


def test_every_instance_has_ink_and_a_crop_size():
    for index in range(40):
        cls = glyphs.glyph_class(index)
        assert 1 <= len(cls.parts) <= 4 and all(p.kind in glyphs.KINDS for p in cls.parts)
        for instance in range(3):
            rgb = np.asarray(glyphs.render_glyph(cls, instance)).astype(int)
            assert 24 <= max(rgb.shape[:2]) <= 80 and min(rgb.shape[:2]) >= 8
            background = rgb[0, 0]
            ink = np.abs(rgb - background).max(axis=2) > 60
            assert ink.sum() >= 5, (index, instance)


def test_write_glyph_shards_appends_classes(synth_shards, tmp_path):
    out = tmp_path / "with_glyphs"
    base = load_classes(synth_shards)
    n = glyphs.write_glyph_shards(synth_shards, out, classes=5, per_class=3)
    names = load_classes(out)
    assert names[: len(base)] == base and len(names) == len(base) + 5
    train = load_split(out, "train", 16)
    original = load_split(synth_shards, "train", 16)
    assert n == len(train) == len(original) + 15
    extra = train.labels[train.labels >= len(base)]
    assert torch.equal(torch.bincount(extra - len(base)), torch.full((5,), 3))
    assert torch.equal(load_split(out, "test", 16).images, load_split(synth_shards, "test", 16).images)


def test_cli_refuses_writing_over_its_source(synth_shards, capsys):
    import pytest

    with pytest.raises(SystemExit) as info:
        glyphs.main(["--shards", str(synth_shards), "--out", str(synth_shards)])
    assert info.value.code == 2 and "must differ" in capsys.readouterr().err
