"""bench/spotting.py's settings parsing: ``--grid`` narrows the tuning grid to the values
given (and nothing else), ``--set`` reads dict settings as JSON, ``--count-scores`` replaces
the count thresholds the tune counts with."""

import itertools

import pytest

from bench_scripts import bench_script
from symclr_ft.use.spot.config import SpotConfig

bench = bench_script("spotting", "spotting_bench")


def test_grid_narrows_the_tuning_grid_to_the_values_given():
    narrowed = bench.grid_overrides(["objectness_weight=0", "box_mode=exemplar", "nms_iou=0.5",
                                     "score_rule=sum", "template_weight=0.5,1.0", "template_floor=0.4,0.5"])
    assert narrowed["template_weight"] == (0.5, 1.0) and narrowed["box_mode"] == ("exemplar",)
    combos = bench.scoring_grid(SpotConfig(), narrowed)
    expected = [{"objectness_weight": 0.0, "box_mode": "exemplar", "nms_iou": 0.5, "score_rule": "sum",
                 "template_weight": t, "template_floor": f} for t, f in itertools.product((0.5, 1.0), (0.4, 0.5))]
    assert combos == expected
    full = bench.scoring_grid(SpotConfig())  # not narrowed: the whole grid, each setting once
    assert len(full) == len({tuple(c.values()) for c in full}) > len(combos)


def test_grid_and_set_refuse_unknown_keys_and_read_dicts_as_json():
    with pytest.raises(SystemExit, match="tile"):
        bench.grid_overrides(["tile=512"])
    assert bench.config_overrides(["grey_scoring={}"]) == {"grey_scoring": {}}
    assert bench.config_overrides(['grey_scoring={"template_weight": 1.0}', "template_scales=0.8,1.0"]) == {
        "grey_scoring": {"template_weight": 1.0}, "template_scales": (0.8, 1.0)}


def test_count_scores_replace_the_tunes_count_thresholds():
    assert bench.parse_args(["--tune"]).count_scores == []  # the tune's own COUNT_SCORES then
    assert bench.parse_args(["--tune", "--count-scores", "0.65", "0.7"]).count_scores == [0.65, 0.7]
