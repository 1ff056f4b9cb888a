"""The run comparison table and plots, from fake run folders; training-curve plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from symclr_ft.eval.report import main, markdown_table, load_run, plot_confusion, plot_history


def block(micro: float, ci: float, macro: float) -> dict:
    return {"micro_mean": micro, "micro_std": ci, "micro_ci95": ci, "macro_mean": macro,
            "macro_std": 0.0, "macro_ci95": ci}


def fake_run(root: Path, name: str, one: float, train: dict | None = None, extra=None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    metrics = {
        "split": "valid", "image_size": 96, "episodes": 100,
        "one_shot": block(one, 0.008, one - 0.02),
        "five_shot": block(0.95, 0.004, 0.94),
        "full_knn": {**block(0.97, 0.012, 0.96), "micro_ci95_low": 0.955, "micro_ci95_high": 0.979},
        **(extra or {}),
    }
    if train:
        metrics["train"] = train
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.yaml").write_text(
        f"run:\n  name: {name}-cfg\nmodel:\n  arch: resnet18\n  init: simclr:ckpt.tar\n"
        "loss:\n  name: infonce\ntrain:\n  epochs: 50\n"
    )
    return run


def test_report_table_and_chart(tmp_path, capsys):
    a = fake_run(tmp_path / "runs", "a", 0.912, train={"images_per_s": 812.4, "seconds": 5400})
    b = fake_run(tmp_path / "runs", "b", 0.85, extra={"five_shot_proto": block(0.961, 0.003, 0.95)})
    assert main([str(a), str(b)]) == 0
    out = tmp_path / "runs" / "summary"
    printed = capsys.readouterr().out
    table = (out / "summary.md").read_text()
    assert table in printed
    lines = table.splitlines()
    assert lines[0].startswith("| run | split | size | 1-shot")
    row_a = next(line for line in lines if line.startswith("| a-cfg "))
    assert "91.2 ± 0.8" in row_a and "89.2" in row_a and "95.0 ± 0.4" in row_a
    assert "97.0 ± 1.2" in row_a and "812" in row_a and "1.50 h" in row_a
    assert "resnet18, simclr:ckpt.tar, infonce, 50 ep" in row_a
    assert "| b-cfg | five_shot_proto | 96.1 ± 0.3 | 95.0 |" in table
    assert (out / "summary.png").stat().st_size > 1000
    assert not list(out.glob(".*.tmp"))


def test_report_nested_splits_and_duplicate_names(tmp_path):
    run = tmp_path / "x"
    run.mkdir()
    b = block(0.9, 0.01, 0.9)
    valid = {"split": "valid", "one_shot": b, "five_shot": b, "full_knn": b}
    nested = {"valid": valid, "test": {**valid, "split": "test"}}
    (run / "metrics.json").write_text(json.dumps(nested))
    table = markdown_table([load_run(run)])
    assert "| x (valid) | valid |" in table and "| x (test) | test |" in table


@pytest.mark.parametrize(
    "content, message",
    [(None, "metrics.json not found"), ("{not json", "not valid JSON"),
     ('{"loss": 1}', "no evaluation results"),
     ('{"one_shot": {"micro_mean": "x"}, "five_shot": {}, "full_knn": {}}', "one_shot.micro_mean")],
)
def test_bad_metrics_is_one_line_naming_the_file(tmp_path, capsys, content, message):
    run = tmp_path / "r"
    run.mkdir()
    if content is not None:
        (run / "metrics.json").write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main([str(run), "--out", str(tmp_path / "s")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(run / "metrics.json") in err and message in err
    assert not (tmp_path / "s" / "summary.md").exists()


@pytest.mark.parametrize("config", ["run: 5\n", "model: [1]\nrun:\n  name: x\n"])
def test_odd_config_sections_are_one_line_or_ignored(tmp_path, capsys, config):
    run = fake_run(tmp_path / "runs", "r", 0.9)
    (run / "config.yaml").write_text(config)
    if config.startswith("run: 5"):
        with pytest.raises(SystemExit) as exit_:
            main([str(run), "--out", str(tmp_path / "s")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "config.yaml: section run must be a mapping" in err
    else:  # a malformed section that only feeds the settings column is left out of it
        assert main([str(run), "--out", str(tmp_path / "s")]) == 0


def test_plot_history(tmp_path):
    rows = [{"epoch": e, "loss": 5.0 - e, "lr": 3e-4, "seconds": 10.0, "images_per_s": 800.0}
            for e in range(1, 5)]
    written = plot_history(rows, tmp_path)
    assert sorted(p.name for p in written) == ["loss.png", "lr.png"]
    rows[1].update(one_shot=0.8, five_shot=0.9, full_knn=0.95)
    rows[3].update(one_shot=0.85, five_shot=0.92, full_knn=0.96)
    written = plot_history(rows, tmp_path)
    assert sorted(p.name for p in written) == ["accuracy.png", "loss.png", "lr.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_plot_confusion(tmp_path):
    path = plot_confusion(np.array([[3, 1], [0, 0]]), ["a", "b"], "t", tmp_path / "c.png")
    assert path.stat().st_size > 1000


def test_a_column_from_other_evaluations_sits_beside_each_run(tmp_path, capsys):
    """--column music=DIR,DIR: each run's row gets the 1-shot of its own evaluation folder
    (the main job's music column); a count that does not match the runs is one line, exit 2."""
    a = fake_run(tmp_path / "runs", "a", 0.912)
    b = fake_run(tmp_path / "runs", "b", 0.85)
    ma = fake_run(tmp_path / "music", "a", 0.423)
    mb = fake_run(tmp_path / "music", "b", 0.317)
    assert main([str(a), str(b), "--column", f"music={ma},{mb}"]) == 0
    lines = (tmp_path / "runs" / "summary" / "summary.md").read_text().splitlines()
    assert "| music 1-shot |" in lines[0]
    row_b = next(line for line in lines if line.startswith("| b-cfg "))
    assert "31.7 ± 0.8" in row_b and "42.3" not in row_b
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a), str(b), "--column", f"music={ma}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "one folder per run" in err and "\n" not in err
