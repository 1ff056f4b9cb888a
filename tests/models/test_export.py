"""symclr-export: the ONNX file computes what PyTorch computes, at any batch size; bad input is
one line, exit 2, nothing written."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from symclr_ft.models.export import main, onnx_features  # noqa: E402
from symclr_ft.models.backbones import SimCLRNet, load_model_file, save_model_file  # noqa: E402

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


def test_predict_with_the_onnx_file_answers_as_the_model_file_does(model_file, exported,
                                                                   synth_shards, tmp_path):
    """symclr-predict --model FILE.onnx runs the export in ONNX Runtime; an index made with the
    model file is accepted (the export carries its sha256) and the answers are the same."""
    import csv

    from symclr_ft.use.predict import embed_main, predict_main

    assert embed_main(["--model", str(model_file), "--image-size", str(SIZE), "--input",
                       str(synth_shards), "--split", "train", "--mixed-precision", "no",
                       "--out", str(tmp_path / "support")]) == 0
    answers = {}
    for name, model in (("pt", model_file), ("onnx", exported)):
        extra = ["--image-size", str(SIZE), "--mixed-precision", "no"] if name == "pt" else []
        out = tmp_path / name / "preds.csv"
        assert predict_main(["--model", str(model), *extra, "--support", str(tmp_path / "support"),
                             "--query", str(synth_shards), "--query-split", "test",
                             "--out", str(out)]) == 0
        with open(out, newline="") as handle:
            answers[name] = list(csv.DictReader(handle))
    assert [r["predicted"] for r in answers["onnx"]] == [r["predicted"] for r in answers["pt"]]
    assert max(abs(float(a["similarity"]) - float(b["similarity"]))
               for a, b in zip(answers["onnx"], answers["pt"])) < 1e-3


def test_a_file_that_is_not_an_export_is_one_line(tmp_path, capsys):
    from symclr_ft.use.predict import embed_main

    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(SystemExit) as exit_:
        embed_main(["--model", str(tmp_path / "bad.onnx"), "--input", str(tmp_path),
                    "--out", str(tmp_path / "idx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "not a readable ONNX model" in err[0]
    assert not (tmp_path / "idx").exists()
