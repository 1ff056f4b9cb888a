"""rejection.py: the unknown score and the support-only threshold against slow references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from symclr_ft.errors import UserError
from symclr_ft.use.rejection import (
    VIEW_CHUNK, augmented_views, auto_threshold, view_features, view_prototypes, view_scores,
)


def test_auto_threshold_is_the_quantile_of_leave_one_out_scores():
    g = torch.Generator().manual_seed(1)
    feats = F.normalize(torch.randn(30, 6, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.arange(30) % 4
    threshold, how = auto_threshold(feats, labels, tpr=0.9)
    sim = (feats @ feats.T).numpy()
    own = [max(sim[i, j] for j in range(30) if j != i and labels[j] == labels[i]) for i in range(30)]
    assert threshold == pytest.approx(np.quantile(own, 0.1))
    assert "90%" in how and "30 leave-one-out" in how
    assert np.mean(np.array(own) >= threshold) >= 0.9


def test_auto_threshold_with_one_example_classes_uses_their_views():
    feats = torch.eye(3, dtype=torch.float64)
    views = F.normalize(feats[:, None, :] + 0.1 * torch.randn(3, 8, 3, dtype=torch.float64), dim=-1)
    threshold, how = auto_threshold(feats, torch.tensor([0, 1, 2]), 0.95, views)
    scores = (views * feats[:, None, :]).sum(-1).flatten().numpy()
    assert threshold == pytest.approx(np.quantile(scores, 0.05))
    assert "3 one-example classes x 8 augmented views" in how
    with pytest.raises(UserError, match="at least two classes"):
        auto_threshold(feats[:2], torch.tensor([0, 0]))


def test_view_scores_are_the_best_similarity_to_a_class_mean_of_crops_and_views():
    g = torch.Generator().manual_seed(2)
    crops = F.normalize(torch.randn(4, 6, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 2, 2, 3])  # class 1 has no support
    views = F.normalize(crops[:, None, :] + 0.5 * torch.randn(4, 3, 6, generator=g,
                                                               dtype=torch.float64), dim=-1)
    queries = F.normalize(torch.randn(7, 6, generator=g, dtype=torch.float64), dim=-1)
    protos, present = view_prototypes(crops, labels, views, 4)
    assert present.tolist() == [True, False, True, True]
    scores = view_scores(queries, protos, present)
    for q in range(7):
        best = -2.0
        for c in (0, 2, 3):
            members = [crops[i] for i in range(4) if labels[i] == c]
            members += [views[i, j] for i in range(4) if labels[i] == c for j in range(3)]
            mean = torch.stack(members).sum(dim=0)
            best = max(best, float(queries[q] @ (mean / mean.norm())))
        assert float(scores[q]) == pytest.approx(best)


def test_view_features_are_the_same_whatever_feeds_them():
    """Chunk k's views use seed + k, so a stream of crops gives the views of the same crops
    embedded chunk by chunk by hand, and a second run gives them again."""
    g = torch.Generator().manual_seed(3)
    crops = torch.randint(0, 256, (VIEW_CHUNK + 5, 3, 16, 16), generator=g, dtype=torch.uint8)
    embed = lambda v: v.float().flatten(1)[:, :10]  # noqa: E731  any deterministic map
    got = view_features(embed, iter(crops), 4, seed=7)
    first = embed(augmented_views(crops[:VIEW_CHUNK], 4, 7)).view(VIEW_CHUNK, 4, -1)
    rest = embed(augmented_views(crops[VIEW_CHUNK:], 4, 8)).view(5, 4, -1)
    assert got.shape == (VIEW_CHUNK + 5, 4, 10)
    assert torch.equal(got, torch.cat([first, rest]))
    assert torch.equal(got, view_features(embed, list(crops), 4, seed=7))
    with pytest.raises(UserError, match="no crops"):
        view_features(embed, [], 4)


def test_with_views_the_threshold_scores_held_out_crops_as_queries_are_scored():
    """A held-out crop is scored against the mean of the rest of its class, crops and views,
    as view_scores scores a query; classes of one example fall back to their views."""
    g = torch.Generator().manual_seed(4)
    feats = F.normalize(torch.randn(9, 5, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # class 3 has one example
    views = F.normalize(feats[:, None, :] + 0.4 * torch.randn(9, 4, 5, generator=g,
                                                               dtype=torch.float64), dim=-1)
    threshold, how = auto_threshold(feats, labels, 0.9, views)
    own = []
    for i in range(8):
        rest = [feats[j] + views[j].sum(dim=0) for j in range(9) if j != i and labels[j] == labels[i]]
        mean = torch.stack(rest).sum(dim=0)
        own.append(float(feats[i] @ (mean / mean.norm())))
    own += (views[8] @ feats[8]).tolist()
    assert threshold == pytest.approx(np.quantile(own, 0.1))
    assert "8 leave-one-out scores" in how and "1 one-example classes x 4 augmented views" in how
