"""WiSE-FT: a weight-space average of the initial and the fine-tuned network.

Why: fine-tuning on 40 firefighting classes makes features that know those classes and forget
part of what the ImageNet initialisation knew about shapes in general; on a domain never
trained on they end up *worse* than the initialisation. Wortsman et al., "Robust fine-tuning
of zero-shot models" (CVPR 2022) showed that linearly interpolating the two sets of weights,

    theta(alpha) = (1 - alpha) * theta_init + alpha * theta_tuned,

keeps most of the fine-tuned accuracy and much of the initialisation's robustness, at no
training cost. alpha = 1 is the fine-tuned network, alpha = 0 the initialisation.

Every floating-point tensor of the state dict is interpolated (batch-norm running statistics
too, as the paper does); integer tensors (batch counters) are taken from the fine-tuned one.
Example::

    init = build_model(ModelConfig(arch="tf_efficientnet_lite0", init="efficientnet_lite0",
                                   input_norm="imagenet"))
    tuned = load_model_file("runs/x/model.pt")
    net = wise_network(init, tuned, alpha=0.5)
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def interpolate_state(
    init: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * init + alpha * tuned for float tensors; ``tuned`` for the others.
    Both dicts must have the same keys and shapes (a ValueError names the first mismatch)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}: must be in [0, 1]")
    if init.keys() != tuned.keys():
        first = sorted(init.keys() ^ tuned.keys())[0]
        raise ValueError(f"state dicts differ: key {first!r} is in only one of them")
    out = {}
    for key, t in tuned.items():
        i = init[key]
        if i.shape != t.shape:
            raise ValueError(f"{key}: shape {tuple(i.shape)} vs {tuple(t.shape)}")
        if t.is_floating_point():
            out[key] = torch.lerp(i.to(t.dtype), t, alpha)
        else:
            out[key] = t.clone()
    return out


def wise_network(init: nn.Module, tuned: nn.Module, alpha: float) -> nn.Module:
    """A copy of ``tuned`` whose weights are the WiSE-FT interpolation with ``init``."""
    net = copy.deepcopy(tuned)
    net.load_state_dict(interpolate_state(init.state_dict(), tuned.state_dict(), alpha))
    return net


@torch.no_grad()
def apply_wise_(net: nn.Module, model_cfg) -> None:
    """In place: ``net``'s weights become the WiSE-FT average with its initialisation
    (``model_cfg.init``, rebuilt from the same file) at ``model_cfg.wise_alpha``. The
    projection head of a fresh init is random, so the head keeps its fine-tuned weights."""
    from symclr_ft.models.backbones import build_model

    init = build_model(model_cfg).to(next(net.parameters()).device)
    tuned = net.state_dict()
    head = f"backbone.{getattr(net, 'classifier_name', 'fc')}."
    mixed = interpolate_state(init.state_dict(), tuned, model_cfg.wise_alpha)
    net.load_state_dict({k: tuned[k] if k.startswith(head) else v for k, v in mixed.items()})
