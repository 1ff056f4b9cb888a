"""Cosine k-NN on L2-normalised features, and the random support draws of few-shot episodes.

Pure functions of tensors, like lightly's ``benchmarking/knn.py`` and DINO's ``eval_knn.py``:
no model, no files, no processes. Similarity is the dot product of L2-normalised features.

The seed's protocols (:data:`FEW_SHOT`, :data:`FULL_K`): 1-shot = one random support crop per
class and k=1; 5-shot = five per class and a k=3 vote; full = every support crop, k=5.
Ties in a vote go to the class of the nearest neighbour among the tied classes
(:func:`knn_vote`). Episodes are vectorised and only chunked to bound memory. Example::

    supports = draw_supports(train_labels, shots=5, episodes=100, generator=g)   # (100, S)
    preds = few_shot_predictions(query @ train.T, train_labels, supports, k=3, num_classes=C)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# name -> (shots per class, k); full_knn uses every support crop with FULL_K.
FEW_SHOT = {"one_shot": (1, 1), "five_shot": (5, 3)}
FULL_K = 5
# Upper bound on the elements of one (queries x episodes x support) similarity block.
_CHUNK_ELEMENTS = 1 << 22


def nearest(sim: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values along the last dimension, largest first; equal
    values in support order (the lower index first).

    ``torch.topk`` leaves the order of equal values to its kernel, and which kernel runs depends
    on the CPU's instruction set: identical support crops (equal similarities) then gave other
    neighbours, and other accuracies, on another machine (issue 24). This costs about what topk
    costs; a stable full sort would cost 45 times more on a muscima-sized support set."""
    k = min(k, sim.shape[-1])
    kth = sim.topk(k, dim=-1).values[..., -1:]
    above = sim > kth
    tied = sim == kth
    room = k - above.sum(dim=-1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=-1) <= room))
    index = chosen.nonzero()[:, -1].reshape(*sim.shape[:-1], k)  # ascending support order
    order = sim.gather(-1, index).sort(dim=-1, descending=True, stable=True).indices
    return index.gather(-1, order)


def knn_vote(neighbour_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Majority vote over the last dimension of ``neighbour_labels`` (..., k).

    The neighbours must be sorted by similarity, nearest first; a label -1 means "no
    neighbour" and does not vote. Tie rule: among the classes with the most votes, the class
    of the nearest neighbour wins. With k=3 and three different labels (1-1-1) that is the
    nearest neighbour's class; with k=5 and labels [0, 1, 2, 1, 2] it is 1, not 0, because
    class 0 is not among the tied classes. A row without any neighbour predicts -1.
    """
    valid = neighbour_labels >= 0
    safe = neighbour_labels.clamp(min=0)
    counts = torch.zeros(
        (*neighbour_labels.shape[:-1], num_classes), dtype=torch.int32, device=safe.device
    )
    counts.scatter_add_(-1, safe, valid.to(torch.int32))
    tied = counts == counts.amax(dim=-1, keepdim=True)
    in_tie = tied.gather(-1, safe) & valid
    # argmax returns the first maximal position: the nearest neighbour of a tied class.
    first = in_tie.to(torch.uint8).argmax(dim=-1, keepdim=True)
    prediction = safe.gather(-1, first).squeeze(-1)
    return torch.where(valid.any(dim=-1), prediction, torch.full_like(prediction, -1))


def draw_supports(
    labels: torch.Tensor, shots: int, episodes: int, generator: torch.Generator
) -> torch.Tensor:
    """Indices into ``labels`` of the support crops of each episode: (episodes, S).

    Every class with crops gets ``shots`` distinct random crops (all of them when it has fewer).
    The number per class is therefore the same in every episode, so S is fixed and no padding
    is needed: S = sum over classes of min(shots, crops of the class). Within an episode the
    indices are grouped by class (ascending), in random order within a class. The draw depends
    only on the generator's state (it is made on the CPU), never on the device.
    """
    labels = labels.cpu()
    n = labels.numel()
    # A random permutation per episode, then a stable sort by class: classes end up in
    # contiguous blocks (at the same positions in every episode), random inside each block.
    # Both sorts are stable: equal random numbers (float32 has 2**24 values) must not be
    # ordered by whichever sort kernel the CPU's instruction set selects (issue 24).
    perm = torch.rand((episodes, n), generator=generator).argsort(dim=1, stable=True)
    by_class = labels[perm].argsort(dim=1, stable=True)
    order = perm.gather(1, by_class)
    sorted_labels = labels.sort(stable=True).values
    counts = torch.bincount(sorted_labels, minlength=1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[sorted_labels]
    return order[:, rank < shots]


def few_shot_predictions(
    sim: torch.Tensor,
    support_labels: torch.Tensor,
    supports: torch.Tensor,
    k: int,
    num_classes: int,
) -> torch.Tensor:
    """k-NN predictions of every query in every episode: (episodes, Q).

    ``sim`` is (Q, N) query-to-support similarity, ``supports`` (E, S) indices into the N
    support crops (from :func:`draw_supports`). k is capped at S.
    """
    q = sim.shape[0]
    e_total, s = supports.shape
    k = min(k, s)
    supports = supports.to(sim.device)
    support_labels = support_labels.to(sim.device)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, q * s))
    parts = []
    for start in range(0, e_total, per_chunk):
        idx = supports[start : start + per_chunk]  # (e, S)
        nearest_k = nearest(sim[:, idx], k)  # (Q, e, k), most similar first
        labels = support_labels[idx].unsqueeze(0).expand(q, -1, -1)  # (Q, e, S)
        parts.append(knn_vote(labels.gather(-1, nearest_k), num_classes).T)
    return torch.cat(parts, dim=0)


def full_knn_predictions(
    sim: torch.Tensor, support_labels: torch.Tensor, k: int, num_classes: int
) -> torch.Tensor:
    """k-NN predictions with every support crop: (Q,). Deterministic."""
    everything = torch.arange(sim.shape[1], device=sim.device).unsqueeze(0)
    return few_shot_predictions(sim, support_labels, everything, k, num_classes)[0]


def prototype_predictions(
    support_feats: torch.Tensor,
    support_labels: torch.Tensor,
    supports: torch.Tensor,
    query_feats: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """Nearest class mean per episode: (episodes, Q).

    A prototype is the mean of the episode's support features of a class, L2-normalised, so
    that queries are compared with it by cosine similarity like everywhere else here. Classes
    without support in the episode are never predicted.
    """
    q, d = query_feats.shape
    e_total, s = supports.shape
    supports = supports.to(support_feats.device)
    support_labels = support_labels.to(support_feats.device)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(1, s * d + q * num_classes))
    parts = []
    for start in range(0, e_total, per_chunk):
        idx = supports[start : start + per_chunk]
        one_hot = F.one_hot(support_labels[idx], num_classes).to(support_feats.dtype)  # (e,S,C)
        prototypes = F.normalize(one_hot.transpose(1, 2) @ support_feats[idx], dim=-1)
        scores = query_feats @ prototypes.transpose(1, 2)  # (e, Q, C)
        present = one_hot.sum(dim=1) > 0
        scores = scores.masked_fill(~present.unsqueeze(1), float("-inf"))
        parts.append(scores.argmax(dim=-1))
    return torch.cat(parts, dim=0)


def class_prototypes(
    support_feats: torch.Tensor, support_labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) L2-normalised class means of every support crop, and (C,) which classes have any."""
    one_hot = F.one_hot(support_labels, num_classes).to(support_feats.dtype)
    return F.normalize(one_hot.T @ support_feats, dim=-1), one_hot.sum(dim=0) > 0


def class_similarity(sim: torch.Tensor, support_labels: torch.Tensor, num_classes: int):
    """(Q, C) similarity of each query to its most similar support crop of each class
    (-inf for a class without support): the score of a 1-NN rule per class."""
    out = sim.new_full((sim.shape[0], num_classes), float("-inf"))
    index = support_labels.to(sim.device).unsqueeze(0).expand_as(sim)
    return out.scatter_reduce(1, index, sim, reduce="amax", include_self=True)


def centre(support_feats: torch.Tensor, query_feats: torch.Tensor):
    """SimpleShot: subtract the mean support (train) feature from both sets, re-normalise.

    The mean is over every train crop, not per episode: it uses no labels, and it makes the
    centred numbers of all protocols comparable.
    """
    mean = support_feats.mean(dim=0, keepdim=True)
    return F.normalize(support_feats - mean, dim=-1), F.normalize(query_feats - mean, dim=-1)


def protocol_predictions(
    support_feats: torch.Tensor,
    support_labels: torch.Tensor,
    query_feats: torch.Tensor,
    episode_supports: dict[str, torch.Tensor],
    num_classes: int,
    prototypes: bool = False,
    suffix: str = "",
) -> dict[str, torch.Tensor]:
    """Predictions of every protocol for one pair of (normalised) feature sets: name ->
    (E, Q) for the episodic ones, (1, Q) for full k-NN; ``suffix`` is appended to the names.

    Queries are taken a block at a time so that the (queries x support) similarity never
    exceeds ``_CHUNK_ELEMENTS`` (6,000 queries x 33,000 support crops would be 0.8 GB)."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, support_feats.shape[0]))
    parts = [
        _protocols_of_block(support_feats, support_labels, query_feats[start : start + rows],
                            episode_supports, num_classes, prototypes)
        for start in range(0, query_feats.shape[0], rows)
    ]
    return {name + suffix: torch.cat([p[name] for p in parts], dim=1) for name in parts[0]}


def _protocols_of_block(support_feats, support_labels, query_feats, episode_supports,
                        num_classes: int, prototypes: bool) -> dict[str, torch.Tensor]:
    sim = query_feats @ support_feats.T
    preds = {
        name: few_shot_predictions(sim, support_labels, episode_supports[name], k, num_classes)
        for name, (_, k) in FEW_SHOT.items()
    }
    preds["full_knn"] = full_knn_predictions(sim, support_labels, FULL_K, num_classes)[None]
    if prototypes:
        preds["five_shot_proto"] = prototype_predictions(
            support_feats, support_labels, episode_supports["five_shot"], query_feats, num_classes
        )
    return {name: p.cpu() for name, p in preds.items()}
