"""bench/transfer.py on tiny synthetic domains: its numbers are evaluate_model's, its errors
name the domain."""

import shutil
from pathlib import Path

import pytest
import torch

from bench_scripts import bench_script
from symclr_ft.config import EvalConfig, ModelConfig
from symclr_ft.data.shardset import iter_shard, load_classes, load_split, shard_paths
from symclr_ft.distributed import make_accelerator
from symclr_ft.eval.evaluate import evaluate_model
from symclr_ft.models.backbones import build_model, save_model_file
from symclr_ft.data.shards import ShardSequence

transfer = bench_script("transfer")

SIZE = 32


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random ResNet-18 model file with a config.yaml that says 32 px, canonical ink."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    save_model_file(build_model(ModelConfig(arch="resnet18")), run / "model.pt", epoch=0)
    (run / "config.yaml").write_text(f"data:\n  image_size: {SIZE}\n  ink: canonical\n  letterbox: true\n")
    return run / "model.pt"


def _copy_shards(src: Path, dst: Path, keep=lambda split, label: True) -> Path:
    dst.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        out = ShardSequence(dst, split, shard_size=10**6)
        for path in shard_paths(src, split):
            for key, fields in iter_shard(path):
                if keep(split, int(fields["cls"])):
                    out.write(key, fields)
        out.close()
        if out.count == 0:
            for p in dst.glob(f"{split}-*.tar"):
                p.unlink()
    shutil.copy(src / "classes.json", dst / "classes.json")
    return dst


def test_rule_comes_from_the_config_beside_the_model(tiny_model):
    spec = transfer.parse_model(f"m={tiny_model}", transfer.InputRule(96))
    assert spec.rule == transfer.InputRule(SIZE, "canonical", True) and spec.wise == 1.0
    spec = transfer.parse_model(f"m={tiny_model},ink=none,box=0,size=48,wise=0.5", transfer.InputRule(96))
    assert spec.rule == transfer.InputRule(48, "none", False) and spec.wise == 0.5


def test_domain_numbers_are_evaluate_models(synth_shards, tiny_model):
    """The benchmark's column for a domain equals symclr-evaluate's protocol run directly."""
    spec = transfer.parse_model(f"m={tiny_model},ink=none,box=0", transfer.InputRule(96))
    domain = transfer.load_domain("synth", synth_shards, "test")
    accelerator = make_accelerator(mixed_precision="no")
    cfg = EvalConfig(split="test", episodes=5)
    rows = transfer.run_benchmark(accelerator, [spec], {}, None, [domain], cfg, "test")
    net = transfer.load_network(spec)
    direct = evaluate_model(accelerator, net, load_split(synth_shards, "train", SIZE),
                            load_split(synth_shards, "test", SIZE), cfg, load_classes(synth_shards), None, "test")
    for m in ("one_shot", "five_shot"):
        assert rows[0]["synth"][m]["micro_mean"] == pytest.approx(100 * direct[m]["micro_mean"])
        assert rows[0]["synth"][m]["macro_mean"] == pytest.approx(100 * direct[m]["macro_mean"])
    table = transfer.markdown_table(rows, ["synth"])
    assert "| m | 32 px, ink none, stretch |" in table


def test_support_cap_limits_crops_per_class(synth_shards):
    pngs, labels, keys = transfer.read_split("synth", synth_shards, "train", cap=2)
    assert torch.bincount(labels).max() <= 2
    assert set(labels.tolist()) == set(load_split(synth_shards, "train", 16).labels.tolist())


def test_heldout_folds_use_each_folds_model_and_classes(synth_shards, tiny_model, tmp_path):
    folds = tmp_path / "folds"
    for k in (0, 1):
        (folds / f"fold{k}").mkdir(parents=True)
        shutil.copy(tiny_model, folds / f"fold{k}" / "model.pt")
    names = load_classes(synth_shards)
    transfer.write_json(folds / "summary.json", {"folds": [{"fold": 0, "classes": names[:3]}, {"fold": 1, "classes": names[3:6]}]})
    spec = transfer.parse_model(f"m={tiny_model}", transfer.InputRule(96))
    ff = transfer.load_domain("firefighting", synth_shards, "test")
    cfg = EvalConfig(split="test", episodes=4)
    acc = make_accelerator(mixed_precision="no")
    row = transfer.run_benchmark(acc, [spec], {"m": folds}, ff, [], cfg, "test")[0]
    per_fold = [transfer.evaluate_on(acc, transfer.load_network(spec), ff, spec.rule, cfg, "test", set(range(a, a + 3)))
                for a in (0, 3)]
    want = transfer.mean_of_folds(per_fold)
    assert row["heldout"]["one_shot"]["micro_mean"] == pytest.approx(want["one_shot"]["micro_mean"])
    assert want["one_shot"]["micro_ci95"] == pytest.approx(
        (per_fold[0]["one_shot"]["micro_ci95"] ** 2 + per_fold[1]["one_shot"]["micro_ci95"] ** 2) ** 0.5 / 2)


def test_mean_of_folds_by_hand():
    a = {m: {"micro_mean": 80.0, "micro_ci95": 3.0, "macro_mean": 70.0} for m in transfer.METRICS}
    b = {m: {"micro_mean": 90.0, "micro_ci95": 4.0, "macro_mean": 60.0} for m in transfer.METRICS}
    out = transfer.mean_of_folds([a, b])["one_shot"]
    assert out == {"micro_mean": 85.0, "micro_ci95": 2.5, "macro_mean": 65.0}


def test_domain_from_a_coco_export_is_sharded_once(synth_coco, tmp_path):
    first = transfer.domain_shards("synth", synth_coco, tmp_path)
    stamp = (first / "stats.json").stat().st_mtime_ns
    assert transfer.domain_shards("synth", synth_coco, tmp_path) == first
    assert (first / "stats.json").stat().st_mtime_ns == stamp
    assert shard_paths(first, "test")


def test_domain_without_test_split_is_one_line_exit_2(synth_shards, tiny_model, tmp_path, capsys):
    no_test = _copy_shards(synth_shards, tmp_path / "no_test", keep=lambda split, label: split != "test")
    with pytest.raises(SystemExit) as exit_info:
        transfer.main(["--model", f"m={tiny_model}", "--domain", f"notest={no_test}", "--out", str(tmp_path / "o")])
    code = exit_info.value.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: domain notest: no test split") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_domain_without_shared_classes_is_one_line_exit_2(synth_shards, tiny_model, tmp_path, capsys):
    apart = _copy_shards(synth_shards, tmp_path / "apart",
                         keep=lambda split, label: (label < 6) == (split == "train"))
    with pytest.raises(SystemExit) as exit_info:
        transfer.main(["--model", f"m={tiny_model}", "--domain", f"apart={apart}", "--out", str(tmp_path / "o")])
    code = exit_info.value.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: domain apart: no class has crops in both") and "\n" not in err


def test_cli_writes_the_table(synth_shards, tiny_model, tmp_path):
    out = tmp_path / "out"
    code = transfer.main(["--model", f"m={tiny_model}", "--domain", f"synth={synth_shards}", "--episodes", "3",
                          "--mixed-precision", "no", "--out", str(out)])
    assert code == 0
    text = (out / "transfer.md").read_text()
    assert "| m | 32 px, ink canonical, letterbox |" in text
    assert transfer.read_json(out / "transfer.json")["rows"][0]["synth"]["one_shot"]["micro_mean"] >= 0


def test_query_cap_limits_queries_per_class(synth_shards):
    domain = transfer.load_domain("synth", synth_shards, "test", cap=3, query_cap=1)
    assert torch.bincount(domain.query_raw[1]).max() == 1 and torch.bincount(domain.support_raw[1]).max() <= 3


MUSCIMA_CLASSES = [
    "accidentalDoubleSharp", "accidentalFlat", "accidentalNatural", "accidentalSharp", "articulationAccent",
    "articulationStaccato", "articulationTenuto", "augmentationDot", "cClef", "dynamicLetterF", "dynamicLetterM",
    "dynamicLetterP", "dynamicLetterS", "fClef", "fermataAbove", "flag16thDown", "flag16thUp", "flag8thDown",
    "flag8thUp", "gClef", "graceNoteAcciaccatura", "multiMeasureRest", "noteheadFull", "noteheadFullSmall",
    "noteheadHalf", "noteheadWhole", "numeral2", "numeral3", "numeral4", "numeral6", "numeral8", "ornamentTrill",
    "rest16th", "rest8th", "restHalf", "restQuarter", "restWhole", "timeSigCommon",
]  # shards/muscima/classes.json


def test_text_classes_of_music_are_the_dynamics_letters_and_numerals():
    text = [n for n in MUSCIMA_CLASSES if transfer.is_text_class(n)]
    assert text == ["dynamicLetterF", "dynamicLetterM", "dynamicLetterP", "dynamicLetterS",
                    "numeral2", "numeral3", "numeral4", "numeral6", "numeral8"]
    symbols = transfer.symbol_classes(MUSCIMA_CLASSES)
    assert len(symbols) == 29 and MUSCIMA_CLASSES.index("ornamentTrill") in symbols
    assert transfer.is_text_class("A") and transfer.is_text_class("7") and not transfer.is_text_class("arrow")
    assert transfer.symbol_classes(["arrow", "valve"]) is None  # no text class: no second column
    assert transfer.symbol_classes(["A", "7"]) is None  # nothing but text


def test_symbols_column_is_evaluate_on_the_non_text_classes(synth_shards, tiny_model):
    spec = transfer.parse_model(f"m={tiny_model},ink=none,box=0", transfer.InputRule(96))
    domain = transfer.load_domain("synth", synth_shards, "test")
    assert domain.symbols is None  # synthetic names hold no letter or digit class
    domain.classes = ["A", "7", *domain.classes[2:]]
    domain.symbols = transfer.symbol_classes(domain.classes)
    acc = make_accelerator(mixed_precision="no")
    cfg = EvalConfig(split="test", episodes=5)
    row = transfer.run_benchmark(acc, [spec], {}, None, [domain], cfg, "test")[0]
    net = transfer.load_network(spec)
    key = "synth" + transfer.SYMBOLS_SUFFIX
    direct = transfer.evaluate_on(acc, net, domain, spec.rule, cfg, "test", set(range(2, len(domain.classes))))
    everything = transfer.evaluate_on(acc, net, domain, spec.rule, cfg, "test")
    for m in transfer.METRICS:
        assert row[key][m]["micro_mean"] == pytest.approx(direct[m]["micro_mean"])
        assert row["synth"][m]["micro_mean"] == pytest.approx(everything[m]["micro_mean"])
    header = transfer.markdown_table([row], transfer.domain_columns(domain)).splitlines()[0]
    assert header.endswith(f"| synth | {key} |")


def test_untrained_ff_model_is_its_own_heldout_model(synth_shards, tiny_model, tmp_path):
    """A model that never saw firefighting: the held-out column is the model itself among
    each fold's classes, no fold model read (the folds folder holds none for it)."""
    folds = tmp_path / "folds"
    for k in (0, 1):
        (folds / f"fold{k}").mkdir(parents=True)
        shutil.copy(tiny_model, folds / f"fold{k}" / "model.pt")
    names = load_classes(synth_shards)
    fold_classes = [names[:4], names[4:8]]
    transfer.write_json(folds / "summary.json", {"folds": [{"fold": k, "classes": c} for k, c in enumerate(fold_classes)]})
    trained = transfer.parse_model(f"m={tiny_model}", transfer.InputRule(96))
    torch.manual_seed(1)
    other = tmp_path / "u" / "model.pt"
    other.parent.mkdir()
    save_model_file(build_model(ModelConfig(arch="resnet18")), other, epoch=0)
    untrained = transfer.parse_model(f"u={other},size={SIZE},untrained_ff=1", transfer.InputRule(96))
    assert untrained.untrained_ff and not trained.untrained_ff
    assert transfer.ModelSpec("ImageNet", transfer.IMAGENET, transfer.InputRule()).untrained_ff
    ff = transfer.load_domain("firefighting", synth_shards, "test")
    cfg = EvalConfig(split="test", episodes=4)
    acc = make_accelerator(mixed_precision="no")
    rows = transfer.run_benchmark(acc, [trained, untrained], {"m": folds}, ff, [], cfg, "test")
    net = transfer.load_network(untrained)
    per_fold = [transfer.evaluate_on(acc, net, ff, untrained.rule, cfg, "test", set(range(a, a + 4))) for a in (0, 4)]
    want = transfer.mean_of_folds(per_fold)
    for m in transfer.METRICS:
        assert rows[1]["heldout"][m]["micro_mean"] == pytest.approx(want[m]["micro_mean"])
        assert rows[1]["firefighting"][m]["micro_mean"] == pytest.approx(
            transfer.evaluate_on(acc, net, ff, untrained.rule, cfg, "test")[m]["micro_mean"])
    assert "never trained on firefighting" in transfer.markdown_table(rows, []).splitlines()[3]
    # From the command line with only the fold classes (a summary.json, no fold model at all).
    classes_only = tmp_path / "classes_only"
    classes_only.mkdir()
    shutil.copy(folds / "summary.json", classes_only / "summary.json")
    out = tmp_path / "out"
    assert transfer.main(["--model", f"u={other},size={SIZE},untrained_ff=1", "--fold-classes", str(classes_only),
                          "--ff-shards", str(synth_shards), "--episodes", "4", "--mixed-precision", "no",
                          "--out", str(out)]) == 0
    row = transfer.read_json(out / "transfer.json")["rows"][0]
    assert row["untrained_ff"] and row["heldout"]["one_shot"]["micro_mean"] == pytest.approx(want["one_shot"]["micro_mean"])


def test_folds_for_an_untrained_ff_model_is_one_line_exit_2(synth_shards, tiny_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        transfer.main(["--model", f"u={tiny_model},untrained_ff=1", "--folds", f"u={tmp_path}",
                       "--ff-shards", str(synth_shards), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: --folds u: that model never trained") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_universe_names_the_shipped_weights_at_their_own_input_rule():
    """``--model NAME=universe``: the weights of model.init=universe, no model file needed, at
    configs/universe.yaml's rule, and never trained on firefighting."""
    spec = transfer.parse_model("u=universe", transfer.InputRule(96))
    assert spec.rule == transfer.InputRule(64, "none", False) and spec.untrained_ff
    net = transfer.load_network(spec)
    cfg = ModelConfig(arch="tf_efficientnet_lite0", input_norm="imagenet", init="universe")
    reference = build_model(cfg).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.features(x), reference.features(x))
