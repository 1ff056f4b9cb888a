"""Shipped fp16 weights (model.init=universe): round trip, sha256 check, size limit."""

from __future__ import annotations

import json

import pytest
import torch

from symclr_ft.config import ModelConfig
from symclr_ft.errors import UserError
from symclr_ft.models.backbones import SimCLRNet, build_model, save_model_file
from symclr_ft.models.shipped import read_shipped, write_shipped


@pytest.fixture()
def shipped(tmp_path):
    torch.manual_seed(0)
    net = SimCLRNet("resnet18", out_dim=16)
    save_model_file(net, tmp_path / "model.pt", epoch=1)
    meta = write_shipped(tmp_path / "model.pt", tmp_path / "w", recipe="test", max_bytes=1 << 26)
    return net, tmp_path / "w.safetensors", meta


def test_a_model_initialised_from_shipped_weights_has_them_in_fp16(shipped):
    net, file, meta = shipped
    assert meta["arch"] == "resnet18" and len(meta["sha256"]) == 64
    loaded = build_model(ModelConfig(arch="resnet18", out_dim=16, init=f"universe:{file}"))
    for key, value in net.state_dict().items():
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(loaded.state_dict()[key], expected), key


def test_another_head_width_loads_the_backbone_only(shipped):
    net, file, _ = shipped
    loaded = build_model(ModelConfig(arch="resnet18", out_dim=8, init=f"universe:{file}"))
    key = "backbone.conv1.weight"
    assert torch.equal(loaded.state_dict()[key], net.state_dict()[key].half().float())


def test_a_changed_byte_is_refused_by_its_sha256_in_one_line(shipped):
    _, file, _ = shipped
    data = bytearray(file.read_bytes())
    data[-1] ^= 1
    file.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256") as err:
        read_shipped(str(file))
    assert "\n" not in str(err.value)


def test_another_architecture_is_refused(shipped):
    _, file, _ = shipped
    with pytest.raises(UserError, match="architecture"):
        build_model(ModelConfig(arch="resnet34", out_dim=16, init=f"universe:{file}"))


def test_a_file_over_the_limit_is_not_written(shipped, tmp_path):
    with pytest.raises(UserError, match="limit"):
        write_shipped(tmp_path / "model.pt", tmp_path / "big", recipe="test", max_bytes=1000)
    assert not (tmp_path / "big.safetensors").exists() and not (tmp_path / "big.json").exists()


def test_missing_metadata_is_one_line(shipped):
    _, file, _ = shipped
    file.with_suffix(".json").write_text(json.dumps({"arch": "resnet18"}))
    with pytest.raises(UserError, match="no sha256"):
        read_shipped(str(file))
