"""Feature template matching: the exemplar's feature map correlated with the drawing's.

The embedder compares pooled features: one vector per crop, so a crop must first be cut at the
right place (the ink or pixel-template candidates). Pooling throws away the exemplar's layout;
correlating its feature *map* keeps it, and looks everywhere at once: the idea of TMR
(Few-Shot Pattern Detection via Template Matching and Regression, ICCV 2025), without its
learned regression head. Here it is one more candidate source and one more score:

* the exemplar's crop at the model's input size (the crop the embedder sees, in its four
  quarter turns, set on paper) goes through the backbone up to the stage of stride
  ``feature_match_stride``; its k x k feature map is the kernel;
* the drawing is resized so that its symbols appear at that size (the factor that took the
  exemplar's crop to the model's size, times each of ``template_scales``) and goes through the
  same stage, tile by tile (``template.aligned_tiles``: tiles start on feature cells, so
  tiled and untiled maps agree away from the tile edges, which the cores avoid);
* both maps have the paper's feature subtracted (blank paper is then zero and matches
  nothing), and ``conv2d`` sums kernel x window over channels and positions: divided by both
  norms it is the normalised cross-correlation of the two feature maps. A window with less than
  half the exemplar's feature energy is divided by that half instead, so near-blank paper, whose
  tiny residue would correlate by chance, scores near zero;
* local maxima above ``feature_match_peak`` are candidate boxes of the exemplar's size at that
  scale and turn; every given candidate gets each class's best correlation near its centre.

Resize factors are rounded to steps of 2 ** (1/4) (FACTOR_STEPS): exemplars of similar sizes
then share one pass of the drawing through the backbone (the cost), at most 9% off their own.
Why not per-position normalisation alone (each position's vector to unit length): most of a
crop is paper, and normalised paper matches paper everywhere, so every window scored about the
paper's share of the kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import batched_nms

from symclr_ft.errors import UserError
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.template import (
    TemplateEvidence, aligned_tiles, local_peaks, paper_colour, peak_candidates, window_max,
)

FACTOR_STEPS = 4  # resize factors are 2 ** (i / FACTOR_STEPS)
MAX_OCTAVES = 3  # factors within 1/8 .. 8
ENERGY_FLOOR = 0.5  # a window's norm counts as at least this share of the kernel's
CONTEXT_CELLS = 8  # cells a core keeps from its tile edge beyond half a kernel; paper around the drawing (padding)


def feature_level(net, stride: int) -> int:
    """Index (timm ``feature_info``) of the deepest backbone stage with ``stride``."""
    info = list(getattr(net.backbone, "feature_info", []))
    found = [i for i, f in enumerate(info) if f["reduction"] == stride]
    if not found or not hasattr(net.backbone, "forward_intermediates"):
        raise UserError(f"feature matching: the backbone {getattr(net, 'arch', '?')} has no stage of stride "
                        f"{stride} (strides: {sorted({f['reduction'] for f in info})})")
    return found[-1]


@torch.no_grad()
def feature_map(net, images: torch.Tensor, level: int) -> torch.Tensor:
    """(B, C, h, w) float output of backbone stage ``level`` for uint8 images (B, 3, H, W),
    normalised as ``net.features`` normalises its input."""
    device = next(net.parameters()).device
    x = images.to(device).float().div_(255.0)
    x = ((x - net.mean.to(x.dtype)) / net.std.to(x.dtype)).contiguous(memory_format=torch.channels_last)
    out = net.backbone.forward_intermediates(x, indices=[level], intermediates_only=True, stop_early=True)
    return out[0].float()


def paper_feature(net, colour, level: int, stride: int) -> torch.Tensor:
    """(C,) the stage's feature of blank paper of ``colour`` (far from any image edge)."""
    side = 16 * stride
    blank = torch.tensor(np.asarray(colour, np.float32)[:3]).round().clamp(0, 255).to(torch.uint8)
    fmap = feature_map(net, blank.view(1, 3, 1, 1).expand(1, 3, side, side), level)
    return fmap[0, :, fmap.shape[2] // 2, fmap.shape[3] // 2]


@dataclass
class KernelBank:
    """The exemplars' feature kernels at one crop side: each in four quarter turns."""

    side: int  # crop side (px) the kernels were made at, a multiple of the stride
    kernels: torch.Tensor  # (K, C, k, k) paper subtracted, unit norm
    energy: torch.Tensor  # (K,) norm before normalising
    exemplar: torch.Tensor  # (K,) index into FeatureKernels.crops
    turn: torch.Tensor  # (K,) quarter turns


@dataclass
class FeatureKernels:
    """What feature matching needs of an exemplar set; the kernels are made once per set (and
    once per coarser side a large drawing needs, kept in ``banks``)."""

    crops: torch.Tensor  # (E, 3, S, S) uint8: the crops the embedder saw
    labels: torch.Tensor  # (E,) class index
    sizes: torch.Tensor  # (E, 2) symbol box (w, h) on the exemplar's drawing
    classes: int
    padding: float  # crop padding (share of the box per side)
    level: int  # backbone stage (timm feature_info index)
    stride: int
    banks: dict[int, KernelBank] = field(default_factory=dict, repr=False)


def crop_side(image_size: int, stride: int, shrink: float = 1.0) -> int:
    """The kernel's crop side: the model's size (times ``shrink``) on whole feature cells."""
    return stride * max(2, round(image_size * shrink / stride))


def exemplar_kernels(net, crops: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor, classes: int,
                     cfg: SpotConfig) -> FeatureKernels:
    """Feature kernels of exemplar crops (E, 3, S, S) uint8 at the model's size."""
    level = feature_level(net, cfg.feature_match_stride)
    kernels = FeatureKernels(crops, labels, sizes.float(), classes, cfg.crop_padding, level, cfg.feature_match_stride)
    kernel_bank(net, kernels, crop_side(crops.shape[-1], kernels.stride))
    return kernels


def kernel_bank(net, kernels: FeatureKernels, side: int) -> KernelBank:
    """The kernels at crop ``side`` (made once, then kept): each crop resized to ``side``,
    turned, set on its own paper (a margin of paper around it, so its border sees paper as a
    symbol on a drawing does, not the network's zero padding), the centre k x k cells of its
    feature map less the paper's feature."""
    if side in kernels.banks:
        return kernels.banks[side]
    s = kernels.stride
    margin = s * math.ceil(side / (2 * s))
    k = side // s
    out, energy, exemplar, turn = [], [], [], []
    for e, crop in enumerate(kernels.crops):
        rgb = crop.permute(1, 2, 0).numpy()
        paper = np.median(np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]), axis=0)
        if rgb.shape[0] != side:
            rgb = np.asarray(Image.fromarray(rgb).resize((side, side), Image.BILINEAR))
        sheet = np.empty((side + 2 * margin, side + 2 * margin, 3), np.uint8)
        sheet[:] = np.round(paper).astype(np.uint8)
        blank = paper_feature(net, paper, kernels.level, s)[:, None, None]
        for t in range(4):
            sheet[margin : margin + side, margin : margin + side] = np.rot90(rgb, t)
            fmap = feature_map(net, torch.from_numpy(sheet.copy()).permute(2, 0, 1)[None], kernels.level)[0]
            cell = margin // s
            kern = fmap[:, cell : cell + k, cell : cell + k] - blank
            norm = kern.norm()
            out.append(kern / norm.clamp(min=1e-12))
            energy.append(norm)
            exemplar.append(e)
            turn.append(t)
    bank = KernelBank(side, torch.stack(out), torch.stack(energy).cpu(), torch.tensor(exemplar), torch.tensor(turn))
    kernels.banks[side] = bank
    return bank


def factor_groups(kernels: FeatureKernels, bank: KernelBank, scales) -> dict[tuple[int, int], list[int]]:
    """Kernels by the (x, y) resize of the drawing that shows their symbol at ``bank.side``,
    as exponents of 2 ** (1 / FACTOR_STEPS): each group is one pass of the drawing."""
    groups: dict[tuple[int, int], list[int]] = {}
    limit = MAX_OCTAVES * FACTOR_STEPS
    for j, (e, t) in enumerate(zip(bank.exemplar.tolist(), bank.turn.tolist())):
        w, h = (kernels.sizes[e] * (1 + 2 * kernels.padding)).tolist()
        if t % 2:
            w, h = h, w
        for scale in scales:
            ix, iy = (max(-limit, min(limit, round(FACTOR_STEPS * math.log2(bank.side / (v * scale)))))
                      for v in (max(w, 1.0), max(h, 1.0)))
            if j not in groups.setdefault((ix, iy), []):
                groups[(ix, iy)].append(j)
    return groups


def _cost(groups, width: int, height: int) -> float:
    """Megapixels through the backbone for ``groups`` on a drawing of width x height."""
    return sum(width * height * 2 ** ((ix + iy) / FACTOR_STEPS) for ix, iy in groups) / 1e6


def resized_tile(rgb: np.ndarray, factor: tuple[float, float], box: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels ``box`` (x0, y0, x1, y1) of the drawing resized by ``factor`` (fx, fy), cut from
    the drawing around it (each output pixel is sampled alone, so a tile holds the pixels of the
    whole resized drawing; reduced drawings are blurred first, with margin, against aliasing).
    The box may reach beyond the drawing: the edge pixels (paper) are repeated there."""
    qx, qy = factor
    u0, v0, u1, v1 = box
    sigma = [0.5 / q if q < 1 else 0.0 for q in factor]
    margin = [2 + math.ceil(4 * s) for s in sigma]
    height, width = rgb.shape[:2]
    x_lo = min(width - 1, max(0, math.floor((u0 + 0.5) / qx - 0.5) - margin[0]))
    x_hi = max(x_lo + 1, min(width, math.ceil((u1 - 0.5) / qx - 0.5) + 1 + margin[0]))
    y_lo = min(height - 1, max(0, math.floor((v0 + 0.5) / qy - 0.5) - margin[1]))
    y_hi = max(y_lo + 1, min(height, math.ceil((v1 - 0.5) / qy - 0.5) + 1 + margin[1]))
    src = np.ascontiguousarray(rgb[y_lo:y_hi, x_lo:x_hi])
    if max(sigma) > 0:
        src = cv2.GaussianBlur(src, (0, 0), sigmaX=max(sigma[0], 1e-3), sigmaY=max(sigma[1], 1e-3),
                               borderType=cv2.BORDER_REPLICATE)
    inverse = np.array([[1 / qx, 0, (u0 + 0.5) / qx - 0.5 - x_lo], [0, 1 / qy, (v0 + 0.5) / qy - 0.5 - y_lo]])
    return cv2.warpAffine(src, inverse, (u1 - u0, v1 - v0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def subcell(result: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peaks at (ys, xs) of ``result`` refined to a fraction of a cell (a parabola through each
    peak and its two neighbours, per axis, within half a cell): a cell is 8 or 16 px of the
    resized drawing, and the correlation falls by a tenth within a few pixels of the peak."""

    def offset(before: np.ndarray, at: np.ndarray, after: np.ndarray) -> np.ndarray:
        curve = before - 2 * at + after
        safe = np.where(curve < 0, curve, -1.0)
        return np.where(curve < 0, np.clip((before - after) / (2 * safe), -0.5, 0.5), 0.0)

    h, w = result.shape
    up, down = result[np.maximum(ys - 1, 0), xs], result[np.minimum(ys + 1, h - 1), xs]
    left, right = result[ys, np.maximum(xs - 1, 0)], result[ys, np.minimum(xs + 1, w - 1)]
    at = result[ys, xs]
    return ys + offset(up, at, down), xs + offset(left, at, right)


def correlate(fmap: torch.Tensor, paper: torch.Tensor, bank: KernelBank, idx: list[int]) -> torch.Tensor:
    """(G, h - k + 1, w - k + 1) normalised cross-correlation of a tile's feature map (C, h, w)
    with kernels ``idx`` of ``bank``, the paper's feature subtracted from the map."""
    d = (fmap - paper[:, None, None])[None]
    kern = bank.kernels[idx].to(d.device)
    k = kern.shape[-1]
    num = F.conv2d(d, kern)[0]
    window = F.conv2d(d.square().sum(1, keepdim=True), torch.ones((1, 1, k, k), device=d.device))[0].clamp(min=0).sqrt()
    floor = ENERGY_FLOOR * bank.energy[idx].to(d.device)[:, None, None]
    return (num / torch.maximum(window, floor)).cpu()


def _bank_within_budget(net, kernels: FeatureKernels, cfg: SpotConfig, width: int, height: int,
                        shrink_to_budget: bool):
    """The kernel bank and its factor groups; over ``feature_match_budget`` megapixels, kernels
    at a smaller crop side (the drawing resized less) until the passes fit."""
    s = kernels.stride
    full = crop_side(kernels.crops.shape[-1], s)
    bank = kernel_bank(net, kernels, full)
    groups = factor_groups(kernels, bank, cfg.template_scales)
    shrink = 1.0
    while shrink_to_budget and _cost(groups, width, height) > cfg.feature_match_budget and bank.side > 3 * s:
        shrink *= 2 ** (-1 / FACTOR_STEPS)
        side = crop_side(full, s, shrink)
        if side < bank.side:
            bank = kernel_bank(net, kernels, side)
            groups = factor_groups(kernels, bank, cfg.template_scales)
    return bank, groups


def _tile_peaks(result: np.ndarray, k: int, s: int, origin: tuple, core: tuple, factor: tuple,
                box_size: tuple, label: int, cfg: SpotConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The peaks of one kernel's correlation map on one tile whose centres fall in the tile's
    ``core``, as boxes of ``box_size`` in the drawing's pixels, with their scores and label."""
    (u0, v0), (cu0, cv0, cu1, cv1), (qx, qy), (bw, bh) = origin, core, factor, box_size
    ys, xs = local_peaks(result, max(1, k // 2), cfg.feature_match_peak, cfg.template_peaks_per_tile)
    fy, fx = subcell(result, ys, xs)
    pu, pv = u0 + (fx + k / 2) * s, v0 + (fy + k / 2) * s
    inside = (pu >= cu0) & (pu < cu1) & (pv >= cv0) & (pv < cv1)
    px, py = pu[inside] / qx, pv[inside] / qy
    return (torch.tensor(np.stack([px - bw / 2, py - bh / 2, px + bw / 2, py + bh / 2], 1),
                         dtype=torch.float32).reshape(-1, 4),
            torch.tensor(result[ys, xs][inside], dtype=torch.float32),
            torch.full((int(inside.sum()),), label, dtype=torch.long))


def match_features(net, rgb: np.ndarray, kernels: FeatureKernels, boxes: torch.Tensor, cfg: SpotConfig,
                   shrink_to_budget: bool = True) -> TemplateEvidence:
    """Feature-match evidence on one drawing (H, W, 3 uint8), in the shape of template
    matching's: the best correlation of each class near each of ``boxes`` (N, 4), the peaks
    (one per class and place), and the peak candidates that none of ``boxes`` covers (IoU >=
    ``template_dedup_iou``). Over ``feature_match_budget`` megapixels, the kernels are made at a
    smaller crop side (and the drawing resized less) until the passes fit."""
    height, width = rgb.shape[:2]
    n, classes, s = boxes.shape[0], kernels.classes, kernels.stride
    bank, groups = _bank_within_budget(net, kernels, cfg, width, height, shrink_to_budget)
    k = bank.side // s
    sym_w = sym_h = bank.side / (1 + 2 * kernels.padding)  # the symbol box within the kernel's crop
    level = kernels.level
    paper = paper_feature(net, paper_colour(rgb), level, s)
    corr = np.zeros((n, classes), np.float32)
    sizes = np.zeros((n, classes, 2), np.float32)
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2).numpy()
    labels_of = kernels.labels[bank.exemplar].tolist()
    found = [(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long))]
    overlap = bank.side + 2 * CONTEXT_CELLS * s
    margin = CONTEXT_CELLS * s  # paper around the drawing: its edges are not the network's zero padding
    for (ix, iy), idx in sorted(groups.items()):
        qx, qy = 2 ** (ix / FACTOR_STEPS), 2 ** (iy / FACTOR_STEPS)
        rw, rh = max(1, round(width * qx)), max(1, round(height * qy))
        if rw < bank.side or rh < bank.side:
            continue
        bw, bh = sym_w / qx, sym_h / qy
        # every tile on whole cells: with "same" padding an odd size would shift the cells' centres
        grid = aligned_tiles(s * -(-(rw + 2 * margin) // s), s * -(-(rh + 2 * margin) // s),
                             max(cfg.tile, 2 * overlap), overlap, s)
        for box, core in grid:  # tiles of the resized drawing on its paper, shifted back by the margin
            (u0, v0, u1, v1), (cu0, cv0, cu1, cv1) = (tuple(v - margin for v in b) for b in (box, core))
            cu0, cv0, cu1, cv1 = max(cu0, 0), max(cv0, 0), min(cu1, rw), min(cv1, rh)
            tile = resized_tile(rgb, (qx, qy), (u0, v0, u1, v1))
            fmap = feature_map(net, torch.from_numpy(tile).permute(2, 0, 1)[None], level)[0]
            if fmap.shape[1] < k or fmap.shape[2] < k:
                continue
            maps = correlate(fmap, paper, bank, idx).numpy()
            cu, cv = centres[:, 0] * qx, centres[:, 1] * qy
            mine = np.nonzero((cu >= cu0) & (cu < cu1) & (cv >= cv0) & (cv < cv1))[0]
            cols = np.round((cu[mine] - u0) / s - k / 2).astype(int)
            rows = np.round((cv[mine] - v0) / s - k / 2).astype(int)
            for j, result in zip(idx, maps):
                label = labels_of[j]
                if mine.size:
                    value = window_max(result, rows, cols, 1)
                    better = value > corr[mine, label]
                    corr[mine[better], label] = value[better]
                    sizes[mine[better], label] = (bw, bh)
                found.append(_tile_peaks(result, k, s, (u0, v0), (cu0, cv0, cu1, cv1), (qx, qy), (bw, bh), label, cfg))
    return _evidence(found, boxes, corr, sizes, (width, height), classes, cfg)


def _evidence(found: list, boxes: torch.Tensor, corr: np.ndarray, sizes: np.ndarray, size: tuple,
              classes: int, cfg: SpotConfig) -> TemplateEvidence:
    """The tiles' peaks merged (one per class and place) and the candidates they add beyond
    ``boxes``, the best ``max_template_candidates``, clipped to the drawing."""
    width, height = size
    peaks = tuple(torch.cat(part) for part in zip(*found))
    keep = batched_nms(*peaks, 0.5)  # a class's scales and turns at one place: the best
    peaks = tuple(p[keep] for p in peaks)
    extra, extra_corr, extra_sizes = peak_candidates(peaks, boxes, width * height, classes, cfg)
    best = torch.argsort(-extra_corr.max(dim=1).values if extra_corr.shape[0] else torch.zeros(0), stable=True)
    best = best[: cfg.max_template_candidates].sort().values
    limit = torch.tensor([width, height, width, height], dtype=torch.float32)
    return TemplateEvidence(
        torch.from_numpy(corr), torch.from_numpy(sizes), *peaks,
        torch.minimum(extra[best].clamp(min=0), limit), extra_corr[best], extra_sizes[best],
    )  # fmt: skip
