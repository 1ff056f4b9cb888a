"""InfoNCE and SupCon against slow, obviously correct loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from symclr_ft.models.losses import contrastive_loss, info_nce, supcon


def reference_info_nce(z1, z2, temperature, labels=None, mask_same_class=False):
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n2 = len(z)
    n = n2 // 2
    both = None if labels is None else torch.cat([labels, labels])
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        numerator = math.exp(float(z[i] @ z[pos]) / temperature)
        denominator = 0.0
        for j in range(n2):
            if j == i:
                continue
            if mask_same_class and j != pos and both[j] == both[i]:
                continue
            denominator += math.exp(float(z[i] @ z[j]) / temperature)
        total += -math.log(numerator / denominator)
    return total / n2


def reference_supcon(z1, z2, labels, temperature):
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    both = torch.cat([labels, labels])
    total = 0.0
    for i in range(len(z)):
        denominator = sum(math.exp(float(z[i] @ z[a]) / temperature) for a in range(len(z)) if a != i)
        positives = [p for p in range(len(z)) if p != i and both[p] == both[i]]
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / temperature) / denominator) for p in positives) / len(positives)
    return total / len(z)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_info_nce_matches_reference(seed, temperature):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    got = info_nce(z1, z2, temperature).item()
    assert got == pytest.approx(reference_info_nce(z1, z2, temperature), rel=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_masked_info_nce_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    labels = torch.randint(0, 3, (9,), generator=g)
    got = info_nce(z1, z2, 0.2, labels, mask_same_class=True).item()
    assert got == pytest.approx(reference_info_nce(z1, z2, 0.2, labels, True), rel=1e-4)


def test_masking_is_a_no_op_when_classes_are_unique():
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    labels = torch.arange(6)
    assert info_nce(z1, z2, 0.1, labels, True).item() == pytest.approx(info_nce(z1, z2, 0.1).item())


@pytest.mark.parametrize("seed", range(4))
def test_supcon_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    labels = torch.randint(0, 3, (8,), generator=g)
    assert supcon(z1, z2, labels, 0.1).item() == pytest.approx(reference_supcon(z1, z2, labels, 0.1), rel=1e-4)


def test_supcon_with_unique_labels_equals_info_nce():
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    labels = torch.arange(5)
    assert supcon(z1, z2, labels, 0.3).item() == pytest.approx(info_nce(z1, z2, 0.3).item(), rel=1e-5)


def test_perfectly_aligned_views_give_low_loss_and_gradients_flow():
    z = torch.eye(8, requires_grad=True)
    loss = contrastive_loss("infonce", z, z, torch.arange(8), 0.05)
    loss.backward()
    assert loss.item() < 1e-3
    assert z.grad is not None


@pytest.mark.parametrize("seed", range(3))
def test_supcon_plus_weighted_info_nce_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    labels = torch.randint(0, 3, (8,), generator=g)
    expected = reference_supcon(z1, z2, labels, 0.1) + 0.5 * reference_info_nce(z1, z2, 0.1, labels, True)
    got = contrastive_loss("supcon", z1, z2, labels, 0.1, infonce_weight=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-4)
