"""Where drawings come from: a COCO split (with its boxes as ground truth) or a folder of images,
decoded to RGB with one-line errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from symclr_ft.data.coco import ANNOTATIONS_FILE, load_coco, to_rgb
from symclr_ft.errors import UserError


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


# A 10,000 x 10,000 px drawing is a real use case (issue 18); beyond this, refuse.
MAX_PIXELS = 400_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass
class Drawing:
    """One input drawing: where it is, its id in the output, and its ground truth if any."""

    path: Path
    image_id: int
    file_name: str
    truth: list[tuple[int, list[float]]] | None = None  # (category id, [x, y, w, h])


def coco_json(path: Path) -> Path | None:
    """The COCO json a path names: the json itself or a split folder holding one."""
    if path.is_file() and path.suffix == ".json":
        return path
    if path.is_dir() and (path / ANNOTATIONS_FILE).is_file():
        return path / ANNOTATIONS_FILE
    return None


def open_rgb(path: Path) -> Image.Image:
    """Decoded RGB pixels, converted as make-shards converts drawings (``coco.to_rgb``: a
    16-bit drawing is scaled, not clipped to white; ink only in the alpha channel stays
    visible); any decoding problem is a UserError naming the file."""
    if path.is_symlink() and not path.exists():
        raise UserError(f"{path}: broken symbolic link (to {os.readlink(path)}, which does not exist)")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img, str(path))
    except Image.DecompressionBombError:
        raise UserError(f"{path}: more than {MAX_PIXELS:,} pixels; too large to decode safely") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise UserError(f"{path}: cannot decode image ({reason})") from None


def list_drawings(source: Path) -> list[Drawing]:
    """Drawings of a COCO split (json or split folder; with their ids and ground truth) or of a
    plain folder of images (ids 0.. in file-name order, no ground truth)."""
    json_path = coco_json(source)
    if json_path is not None:
        split = load_coco(json_path)
        truth: dict[int, list] = {i: [] for i in split.images}
        for ann in split.annotations:
            truth[ann.image_id].append((ann.category_id, list(ann.bbox)))
        images = sorted(split.images.values(), key=lambda im: im.file_name)
        return [Drawing(split.image_path(im), im.id, im.file_name, truth[im.id]) for im in images]
    if not source.is_dir():
        raise UserError(f"{source}: not found (expected a folder of drawings or a COCO split)")
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                   and (p.is_file() or p.is_symlink()))  # a broken link is skipped and listed
    if not files:
        raise UserError(f"{source}: no drawings (no image files, no {ANNOTATIONS_FILE})")
    return [Drawing(p, i, p.name) for i, p in enumerate(files)]
