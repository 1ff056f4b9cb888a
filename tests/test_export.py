"""symclr-export: the ONNX file computes what PyTorch computes, at any batch size; bad input is
one line, exit 2, nothing written."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from symclr_ft.export import main, onnx_features  # noqa: E402
from symclr_ft.model import SimCLRNet, load_model_file, save_model_file  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small model with ImageNet input normalisation (so the graph must hold it) and batch
    norm statistics that are not the defaults (so eval-mode batch norm is what gets exported)."""
    torch.manual_seed(0)
    net = SimCLRNet("resnet10t", out_dim=8, input_norm="imagenet")
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, 3, SIZE, SIZE) * 0.5 + 0.25)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model_file(net, path, epoch=1)
    return path


@pytest.fixture(scope="module")
def exported(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "features.onnx"
    assert main(["--model", str(model_file), "--onnx", str(out), "--image-size", str(SIZE)]) == 0
    return out


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_features_match_pytorch(model_file, exported, batch):
    images = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
    net = load_model_file(model_file).eval()
    with torch.no_grad():
        reference = F.normalize(net.features(images), dim=1)
    got = F.normalize(onnx_features(exported, images), dim=1)
    assert got.shape == (batch, net.feature_dim)
    assert (got - reference).abs().max().item() < 1e-3


def test_onnx_file_declares_a_dynamic_batch_and_its_inputs(model_file, exported):
    model = onnx.load(str(exported))
    (image_input,) = model.graph.input
    dims = image_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["image_size"] == str(SIZE) and meta["input_norm"] == "imagenet"
    assert meta["arch"] == "resnet10t" and meta["feature_dim"] == "512"
    assert len(meta["sha256"]) == 64


def test_the_image_size_comes_from_the_run_config(model_file, tmp_path, capsys):
    (model_file.parent / "config.yaml").write_text(f"data:\n  image_size: {SIZE}\n")
    try:
        assert main(["--model", str(model_file.parent), "--onnx", str(tmp_path / "m.onnx"), "--no-check"]) == 0
    finally:
        (model_file.parent / "config.yaml").unlink()
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_value == SIZE
    assert "(B, 3, 32, 32)" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_a_bad_model_file_is_one_line_and_exit_2(tmp_path, capsys, content):
    model = tmp_path / "model.pt"
    if content is not None:
        model.write_bytes(content)
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(model), "--onnx", str(out), "--image-size", str(SIZE)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(model) in err
    assert not out.exists() and not any(p.suffix == ".tmp" for p in tmp_path.rglob("*"))


def test_without_an_image_size_it_says_so(model_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(model_file), "--onnx", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2
    assert "--image-size is required" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
