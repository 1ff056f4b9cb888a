"""Multi-stage features: the head part equals the network's own features."""

import pytest
import torch
import torch.nn.functional as F

from symclr_ft.model import SimCLRNet
from symclr_ft.multilayer import MultiLayerFeatures


def test_parts_are_normalised_stage_outputs_and_head_is_the_features():
    torch.manual_seed(0)
    net = SimCLRNet("tf_efficientnet_lite0", input_norm="imagenet").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = MultiLayerFeatures(net, ["5", "head"]).features(x)
        head = F.normalize(net.features(x), dim=1)
    assert out.shape == (2, net.backbone.blocks[5][-1].conv_pwl.out_channels + net.feature_dim)
    assert torch.allclose(out[:, -net.feature_dim:], head, atol=1e-5)
    assert torch.allclose(out[:, : -net.feature_dim].norm(dim=1), torch.ones(2), atol=1e-5)


def test_unknown_layers_are_refused():
    net = SimCLRNet("tf_efficientnet_lite0")
    with pytest.raises(ValueError, match="block numbers"):
        MultiLayerFeatures(net, ["9"])
