"""The two augmented views of a crop, computed for a whole batch at once on uint8 tensors.

The seed's views (sthalles/SimCLR ``get_simclr_pipeline_transform``), applied per sample in
DataLoader workers with PIL::

    RandomResizedCrop(size) -> RandomHorizontalFlip -> RandomApply(ColorJitter(0.8s, 0.8s,
    0.8s, 0.2s), p=0.8) -> RandomGrayscale(p=0.2) -> GaussianBlur(kernel = 10% of size,
    sigma ~ U[0.1, 2.0])

Here the same operations run on a batch tensor on whatever device holds it: the crop, flip
(and, for the ``drawing`` preset, rotation by a multiple of 90 degrees and vertical flip) are
one affine map per sample and a single ``grid_sample``; colour jitter, grayscale and blur are
per-sample factors broadcast over the batch. Parameters are drawn for the *global* batch from
a generator seeded by (seed, epoch, step), then each process keeps its rows, so a crop gets
the same view whatever the number of processes.

Differences from torchvision, on purpose: the four jitter operations run in one random order
per batch (torchvision draws it per sample); the crop is resampled bilinearly from the stored
square crop.

Example::

    g = view_generator(seed=0, epoch=0, step=0, view=0)
    params = sample_view_params(cfg.views, batch_size=64, generator=g)
    views = apply_views(images_uint8, params)  # images (64, 3, S, S) uint8 -> float in [0, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from symclr_ft.config import ViewsConfig

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision uses


@dataclass
class ViewParams:
    """Random parameters of one view for each sample of a batch (all CPU tensors)."""

    crop: torch.Tensor  # (B, 4): centre x, centre y, width, height, relative to the image
    hflip: torch.Tensor  # (B,) bool
    vflip: torch.Tensor  # (B,) bool
    rot90: torch.Tensor  # (B,) int in 0..3 (counter-clockwise quarter turns)
    jitter: torch.Tensor  # (B,) bool: colour jitter applied
    brightness: torch.Tensor  # (B,) factors
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # (B,) shift in [-0.5, 0.5] of a full turn
    jitter_order: torch.Tensor  # (4,) permutation of brightness, contrast, saturation, hue
    grayscale: torch.Tensor  # (B,) bool
    blur_sigma: torch.Tensor  # (B,) sigma in pixels, 0 = no blur

    def select(self, rows: torch.Tensor) -> "ViewParams":
        """The parameters of some rows (a process's part of the global batch)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if f.name == "jitter_order" else value[rows]
        return ViewParams(**out)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def _resized_crop_boxes(n: int, scale_min: float, g: torch.Generator) -> torch.Tensor:
    """torchvision's RandomResizedCrop box sampling, vectorised: area fraction in
    (scale_min, 1), log aspect ratio uniform in log(3/4)..log(4/3), up to 10 tries for a box
    that fits, else the whole image; the position is uniform where the box fits."""
    ratio_low, ratio_high = math.log(3 / 4), math.log(4 / 3)
    w = torch.ones(n, dtype=torch.float64)
    h = torch.ones(n, dtype=torch.float64)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(10):
        area = _uniform(n, scale_min, 1.0, g)
        ratio = torch.exp(_uniform(n, ratio_low, ratio_high, g))
        cw, ch = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        ok = (~done) & (cw <= 1) & (ch <= 1)
        w = torch.where(ok, cw, w)
        h = torch.where(ok, ch, h)
        done |= ok
    cx = w / 2 + (1 - w) * torch.rand(n, generator=g, dtype=torch.float64)
    cy = h / 2 + (1 - h) * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([cx, cy, w, h], dim=1).float()


def sample_view_params(
    cfg: ViewsConfig, batch_size: int, generator: torch.Generator
) -> ViewParams:
    """Draw the random parameters of one view for ``batch_size`` samples."""
    n, g, s = batch_size, generator, cfg.aug_strength
    drawing = cfg.preset == "drawing"
    coin = lambda p: torch.rand(n, generator=g) < p  # noqa: E731
    crop = _resized_crop_boxes(n, cfg.crop_scale_min, g)
    hflip = coin(0.5) if cfg.preset != "upright" else torch.zeros(n, dtype=torch.bool)
    vflip = coin(0.5) if drawing else torch.zeros(n, dtype=torch.bool)
    rot90 = torch.randint(0, 4, (n,), generator=g) if drawing else torch.zeros(n, dtype=torch.long)
    jitter = coin(cfg.color_jitter_p)
    b, c, sat, hue = 0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5)
    brightness = _uniform(n, max(0.0, 1 - b), 1 + b, g).float()
    contrast = _uniform(n, max(0.0, 1 - c), 1 + c, g).float()
    saturation = _uniform(n, max(0.0, 1 - sat), 1 + sat, g).float()
    hue_shift = _uniform(n, -hue, hue, g).float()
    order = torch.randperm(4, generator=g)
    grayscale = coin(cfg.grayscale_p)
    sigma = _uniform(n, 0.1, 2.0, g).float() if cfg.blur else torch.zeros(n)
    return ViewParams(
        crop, hflip, vflip, rot90, jitter, brightness, contrast, saturation, hue_shift, order,
        grayscale, sigma,
    )


def _affine(p: ViewParams) -> torch.Tensor:
    """One 2x3 matrix per sample mapping output to input coordinates (grid_sample's [-1, 1]
    convention): input = centre + diag(w, h) @ flips @ rotation @ output."""
    n = len(p.hflip)
    angle = p.rot90.double() * (math.pi / 2)
    cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    flip = torch.ones(n, 2, dtype=torch.float64)
    flip[p.hflip, 0] = -1
    flip[p.vflip, 1] = -1
    scale = p.crop[:, 2:].double()
    linear = (scale * flip).unsqueeze(-1) * rot  # rows scaled: diag(w, h) @ diag(flip) @ rot
    centre = (p.crop[:, :2].double() * 2 - 1).unsqueeze(-1)
    return torch.cat([linear, centre], dim=-1).float()


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.device, x.dtype).view(-1, 1, 1, 1)


def _adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue per sample: RGB -> HSV, shift H (a fraction of a turn), HSV -> RGB."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), 0 * maxc)
    v = maxc
    h = (h + shift.to(x.device, x.dtype).view(-1, 1, 1)) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p_, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    choices = [(v, t, p_), (q, v, p_), (p_, v, t), (p_, q, v), (t, p_, v), (v, p_, q)]
    out = torch.zeros_like(x)
    for k, (cr, cg, cb) in enumerate(choices):
        mask = (i == k).unsqueeze(1)
        out = torch.where(mask, torch.stack([cr, cg, cb], 1), out)
    return out


def _color_jitter(x: torch.Tensor, p: ViewParams) -> torch.Tensor:
    y = x
    for op in p.jitter_order.tolist():
        if op == 0:
            y = (y * _per_sample(p.brightness, y)).clamp(0, 1)
        elif op == 1:
            mean = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
            c = _per_sample(p.contrast, y)
            y = (c * y + (1 - c) * mean).clamp(0, 1)
        elif op == 2:
            sat = _per_sample(p.saturation, y)
            y = (sat * y + (1 - sat) * _gray(y)).clamp(0, 1)
        else:
            y = _adjust_hue(y, p.hue)
    return torch.where(_per_sample(p.jitter, x).bool(), y, x)


def blur_kernel_size(image_size: int) -> int:
    """10% of the image size, made odd (sthalles/SimCLR: radius = k // 2, size 2r + 1)."""
    return 2 * (int(0.1 * image_size) // 2) + 1


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample (a grouped convolution)."""
    n, c, h, w = x.shape
    k = blur_kernel_size(h)
    if k < 3:
        return x
    radius = k // 2
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.device, x.dtype).clamp_min(1e-3).view(-1, 1)
    kernel = torch.exp(-(offsets**2) / (2 * s**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (n, k)
    kernel = kernel.repeat_interleave(c, dim=0)  # (n*c, k)
    y = x.reshape(1, n * c, h, w)
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(n * c, 1, 1, k), groups=n * c)
    y = F.conv2d(y, kernel.view(n * c, 1, k, 1), groups=n * c)
    y = y.reshape(n, c, h, w)
    no_blur = _per_sample(sigma <= 0, x).bool()
    return torch.where(no_blur, x, y)


def apply_views(images: torch.Tensor, p: ViewParams) -> torch.Tensor:
    """Augment a uint8 batch (B, 3, S, S) with the given parameters -> float in [0, 1], same size."""
    size = images.shape[-1]
    x = images.float().div_(255)
    theta = _affine(p).to(x.device)
    grid = F.affine_grid(theta, [len(x), 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = _color_jitter(x, p)
    x = torch.where(_per_sample(p.grayscale, x).bool(), _gray(x).expand_as(x), x)
    if bool((p.blur_sigma > 0).any()):
        x = _gaussian_blur(x, p.blur_sigma)
    return x.clamp_(0, 1)


def view_generator(seed: int, epoch: int, step: int, view: int, rank: int = 0) -> torch.Generator:
    """The generator for one view of one global batch: independent of the process count.
    (``rank`` > 0 only for streamed batches, which each process draws for itself.)"""
    entropy = [seed, epoch, step, view] + ([rank] if rank else [])
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
