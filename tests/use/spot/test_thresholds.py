"""The count thresholds file (``symclr-spot --thresholds``, report.html's "Save thresholds"):
what it accepts, what it refuses with one line naming the file, and that a class's own
threshold changes only that class's counts."""

from __future__ import annotations

import json

import pytest

from symclr_ft.errors import UserError
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.report import count_detections, count_thresholds
from symclr_ft.use.spot.spotting import main as spot_main
from symclr_ft.use.spot.spotting import rerun_command
from symclr_ft.use.spot.thresholds import apply_thresholds, read_thresholds, thresholds_of
from use.spot.test_spotting import tiny_model  # noqa: F401  (the command's model)

CLASSES = ["valve", "pump", "tee"]


class Ex:  # the two fields of Exemplars that counting reads
    class_names = CLASSES
    category_ids = [1, 2, 3]


def write(tmp_path, content) -> str:
    path = tmp_path / "thresholds.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_a_file_sets_the_global_and_per_class_thresholds(tmp_path):
    path = write(tmp_path, {"count_score": 0.6, "classes": {"pump": 0.9, "tee": -0.25}})
    cfg = SpotConfig()
    apply_thresholds(cfg, read_thresholds(path), CLASSES)
    assert cfg.count_score == 0.6 and cfg.class_count_scores == {"pump": 0.9, "tee": -0.25}
    assert [cfg.count_score_of(n) for n in CLASSES] == [0.6, 0.9, -0.25]
    assert thresholds_of(cfg) == {"count_score": 0.6, "classes": {"pump": 0.9, "tee": -0.25}}


def test_box_scales_travel_with_the_thresholds(tmp_path):
    """Calibration's box scales (--count-score per-class) are written with the thresholds and
    read back, so a rerun with the file boxes (and so suppresses) as the run did; a file
    without them leaves every class at 1."""
    path = write(tmp_path, {"count_score": 0.7, "classes": {"pump": 0.6}, "box_scales": {"valve": 1.35}})
    cfg = SpotConfig()
    apply_thresholds(cfg, read_thresholds(path), CLASSES)
    assert cfg.class_box_scales == {"valve": 1.35}
    assert thresholds_of(cfg) == {"count_score": 0.7, "classes": {"pump": 0.6}, "box_scales": {"valve": 1.35}}
    apply_thresholds(cfg, read_thresholds({"classes": {}}), CLASSES)
    assert cfg.class_box_scales == {} and "box_scales" not in thresholds_of(cfg)
    with pytest.raises(UserError) as err:
        apply_thresholds(cfg, read_thresholds({"box_scales": {"valv": 1.2}}), CLASSES)
    assert "class 'valv' is not among the exemplars' classes" in str(err.value)


def test_without_count_score_the_given_one_stays(tmp_path):
    cfg = SpotConfig(count_score=0.42)
    apply_thresholds(cfg, read_thresholds({"classes": {"valve": 0.5}}), CLASSES)
    assert cfg.count_score == 0.42 and cfg.count_score_of("valve") == 0.5 and cfg.count_score_of("pump") == 0.42
    apply_thresholds(cfg, read_thresholds({"count_score": 1}), CLASSES)  # an int is a number; no classes
    assert cfg.count_score == 1.0 and cfg.class_count_scores == {}


def test_a_class_threshold_changes_only_that_class():
    rows = [{"image_id": 7, "category_id": c, "bbox": [0, 0, 1, 1], "score": s}
            for c in (1, 2, 3) for s in (0.55, 0.65, 0.75, 0.85)]
    cfg = SpotConfig(count_score=0.6)
    base = count_detections(rows, cfg.count_score, count_thresholds(cfg, Ex))
    assert base == {(7, 1): 3, (7, 2): 3, (7, 3): 3}
    assert base == count_detections(rows, 0.6)  # no class of its own: the global rule
    cfg.class_count_scores = {"pump": 0.8}
    assert count_detections(rows, cfg.count_score, count_thresholds(cfg, Ex)) == {(7, 1): 3, (7, 2): 1, (7, 3): 3}
    assert count_detections(rows, 0.6, {2: 0.75}) == {(7, 1): 3, (7, 2): 2, (7, 3): 3}  # at the threshold counts


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ("[0.7]", "expected a JSON object"),
    ({"count_score": 0.7, "clases": {}}, "unknown key 'clases'"),
    ({"count_score": 1.5}, "count_score must be a number in [-1, 1], got 1.5"),
    ({"count_score": "0.7"}, 'count_score must be a number in [-1, 1], got "0.7"'),
    ({"count_score": True}, "count_score must be a number in [-1, 1], got true"),
    ("{\"count_score\": NaN}", "count_score must be a number in [-1, 1], got NaN"),
    ({"classes": [["pump", 0.7]]}, "classes must be an object"),
    ({"classes": {"pump": -1.01}}, 'classes["pump"] must be a number in [-1, 1], got -1.01'),
    ({"classes": {"pump": None}}, 'classes["pump"] must be a number in [-1, 1], got null'),
    ({"box_scales": {"pump": 0}}, 'box_scales["pump"] must be a number in (0, 10], got 0'),
    ({"box_scales": {"pump": 12.5}}, 'box_scales["pump"] must be a number in (0, 10], got 12.5'),
    ({"box_scales": {"pump": "1.2"}}, 'box_scales["pump"] must be a number in (0, 10], got "1.2"'),
    ({"box_scales": [1.2]}, "box_scales must be an object"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(UserError) as err:
        read_thresholds(path)
    assert str(err.value).startswith(path + ": ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match="no such thresholds file"):
        read_thresholds(tmp_path / "nope.json")


def test_unknown_classes_are_refused_by_name(tmp_path):
    path = write(tmp_path, {"classes": {"pump": 0.7, "valev": 0.5, "x": 0.1}})
    cfg = SpotConfig()
    with pytest.raises(UserError) as err:
        apply_thresholds(cfg, read_thresholds(path), CLASSES)
    text = str(err.value)
    assert text.startswith(path) and "classes 'valev', 'x' are not" in text and "(valve, pump, tee)" in text
    assert "'pump'" not in text and cfg.class_count_scores == {}  # nothing applied


def test_the_command_refuses_a_bad_file_before_any_work(tmp_path, capsys):
    path = write(tmp_path, {"count_score": 2})
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:  # the model does not exist: the file is read first
        spot_main(["--model", str(tmp_path / "none.pt"), "--exemplars", str(tmp_path), "--drawings",
                   str(tmp_path), "--out", str(out), "--thresholds", path])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {path}: count_score must be a number in [-1, 1], got 2"]
    assert not out.exists()


def test_the_rerun_command_replaces_thresholds():
    assert rerun_command(["--model", "m.pt", "--out", "o", "--thresholds", "old.json", "--count-score", "0.5"]) == \
        "symclr-spot --model m.pt --out o --count-score 0.5 --thresholds thresholds.json"
    assert rerun_command(["--thresh=old.json", "--drawings", "my sheets"]) == \
        "symclr-spot --drawings 'my sheets' --thresholds thresholds.json"


def test_the_command_refuses_an_unknown_class_by_name(tiny_model, synth_coco, tmp_path, capsys):
    """Known only once the exemplars are read; still before any drawing is spotted."""
    known = json.loads((synth_coco / "train" / "_annotations.coco.json").read_text())["categories"][1]["name"]
    path = write(tmp_path, {"count_score": 0.7, "classes": {known: 0.8, "no-such-class": 0.5}})
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        spot_main(["--model", str(tiny_model), "--exemplars", str(synth_coco / "train"), "--drawings",
                   str(synth_coco / "test"), "--out", str(out), "--image-size", "48", "--thresholds", path,
                   "--no-objectness"])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: class 'no-such-class' is not among the "
                                                   "exemplars' classes (")
    assert not out.exists()
