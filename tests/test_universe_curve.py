"""bench/universe_curve.py: a training state loads into the run's network, the minutes come
from progress and history, every state of a run is one point of the curve."""

import json
from pathlib import Path

import pytest
import torch

from bench_scripts import bench_script
from symclr_ft.config import EvalConfig, ModelConfig, dump_config, load_config
from symclr_ft.distributed import make_accelerator
from symclr_ft.errors import UserError
from symclr_ft.models.backbones import build_model, load_state_weights
from symclr_ft.tracking import RunFiles

curve = bench_script("universe_curve")

SIZE = 32
TINY = ["model.arch=resnet18", "model.out_dim=16", "model.init=random", f"data.image_size={SIZE}"]


def _save_state(net, run: Path, progress: dict) -> Path:
    """The state train.py saves (Accelerate's files + progress.json) in ``run/state``."""
    accelerator = make_accelerator(mixed_precision="no")
    prepared = accelerator.prepare(net)
    RunFiles(run).save_state(accelerator, {"progress": progress, "scheduler": {}})
    del prepared
    return run / "state"


def test_state_weights_load_into_a_random_network(tmp_path):
    torch.manual_seed(0)
    trained = build_model(ModelConfig(arch="resnet18", out_dim=16)).eval()
    state = _save_state(trained, tmp_path, {"epoch": 1, "global_step": 3, "seconds": 0.0})
    torch.manual_seed(1)
    fresh = load_state_weights(build_model(ModelConfig(arch="resnet18", out_dim=16, init="random")), state / "model.safetensors")
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    x = torch.rand(2, 3, SIZE, SIZE)
    assert torch.allclose(fresh.eval().features(x), trained.features(x))
    with pytest.raises(UserError, match="does not fit.*mis-shaped"):
        load_state_weights(build_model(ModelConfig(arch="resnet18", out_dim=32, init="random")), state / "model.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a safetensors file"):
        load_state_weights(fresh, tmp_path / "bad.safetensors")


def test_training_minutes_add_finished_epochs_from_the_history():
    history = [{"epoch": 0, "seconds": 60.0}, {"epoch": 1, "seconds": 120.0}, {"epoch": 2, "seconds": 999.0}]
    assert curve.training_minutes({"epoch": 2, "seconds": 30.0}, history) == pytest.approx(3.5)
    assert curve.training_minutes({"epoch": 0, "seconds": 90.0}, []) == pytest.approx(1.5)
    with pytest.raises(UserError, match="epoch 1 is done but not in the run's history"):
        curve.training_minutes({"epoch": 2, "seconds": 0.0}, history[:1])


def _point(series: str, classes, minutes: float, one: float) -> dict:
    block = {m: {"micro_mean": one + (10 if m == "five_shot" else 0), "micro_ci95": 1.0, "macro_mean": one}
             for m in ("one_shot", "five_shot")}
    return {"series": series, "classes": classes, "state": f"s{minutes}", "epoch": 0, "step": int(minutes),
            "minutes": minutes, "all": block, "symbols": {m: dict(v, micro_mean=v["micro_mean"] + 5) for m, v in block.items()}}


def test_curve_table_and_plot_from_fake_points(tmp_path):
    points = [_point("u3000", 3000, 0.0, 30.0), _point("u3000", 3000, 20.0, 40.0),
              _point("u1000", 1000, 15.0, 35.0), _point("u1000", 1000, 0.0, 30.0)]
    table = curve.markdown_curve(points).splitlines()
    assert len(table) == 2 + len(points)
    assert table[3] == "| u3000 | 3000 | s20.0 | 0 | 20 | 20.0 | 40.0 ± 1.0 | 50.0 ± 1.0 | 45.0 ± 1.0 | 55.0 ± 1.0 |"
    last = curve.by_classes(points)
    assert [(p["classes"], p["minutes"]) for p in last] == [(1000, 15.0), (3000, 20.0)]
    assert curve.by_classes([_point("x", None, 5.0, 1.0)]) == []
    png = curve.plot_curve(points, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny_run(tmp_path, synth_shards):
    """A run folder with its config and history, two states kept after epochs, its own
    state/ (the same step as the last kept one) and a damaged copy."""
    run = tmp_path / "runs" / "u"
    run.mkdir(parents=True)
    cfg = load_config(None, [*TINY, f"data.shards={synth_shards}"])
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "history.jsonl").write_text("".join(json.dumps({"epoch": e, "seconds": 60.0 * (e + 1)}) + "\n" for e in (0, 1)))
    nets = []
    for k, epoch in enumerate((1, 2)):
        torch.manual_seed(10 + k)
        nets.append(build_model(cfg.model).eval())
        state = _save_state(nets[-1], run, {"epoch": epoch, "global_step": 4 * epoch, "seconds": 0.0})
        kept = tmp_path / "runs" / "u_epochs" / f"0{k}"
        kept.mkdir(parents=True)
        for name in ("model.safetensors", "progress.json"):
            (kept / name).write_bytes((state / name).read_bytes())
    damaged = tmp_path / "runs" / "u_epochs" / "99"
    damaged.mkdir()
    (damaged / "model.safetensors").write_bytes(b"\0" * 10)
    (damaged / "progress.json").write_text(json.dumps({"progress": {"epoch": 2, "global_step": 9, "seconds": 1.0}}))
    return run, nets


def test_every_state_of_a_run_is_one_point(tiny_run, synth_shards):
    run, nets = tiny_run
    series = curve.parse_run(f"u={run},classes=500")
    assert series.classes == 500 and len(series.snapshots) == 4  # two kept, the damaged one, state/
    music = curve.transfer.load_domain("music", synth_shards, "valid", 3, 3)
    acc, cfg = make_accelerator(mixed_precision="no"), EvalConfig(split="valid", episodes=3)
    skipped = []
    points = curve.series_points(acc, series, music, cfg, "valid", {}, skipped)
    assert [(p["epoch"], p["step"], p["minutes"]) for p in points] == [(0, 0, 0.0), (1, 4, 1.0), (2, 8, 3.0)]
    assert points[0]["state"] == "init random" and len(skipped) == 1 and "99" in skipped[0] and "safetensors" in skipped[0]
    rule = curve.transfer.InputRule(SIZE, "none", False)
    for point, net in zip(points[1:], nets):
        direct = curve.measure(acc, net, music, rule, cfg, "valid")
        assert point["all"]["one_shot"]["micro_mean"] == pytest.approx(direct["all"]["one_shot"]["micro_mean"])


def test_cli_writes_curve_files(tiny_run, synth_shards, tmp_path):
    run, _ = tiny_run
    out = tmp_path / "curve"
    code = curve.main(["--run", f"u={run}", "--music", str(synth_shards), "--episodes", "2", "--support-cap", "2",
                       "--query-cap", "2", "--mixed-precision", "no", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "curve.json").read_text())
    assert len(data["points"]) == 3 and len(data["skipped"]) == 1 and data["runs"][0]["classes"] == 12
    assert "Skipped (unreadable)" in (out / "curve.md").read_text() and (out / "curve.png").is_file()


def test_run_without_config_is_one_line_exit_2(tmp_path, synth_shards, capsys):
    with pytest.raises(SystemExit) as exit_info:
        curve.main(["--run", f"u={tmp_path}", "--music", str(synth_shards), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith(f"error: {tmp_path}: no config.yaml") and "\n" not in err
    assert not (tmp_path / "o").exists()
