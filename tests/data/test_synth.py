"""synth.py: deterministic, every class in train, imbalanced, non-overlapping symbols, and the
symclr-synth command."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from conftest import SYNTH_CLASSES, SYNTH_DRAWINGS
from symclr_ft.data import synth
from symclr_ft.data.coco import ANNOTATIONS_FILE, load_export

TINY = {
    "classes": 6,
    "drawings_per_split": {"train": 3, "valid": 2},
    "image_size": (200, 180),
    "symbols_per_drawing": (4, 7),
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    a = _files(synth.write_synthetic_coco(tmp_path / "a", seed=3, **TINY))
    b = _files(synth.write_synthetic_coco(tmp_path / "b", seed=3, **TINY))
    c = _files(synth.write_synthetic_coco(tmp_path / "c", seed=4, **TINY))
    assert a == b
    assert sorted(a) == sorted(c) and a["train/train-0000.jpg"] != c["train/train-0000.jpg"]
    assert "valid/_annotations.coco.json" in a and not any(k.startswith("test/") for k in a)


def test_export_is_valid_coco_with_an_unused_parent_category(synth_coco):
    export = load_export(synth_coco)  # validates every record and box
    assert [s.name for s in export.splits] == list(SYNTH_DRAWINGS)
    for split in export.splits:
        assert sorted(split.categories) == list(range(SYNTH_CLASSES + 1))
        assert len(split.images) == SYNTH_DRAWINGS[split.name]
        assert 0 not in {a.category_id for a in split.annotations}
        names = [c.name for c in split.categories.values()]
        assert len(set(names)) == len(names)
        for image in split.images.values():
            with Image.open(split.image_path(image)) as img:
                assert img.size == (image.width, image.height) == (256, 256)
                assert img.mode == "RGB"


def test_every_class_in_train_and_one_class_dominates(synth_coco):
    export = load_export(synth_coco)
    train = Counter(a.category_id for a in export.splits[0].annotations)
    assert set(train) == set(range(1, SYNTH_CLASSES + 1))
    overall = Counter(a.category_id for s in export.splits for a in s.annotations)
    ranked = overall.most_common()
    assert ranked[0][0] == 1  # like 24V-power-cord: the first class is the frequent one
    median = sorted(overall.values())[len(overall) // 2]
    assert ranked[0][1] >= 3 * median
    assert ranked[0][1] / sum(overall.values()) > 0.2


def test_symbols_have_drawing_sizes_and_do_not_overlap(synth_coco):
    for split in load_export(synth_coco).splits:
        for image, anns in split.annotations_by_image():
            boxes = [a.bbox for a in anns]
            for x, y, w, h in boxes:
                assert 0 <= x and 0 <= y and x + w <= image.width and y + h <= image.height
                assert 12 <= max(w, h) <= synth.MAX_SYMBOL
            for i, (x, y, w, h) in enumerate(boxes):
                for ox, oy, ow, oh in boxes[i + 1 :]:
                    assert x + w <= ox or ox + ow <= x or y + h <= oy or oy + oh <= y


def test_symbol_ink_is_inside_its_box_on_the_dark_background(synth_coco):
    split = load_export(synth_coco).splits[0]
    image, anns = next(split.annotations_by_image())
    pixels = Image.open(split.image_path(image)).convert("L")
    for ann in anns:
        x, y, w, h = (int(v) for v in ann.bbox)
        region = pixels.crop((x, y, x + w, y + h))
        assert region.getextrema()[1] > 100  # bright strokes
    assert sorted(pixels.tobytes())[pixels.width * pixels.height // 2] < 40  # mostly dark


def test_designs_are_distinct_and_fixed_per_class():
    designs = synth.symbol_designs(60)
    assert len({(d.frame, d.marks, d.text) for d in designs}) == 60
    assert len({d.name for d in designs}) == 60
    assert synth.symbol_designs(5) == designs[:5]  # class k looks the same in every dataset
    for d in designs:
        mask = synth.draw_symbol(d, 40)
        assert mask.size == (40, 40) and mask.getbbox() is not None


def test_impossible_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="classes"):
        synth.write_synthetic_coco(tmp_path / "x", classes=0)
    with pytest.raises(ValueError, match="symbols_per_drawing"):
        synth.write_synthetic_coco(tmp_path / "x", symbols_per_drawing=(5, 2))
    with pytest.raises(ValueError, match="train drawing"):
        synth.write_synthetic_coco(tmp_path / "x", drawings_per_split={"valid": 2})


def test_demo_scale_is_larger_than_small():
    small, demo = synth.SCALES["small"], synth.SCALES["demo"]
    assert demo["classes"] >= 16 and demo["drawings_per_split"]["train"] >= 60
    assert small["classes"] == 12 and small["drawings_per_split"]["train"] == 24


def test_command_writes_replaces_its_own_output_and_refuses_other_folders(tmp_path, monkeypatch, capsys):
    # the small scale with fewer drawings keeps the test quick
    monkeypatch.setitem(synth.SCALES, "small", dict(TINY))
    out = tmp_path / "synth"
    assert synth.main(["--out", str(out), "--classes", "4", "--seed", "1"]) == 0
    assert "4 classes written" in capsys.readouterr().out
    coco = json.loads((out / "train" / ANNOTATIONS_FILE).read_text())
    assert [c["id"] for c in coco["categories"]] == [0, 1, 2, 3, 4]
    assert synth.main(["--out", str(out), "--classes", "5"]) == 0  # its own output: replaced
    assert len(json.loads((out / "train" / ANNOTATIONS_FILE).read_text())["categories"]) == 6

    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(SystemExit) as info:
        synth.main(["--out", str(foreign)])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(foreign) in err[0] and "not an earlier symclr-synth output" in err[0]
    assert [p.name for p in foreign.iterdir()] == ["precious.txt"]
    assert synth.main(["--out", str(foreign), "--classes", "4", "--overwrite"]) == 0
    assert (foreign / "precious.txt").read_text() == "keep" and (foreign / "train").is_dir()

    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path / "x"), "--classes", "0"])
    assert "argument --classes: '0' is outside the range [1, 200]" in capsys.readouterr().err


SIGTERM_WHILE_DRAWING = """
import os, signal, sys
from symclr_ft.data import synth
synth.SCALES["small"] = dict(classes=6, drawings_per_split={"train": 3, "valid": 2},
                             image_size=(200, 180), symbols_per_drawing=(4, 7))
real = synth.write_synthetic_coco
def write_synthetic_coco(folder, **kwargs):
    (folder / "half-written").write_text("x")
    os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a scheduler's time limit would
    return real(folder, **kwargs)
synth.write_synthetic_coco = write_synthetic_coco
synth.main(sys.argv[1:])
"""


def test_sigterm_leaves_no_temporary_folder(tmp_path):
    """SIGTERM ends symclr-synth as Ctrl-C does: exit 130, nothing half-written left behind."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", SIGTERM_WHILE_DRAWING, "--out",
                             str(tmp_path / "synth"), "--scale", "small"],
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (130, "interrupted\n"), result.stderr
    assert list(tmp_path.iterdir()) == []
