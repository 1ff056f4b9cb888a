"""symclr-components (symclr_ft.data.component_shards): unannotated drawings -> a verified
make-shards set with one pseudo-class per crop; labels never read; deterministic; bad images
skipped and listed; one-line errors and the output rule."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import odd_images
from PIL import Image

from symclr_ft.data import component_shards as cs
from symclr_ft.data.coco import padded_crop_box
from symclr_ft.data.shardset import iter_split, load_classes, load_split, verify_split


def make(drawings, out, *extra) -> int:
    try:
        return cs.main(["--drawings", str(drawings), "--out", str(out), *map(str, extra)])
    except SystemExit as exit:  # report_user_errors: a UserError exits 2
        return exit.code


def samples(out: Path) -> list[tuple[str, dict]]:
    return [(key, fields) for _, key, fields in iter_split(out, "train")]


@pytest.fixture(scope="module")
def components(synth_coco, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("components") / "set"
    assert make(synth_coco, out) == 0  # an export: its train split by default
    return out


def test_the_set_passes_the_shard_verification_every_crop_its_own_class(components):
    verify_split(components, "train")
    crops = load_split(components, "train", 32)
    stats = json.loads((components / "stats.json").read_text())
    assert len(crops) == stats["splits"]["train"]["crops"] == stats["classes"] > 50
    assert crops.labels.tolist() == list(range(len(crops)))
    assert len(load_classes(components)) == len(crops)
    assert sorted(p.name for p in components.glob("*-*.tar")) == ["train-000000.tar"]  # no valid or test


def test_crops_are_cut_in_the_make_shards_frame(components, synth_coco):
    per_drawing = json.loads((components / "stats.json").read_text())["components"]["per_drawing"]
    assert sorted(per_drawing) == sorted(p.name for p in (synth_coco / "train").glob("*.jpg"))
    for key, fields in samples(components)[:40]:
        record = json.loads(fields["json"])
        with Image.open(synth_coco / "train" / record["image"]) as page:
            box = padded_crop_box(record["bbox"], *page.size, 0.1)
            expected = page.convert("RGB").crop(box)
        crop = Image.open(io.BytesIO(fields["png"]))
        assert record["crop"] == list(box)
        assert np.array_equal(np.asarray(crop), np.asarray(expected))
        assert int(fields["cls"]) == record["class_index"]


def test_the_same_seed_gives_the_same_bytes_and_the_cap_holds(synth_coco, tmp_path):
    runs = [tmp_path / n for n in ("a", "b", "c")]
    for out, seed in zip(runs, (3, 3, 4)):
        assert make(synth_coco, out, "--per-page", 5, "--seed", seed) == 0
    a, b, c = ((out / "train-000000.tar").read_bytes() for out in runs)
    assert a == b and a != c
    per_drawing = json.loads((runs[0] / "stats.json").read_text())["components"]["per_drawing"]
    assert set(per_drawing.values()) == {5}


def test_annotations_are_never_read(synth_coco, components, tmp_path):
    """A COCO json whose annotations and categories are garbage gives the same crops."""
    split = tmp_path / "split"
    shutil.copytree(synth_coco / "train", split)
    data = json.loads((split / "_annotations.coco.json").read_text())
    data["annotations"] = [{"id": "x", "bbox": "nonsense", "category_id": None}, 7]
    del data["categories"]
    (split / "_annotations.coco.json").write_text(json.dumps(data))
    assert make(split / "_annotations.coco.json", tmp_path / "out") == 0
    assert (tmp_path / "out" / "train-000000.tar").read_bytes() == (components / "train-000000.tar").read_bytes()
    data["annotations"] = "not even a list"
    (split / "_annotations.coco.json").write_text(json.dumps(data))
    assert make(split, tmp_path / "out2") == 0  # a split folder: its json's image list


def test_a_folder_with_an_unreadable_image_skips_and_lists_it(synth_coco, tmp_path, capsys):
    folder = tmp_path / "drawings"
    (folder / "sub").mkdir(parents=True)
    for i, page in enumerate(sorted((synth_coco / "test").glob("*.jpg"))[:2]):
        shutil.copy(page, folder / ("sub" if i else ".") / page.name)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not a drawing")
    assert make(folder, tmp_path / "out") == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert [s["image"] for s in stats["components"]["skipped"]] == ["broken.png"]
    assert stats["splits"]["train"]["drawings"] == 2
    assert any(name.startswith("sub/") for name in stats["components"]["per_drawing"])
    assert "broken.png" in capsys.readouterr().err


def test_a_16_bit_drawing_gives_the_boxes_of_its_8_bit_twin(tmp_path):
    ink = np.full((120, 160), 255, np.uint8)
    ink[20:50, 20:24] = ink[20:24, 20:60] = ink[70:100, 90:130] = 0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(ink).save(tmp_path / "a" / "page.png")
    odd_images(ink)["16-bit"].save(tmp_path / "b" / "page.png")
    assert make(tmp_path / "a", tmp_path / "out_a") == 0 and make(tmp_path / "b", tmp_path / "out_b") == 0
    boxes = [[json.loads(f["json"])["bbox"] for _, f in samples(tmp_path / o)] for o in ("out_a", "out_b")]
    assert boxes[0] == boxes[1] and len(boxes[0]) == 2


@pytest.mark.parametrize("problem", ["missing", "split_on_folder", "not_own", "nothing_readable"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(problem, synth_coco, tmp_path, capsys):
    out, args = tmp_path / "out", []
    drawings = synth_coco
    if problem == "missing":
        drawings = tmp_path / "nowhere"
    elif problem == "split_on_folder":
        drawings, args = synth_coco / "train", ["--split", "valid"]
    elif problem == "not_own":
        out.mkdir()
        (out / "mine.txt").write_text("a user's file")
    else:
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "x.png").write_bytes(b"broken")
        drawings = tmp_path / "d"
    assert make(drawings, out, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == (["mine.txt"] if problem == "not_own" else [])
    assert not list(tmp_path.glob(".out.*"))  # no temporary folder left behind
