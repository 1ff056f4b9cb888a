"""WiSE-FT weight interpolation against a slow, element-by-element reference."""

import pytest
import torch
from torch import nn

from symclr_ft.models.wise import interpolate_state, wise_network


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def test_interpolation_matches_a_slow_reference():
    a, b = _net(0), _net(1)
    b[1].running_mean.fill_(2.0)
    b[1].num_batches_tracked.fill_(7)
    sa, sb = a.state_dict(), b.state_dict()
    out = interpolate_state(sa, sb, 0.3)
    for key in sa:
        if sa[key].is_floating_point():
            flat_a, flat_b = sa[key].flatten().tolist(), sb[key].flatten().tolist()
            ref = [0.7 * x + 0.3 * y for x, y in zip(flat_a, flat_b)]
            assert out[key].flatten().tolist() == pytest.approx(ref, abs=1e-6)
        else:
            assert torch.equal(out[key], sb[key])  # counters come from the fine-tuned net


def test_endpoints_and_network():
    a, b = _net(0), _net(1)
    x = torch.randn(2, 3, 8, 8)
    a.eval(), b.eval()
    assert torch.allclose(wise_network(a, b, 1.0).eval()(x), b(x))
    assert torch.allclose(wise_network(a, b, 0.0).eval()(x), a(x), atol=1e-6)
    assert next(b.parameters()).data_ptr() != next(wise_network(a, b, 0.5).parameters()).data_ptr()


def test_bad_inputs():
    a, b = _net(0), _net(1)
    with pytest.raises(ValueError, match="alpha"):
        interpolate_state(a.state_dict(), b.state_dict(), 1.5)
    other = nn.Linear(2, 2).state_dict()
    with pytest.raises(ValueError, match="key"):
        interpolate_state(a.state_dict(), other, 0.5)


def test_apply_wise_in_place_keeps_the_head(tmp_path):
    from symclr_ft.config import ModelConfig
    from symclr_ft.models.backbones import build_model, save_model_file
    from symclr_ft.models.wise import apply_wise_

    torch.manual_seed(0)
    init = build_model(ModelConfig(arch="resnet18"))
    save_model_file(init, tmp_path / "init.pt", epoch=0)
    cfg = ModelConfig(arch="resnet18", init=f"simclr:{tmp_path / 'init.pt'}", wise_alpha=0.25)
    tuned = build_model(ModelConfig(arch="resnet18"))  # other random weights: "fine-tuned"
    before = {k: v.clone() for k, v in tuned.state_dict().items()}
    apply_wise_(tuned, cfg)
    after, start = tuned.state_dict(), init.state_dict()
    w = "backbone.conv1.weight"
    assert torch.allclose(after[w], 0.75 * start[w] + 0.25 * before[w], atol=1e-6)
    assert torch.equal(after["backbone.fc.0.weight"], before["backbone.fc.0.weight"])
