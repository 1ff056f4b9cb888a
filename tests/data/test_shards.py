"""make-shards: the shard format of docs/ARCHITECTURE.md, read back with webdataset; byte-identical
reruns; atomic replacement; one-line errors that leave the previous output untouched."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from conftest import SYNTH_CLASSES, SYNTH_SHARD_SIZE
from symclr_ft.data import shards, synth
from symclr_ft.data.coco import ANNOTATIONS_FILE, load_export, padded_crop_box


def _read_split(shard_dir: Path, split: str) -> list[dict]:
    files = sorted(str(p) for p in shard_dir.glob(f"{split}-*.tar"))
    return list(wds.WebDataset(files, shardshuffle=False, empty_check=False))


def _coco_json(coco_dir: Path, split: str) -> dict:
    return json.loads((coco_dir / split / ANNOTATIONS_FILE).read_text())


def _expected_order(coco: dict) -> list[dict]:
    """Annotations in the documented order: image file name, then annotation id."""
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    return sorted(coco["annotations"], key=lambda a: (names[a["image_id"]], a["id"]))


# --------------------------------------------------------------------------- the format


def test_classes_json_lists_used_categories_contiguously(synth_shards, synth_coco):
    classes = json.loads((synth_shards / "classes.json").read_text())["classes"]
    names = {c["id"]: c["name"] for c in _coco_json(synth_coco, "train")["categories"]}
    # the parent category (id 0) has no box, so it is not a class
    assert [c["coco_id"] for c in classes] == list(range(1, SYNTH_CLASSES + 1))
    assert [c["index"] for c in classes] == list(range(SYNTH_CLASSES))
    assert all(c["name"] == names[c["coco_id"]] for c in classes)
    assert set(classes[0]) == {"index", "coco_id", "name"}


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_samples_read_back_match_the_source(synth_shards, synth_coco, split):
    coco = _coco_json(synth_coco, split)
    images = {img["id"]: img for img in coco["images"]}
    class_of = {
        c["coco_id"]: c["index"]
        for c in json.loads((synth_shards / "classes.json").read_text())["classes"]
    }
    cat_names = {c["id"]: c["name"] for c in coco["categories"]}
    expected = _expected_order(coco)
    samples = _read_split(synth_shards, split)

    assert len(samples) == len(expected) > 0
    for index, (sample, ann) in enumerate(zip(samples, expected)):
        assert sample["__key__"] == f"{split}_{index:07d}"
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"png", "cls", "json"}
        record = json.loads(sample["json"])
        image = images[ann["image_id"]]
        crop = padded_crop_box(ann["bbox"], image["width"], image["height"], 0.1)
        assert record == {
            "image": image["file_name"],
            "image_id": image["id"],
            "annotation_id": ann["id"],
            "bbox": ann["bbox"],
            "crop": list(crop),
            "category_id": ann["category_id"],
            "category_name": cat_names[ann["category_id"]],
            "class_index": class_of[ann["category_id"]],
            "split": split,
        }
        assert sample["cls"] == str(class_of[ann["category_id"]]).encode("ascii")

        decoded = Image.open(io.BytesIO(sample["png"]))
        assert decoded.format == "PNG" and decoded.mode == "RGB"
        source = Image.open(synth_coco / split / image["file_name"]).convert("RGB")
        assert np.array_equal(np.asarray(decoded), np.asarray(source.crop(crop)))


def test_shard_files_hold_at_most_shard_size_samples(synth_shards):
    stats = json.loads((synth_shards / "stats.json").read_text())
    for split, split_stats in stats["splits"].items():
        files = sorted(synth_shards.glob(f"{split}-*.tar"))
        assert [f.name for f in files] == [f"{split}-{i:06d}.tar" for i in range(len(files))]
        assert len(files) == split_stats["shards"] == -(-split_stats["crops"] // SYNTH_SHARD_SIZE)
        sizes = [len(_read_split_file(f)) for f in files]
        assert all(s == SYNTH_SHARD_SIZE for s in sizes[:-1]) and 0 < sizes[-1] <= SYNTH_SHARD_SIZE
    assert len(list(synth_shards.glob("train-*.tar"))) >= 2  # the fixture spans several tars


def _read_split_file(path: Path) -> list[dict]:
    return list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))


def test_tar_headers_are_fixed(synth_shards):
    with tarfile.open(synth_shards / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == [
        "train_0000000.cls",
        "train_0000000.json",
        "train_0000000.png",
    ]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o444)


def test_stats_json(synth_shards, synth_coco):
    stats = json.loads((synth_shards / "stats.json").read_text())
    assert stats["padding"] == 0.1 and stats["classes"] == SYNTH_CLASSES
    assert stats["source"] == str(synth_coco)
    assert list(stats["splits"]) == ["train", "valid", "test"]
    for split, s in stats["splits"].items():
        coco = _coco_json(synth_coco, split)
        assert s["crops"] == len(coco["annotations"]) == sum(s["per_class"].values())
        assert s["drawings"] == len(coco["images"])
        records = [json.loads(x["json"]) for x in _read_split(synth_shards, split)]
        widths = [r["crop"][2] - r["crop"][0] for r in records]
        heights = [r["crop"][3] - r["crop"][1] for r in records]
        assert s["crop_width"] == {
            "min": min(widths),
            "median": float(np.median(widths)),
            "mean": round(float(np.mean(widths)), 2),
            "max": max(widths),
        }
        assert s["crop_height"]["max"] == max(heights)
        per_class: dict[str, int] = {}
        for r in records:
            per_class[r["category_name"]] = per_class.get(r["category_name"], 0) + 1
        assert {k: v for k, v in s["per_class"].items() if v} == per_class


def test_rerun_is_byte_identical(synth_shards, synth_coco, tmp_path):
    again = tmp_path / "again"
    shards.make_shards(synth_coco, again, shard_size=SYNTH_SHARD_SIZE)
    first = sorted(p.name for p in synth_shards.iterdir())
    assert sorted(p.name for p in again.iterdir()) == first
    for name in first:
        assert (again / name).read_bytes() == (synth_shards / name).read_bytes(), name


# The bytes make-shards wrote for one fixed synthetic export before the shard writer was
# reworked (commit b4622cd): any later change to the writer must keep them. They depend on
# Pillow's PNG encoder and zlib, so they are checked only with the versions they were taken on.
PINNED_VERSIONS = ("13.0.0", "1.2.13")
PINNED_SHA256 = {
    "classes.json": "9d4c799dfc9463f7a1bcda7f837561206de732ce750c5fc0dd39642d41c08832",
    "stats.json": "3eeacc5935feaa74845c6ab6e30a323570fe46fe5e2023ca8b0cc701084c6d7c",
    "test-000000.tar": "188a102f4fdf3c7ee17d267fe624ee4bfb5e90f7f9c560f44f4eaa27e850bace",
    "train-000000.tar": "e68e1e187257a036e79c3faf2c47c0b33d340206c02f84f825eabe1cba30705a",
    "train-000001.tar": "de8b9640b9f381b63f30dbe776b53af9611316f1af50735e08a73b2709ea6744",
    "valid-000000.tar": "a0946743c5b99df0b90b5655ea5a63e4e38d4f5b716d99071c26b0bb69c7ee03",
    "valid-000001.tar": "59ae6d95ab26f50e622682df2a8b18a4b234df6db1620fb84a31111c6587e210",
}


def test_output_bytes_are_pinned(tmp_path, monkeypatch):
    import hashlib
    import zlib

    import PIL

    if (PIL.__version__, zlib.ZLIB_RUNTIME_VERSION) != PINNED_VERSIONS:
        pytest.skip(f"hashes pinned with Pillow/zlib {PINNED_VERSIONS}")
    monkeypatch.chdir(tmp_path)  # stats.json records the --coco path as given: keep it relative
    synth.write_synthetic_coco(
        "coco", classes=6, drawings_per_split={"train": 3, "valid": 2, "test": 1},
        image_size=(160, 128), symbols_per_drawing=(4, 7), seed=3, image_format="png",
    )  # fmt: skip
    shards.make_shards("coco", "out", padding=0.1, shard_size=8)
    written = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path("out").iterdir()}
    assert written == PINNED_SHA256


# --------------------------------------------------------------------------- class indices


def _tiny_export(root: Path, split_boxes: dict[str, list[int]]) -> Path:
    """An export whose split ``s`` has one 8x8 image with one box per category id listed."""
    categories = [{"id": i, "name": f"c{i}"} for i in (0, 3, 5, 9, 12)]
    for split, cat_ids in split_boxes.items():
        folder = root / split
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / "d.png")
        coco = {
            "images": [{"id": 1, "file_name": "d.png", "width": 8, "height": 8}],
            "annotations": [
                {"id": k, "image_id": 1, "category_id": c, "bbox": [1, 1, 4, 4]}
                for k, c in enumerate(cat_ids)
            ],
            "categories": categories,
        }
        (folder / ANNOTATIONS_FILE).write_text(json.dumps(coco))
    return root


def test_class_indices_cover_categories_used_in_any_split(tmp_path):
    # 12 appears only in valid; 0 and 5 have no box at all
    export = load_export(_tiny_export(tmp_path, {"train": [9, 3, 3], "valid": [12]}))
    classes = shards.build_classes(export)
    assert [(c.index, c.coco_id, c.name) for c in classes] == [
        (0, 3, "c3"),
        (1, 9, "c9"),
        (2, 12, "c12"),
    ]


def test_split_without_boxes_gets_no_shard(tmp_path):
    coco = _tiny_export(tmp_path / "in", {"train": [3], "test": []})
    stats = shards.make_shards(coco, tmp_path / "out")
    assert stats["splits"]["test"]["crops"] == 0 and stats["splits"]["test"]["shards"] == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["train-000000.tar"]


def test_single_json_input_is_the_train_split(tmp_path):
    root = _tiny_export(tmp_path / "in", {"train": [3, 9]})
    stats = shards.make_shards(root / "train" / ANNOTATIONS_FILE, tmp_path / "out", padding=0)
    assert stats["splits"]["train"]["crops"] == 2
    (sample, _) = _read_split(tmp_path / "out", "train")
    assert json.loads(sample["json"])["crop"] == [1, 1, 5, 5]


# --------------------------------------------------------------------------- the command


def _run_failing(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        shards.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def _previous_output(out: Path) -> dict[str, bytes]:
    out.mkdir(parents=True)
    (out / "README.md").write_text("tracked by the repo\n")
    (out / "train-000000.tar").write_bytes(b"old shard")
    (out / "classes.json").write_text('{"classes": []}\n')
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_main_replaces_shards_and_keeps_other_files(synth_coco, tmp_path, capsys):
    out = tmp_path / "shards"
    _previous_output(out)
    (out / "valid-000009.tar").write_bytes(b"stale shard of an earlier, larger run")
    assert shards.main(["--coco", str(synth_coco), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train:" in printed and f"{SYNTH_CLASSES} classes" in printed and " s\n" in printed
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["README.md", "classes.json", "stats.json", "train-000000.tar", "valid-000000.tar", "test-000000.tar"]
    )
    assert (out / "README.md").read_text() == "tracked by the repo\n"
    assert (out / "train-000000.tar").read_bytes() != b"old shard"
    assert _leftovers(tmp_path) == []


def test_bad_image_halfway_leaves_previous_output_untouched(synth_coco, tmp_path, capsys):
    coco = tmp_path / "coco"
    shutil.copytree(synth_coco, coco)
    # the last image of the last split: train and valid are already cropped when it fails
    last = sorted((coco / "test").glob("*.jpg"))[-1]
    last.write_bytes(b"not a jpeg")
    out = tmp_path / "shards"
    before = _previous_output(out)

    line = _run_failing(["--coco", str(coco), "--out", str(out)], capsys)
    assert str(coco / "test" / ANNOTATIONS_FILE) in line and "not an image" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_missing_image_is_found_before_cropping(synth_coco, tmp_path, capsys):
    coco = tmp_path / "coco"
    shutil.copytree(synth_coco, coco)
    missing = sorted((coco / "valid").glob("*.jpg"))[0]
    missing.unlink()
    out = tmp_path / "shards"
    line = _run_failing(["--coco", str(coco), "--out", str(out)], capsys)
    assert f"image file {missing.name} not found" in line
    assert not out.exists() and _leftovers(tmp_path) == []


def test_bad_box_is_one_line_and_writes_nothing(synth_coco, tmp_path, capsys):
    coco = tmp_path / "coco"
    shutil.copytree(synth_coco, coco)
    path = coco / "test" / ANNOTATIONS_FILE
    data = json.loads(path.read_text())
    data["annotations"][3]["bbox"] = [10, 10, 0, 5]
    path.write_text(json.dumps(data))
    out = tmp_path / "shards"
    before = _previous_output(out)
    line = _run_failing(["--coco", str(coco), "--out", str(out)], capsys)
    assert line == (
        f"error: {path}: annotation id {data['annotations'][3]['id']}: bbox [10, 10, 0, 5] "
        "has zero or negative width or height"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_categories_disagreeing_between_splits(synth_coco, tmp_path, capsys):
    coco = tmp_path / "coco"
    shutil.copytree(synth_coco, coco)
    path = coco / "valid" / ANNOTATIONS_FILE
    data = json.loads(path.read_text())
    data["categories"][1]["name"] = "renamed"
    path.write_text(json.dumps(data))
    line = _run_failing(["--coco", str(coco), "--out", str(tmp_path / "o")], capsys)
    assert str(path) in line and str(coco / "train" / ANNOTATIONS_FILE) in line


def test_output_that_cannot_be_written(synth_coco, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    line = _run_failing(["--coco", str(synth_coco), "--out", str(blocker / "shards")], capsys)
    assert str(blocker / "shards") in line and "cannot create output folder" in line
    line = _run_failing(["--coco", str(synth_coco), "--out", str(blocker)], capsys)
    assert line.startswith(f"error: {blocker}: exists and is not a folder")


@pytest.mark.parametrize(
    "extra, words",
    [(["--padding", "-0.1"], "--padding"), (["--padding", "nan"], "--padding"), (["--shard-size", "0"], "--shard-size")],
)
def test_bad_options(synth_coco, tmp_path, capsys, extra, words):
    line = _run_failing(["--coco", str(synth_coco), "--out", str(tmp_path / "o"), *extra], capsys)
    assert words in line
    assert not (tmp_path / "o").exists()


def test_missing_input(tmp_path, capsys):
    line = _run_failing(["--coco", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert line.startswith(f"error: {tmp_path / 'nope'}: not found")


# --------------------------------------------------------------------------- the real data


def test_real_dataset_counts(firefighting_dir, tmp_path):
    """The numbers of shared/data/README.md: 2,606 / 755 / 424 crops, 41 classes (ids 1-41)."""
    stats = shards.make_shards(firefighting_dir, tmp_path / "shards")
    assert {s: stats["splits"][s]["crops"] for s in stats["splits"]} == {
        "train": 2606,
        "valid": 755,
        "test": 424,
    }
    assert {s: stats["splits"][s]["drawings"] for s in stats["splits"]} == {
        "train": 102,
        "valid": 28,
        "test": 18,
    }
    classes = json.loads((tmp_path / "shards" / "classes.json").read_text())["classes"]
    assert stats["classes"] == len(classes) == 41
    assert [c["coco_id"] for c in classes] == list(range(1, 42))
    assert stats["splits"]["test"]["per_class"]["24V-power-cord"] == 149
    assert stats["splits"]["valid"]["per_class"]["explosion-proof-smoke-detector"] == 1
    assert len(_read_split(tmp_path / "shards", "test")) == 424


# --------------------------------------------------------------------------- what it may touch


def test_files_it_did_not_write_are_kept(synth_coco, tmp_path):
    """Only ``{split}-NNNNNN.tar``, classes.json and stats.json are make-shards' own."""
    out = tmp_path / "shards"
    out.mkdir()
    theirs = {
        "my_backup.tar": b"the user's backup",
        "train-12.tar": b"not our naming",
        "extra-000000.tar": b"not one of our splits",
        "train-000000.tar.bak": b"a copy",
        "README.md": b"tracked by the repo\n",
    }
    for name, content in theirs.items():
        (out / name).write_bytes(content)
    (out / "valid-000007.tar").write_bytes(b"stale shard of an earlier run: ours")
    shards.make_shards(synth_coco, out, shard_size=SYNTH_SHARD_SIZE)
    for name, content in theirs.items():
        assert (out / name).read_bytes() == content, name
    assert not (out / "valid-000007.tar").exists()


SIGTERM_DURING_CROPPING = """
import os, signal, sys
from symclr_ft.data import shards
real = shards.write_split
def write_split(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # while the temporary folder holds the first split
    return real(*args, **kwargs)
shards.write_split = write_split
shards.main(sys.argv[1:])
"""


def test_sigterm_cleans_up_like_ctrl_c(synth_coco, tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "shards"
    before = _previous_output(out)
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_DURING_CROPPING, "--coco", str(synth_coco), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode not in (-signal.SIGTERM, 0), result.stderr
    assert (result.returncode, result.stderr) == (130, "interrupted\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []
