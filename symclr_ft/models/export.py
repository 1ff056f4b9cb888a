"""symclr-export: a trained model's feature extractor as an ONNX file, for use outside Python.

People deploy embedders in C++, C#, Java or the browser through ONNX Runtime; the file carries
everything those need, so no Python preprocessing has to be re-implemented:

* input ``images``: float32 ``(B, 3, S, S)``, RGB in ``[0, 1]`` (pixel / 255), with ``B``
  dynamic and ``S`` the model's image size. The model's input normalisation (e.g. ImageNet
  mean and std) is inside the graph.
* output ``features``: float32 ``(B, D)``, the pooled backbone features that evaluation uses
  (``net.features``; 512 for ResNet-18, 1280 for EfficientNet-lite0). They are not normalised:
  L2-normalise them and compare by cosine similarity, as ``symclr-evaluate`` does.
* metadata (``metadata_props``): ``image_size``, ``input_norm``, ``arch``, ``feature_dim`` and
  the model file's ``sha256``, so an embedder can check it was given the right crops.

Example::

    symclr-export --model runs/demo_cpu/model.pt --onnx demo.onnx

The file is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from symclr_ft.config import MAX_IMAGE_SIZE
from symclr_ft.errors import ArgumentParser, UserError, bounded_int, library_message, report_user_errors
from symclr_ft.io import atomic_path
# Running an export is library (embed, predict and the API use it); importable from here as before.
from symclr_ft.models.onnx_features import OnnxFeatures, onnx_features  # noqa: F401

OPSET = 17  # ONNX Runtime >= 1.12 and most other runtimes read it


class FeatureExtractor(nn.Module):
    """Only ``net.features``: ``torch.onnx.export`` traces ``forward``, and a deployed
    embedder needs neither the projection head nor the training-time tuple output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images)


def export_onnx(net: nn.Module, image_size: int, out: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``net.features`` as ONNX with a dynamic batch axis (atomically); returns ``out``."""
    try:
        import onnx
    except ImportError:
        raise UserError("symclr-export needs the onnx package: pip install -e '.[export]'") from None

    extractor = FeatureExtractor(net).eval().float()
    example = torch.rand(2, 3, image_size, image_size)
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic in timm's padding
        try:
            torch.onnx.export(
                extractor, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=["images"], output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            )
            model = onnx.load(str(tmp))
            for key, value in (metadata or {}).items():
                model.metadata_props.add(key=key, value=str(value))
            onnx.checker.check_model(model)
            onnx.save(model, str(tmp))
        except OSError as err:  # a full disk: the temporary file goes, the old file stays
            raise UserError(f"{out}: cannot write the ONNX file "
                            f"({err.strerror or library_message(err)})") from None
    return out


def max_normalised_difference(net: nn.Module, path: str | Path, images: torch.Tensor) -> float:
    """Largest |difference| between PyTorch's and ONNX Runtime's L2-normalised features."""
    with torch.no_grad():
        reference = torch.nn.functional.normalize(net.eval().float().features(images), dim=1)
    exported = torch.nn.functional.normalize(onnx_features(path, images), dim=1)
    return float((reference - exported).abs().max())


def model_image_size(flag: int | None, model_path: Path) -> int:
    """The flag, else the run's image size (config.yaml beside the model file), as evaluation
    resolves it: an embedder fed crops of another size would silently lose accuracy."""
    from symclr_ft.models.backbones import run_image_size

    size = flag or run_image_size(model_path)
    if not size:
        raise UserError(
            f"{model_path}: --image-size is required (no config.yaml beside the model file "
            "to read the run's image size from)"
        )
    return size


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="symclr-export",
        description="Export a trained model's feature extractor to ONNX (input float (B,3,S,S) in [0,1], "
        "output (B,D) features to L2-normalise; dynamic batch).",
    )
    p.add_argument("--model", required=True, help="model file (model.pt) or run folder")
    p.add_argument("--onnx", required=True, help="ONNX file to write")
    p.add_argument("--image-size", type=bounded_int(16, MAX_IMAGE_SIZE), default=None,
                   help=f"crop size S, 16..{MAX_IMAGE_SIZE}; default: the run's, from config.yaml "
                   "beside the model file")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing ONNX Runtime's features with PyTorch's on random crops")
    return p


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from symclr_ft.models.backbones import file_sha256, load_model_file

    model_path = Path(args.model)
    if model_path.is_dir():
        model_path = model_path / "model.pt"
    net = load_model_file(model_path)  # UserError (one line, exit 2) for a missing or bad file
    size = model_image_size(args.image_size, model_path)
    metadata = {"image_size": size, "input_norm": net.input_norm, "arch": net.arch,
                "feature_dim": net.feature_dim, "sha256": file_sha256(model_path)}
    out = export_onnx(net, size, args.onnx, metadata)
    print(f"wrote {out}: input images float32 (B, 3, {size}, {size}) RGB in [0, 1], "
          f"output features float32 (B, {net.feature_dim}); L2-normalise before cosine similarity")
    if not args.no_check:
        images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
        print(f"check: max |difference| of L2-normalised features, ONNX Runtime vs PyTorch, "
              f"3 random crops: {max_normalised_difference(net, out, images):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
