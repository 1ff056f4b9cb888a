"""Batched views: each operation with its configured probability and range, reproducible,
and geometrically exact where it can be checked against torch's own ops."""

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from symclr_ft.config import ViewsConfig
from symclr_ft.data.views import _adjust_hue, apply_views, blur_kernel_size, sample_view_params, view_generator

N = 20000


def params(cfg=ViewsConfig(), n=N, seed=0):
    return sample_view_params(cfg, n, torch.Generator().manual_seed(seed))


def identity(n, cfg=ViewsConfig(color_jitter_p=0, grayscale_p=0, blur=False)):
    p = params(cfg, n)
    p.crop[:] = torch.tensor([0.5, 0.5, 1.0, 1.0])
    p.hflip[:] = False
    return p


def within(fraction, p, n=N):
    return abs(fraction - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9


@pytest.mark.parametrize("s", [1.0, 1.5])
def test_probabilities_and_ranges_of_the_seed_views(s):
    cfg = ViewsConfig(aug_strength=s)
    p = params(cfg)
    assert within(p.hflip.float().mean().item(), 0.5)
    assert within(p.jitter.float().mean().item(), 0.8)
    assert within(p.grayscale.float().mean().item(), 0.2)
    assert not p.vflip.any() and not p.rot90.any()  # the seed's views do not rotate
    for values, low, high in [
        (p.brightness, max(0, 1 - 0.8 * s), 1 + 0.8 * s),
        (p.contrast, max(0, 1 - 0.8 * s), 1 + 0.8 * s),
        (p.saturation, max(0, 1 - 0.8 * s), 1 + 0.8 * s),
        (p.hue, -min(0.2 * s, 0.5), min(0.2 * s, 0.5)),
        (p.blur_sigma, 0.1, 2.0),
    ]:
        assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6
        assert values.min() < low + 0.01 * (high - low) and values.max() > high - 0.01 * (high - low)
        assert values.mean().item() == pytest.approx((low + high) / 2, abs=0.02 * (high - low))
    area = p.crop[:, 2] * p.crop[:, 3]
    ratio = p.crop[:, 2] / p.crop[:, 3]
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1 + 1e-6
    fitted = area < 0.999  # the fallback to the whole image is rare
    assert ratio[fitted].min() >= 3 / 4 - 1e-4 and ratio[fitted].max() <= 4 / 3 + 1e-4
    assert (p.crop[:, :2] - p.crop[:, 2:] / 2).min() >= -1e-6  # boxes inside the image
    assert (p.crop[:, :2] + p.crop[:, 2:] / 2).max() <= 1 + 1e-6


def test_drawing_preset_rotates_and_flips_uniformly():
    p = params(ViewsConfig(preset="drawing", crop_scale_min=0.5))
    counts = torch.bincount(p.rot90, minlength=4).float() / N
    assert all(within(c.item(), 0.25) for c in counts)
    assert within(p.vflip.float().mean().item(), 0.5)
    assert (p.crop[:, 2] * p.crop[:, 3]).min() >= 0.5 - 1e-6


def test_reproducible_from_a_seed_and_different_across_steps():
    cfg = ViewsConfig()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    a = apply_views(x, sample_view_params(cfg, 4, view_generator(0, 1, 2, 0)))
    b = apply_views(x, sample_view_params(cfg, 4, view_generator(0, 1, 2, 0)))
    c = apply_views(x, sample_view_params(cfg, 4, view_generator(0, 1, 3, 0)))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rows_of_a_global_batch_get_the_same_view_on_any_process():
    cfg = ViewsConfig(preset="drawing")
    x = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8)
    whole = apply_views(x, sample_view_params(cfg, 6, view_generator(5, 0, 0, 1)))
    rows = torch.tensor([1, 3, 5])
    part = apply_views(x[rows], sample_view_params(cfg, 6, view_generator(5, 0, 0, 1)).select(rows))
    assert torch.allclose(whole[rows], part, atol=1e-6)


def test_geometry_is_exact():
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    ref = x.float() / 255
    p = identity(3)
    assert torch.allclose(apply_views(x, p), ref, atol=1e-5)
    p.hflip[:] = True
    assert torch.allclose(apply_views(x, p), ref.flip(-1), atol=1e-5)
    p.hflip[:] = False
    p.rot90[:] = 2
    assert torch.allclose(apply_views(x, p), torch.rot90(ref, 2, (2, 3)), atol=1e-5)
    p.rot90[:] = 1
    out = apply_views(x, p)
    assert min((out - torch.rot90(ref, k, (2, 3))).abs().max() for k in (1, 3)) < 1e-5
    # the left half of the image, stretched to full width
    p = identity(1)
    p.crop[:] = torch.tensor([0.25, 0.5, 0.5, 1.0])
    stripes = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    stripes[..., :4] = 255
    out = apply_views(stripes, p)
    # bilinear sampling is continuous: only the last column reaches the edge of the stripe
    assert out[..., :7].min() > 0.99 and out[..., 7].min() > 0.7


def test_colour_operations_match_torchvision():
    x = torch.rand(2, 3, 12, 12)
    u8 = (x * 255).round().to(torch.uint8)
    xf = u8.float() / 255
    p = identity(2)
    p.jitter[:] = True
    p.jitter_order = torch.tensor([0, 1, 2, 3])
    p.brightness[:] = 1.3
    p.contrast[:] = 0.7
    p.saturation[:] = 1.5
    p.hue[:] = -0.1
    expected = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(xf, 1.3), 0.7), 1.5), -0.1)
    assert torch.allclose(apply_views(u8, p), expected, atol=1e-4)
    assert torch.allclose(_adjust_hue(xf, torch.full((2,), 0.25)), TF.adjust_hue(xf, 0.25), atol=1e-5)
    p = identity(2)
    p.grayscale[:] = True
    assert torch.allclose(apply_views(u8, p), TF.rgb_to_grayscale(xf, 3), atol=1e-5)


def test_blur_matches_torchvision_gaussian_blur():
    size = 40
    x = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    p = identity(2, ViewsConfig(color_jitter_p=0, grayscale_p=0, blur=True))
    p.blur_sigma = torch.tensor([0.7, 1.6])
    out = apply_views(x, p)
    k = blur_kernel_size(size)
    assert k == 5
    for i, sigma in enumerate([0.7, 1.6]):
        expected = TF.gaussian_blur(x[i : i + 1].float() / 255, [k, k], [sigma, sigma])
        assert torch.allclose(out[i : i + 1], expected, atol=1e-5)


def test_the_upright_preset_never_flips_or_turns_and_others_keep_their_draws():
    """views.preset=upright (for the symbol universe, where "b" and "d" are two classes) draws
    no flip and no quarter turn; the other presets' random draws are unchanged by it."""
    from symclr_ft.config import ViewsConfig
    from symclr_ft.data.views import sample_view_params

    upright = sample_view_params(ViewsConfig(preset="upright"), 256, torch.Generator().manual_seed(0))
    assert not upright.hflip.any() and not upright.vflip.any() and not upright.rot90.any()
    simclr = sample_view_params(ViewsConfig(preset="simclr"), 256, torch.Generator().manual_seed(0))
    assert simclr.hflip.any() and torch.equal(simclr.crop, upright.crop)
