"""Running a ``symclr-export`` ONNX file with ONNX Runtime, wherever a network's ``features``
is used.

Why apart from the export command (:mod:`symclr_ft.models.export`): embedding, prediction and
the Python API run exports too, and no module imports a command. onnxruntime is the optional
extra ``[export]``, imported only when an export is run. Example::

    net = OnnxFeatures("runs/demo_cpu/features.onnx")
    feats = net.features(crops.float() / 255)  # (B, D), not normalised
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from symclr_ft.errors import UserError, library_message

__all__ = ["OnnxFeatures", "onnx_features"]


def onnx_features(path: str | Path, images: torch.Tensor) -> torch.Tensor:
    """Features of ``images`` (float (B, 3, S, S) in [0, 1]) computed by ONNX Runtime on CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (features,) = session.run(["features"], {"images": images.numpy().astype("float32")})
    return torch.from_numpy(features)


class OnnxFeatures(nn.Module):
    """An exported feature extractor run by ONNX Runtime, usable wherever a network's
    ``features(x)`` is (symclr-embed and symclr-predict take ``--model FILE.onnx``).

    Why: the export is what people deploy; with it here they embed and predict with exactly
    what they ship, in fp32 (its speed beside PyTorch's: docs/RESULTS.md). ``info`` is the
    file's metadata (image size, input normalisation, the sha256 of the model file it came
    from: an index made with that model file is valid for its export)."""

    def __init__(self, path: str | Path):
        super().__init__()
        try:
            import onnxruntime
        except ImportError:
            raise UserError(f"{path}: running an ONNX model needs onnxruntime: "
                            "pip install -e '.[export]'") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as many as torch would use
        try:
            self.session = onnxruntime.InferenceSession(str(path), options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for unreadable files
            raise UserError(f"{path}: not a readable ONNX model ({library_message(err)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in ("image_size", "input_norm", "sha256") if k not in meta]
        if missing or not meta.get("image_size", "").isdigit():
            raise UserError(f"{path}: not written by symclr-export (metadata lacks "
                            f"{', '.join(missing) or 'a numeric image_size'})")
        self.info = {"image_size": int(meta["image_size"]), "input_norm": meta["input_norm"],
                     "sha256": meta["sha256"], "arch": meta.get("arch", "")}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.detach().float().cpu().contiguous().numpy()
        (out,) = self.session.run(["features"], {"images": pixels})
        return torch.from_numpy(out).to(images.device)

    forward = features
