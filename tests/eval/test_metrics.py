"""Accuracy summaries, intervals and the percent format against numpy and direct formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from symclr_ft.eval.metrics import (
    episode_accuracies,
    episodic_summary,
    full_summary,
    mean_ci,
    percent,
    summary_line,
    wilson_interval,
)


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


def test_summary_line():
    block = {"micro_mean": 0.912, "micro_ci95": 0.008}
    m = {"one_shot": block, "five_shot": {"micro_mean": 0.95, "micro_ci95": 0.004},
         "full_knn": {"micro_mean": 0.97, "micro_ci95": 0.01}, "split": "valid", "episodes": 100,
         "five_shot_proto": {"micro_mean": 0.961, "micro_ci95": 0.003}}
    assert summary_line(m) == (
        "1-shot 91.2±0.8%  5-shot 95.0±0.4%  full 97.0% (valid, 100 episodes)"
        " | five_shot_proto 96.1±0.3%"
    )


def test_percent_on_a_line_and_in_a_table():
    block = {"micro_mean": 0.912, "micro_ci95": 0.008, "macro_mean": 0.9}
    assert percent(block) == "91.2±0.8%"
    assert percent(block, table=True) == "91.2 ± 0.8"
    assert percent(block, "macro", ci=False) == "90.0%"
    assert percent(block, "macro", ci=False, table=True) == "90.0"


def test_open_set_summary_against_direct_counts():
    from sklearn.metrics import roc_auc_score

    from symclr_ft.eval.metrics import fpr_at_tpr, open_set_summary

    rng = np.random.default_rng(0)
    known = np.r_[np.ones(80, bool), np.zeros(40, bool)]
    score = np.r_[rng.normal(0.8, 0.1, 80), rng.normal(0.5, 0.1, 40)]
    correct = known & (rng.random(120) < 0.9)
    o = open_set_summary(score, known, correct, threshold=0.6)
    assert o["auroc"] == pytest.approx(roc_auc_score(known, score))
    # FPR at 95% TPR: the largest threshold accepting >= 95% of known, applied to unknown
    t = np.sort(score[known])[::-1][int(np.ceil(0.95 * 80)) - 1]
    assert o["fpr_at_95_tpr"] == pytest.approx(np.mean(score[~known] >= t))
    assert fpr_at_tpr(known, score, 1.0) == pytest.approx(np.mean(score[~known] >= score[known].min()))
    assert o["known_accepted_correct"] == pytest.approx(np.mean((score >= 0.6)[known] & correct[known]))
    assert o["unknown_accepted"] == pytest.approx(np.mean(score[~known] >= 0.6))
    assert o["closed_set_accuracy"] == pytest.approx(correct[known].mean())
    assert (o["known"], o["unknown"]) == (80, 40)
