"""Multi-stage features: the head part equals the network's own features."""

import pytest
import torch
import torch.nn.functional as F

from symclr_ft.models.backbones import SimCLRNet
from symclr_ft.models.multilayer import MultiLayerFeatures


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


def test_model_file_keeps_feature_layers_and_training_output_is_unchanged(tmp_path):
    from symclr_ft.config import ModelConfig
    from symclr_ft.models.backbones import build_model, load_model_file, save_model_file

    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="tf_efficientnet_lite0", feature_layers="4+head")).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats, proj = net(x)
        assert feats.shape[1] == net.feature_dim  # the head still sees the pooled features
        assert torch.allclose(net.features(x), MultiLayerFeatures(net, ["4", "head"]).features(x))
    save_model_file(net, tmp_path / "m.pt", epoch=1)
    again = load_model_file(tmp_path / "m.pt").eval()
    assert again.feature_layers == "4+head"
    with torch.no_grad():
        assert torch.allclose(again.features(x), net.features(x), atol=1e-6)
