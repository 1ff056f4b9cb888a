"""inference.py: folded batch norms compute the same features, and a wrong fold is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from symclr_ft.models.folding import fold_batch_norms, folded_for_inference
from symclr_ft.models.backbones import SimCLRNet


def trained_statistics(net: nn.Module, size: int) -> nn.Module:
    """Batch norm statistics that are not the defaults, as a trained network has."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, 3, size, size) * 0.6 + 0.2)
    return net.eval()


@pytest.mark.parametrize("arch", ["resnet10t", "tf_efficientnet_lite0"])
def test_folded_network_computes_the_same_features(arch):
    torch.manual_seed(0)
    net = trained_statistics(SimCLRNet(arch, 8, input_norm="imagenet"), 32)
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = net.features(x)
    norms = lambda n: sum(isinstance(m, nn.BatchNorm2d) for m in n.backbone.modules())  # noqa: E731
    before = norms(net)
    folded, count = folded_for_inference(net, 32)
    assert folded is not net and count == before - norms(folded)
    # every one in EfficientNet; in ResNet all but the one after the deep stem (a Sequential)
    assert norms(folded) == (1 if arch == "resnet10t" else 0)
    with torch.no_grad():
        torch.testing.assert_close(folded.features(x), reference, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # the original is left as it was
        assert torch.equal(net.features(x), reference)


class NormNotAfterConv(nn.Module):
    """A batch norm registered right after a convolution but applied to the input instead."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def features(self, x):
        return self.conv(self.bn(x)).mean(dim=(2, 3))


def test_a_fold_that_changes_the_features_is_refused():
    torch.manual_seed(0)
    net = NormNotAfterConv()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    assert fold_batch_norms(NormNotAfterConv()) == 1  # the naive rule would fold it
    kept, count = folded_for_inference(net.eval(), 8)
    assert kept is net and count == 0 and isinstance(net.bn, nn.BatchNorm2d)
