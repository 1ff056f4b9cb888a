"""k-NN votes, episode draws and prototypes: exact results on hand-made embeddings and the
vectorised code against slow, obviously-correct loops."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from symclr_ft.eval.knn import (
    class_prototypes,
    class_similarity,
    draw_supports,
    few_shot_predictions,
    full_knn_predictions,
    knn_vote,
    prototype_predictions,
)


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
    import symclr_ft.eval.knn as knn

    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (40,), generator=g)
    sim = torch.randn(9, 40, generator=g)
    sup = draw_supports(labels, 5, 11, g)
    whole = few_shot_predictions(sim, labels, sup, 3, 4)
    monkeypatch.setattr(knn, "_CHUNK_ELEMENTS", 9 * sup.shape[1] * 2)  # two episodes a chunk
    assert torch.equal(few_shot_predictions(sim, labels, sup, 3, 4), whole)


def test_class_similarity_is_the_best_crop_of_each_class():
    sim = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.8, 0.3, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    scores = class_similarity(sim, labels, 3)
    assert scores[:, :2].tolist() == [[0.9, 0.5], [0.2, 0.8]]
    assert torch.isinf(scores[:, 2]).all() and (scores[:, 2] < 0).all()  # no support


def test_class_prototypes_are_normalised_means():
    feats = unit(0, 90, 180)
    protos, present = class_prototypes(feats, torch.tensor([0, 0, 2]), 3)
    torch.testing.assert_close(protos[0], unit(45)[0])
    torch.testing.assert_close(protos[2], unit(180)[0])
    assert present.tolist() == [True, False, True]


def test_protocols_in_query_blocks_equal_one_block(monkeypatch):
    import symclr_ft.eval.knn as knn

    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 5, (30,), generator=g)
    support = F.normalize(torch.randn(30, 6, generator=g), dim=-1)
    queries = F.normalize(torch.randn(23, 6, generator=g), dim=-1)
    episodes = {"one_shot": draw_supports(labels, 1, 4, g), "five_shot": draw_supports(labels, 5, 4, g)}
    whole = knn.protocol_predictions(support, labels, queries, episodes, 5, True, "_x")
    monkeypatch.setattr(knn, "_CHUNK_ELEMENTS", 30 * 7)  # blocks of 7 queries
    blocks = knn.protocol_predictions(support, labels, queries, episodes, 5, True, "_x")
    assert set(whole) == {"one_shot_x", "five_shot_x", "full_knn_x", "five_shot_proto_x"}
    for name in whole:
        assert torch.equal(whole[name], blocks[name])


def test_nearest_breaks_ties_by_support_order_like_a_stable_sort():
    """knn.nearest equals a stable descending sort (equal values: lower index first) on data
    full of ties, at every k, over leading batch dimensions (issue 24: topk's order of equal
    values depends on the CPU's kernel)."""
    from symclr_ft.eval.knn import nearest

    g = torch.Generator().manual_seed(0)
    sim = torch.randint(0, 4, (7, 3, 20), generator=g).float() / 4  # many equal values
    reference = sim.sort(dim=-1, descending=True, stable=True).indices
    for k in (1, 3, 5, 20, 25):
        assert torch.equal(nearest(sim, k), reference[..., : min(k, 20)])
    assert nearest(torch.tensor([[0.5, 0.9, 0.5, 0.9]]), 3).tolist() == [[1, 3, 0]]
