"""A trained network made cheaper to run for embedding, computing the same features.

Why: on a CPU, batch norm in eval mode is a separate pass over every activation map; for
EfficientNet-lite0 at 96 px it took about a fifth of the forward (docs/RESULTS.md). In eval
mode it is an affine map per channel, so it folds into the convolution before it (the weights
scaled, a bias added), as ONNX Runtime does with an exported graph. Only what follows is kept
of each batch-norm module: its activation (timm's ``BatchNormAct2d``) or nothing.

A batch norm is folded only where it directly follows a convolution among one module's
children (``conv_pw, bn1, conv_dw, bn2, ...`` in timm's EfficientNet and ResNet blocks). Since
that order is a convention of the model code and not a guarantee, :func:`folded_for_inference`
checks the result on random crops against the network as it was and keeps the original when
they differ.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# Largest |difference| of L2-normalised fp32 features accepted from the folded network.
TOLERANCE = 1e-4


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Scale ``conv``'s weights and set its bias so that it computes ``bn(conv(x))`` (eval)."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What runs after the normalisation inside ``bn``: timm's drop + activation, or nothing."""
    parts = [bn._modules[name] for name in ("drop", "act") if name in bn._modules]
    return nn.Sequential(*parts) if parts else nn.Identity()


def fold_batch_norms(net: nn.Module) -> int:
    """Fold, in place, every batch norm that directly follows a convolution among a module's
    children; returns how many were folded. ``net`` must be in eval mode."""
    folded = 0
    for module in list(net.modules()):
        names = list(module._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            conv, bn = module._modules[conv_name], module._modules[bn_name]
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                    and bn.affine and bn.running_var is not None
                    and conv.out_channels == bn.num_features):
                _fold(conv, bn)
                module._modules[bn_name] = _after_norm(bn)
                folded += 1
    return folded


def folded_for_inference(net: nn.Module, image_size: int) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``net`` with its batch norms folded, or ``net`` itself when folding
    would change its features (checked in fp32 on random crops); (network, batch norms folded).
    """
    net = net.eval()
    candidate = copy.deepcopy(net)
    folded = fold_batch_norms(candidate)
    if not folded:
        return net, 0
    crops = torch.rand(4, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    crops = crops.to(next(net.parameters()).device)
    with torch.no_grad():
        before = nn.functional.normalize(net.features(crops).float(), dim=-1)
        after = nn.functional.normalize(candidate.features(crops).float(), dim=-1)
    if float((before - after).abs().max()) > TOLERANCE:
        return net, 0
    return candidate, folded
