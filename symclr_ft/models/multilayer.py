"""Features from several stages of an EfficientNet backbone, concatenated.

Why: the last stage of a network fine-tuned on 40 classes (or trained on ImageNet photos) is
the most specialised; earlier stages describe strokes and local shapes that other symbol
styles share. ``MultiLayerFeatures(net, ["4", "5", "head"]).features(x)`` average-pools the
outputs of blocks 4 and 5 and takes the usual pooled head features, L2-normalises each part
and concatenates them, so each part weighs the same in a cosine similarity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def stage_features(net: nn.Module, x: torch.Tensor, layers: list[str]) -> torch.Tensor:
    """Pooled, L2-normalised outputs of the named stages of ``net`` (a SimCLRNet on a timm
    EfficientNet), concatenated; "head" is the usual pooled head features."""
    b = net.backbone
    x = (x - net.mean.to(x.dtype)) / net.std.to(x.dtype)
    x = b.bn1(b.conv_stem(x))
    parts = []
    for i, block in enumerate(b.blocks):
        x = block(x)
        if str(i) in layers:
            parts.append(F.normalize(x.float().mean(dim=(2, 3)), dim=1))
    if "head" in layers:
        head = b.forward_head(b.bn2(b.conv_head(x)), pre_logits=True)
        parts.append(F.normalize(head.float(), dim=1))
    return torch.cat(parts, dim=1)


class MultiLayerFeatures(nn.Module):
    """``features(x)`` of a timm EfficientNet inside a SimCLRNet, from several stages."""

    def __init__(self, net: nn.Module, layers: list[str]):
        super().__init__()
        blocks = len(net.backbone.blocks)
        bad = [l for l in layers if l != "head" and not (l.isdigit() and int(l) < blocks)]
        if not layers or bad:
            raise ValueError(f"layers {layers}: expected block numbers 0..{blocks - 1} and/or 'head'")
        self.net, self.layers = net, list(layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return stage_features(self.net, x, self.layers)
