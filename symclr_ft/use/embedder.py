"""A trained model, ready to embed: :func:`load_model` and :class:`Embedder`.

The door most users need: a model file (``model.pt`` of a run, or its ``symclr-export`` ONNX
file) in, L2-normalised features of crops out, from a notebook, a service or a labelling tool.
The commands (``symclr-embed``, ``symclr-predict``) load and embed through the same functions
(:func:`open_model`, :func:`embed_source`), so a crop gets the same features either way:
the same decoding (``data.coco.to_rgb``'s conversions for images in memory, the image-folder
decoder for files), the same square resize, batch norms folded into the convolutions, and the
same precision rule (``distributed.native_precision``). Example::

    from symclr_ft import Embedder, load_model

    model = load_model("runs/demo_cpu/model.pt")         # or "features.onnx"
    feats = Embedder(model).embed(["valve.png", pil_image, numpy_array])  # (3, D), unit length
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image

from symclr_ft.data.coco import to_rgb
from symclr_ft.data.crops import CropSource, _decode_file, open_source, square_tensor
from symclr_ft.errors import UserError
from symclr_ft.eval.embedding import embed_images, embed_stream
from symclr_ft.use.index import FeatureIndex
from symclr_ft.use.rejection import VIEWS_PER_CROP, view_features

__all__ = ["Embedder", "ImageLike", "LocalProcess", "Model", "load_model", "open_model"]

# What :meth:`Embedder.embed` takes for one crop.
ImageLike = Union[str, Path, Image.Image, np.ndarray]


@dataclass
class Model:
    """A loaded model file and what an index must record about it: the network (batch norms
    folded), the file's SHA-256, the crop size and input normalisation it was trained with,
    and the precision it embeds in ("no": fp32, "bf16", "fp16")."""

    net: torch.nn.Module
    sha256: str
    image_size: int
    input_norm: str
    path: Path
    precision: str = "no"
    device: torch.device = torch.device("cpu")


def open_model(path: str | Path, image_size: int | None, device: torch.device | str,
               precision: str = "no", batch_size: int | None = None) -> Model:
    """A model file (model.pt) on ``device``, or its export (FILE.onnx, run by ONNX Runtime in
    fp32 on the CPU). ``image_size`` None: the run's (config.yaml beside the file, or the
    export's metadata). With ``batch_size``, a crop size whose batches would not fit in memory
    is refused first."""
    from symclr_ft.models.backbones import load_model_file, model_file_info
    from symclr_ft.models.folding import folded_for_inference

    if Path(path).suffix == ".onnx":
        from symclr_ft.models.onnx_features import OnnxFeatures

        onnx = OnnxFeatures(path)
        info = onnx.info
        if image_size and image_size != info["image_size"]:
            raise UserError(f"{path}: exported for {info['image_size']} px crops, not "
                            f"--image-size={image_size}")
        check_size(info["image_size"], batch_size, path)
        return Model(onnx, info["sha256"], info["image_size"], info["input_norm"], Path(path),
                     device=torch.device("cpu"))
    info = model_file_info(path)
    size = image_size or info["image_size"]
    if not size:
        raise UserError(f"{path}: no config.yaml beside it to take the image size from; "
                        "pass --image-size")
    check_size(int(size), batch_size, path)
    device = torch.device(device)
    net = load_model_file(path).to(device).to(memory_format=torch.channels_last)
    net, _ = folded_for_inference(net, int(size))  # the same features, a faster forward
    return Model(net, info["sha256"], int(size), info["input_norm"], Path(path), precision,
                 device)


def check_size(size: int, batch_size: int | None, path) -> None:
    """The crop size (the flag's, or the run's) in 16..MAX_IMAGE_SIZE, and its batches in
    memory, before any crop is read."""
    from symclr_ft.config import MAX_IMAGE_SIZE
    from symclr_ft.distributed import check_forward_memory

    if not 16 <= size <= MAX_IMAGE_SIZE:
        raise UserError(f"{path}: image size {size} must be in 16..{MAX_IMAGE_SIZE}")
    if batch_size:
        check_forward_memory(size, batch_size, "lower --batch-size (or --image-size)")


def load_model(path: str | Path, device: str | torch.device | None = None,
               precision: str = "auto", image_size: int | None = None) -> Model:
    """Load a trained model for embedding: a ``model.pt`` (with the run's ``config.yaml``
    beside it, or ``image_size``) or a ``symclr-export`` ``.onnx`` file.

    ``device``: None picks a CUDA GPU when there is one, else the CPU (ONNX files run on the
    CPU). ``precision``: "auto" (bf16 where the device computes it natively, else fp32),
    "no", "bf16" or "fp16". Example::

        model = load_model("runs/demo_cpu/model.pt")
        model.image_size, model.precision  # (72, 'no') on a CPU without bf16
    """
    from symclr_ft.distributed import native_precision

    if precision not in ("auto", "no", "bf16", "fp16"):
        raise UserError(f"precision={precision!r}: expected auto, no, bf16 or fp16")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if Path(path).suffix == ".onnx":
        return open_model(path, image_size, "cpu")
    return open_model(path, image_size, device, native_precision(precision, device.type))


class LocalProcess:
    """What :func:`~symclr_ft.eval.embedding.embed_stream` needs of an ``Accelerator``, for one
    process on one given device.

    Why not an ``Accelerator``: it chooses the device itself, and started under ``torchrun`` it
    joins the process group, so each process would embed a share and receive the others' rows.
    A user's ``embed(images)`` embeds exactly those images, here; the commands pass their
    Accelerator to share the work between processes."""

    process_index = 0
    num_processes = 1
    is_main_process = True

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def unwrap_model(self, net: torch.nn.Module) -> torch.nn.Module:
        return net

    def autocast(self):
        return contextlib.nullcontext()


# --------------------------------------------------------------------------- one crop


def array_image(array: np.ndarray, where: str = "array") -> Image.Image:
    """A numpy image as a PIL image that ``data.coco.to_rgb`` converts the way make-shards
    converts drawings: (H, W) of any integer dtype (16-bit and wider scaled from their range)
    or float (0..1 or 0..255), bool, or (H, W, C) with C = 1..4 of uint8 (or float in [0, 1])."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        if a.dtype == bool:
            return Image.fromarray(a.astype(np.uint8) * 255)
        if a.dtype == np.uint8 or a.dtype == np.uint16:
            return Image.fromarray(a)
        if a.dtype.kind in "iu":
            if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
                raise UserError(f"{where}: values {a.min()}..{a.max()}, outside 0..65535")
            return Image.fromarray(a.astype(np.int32))
        if a.dtype.kind == "f":
            return Image.fromarray(a.astype(np.float32))
    elif a.ndim == 3 and a.shape[2] in (2, 3, 4):
        if a.dtype.kind == "f" and a.size and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1:
            a = np.rint(a * 255).astype(np.uint8)
        if a.dtype == np.uint8:
            return Image.fromarray(np.ascontiguousarray(a))
        raise UserError(f"{where}: a {a.shape[2]}-channel array must be uint8 or float in [0, 1], "
                        f"not {a.dtype}")
    raise UserError(f"{where}: expected an image array (H, W) or (H, W, C), C 1..4, "
                    f"got shape {tuple(a.shape)} of {a.dtype}")


def crop_pixels(image: ImageLike, size: int, where: str = "image") -> torch.Tensor:
    """One crop as the model's input: (3, size, size) uint8, stretched to a square as the
    commands do. A path is decoded like a file of an image folder given to ``symclr-embed``;
    an image in memory goes through ``data.coco.to_rgb`` (16-bit, alpha, palette...)."""
    if isinstance(image, (str, Path)):
        return _decode_file(Path(image), size)  # the image-folder decoder of the commands
    if isinstance(image, np.ndarray):
        image = array_image(image, where)
    if isinstance(image, Image.Image):
        return square_tensor(to_rgb(image, where), size)
    raise UserError(f"{where}: expected a path, a PIL image or a numpy array, "
                    f"got {type(image).__name__}")


def as_list(images: ImageLike | Iterable[ImageLike]) -> list:
    """One image (a path, a PIL image, one array) as a list of one; a sequence as a list."""
    if isinstance(images, (str, Path, Image.Image, np.ndarray)):
        return [images]
    return list(images)


def _name(image, i: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {i}"


class Embedder:
    """L2-normalised features of crops with a loaded :class:`Model`, in batches.

    Example::

        embedder = Embedder(load_model("runs/demo_cpu/model.pt"))
        feats = embedder.embed(["a.png", "b.png"], batch_size=32)  # (2, D) float32, CPU
        similarity = feats[0] @ feats[1]                              # cosine
    """

    def __init__(self, model: Model, batch_size: int = 64, accelerator=None):
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size}: must be at least 1")
        self.model, self.batch_size = model, batch_size
        self.accelerator = accelerator or LocalProcess(model.device)

    def embed(self, images: ImageLike | Sequence[ImageLike],
              batch_size: int | None = None) -> torch.Tensor:
        """(N, D) float32 features of ``images`` (paths, PIL images, numpy arrays; one or a
        list), in order. An image that cannot be read raises :class:`~symclr_ft.errors.UserError`
        naming it."""
        items = as_list(images)
        size = self.model.image_size
        loads = [functools.partial(crop_pixels, image, size, _name(image, i))
                 for i, image in enumerate(items)]
        return embed_images(self.accelerator, self.model.net, loads, batch_size or self.batch_size,
                            precision=self.model.precision)

    def embed_pixels(self, crops: torch.Tensor) -> torch.Tensor:
        """Features of crops already made square: (M, 3, S, S) uint8."""
        return embed_images(self.accelerator, self.model.net, [crops], self.batch_size,
                            precision=self.model.precision)


# --------------------------------------------------------------------------- sources of crops


def _progress(accelerator, total: int | None, what: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="crop", disable=not accelerator.is_main_process,
                file=sys.stderr, dynamic_ncols=True, mininterval=1.0)


def embed_source(accelerator, model: Model, source: CropSource, batch_size: int,
                 what: str = "embedding") -> tuple[FeatureIndex, list[tuple[dict, str]]]:
    """Embed every crop of ``source`` into an index; unreadable crops are left out and
    returned as (source, reason)."""
    sources, labels = [], []

    def loads():
        for crop in source.crops:
            sources.append(crop.source)
            labels.append(crop.label)
            yield crop.load

    total = len(source.crops) if hasattr(source.crops, "__len__") else None
    feats, keep, skipped = [], [], []
    with _progress(accelerator, total, what) as bar:
        for batch in embed_stream(accelerator, model.net, loads(), batch_size,
                                  precision=model.precision):
            start = len(keep)
            skipped += [(start + row, why) for row, why in batch.problems]
            feats.append(batch.features[batch.readable])
            keep += batch.readable.tolist()
            bar.update(len(batch.readable))
    if not any(keep):
        raise UserError(f"{source.description}: no readable crop")
    rows = [i for i, ok in enumerate(keep) if ok]
    index = FeatureIndex(
        torch.cat(feats), torch.tensor(labels, dtype=torch.int64)[rows], list(source.class_names),
        [sources[i] for i in rows], model.sha256, model.image_size, model.input_norm,
        model.precision,
    )
    return index, [(sources[i], why) for i, why in skipped]


def _source_key(source: dict) -> str:
    return json.dumps(source, sort_keys=True)


def iter_crops(path, size: int, split: str | None, wanted: list[dict]) -> Iterator[torch.Tensor]:
    """The uint8 pixels of the crops of ``path`` whose source is in ``wanted``, in that order,
    read again (for augmented views) rather than kept since the embedding. An index lists its
    crops in the source's order, so nothing waits in ``early`` unless the order differs."""
    rows: dict[str, list[int]] = {}  # one source may be listed twice (a repeated box)
    for i, source in enumerate(wanted):
        rows.setdefault(_source_key(source), []).append(i)
    early: dict[int, torch.Tensor] = {}
    upcoming = 0
    for crop in open_source(path, size, split).crops:
        mine = [i for i in rows.get(_source_key(crop.source), []) if i >= upcoming and i not in early]
        if not mine:
            continue
        pixels = crop.load()
        early.update((i, pixels) for i in mine)
        while upcoming in early:
            yield early.pop(upcoming)
            upcoming += 1
    if upcoming < len(wanted):
        raise UserError(f"{path}: {len(wanted) - upcoming} support crops are no longer there "
                        "(was it changed since it was embedded?)")


def embed_views(accelerator, model: Model, path, split: str | None, sources: list[dict],
                seed: int, batch_size: int, count: int = VIEWS_PER_CROP) -> torch.Tensor:
    """(N, count, D) features of augmented views of the crops ``sources`` of ``path``."""
    embed = lambda views: embed_images(accelerator, model.net, [views], batch_size,  # noqa: E731
                                       precision=model.precision)
    return view_features(embed, iter_crops(path, model.image_size, split, sources), count, seed)
