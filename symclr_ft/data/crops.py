"""Where crops come from: a shard folder, a COCO export, a folder of image files.

Each source is a :class:`CropSource`: class names, and an iterable of :class:`Crop` records
(where the crop came from, its label or -1, and a ``load`` call that decodes it). Pixels are
decoded only when ``load`` is called, by the process that embeds the crop, so that reading a
source never holds more than one batch of pixels and N processes do not all decode everything.

Every crop becomes a ``size x size`` uint8 tensor the way training sees it: RGB, stretched to a
square with bilinear resampling (as ``data.load_split`` does). COCO boxes are cut with
``coco.padded_crop_box``, the rule make-shards uses, so a crop cut here is the crop in a shard.

Layouts :func:`open_source` recognises::

    shards/  classes.json + {split}-NNNNNN.tar   a shard folder (a split must be named)
    export/  [train|valid|test/]_annotations.coco.json, or a .json file: a COCO export
    folder/  class_a/*.png class_b/*.png         labelled by subfolder (ImageFolder layout)
    folder/  *.png                               unlabelled
"""

from __future__ import annotations

import functools
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from PIL import Image

from symclr_ft.data import coco
from symclr_ft.data.preprocess import prepare_crop
from symclr_ft.errors import UserError, library_message

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# What PIL raises for a file it cannot decode (not an image, truncated, broken chunk, bomb).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class UnreadableImage(UserError):
    """One image that cannot be decoded: batch commands skip and list it."""


@dataclass(frozen=True)
class Crop:
    source: dict  # {"file": path} or {"image": file_name, "bbox": [x, y, w, h]} (+ "key")
    label: int  # class index, -1 when unlabelled
    load: Callable[[], torch.Tensor]  # -> (3, S, S) uint8; raises UnreadableImage


@dataclass
class CropSource:
    class_names: list[str]
    crops: Iterable[Crop]
    labelled: bool
    description: str


def square_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """A PIL image as (3, size, size) uint8, stretched to a square as the shards are read for
    training (the default input rule of symclr_ft.data.preprocess)."""
    return prepare_crop(image, size)


def _decode_bytes(data: bytes, rule: int | tuple, where: str) -> torch.Tensor:
    """Image bytes as a square crop, decoded as make-shards decodes drawings (``coco.to_rgb``);
    ``rule``: the size, or (size, ink, letterbox)."""
    size, ink, letterbox = rule if isinstance(rule, tuple) else (rule, "none", False)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return prepare_crop(coco.to_rgb(img, where), size, ink, letterbox)
    except DECODE_ERRORS as err:
        raise UnreadableImage(f"{where}: cannot decode image ({decode_reason(err)})") from None
    except UserError as err:  # a mode to_rgb cannot convert, or values it cannot scale
        raise UnreadableImage(str(err)) from None


def decode_reason(err: BaseException) -> str:
    """What PIL says about an image it cannot decode, without the in-memory file it was
    handed (``<_io.BytesIO object at 0x...>`` means nothing to a user reading skipped.csv)."""
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image file PIL can read"
    if isinstance(err, Image.DecompressionBombError):
        return "too large to decode safely"
    return _IN_MEMORY.sub("the image", library_message(err))


_IN_MEMORY = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _decode_file(path: Path, size: int) -> torch.Tensor:
    if path.is_symlink() and not path.exists():
        raise UnreadableImage(f"{path}: broken symbolic link (to {os.readlink(path)}, which "
                              "does not exist)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UnreadableImage(f"{path}: cannot read ({err.strerror or err})") from None
    return _decode_bytes(data, size, str(path))


# --------------------------------------------------------------------------- shards


def shard_source(
    shard_dir: str | Path, split: str, size: int, allow_subset: bool = False,
    ink: str = "none", letterbox: bool = False,
) -> CropSource:
    """The crops of one split of a shard folder, labelled, in shard order, verified against
    stats.json as they are read (``allow_subset``: see data.SplitCheck), squared by the input
    rule (``ink``, ``letterbox``: symclr_ft.data.preprocess) the model was trained with."""
    from symclr_ft.data.shardset import load_classes

    names = load_classes(shard_dir)
    crops = _shard_crops(shard_dir, split, allow_subset, len(names), (size, ink, letterbox))
    return CropSource(names, crops, True, f"{shard_dir} ({split})")


def _shard_crops(shard_dir, split: str, allow_subset: bool, num_classes: int, rule: tuple) -> Iterator[Crop]:
    import json

    from symclr_ft.data.shardset import iter_split

    for path, key, fields in iter_split(shard_dir, split, allow_subset):
        try:
            label = int(fields["cls"])
            meta = json.loads(fields.get("json", b"{}"))
            png = fields["png"]
        except KeyError as err:
            raise UserError(f"{path}: sample {key} has no {err.args[0]} member") from None
        except ValueError as err:
            raise UserError(f"{path}: sample {key} is corrupt ({err})") from None
        if not 0 <= label < num_classes:
            raise UserError(
                f"{path}: sample {key} has class {label}, but classes.json has {num_classes}"
            )
        meta = meta if isinstance(meta, dict) else {}
        source = {"key": key, "image": meta.get("image"), "bbox": meta.get("bbox")}
        where = f"{path}: sample {key} ({_origin(meta)})"
        yield Crop(source, label, functools.partial(_decode_bytes, png, rule, where))


def _origin(meta: dict) -> str:
    """Where a shard sample was cut from, as make-shards recorded it: drawing, image id, box."""
    bbox = meta.get("bbox")
    box = ",".join(f"{v:g}" for v in bbox) if isinstance(bbox, list) and all(
        isinstance(v, (int, float)) for v in bbox) else "?"
    return f"drawing {meta.get('image', '?')}, image id {meta.get('image_id', '?')}, box {box}"


# --------------------------------------------------------------------------- COCO


def coco_source(path: str | Path, size: int, split: str | None = None) -> CropSource:
    """Every box of a COCO export (or of one of its splits) cut exactly as make-shards cuts it,
    labelled by category with make-shards' class indices."""
    from symclr_ft.data.shardwriter import build_classes

    path = Path(path)
    if path.is_dir() and (path / coco.ANNOTATIONS_FILE).is_file():  # one split's folder
        path = path / coco.ANNOTATIONS_FILE
    if path.is_file():
        split = None  # a single COCO json is one split, whatever it is called
    export = coco.load_export(path)
    splits = export.splits
    if split is not None:
        splits = [s for s in splits if s.name == split]
        if not splits:
            have = ", ".join(s.name for s in export.splits)
            raise UserError(f"{path}: no split {split!r} in this export (it has {have})")
    classes = build_classes(export)
    index_of = {c.coco_id: c.index for c in classes}
    desc = f"{path}" + (f" ({split})" if split else "")
    crops = _coco_crops(splits, index_of, size)
    return CropSource([c.name for c in classes], crops, True, desc)


def _coco_crops(splits, index_of: dict[int, int], size: int) -> Iterator[Crop]:
    for split in splits:
        for image, annotations in split.annotations_by_image():
            drawing = _Drawing(split, image)
            for ann in annotations:
                source = {"image": image.file_name, "bbox": [float(v) for v in ann.bbox]}
                if len(splits) > 1:
                    source["split"] = split.name
                load = functools.partial(drawing.crop, ann.bbox, size)
                yield Crop(source, index_of[ann.category_id], load)


class _Drawing:
    """One drawing, opened on the first crop cut from it and kept while its crops are cut.

    Crops of a drawing are consecutive, so holding the last drawing opened (per process) is
    enough to open each drawing once."""

    _last: tuple | None = None

    def __init__(self, split, image):
        self.split, self.image = split, image

    def crop(self, bbox, size: int) -> torch.Tensor:
        key = (str(self.split.json_path), self.image.id)
        if _Drawing._last is None or _Drawing._last[0] != key:
            _Drawing._last = None  # let the previous drawing go before opening the next
            try:
                pixels = coco.open_image(self.split, self.image)
            except UserError as err:
                raise UnreadableImage(str(err)) from None
            _Drawing._last = (key, pixels)
        pixels = _Drawing._last[1]
        box = coco.padded_crop_box(bbox, self.image.width, self.image.height)
        return square_tensor(pixels.crop(box), size)


# --------------------------------------------------------------------------- image folders


def _images_in(folder: Path) -> list[Path]:
    """Image files of ``folder``, by suffix; a link among them that leads nowhere is kept, so
    that it is listed in skipped.csv with its reason rather than dropped without a word."""
    return sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.exists()))
    )


def folder_source(folder: str | Path, size: int) -> CropSource:
    """A folder of subfolders (one per class, ImageFolder layout) or of image files
    (unlabelled). Classes are the subfolder names, sorted."""
    folder = Path(folder)
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        files = {d.name: _images_in(d) for d in subdirs}
        empty = [name for name, paths in files.items() if not paths]
        if empty:
            raise UserError(f"{folder / empty[0]}: class folder has no image files")
        names = list(files)
        crops = [
            Crop({"file": str(p)}, i, functools.partial(_decode_file, p, size))
            for i, name in enumerate(names)
            for p in files[name]
        ]
        return CropSource(names, crops, True, f"{folder} ({len(names)} class folders)")
    paths = _images_in(folder)
    if not paths:
        raise UserError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) or class folders")
    crops = [Crop({"file": str(p)}, -1, functools.partial(_decode_file, p, size)) for p in paths]
    return CropSource([], crops, False, f"{folder} (unlabelled)")


# --------------------------------------------------------------------------- dispatch


def is_shard_folder(path: Path) -> bool:
    return path.is_dir() and (path / "classes.json").is_file() and any(path.glob("*-0*.tar"))


def is_coco(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".json"
    names = [coco.ANNOTATIONS_FILE] + [f"{s}/{coco.ANNOTATIONS_FILE}" for s in coco.SPLITS]
    return path.is_dir() and any((path / n).is_file() for n in names)


def open_source(path: str | Path, size: int, split: str | None = None) -> CropSource:
    """The crop source at ``path``, by its layout (module docstring)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found")
    if is_shard_folder(path):
        if split is None:
            raise UserError(f"{path}: a shard folder: name its split (--split train|valid|test)")
        return shard_source(path, split, size)
    if is_coco(path):
        return coco_source(path, size, split)
    if path.is_dir():
        return folder_source(path, size)
    raise UserError(f"{path}: expected an image folder, a COCO export or a shard folder")
