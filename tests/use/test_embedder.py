"""The Python API's loading and embedding: the features symclr-embed writes, whatever form an
image comes in (path, PIL, numpy of any dtype make-shards decodes), a .pt or its ONNX export,
and bad input as one UserError naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import symclr_ft
from symclr_ft.errors import UserError
from symclr_ft.use.embedder import Embedder, array_image, load_model
from symclr_ft.use.index import load_index
from symclr_ft.use.predict import embed_main

SIZE = 32


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from symclr_ft.models.backbones import SimCLRNet, save_model_file

    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    save_model_file(SimCLRNet("resnet10t", 8), run / "model.pt", epoch=1)
    (run / "config.yaml").write_text(f"data:\n  image_size: {SIZE}\n")
    return run / "model.pt"


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """Two class folders of small drawn crops (black strokes on white, different shapes)."""
    out = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    for c in range(2):
        (out / f"class{c}").mkdir()
        for i in range(3):
            a = np.full((40, 36, 3), 255, np.uint8)
            a[4 + 6 * c : 30, 6 : 12 + 9 * c] = 0
            a[rng.integers(0, 40, 25), rng.integers(0, 36, 25)] = 0
            Image.fromarray(a).save(out / f"class{c}" / f"{i}.png")
    return out


def test_the_api_is_exported_lazily():
    import subprocess
    import sys

    code = "import sys, symclr_ft; print('torch' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"  # the commands import symclr_ft.errors before torch
    assert {"load_model", "Embedder", "SymbolIndex", "Spotter"} <= set(symclr_ft.__all__)
    assert symclr_ft.load_model is load_model and symclr_ft.Embedder is Embedder
    with pytest.raises(AttributeError):
        symclr_ft.no_such_name  # noqa: B018


def test_features_are_those_symclr_embed_writes(model_file, crops, tmp_path):
    """One code path: the index of the command and the API's features of the same files."""
    assert embed_main(["--model", str(model_file), "--input", str(crops), "--out",
                       str(tmp_path / "idx"), "--mixed-precision", "no", "--batch-size", "8"]) == 0
    index = load_index(tmp_path / "idx")
    model = load_model(model_file, device="cpu", precision="no")
    assert (model.image_size, model.precision, model.sha256) == (SIZE, "no", index.model_sha256)
    feats = Embedder(model, batch_size=8).embed([s["file"] for s in index.sources])
    assert feats.shape == index.features.shape and feats.dtype == torch.float32
    torch.testing.assert_close(feats, index.features, rtol=0, atol=1e-6)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(len(feats)))


def test_one_image_in_any_form_gives_the_same_features(model_file, crops):
    path = crops / "class1" / "0.png"
    rgb = np.asarray(Image.open(path).convert("RGB"))
    grey = rgb[:, :, 0]
    forms = {
        "path": path, "str": str(path), "PIL": Image.open(path), "uint8 HWC": rgb,
        "float HWC in [0, 1]": rgb / 255.0, "RGBA": np.dstack([rgb, np.full(grey.shape, 255, np.uint8)]),
    }
    embedder = Embedder(load_model(model_file, precision="no"))
    feats = embedder.embed(list(forms.values()))
    for name, row in zip(forms, feats):
        torch.testing.assert_close(row, feats[0], rtol=0, atol=1e-6, msg=name)
    # grey in every width make-shards scales: 8-bit, 16-bit (x257), one channel, bool
    greys = embedder.embed([grey, grey.astype(np.uint16) * 257, grey[:, :, None],
                            grey.astype(np.int64), grey > 127])
    for row in greys[1:4]:
        torch.testing.assert_close(row, greys[0], rtol=0, atol=1e-6)
    assert greys.shape[0] == 5  # a bool mask embeds too (True: white)
    assert embedder.embed(rgb).shape == (1, feats.shape[1])  # one image: one row


def test_16_bit_arrays_are_scaled_like_make_shards_drawings():
    """to_rgb scales a 16-bit image from its full range (a plain convert would turn it white)."""
    a = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    from symclr_ft.data.coco import to_rgb

    rgb = np.asarray(to_rgb(array_image(a)))
    assert rgb[:, :, 0].tolist() == [[0, 255], [128, 1]]


def test_an_onnx_export_embeds_like_its_model_file(model_file, crops, tmp_path):
    pytest.importorskip("onnxruntime")
    from symclr_ft.models.export import main as export_main

    assert export_main(["--model", str(model_file), "--onnx", str(tmp_path / "f.onnx"),
                        "--no-check"]) == 0
    onnx = load_model(tmp_path / "f.onnx")
    pt = load_model(model_file, precision="no")
    assert (onnx.image_size, onnx.sha256, onnx.precision) == (SIZE, pt.sha256, "no")
    images = sorted(crops.glob("*/*.png"))
    torch.testing.assert_close(Embedder(onnx).embed(images), Embedder(pt).embed(images),
                               rtol=0, atol=1e-3)


@pytest.mark.parametrize("bad, message", [
    ("missing.png", "missing.png: cannot read"),
    (np.zeros((2, 3, 4, 5)), "expected an image array"),
    (np.zeros((8, 8, 3), dtype=np.int32), "must be uint8 or float in [0, 1]"),
    (np.full((8, 8), -3), "outside 0..65535"),
    (42, "expected a path, a PIL image or a numpy array"),
])
def test_bad_images_are_one_user_error_naming_them(model_file, tmp_path, bad, message):
    if isinstance(bad, str):
        bad = tmp_path / bad
    with pytest.raises(UserError) as err:
        Embedder(load_model(model_file, precision="no")).embed([bad])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_settings_are_refused(model_file, tmp_path):
    with pytest.raises(UserError, match="precision='fp8'"):
        load_model(model_file, precision="fp8")
    with pytest.raises(UserError, match="nothing.pt: checkpoint file not found"):
        load_model(tmp_path / "nothing.pt")
    with pytest.raises(UserError, match="batch_size=0"):
        Embedder(load_model(model_file), batch_size=0)
