"""The commands that use a model (symclr-embed, symclr-predict, symclr-spot, symclr-export) under
bad input, as a new user tries them (issue 24): they never delete or overwrite a user's file,
decode every image as make-shards does, and answer bad numbers, full disks and signals with
one line. Data-loss tests create the user's files first, then check them byte for byte.
The table of cases is docs/RELIABILITY.md."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import odd_images
from symclr_ft.data.shardset import load_classes, load_split
from symclr_ft.use.index import FeatureIndex, is_index, load_index, save_index
from symclr_ft.use.predict import PRED_COLUMNS, embed_main, predict_main
from symclr_ft.use.spot import spotting

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A small random model (its features are deterministic, which is all these tests need)."""
    from symclr_ft.models.backbones import SimCLRNet, save_model_file

    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    save_model_file(SimCLRNet("resnet10t", 8), run / "model.pt", epoch=1)
    (run / "config.yaml").write_text("data:\n  image_size: 32\n")
    return run / "model.pt"


@pytest.fixture(scope="module")
def crops(synth_shards, tmp_path_factory) -> Path:
    """An ImageFolder support: two train crops of each of three classes."""
    out = tmp_path_factory.mktemp("crops") / "support"
    split, names = load_split(synth_shards, "train", 40), load_classes(synth_shards)
    for i, (image, label) in enumerate(zip(split.images, split.labels.tolist())):
        folder = out / names[label]
        if label < 3 and (not folder.is_dir() or len(os.listdir(folder)) < 2):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return out


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def users_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "figures").mkdir()
    (path / "figures" / "plot.png").write_bytes(b"\x89PNG the user's figure")
    return tree(path)


def run_main(main, argv, capsys) -> tuple[int, str]:
    """A command in-process: (exit status, its one error line or ''). A traceback (any other
    exception) fails the test; an error of more than one line too."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) <= 1 and "Traceback" not in err, err
    if code == 2:
        assert errors and err.rstrip().endswith(errors[0]), err
    return code, (errors[0] if errors else "")


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def embed(model_file, source, out, *extra):
    return ["--model", model_file, "--input", source, "--out", out, "--mixed-precision", "no", *extra]


def predict(model_file, support, query, out, *extra):
    return ["--model", model_file, "--support", support, "--query", query, "--out", out,
            "--mixed-precision", "no", *extra]


def spot(model_file, exemplars, drawings, out, *extra):
    return ["--model", model_file, "--exemplars", exemplars, "--drawings", drawings, "--out", out,
            "--no-objectness", *extra]


# --------------------------------------------------------------------------- data loss


def test_embed_refuses_a_folder_of_the_users_files_and_overwrite_keeps_them(model_file, crops,
                                                                          tmp_path, capsys):
    out = tmp_path / "work"
    before = users_folder(out)
    code, line = run_main(embed_main, embed(model_file, crops, out), capsys)
    assert code == 2 and f"{out}: exists and is not an earlier symclr-embed output" in line
    assert tree(out) == before
    code, _ = run_main(embed_main, embed(model_file, crops, out, "--overwrite"), capsys)
    after = tree(out)
    assert code == 0 and is_index(out) and {k: after[k] for k in before} == before
    (out / "notes.txt").write_text("added later")  # its own folder now: replaced without a flag
    assert run_main(embed_main, embed(model_file, crops, out), capsys)[0] == 0
    assert tree(out)["notes.txt"] == b"added later" and tree(out)["thesis.tex"] == before["thesis.tex"]
    assert temporaries(tmp_path) == []


def test_spot_refuses_a_folder_of_the_users_files(model_file, synth_coco, tmp_path, capsys):
    out = tmp_path / "work"
    before = users_folder(out)
    code, line = run_main(spotting.main, spot(model_file, synth_coco / "train", synth_coco / "test", out), capsys)
    assert code == 2 and "is not an earlier symclr-spot output" in line
    assert tree(out) == before and temporaries(tmp_path) == []


@pytest.mark.parametrize("command", ["embed", "spot"])
def test_a_file_or_dot_as_out_is_refused_and_kept(command, model_file, crops, synth_coco, tmp_path,
                                                  capsys, monkeypatch):
    main, argv = (embed_main, lambda out: embed(model_file, crops, out)) if command == "embed" else (
        spotting.main, lambda out: spot(model_file, synth_coco / "train", synth_coco / "test", out))
    target = tmp_path / "results.csv"
    target.write_bytes(b"a,b\n1,2\n")
    code, line = run_main(main, argv(target), capsys)
    assert code == 2 and "exists and is not a folder" in line
    assert target.read_bytes() == b"a,b\n1,2\n" and temporaries(tmp_path) == []  # no .results.csv.old
    here = tmp_path / "here"
    before = users_folder(here)
    monkeypatch.chdir(here)
    for dot in (".", "..", "./"):
        code, line = run_main(main, argv(dot), capsys)
        assert code == 2 and "not '.' or '..'" in line
    assert tree(here) == before and temporaries(here) == []


def queries_with_problems(crops: Path, folder: Path) -> Path:
    """A query folder: a readable crop, a file that is not an image, a link that leads nowhere."""
    folder.mkdir()
    first = sorted(next(crops.iterdir()).iterdir())[0]
    (folder / "good.png").write_bytes(first.read_bytes())
    (folder / "bad.png").write_bytes(b"\x89PNG broken")
    (folder / "gone.png").symlink_to(folder / "deleted.png")
    return folder


def test_predict_keeps_the_users_skipped_csv_and_lists_a_broken_link(model_file, crops, tmp_path, capsys):
    queries = queries_with_problems(crops, tmp_path / "q")
    results = tmp_path / "results"
    results.mkdir()
    (results / "skipped.csv").write_text("my own list of skipped things\n")
    code, _ = run_main(predict_main, predict(model_file, crops, queries, results / "p.csv"), capsys)
    assert code == 0
    assert (results / "skipped.csv").read_text() == "my own list of skipped things\n"
    with open(results / "p.skipped.csv", newline="") as handle:
        skipped = {Path(r["source"]).name: r["reason"] for r in csv.DictReader(handle)}
    assert set(skipped) == {"bad.png", "gone.png"}
    assert "broken symbolic link" in skipped["gone.png"] and "deleted.png" in skipped["gone.png"]
    assert "BytesIO" not in skipped["bad.png"] and "not an image file" in skipped["bad.png"]
    assert sorted(p.name for p in results.iterdir()) == ["p.csv", "p.skipped.csv", "p.threshold.json", "skipped.csv"]


def test_predictions_named_skipped_csv_are_not_overwritten_by_the_skip_list(model_file, crops,
                                                                           tmp_path, capsys):
    queries = queries_with_problems(crops, tmp_path / "q")
    out = tmp_path / "r" / "skipped.csv"
    assert run_main(predict_main, predict(model_file, crops, queries, out), capsys)[0] == 0
    with open(out, newline="") as handle:
        assert next(csv.reader(handle)) == PRED_COLUMNS  # the predictions are still there
    with open(tmp_path / "r" / "skipped.skipped.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["source", "reason"]


def test_predict_refuses_files_it_did_not_write_and_names_kept_for_side_files(model_file, crops,
                                                                              tmp_path, capsys):
    queries = queries_with_problems(crops, tmp_path / "q")
    mine = tmp_path / "p.csv"
    mine.write_text("the user's spreadsheet\n")
    code, line = run_main(predict_main, predict(model_file, crops, queries, mine), capsys)
    assert code == 2 and "was not written by symclr-predict" in line and "--overwrite" in line
    assert mine.read_text() == "the user's spreadsheet\n" and temporaries(tmp_path) == []
    for name, words in [("x.threshold.json", "kept for the side files"), ("x.skipped.csv", "kept for the side files"),
                        ("q", "is a folder")]:
        code, line = run_main(predict_main, predict(model_file, crops, queries, tmp_path / name), capsys)
        assert code == 2 and words in line, line
    code, line = run_main(predict_main, predict(model_file, crops, tmp_path / "q" / "good.png",
                                                tmp_path / "q" / "good.png"), capsys)
    assert code == 2 and "is the --query input" in line
    assert run_main(predict_main, predict(model_file, crops, queries, mine, "--overwrite"), capsys)[0] == 0
    assert mine.read_text().startswith(",".join(PRED_COLUMNS))


def test_a_full_disk_in_predict_leaves_the_earlier_files_whole(model_file, crops, tmp_path, capsys,
                                                               monkeypatch):
    queries = queries_with_problems(crops, tmp_path / "q")
    out = tmp_path / "r" / "p.csv"
    assert run_main(predict_main, predict(model_file, crops, queries, out), capsys)[0] == 0
    before = tree(out.parent)
    real = Path.write_text

    def full(self, *args, **kwargs):  # the disk fills up as the threshold is written
        if "threshold.json" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    code, line = run_main(predict_main, predict(model_file, crops, queries, out, "--k", "3"), capsys)
    assert code == 2 and "No space left on device" in line
    assert tree(out.parent) == before and temporaries(out.parent) == []
    fresh = tmp_path / "fresh" / "p.csv"
    code, _ = run_main(predict_main, predict(model_file, crops, queries, fresh), capsys)
    assert code == 2 and list(fresh.parent.iterdir()) == []  # all three files, or none


def test_a_full_disk_in_embed_is_one_line_and_keeps_the_earlier_index(model_file, crops, tmp_path,
                                                                      capsys, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    out = tmp_path / "idx"
    assert run_main(embed_main, embed(model_file, crops, out), capsys)[0] == 0
    before = tree(out)

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    code, line = run_main(embed_main, embed(model_file, crops, out), capsys)
    assert code == 2 and line.startswith(f"error: {out}: cannot write the feature index") and "No space" in line
    assert tree(out) == before and temporaries(tmp_path) == []


# --------------------------------------------------------------------------- decoding


def test_every_command_decodes_odd_images_as_make_shards_does(model_file, tmp_path, capsys):
    """The odd drawings of the make-shards tests embed exactly as their plain 8-bit RGB
    equivalents (Pillow's convert("RGB") made the 16-bit one white, the alpha one black)."""
    ink = np.full((30, 40), 230, dtype=np.uint8)
    ink[15, :] = ink[:, 20] = 20
    images = tmp_path / "images"
    images.mkdir()
    for name, image in odd_images(ink).items():
        image.save(images / f"{name}.png")
    Image.fromarray(ink).convert("RGB").save(images / "plain.png")
    assert run_main(embed_main, embed(model_file, images, tmp_path / "idx"), capsys)[0] == 0
    index = load_index(tmp_path / "idx")
    rows = {Path(s["file"]).stem: f for s, f in zip(index.sources, index.features)}
    for name in odd_images(ink):
        torch.testing.assert_close(rows[name], rows["plain"], rtol=0, atol=1e-5)


def test_spot_finds_the_symbols_of_a_16_bit_drawing(model_file, synth_coco, tmp_path, capsys):
    grey = np.asarray(Image.open(sorted((synth_coco / "test").glob("*.jpg"))[0]).convert("L"))
    found = {}
    for name, image in {"8-bit": Image.fromarray(grey), "16-bit": Image.fromarray(grey.astype(np.uint16) * 257)}.items():
        (tmp_path / name).mkdir()
        image.save(tmp_path / name / "drawing.png")
        out = tmp_path / f"out-{name}"
        argv = spot(model_file, synth_coco / "train", tmp_path / name, out, "--count-score", "0.5")
        assert run_main(spotting.main, argv, capsys)[0] == 0
        found[name] = json.loads((out / "detections.json").read_text())
    assert found["8-bit"] and found["16-bit"] == found["8-bit"]


def test_skipped_csv_names_a_shard_crops_source_not_an_in_memory_file(model_file, synth_shards,
                                                                       tmp_path, capsys):
    import webdataset as wds

    from symclr_ft.data.shards import TAR_HEADERS
    from symclr_ft.data.shardset import iter_shard

    shards = tmp_path / "shards"
    shutil.copytree(synth_shards, shards)
    samples = {key: dict(fields) for key, fields in iter_shard(shards / "valid-000000.tar")}
    broken = sorted(samples)[0]
    samples[broken]["png"] = b"not a png"
    with wds.TarWriter(str(shards / "valid-000000.tar"), **TAR_HEADERS) as writer:
        for key, fields in samples.items():
            writer.write({"__key__": key, **fields})
    assert run_main(embed_main, embed(model_file, shards, tmp_path / "idx", "--split", "valid"), capsys)[0] == 0
    with open(tmp_path / "idx" / "skipped.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    record = json.loads(samples[broken]["json"])
    assert "BytesIO" not in row["reason"] and "not an image file PIL can read" in row["reason"]
    assert f"sample {broken} (drawing {record['image']}, image id {record['image_id']}, box " in row["reason"]


# --------------------------------------------------------------------------- tracebacks, numbers


def test_indexes_of_different_feature_widths_are_one_line(model_file, tmp_path, capsys):
    from symclr_ft.models.backbones import model_file_info

    sha = model_file_info(model_file)["sha256"]
    for name, width in (("support", 8), ("query", 4)):
        feats = torch.nn.functional.normalize(torch.randn(4, width), dim=1)
        save_index(FeatureIndex(feats, torch.tensor([0, 0, 1, 1]), ["a", "b"], [{"file": f"{i}"} for i in range(4)],
                                sha, 32, "none"), tmp_path / name)
    code, line = run_main(predict_main, predict(model_file, tmp_path / "support", tmp_path / "query",
                                                tmp_path / "p.csv"), capsys)
    assert code == 2 and "query features have 4 dimensions, the support's" in line and "have 8" in line
    assert not (tmp_path / "p.csv").exists() and temporaries(tmp_path) == []


def test_image_sizes_beyond_the_limit_or_the_memory_are_refused_first(model_file, crops, synth_coco,
                                                                      tmp_path, capsys, monkeypatch):
    code, line = run_main(embed_main, embed(model_file, crops, tmp_path / "i", "--image-size", 100000), capsys)
    assert code == 2 and "argument --image-size: '100000' is outside the range [16, 1024]" in line
    code, line = run_main(spotting.main, spot(model_file, synth_coco / "train", synth_coco / "test",
                                              tmp_path / "s", "--image-size", 100000), capsys)
    assert code == 2 and "outside the range [16, 1024]" in line
    monkeypatch.setattr("symclr_ft.distributed.free_memory", lambda: 2**30)  # 1 GiB free
    code, line = run_main(embed_main, embed(model_file, crops, tmp_path / "i", "--image-size", 1024), capsys)
    assert code == 2 and "batches of 256 crops needs about 96.0 GiB" in line and "lower --batch-size" in line
    code, line = run_main(spotting.main, spot(model_file, synth_coco / "train", synth_coco / "test",
                                              tmp_path / "s", "--image-size", 1024), capsys)
    assert code == 2 and "needs about 48.0 GiB" in line and "lower --image-size" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_bad_size_and_full_disk_are_one_line(model_file, tmp_path, capsys, monkeypatch):
    import onnx

    from symclr_ft.models.export import main as export_main

    out = tmp_path / "m.onnx"
    code, line = run_main(export_main, ["--model", model_file, "--onnx", out, "--image-size", "-5"], capsys)
    assert code == 2 and "argument --image-size: '-5' is outside the range [16, 1024]" in line
    out.write_bytes(b"an earlier export")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full)
    code, line = run_main(export_main, ["--model", model_file, "--onnx", out, "--no-check"], capsys)
    assert code == 2 and line == f"error: {out}: cannot write the ONNX file (No space left on device)"
    assert out.read_bytes() == b"an earlier export" and temporaries(tmp_path) == []


@pytest.mark.parametrize("argv, words", [
    (["--max-drawings", "-1"], "argument --max-drawings: '-1' is outside the range >= 0"),
    (["--min-score", "nan"], "argument --min-score: expected a finite number, got 'nan'"),
    (["--nms-iou", "5"], "argument --nms-iou: '5' is outside the range [0, 1]"),
    (["--count-score", "2"], "argument --count-score: '2' is outside the range [-1, 1]"),
])
def test_spot_refuses_numbers_out_of_range(argv, words, model_file, synth_coco, tmp_path, capsys):
    code, line = run_main(spotting.main, spot(model_file, synth_coco / "train", synth_coco / "test",
                                              tmp_path / "out", *argv), capsys)
    assert code == 2 and words in line and not (tmp_path / "out").exists()


def test_spot_messages_name_its_own_options(model_file, crops, synth_coco, tmp_path, capsys):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"an export")
    code, line = run_main(spotting.main, spot(onnx_file, synth_coco / "train", synth_coco / "test", tmp_path / "o"), capsys)
    assert code == 2 and "symclr-spot needs a model.pt (ONNX exports are for embed/predict)" in line
    one_class = tmp_path / "one"
    shutil.copytree(sorted(crops.iterdir())[0], one_class / "valve")
    code, line = run_main(spotting.main, spot(model_file, one_class, synth_coco / "test", tmp_path / "o",
                                              "--count-score", "auto", "--shots", "2"), capsys)
    assert code == 2 and "--count-score auto: needs examples of at least two classes" in line
    assert "--reject" not in line and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- SIGTERM

SIGTERM_WHILE_WRITING = """
import os, signal, sys
import safetensors.torch
from symclr_ft.use import predict
from symclr_ft.use.spot import spotting
def killed(real):
    def write(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill`, `timeout` or a scheduler would
        return real(*args, **kwargs)
    return write
command = sys.argv[1]
if command == "embed":
    safetensors.torch.save_file = killed(safetensors.torch.save_file)
    predict.embed_main(sys.argv[2:])
elif command == "predict":
    predict.write_predictions = killed(predict.write_predictions)
    predict.predict_main(sys.argv[2:])
else:
    spotting.write_outputs = killed(spotting.write_outputs)
    spotting.main(sys.argv[2:])
"""


@pytest.mark.parametrize("command", ["embed", "predict", "spot"])
def test_sigterm_cleans_up_like_ctrl_c(command, model_file, crops, synth_coco, tmp_path):
    out = tmp_path / "out"
    argv = {"embed": embed(model_file, crops, out),
            "predict": predict(model_file, crops, crops, out / "p.csv"),
            "spot": spot(model_file, synth_coco / "train", synth_coco / "test", out, "--max-drawings", "1")}[command]
    if command == "predict":
        out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SIGTERM_WHILE_WRITING, command, *map(str, argv)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 130, result.stderr[-2000:]
    assert result.stderr.rstrip().splitlines()[-1] == "interrupted" and "Traceback" not in result.stderr
    left = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") or p.parent == out]
    assert left == [] and (not out.exists() or list(out.iterdir()) == [])
