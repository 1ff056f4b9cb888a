"""Contrastive losses as pure functions of embeddings (and labels).

All take the two views' projections of the same global batch, ``z1`` and ``z2`` of shape
(N, D), row ``i`` of each being the same crop, and return a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _similarities(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    return z @ z.T / temperature


def info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    labels: torch.Tensor | None = None,
    mask_same_class: bool = False,
) -> torch.Tensor:
    """InfoNCE / NT-Xent (Chen et al., 2020, "A Simple Framework for Contrastive Learning of
    Visual Representations", eq. 1), averaged over all 2N anchors.

    Each anchor's positive is the other view of its crop; its negatives are the other 2N - 2
    views. With ``mask_same_class`` (needs ``labels``), views of other crops of the anchor's
    class are removed from its negatives, so a batch may hold several crops of a class without
    pushing them apart.

    >>> z = torch.randn(8, 16)
    >>> info_nce(z, z + 0.01 * torch.randn(8, 16), temperature=0.5).item() > 0
    True
    """
    n = len(z1)
    sim = _similarities(z1, z2, temperature)
    idx = torch.arange(2 * n, device=sim.device)
    positive = (idx + n) % (2 * n)
    excluded = torch.eye(2 * n, dtype=torch.bool, device=sim.device)
    if mask_same_class:
        if labels is None:
            raise ValueError("mask_same_class needs labels")
        both = torch.cat([labels, labels])
        same = both.unsqueeze(0) == both.unsqueeze(1)
        same[idx, positive] = False
        excluded |= same
    sim = sim.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(sim, positive)


def supcon(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss, L_out (Khosla et al., 2020, "Supervised Contrastive
    Learning", eq. 2): every other view of the anchor's class is a positive, the log-likelihood
    is averaged over an anchor's positives, then over anchors."""
    n = len(z1)
    sim = _similarities(z1, z2, temperature)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=sim.device)
    both = torch.cat([labels, labels])
    positives = (both.unsqueeze(0) == both.unsqueeze(1)) & ~self_mask
    log_prob = sim - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    per_anchor = (log_prob * positives).sum(1) / positives.sum(1).clamp_min(1)
    return -per_anchor.mean()


def contrastive_loss(
    name: str,
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    mask_same_class: bool = False,
    infonce_weight: float = 0.0,
) -> torch.Tensor:
    """The configured loss (``loss.name``).

    ``infonce_weight`` adds that much instance-level InfoNCE (same-class pairs masked out of its
    negatives) to SupCon: the label-free term keeps features that tell crops apart within a
    class, which tends to transfer better to classes never trained on (Islam et al., 2021, "A
    Broad Study on the Transferability of Visual Representations with Contrastive Learning")."""
    if name == "infonce":
        return info_nce(z1, z2, temperature, labels, mask_same_class)
    if name == "supcon":
        loss = supcon(z1, z2, labels, temperature)
        if infonce_weight:
            loss = loss + infonce_weight * info_nce(z1, z2, temperature, labels, mask_same_class=True)
        return loss
    raise ValueError(f"unknown loss {name!r}")
