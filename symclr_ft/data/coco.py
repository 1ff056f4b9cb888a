"""Reading and validating COCO exports, and the padded crop box of one annotation.

The json files come from outside (Roboflow, a CAD pipeline, a colleague's script), so every
record is checked before any work starts and a problem is reported as one line that names the
file, the record and what is wrong. Image files are only opened when a crop is cut
(:func:`open_image`), where their existence, format and size are checked too.

Two layouts are accepted as an "export"::

    export/                           or     annotations.json  (one split, named "train";
      train/_annotations.coco.json                              image paths relative to the
      train/*.jpg                                               json's folder)
      valid/...   test/...            (any of the three, at least one)

Example::

    export = load_export("../shared/data/firefighting")
    for split in export.splits:
        for image, annotations in split.annotations_by_image():
            pixels = open_image(split, image)
            box = padded_crop_box(annotations[0].bbox, image.width, image.height)
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

from symclr_ft.errors import UserError
from symclr_ft.io import read_json

SPLITS = ("train", "valid", "test")
ANNOTATIONS_FILE = "_annotations.coco.json"
# Boxes may poke out of the image by this many pixels (float rounding in exporters) before
# they are refused; they are then clipped to the image.
BOX_TOLERANCE_PX = 1.0
# Image width and height above this are refused as nonsense (and would overflow float maths).
MAX_IMAGE_SIDE = 2**31 - 1


@dataclass(frozen=True)
class Image:
    id: int
    file_name: str  # relative to the split folder, checked not to escape it
    width: int
    height: int


@dataclass(frozen=True)
class Annotation:
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]  # COCO [x, y, w, h], clipped to the image


@dataclass(frozen=True)
class Category:
    id: int
    name: str


@dataclass
class CocoSplit:
    """One validated COCO json: ``images`` and ``categories`` by id, ``annotations`` sorted by
    image file name, then annotation id (the order the shards are written in)."""

    name: str
    json_path: Path
    root: Path  # the folder image file names are relative to
    images: dict[int, Image]
    annotations: list[Annotation]
    categories: dict[int, Category]

    def image_path(self, image: Image) -> Path:
        return self.root / image.file_name

    def annotations_by_image(self) -> Iterator[tuple[Image, list[Annotation]]]:
        """Images that have at least one box, by file name, each with its boxes by id."""
        current: list[Annotation] = []
        for ann in self.annotations:
            if current and current[0].image_id != ann.image_id:
                yield self.images[current[0].image_id], current
                current = []
            current.append(ann)
        if current:
            yield self.images[current[0].image_id], current


@dataclass
class Export:
    source: Path
    splits: list[CocoSplit]  # in the order train, valid, test

    def categories(self) -> dict[int, Category]:
        """Union of the splits' categories (they agree: checked by :func:`load_export`)."""
        merged: dict[int, Category] = {}
        for split in self.splits:
            merged.update(split.categories)
        return dict(sorted(merged.items()))


# --------------------------------------------------------------------------- the crop box


def padded_crop_box(
    bbox: tuple[float, float, float, float] | list[float],
    image_w: int,
    image_h: int,
    padding: float = 0.1,
) -> tuple[int, int, int, int]:
    """The pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) cut around a COCO ``[x, y, w, h]``.

    The box grows by ``padding * w`` on the left and on the right and by ``padding * h`` at the
    top and at the bottom, so the crop keeps a little of the symbol's surroundings (wire ends)
    the way a detector's box would; it is rounded outwards to whole pixels and clipped to the
    image. The result is never empty.

    >>> padded_crop_box([10, 20, 30, 40], 100, 100, padding=0.1)
    (7, 16, 43, 64)
    """
    if not is_padding(padding):
        raise ValueError(f"padding must be a finite number >= 0, got {padding!r}")
    x, y, w, h = (float(v) for v in bbox)
    # Rounding to 6 decimals first keeps 10 - 0.1 * 30 = 6.9999999 from becoming pixel 6.
    x0 = max(0, math.floor(round(x - padding * w, 6)))
    y0 = max(0, math.floor(round(y - padding * h, 6)))
    x1 = min(image_w, math.ceil(round(x + w + padding * w, 6)))
    y1 = min(image_h, math.ceil(round(y + h + padding * h, 6)))
    # A sub-pixel box on the image's last column could round to nothing: keep one pixel.
    if x1 <= x0:
        x0, x1 = (x1 - 1, x1) if x1 >= 1 else (0, 1)
    if y1 <= y0:
        y0, y1 = (y1 - 1, y1) if y1 >= 1 else (0, 1)
    return x0, y0, x1, y1


# --------------------------------------------------------------------------- json checks


def is_int(value: Any) -> bool:
    """An integer from JSON or YAML, not a bool (``True`` is an ``int`` to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_padding(value: Any) -> bool:
    """The crop padding rule, shared by :func:`padded_crop_box` and make-shards' option."""
    return (is_int(value) or isinstance(value, float)) and _is_finite(value) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond the float range
        return False


def _record_name(kind: str, index: int, record: Any) -> str:
    """'annotation id 17' when the record has a usable id, else 'annotations[4]'."""
    if isinstance(record, dict) and is_int(record.get("id")):
        return f"{kind} id {record['id']}"
    return f"{kind}s[{index}]"


def _require(record: Any, keys: dict[str, tuple[Any, str]], where: str) -> None:
    """Check that ``record`` is an object holding ``keys`` with values passing their checks."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object, got {type(record).__name__}")
    for key, (check, expected) in keys.items():
        if key not in record:
            raise UserError(f"{where}: missing key '{key}'")
        if not check(record[key]):
            raise UserError(f"{where}: '{key}' must be {expected}, got {record[key]!r}")


INTEGER = (is_int, "an integer")
STRING = (lambda v: isinstance(v, str), "a string")
SIDE = (lambda v: is_int(v) and 0 < v <= MAX_IMAGE_SIDE, f"a positive integer (at most {MAX_IMAGE_SIDE})")
# The keys each kind of record must have, with the check of each value (bbox: _check_bbox).
RECORD_KEYS = {
    "category": {"id": INTEGER, "name": STRING},
    "image": {"id": INTEGER, "file_name": STRING, "width": SIDE, "height": SIDE},
    "annotation": {"id": INTEGER, "image_id": INTEGER, "category_id": INTEGER, "bbox": (lambda v: True, "")},
}


def _records(path: Path, kind: str, records: list) -> Iterator[tuple[str, dict]]:
    """The records of one kind, each checked for its keys and a unique id, with the name
    errors give it (``<json>: image id 7``)."""
    seen: set[int] = set()
    for i, record in enumerate(records):
        where = f"{path}: {_record_name(kind, i, record)}"
        _require(record, RECORD_KEYS[kind], where)
        if record["id"] in seen:
            raise UserError(f"{where}: duplicate {kind} id")
        seen.add(record["id"])
        yield where, record


def _read_json(path: Path) -> dict:
    data = read_json(path, "COCO json file")
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: expected a COCO object with images, annotations and categories, "
            f"got a JSON {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(f"{path}: missing key '{key}' (not a COCO json?)")
        if not isinstance(data[key], list):
            raise UserError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def _safe_file_name(name: str, where: str) -> str:
    """Refuse image paths that would read outside the split folder (untrusted json)."""
    if not name or "\x00" in name:
        raise UserError(f"{where}: file_name is empty or not a valid path: {name!r}")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"{where}: file_name {name!r} is an absolute path; it must be relative")
    normal = posixpath.normpath(name.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        raise UserError(f"{where}: file_name {name!r} points outside its folder")
    return name


def _parse_categories(path: Path, records: list) -> dict[int, Category]:
    categories: dict[int, Category] = {}
    ids_by_name: dict[str, int] = {}
    for where, record in _records(path, "category", records):
        # Classes are reported by name (classes.json, per-class statistics and metrics).
        if record["name"] in ids_by_name:
            raise UserError(
                f"{where}: name {record['name']!r} is also the name of category id "
                f"{ids_by_name[record['name']]}"
            )
        ids_by_name[record["name"]] = record["id"]
        categories[record["id"]] = Category(record["id"], record["name"])
    return categories


def _parse_images(path: Path, records: list) -> dict[int, Image]:
    images: dict[int, Image] = {}
    names: set[str] = set()
    for where, record in _records(path, "image", records):
        name = _safe_file_name(record["file_name"], where)
        if name in names:
            raise UserError(f"{where}: file_name {name!r} is listed twice")
        names.add(name)
        images[record["id"]] = Image(record["id"], name, record["width"], record["height"])
    return images


def _check_bbox(bbox: Any, image: Image, where: str) -> tuple[float, float, float, float]:
    """A list of 4 finite numbers with positive size inside the image (1 px tolerance),
    returned clipped to the image."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        raise UserError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
    if not all(map(_is_finite, bbox)):
        raise UserError(f"{where}: bbox has a value that is not a finite number: {bbox!r}")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise UserError(f"{where}: bbox {bbox!r} has zero or negative width or height")
    tol = BOX_TOLERANCE_PX
    if x < -tol or y < -tol or x + w > image.width + tol or y + h > image.height + tol:
        raise UserError(
            f"{where}: bbox {bbox!r} lies outside its image {image.file_name} "
            f"({image.width}x{image.height})"
        )
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, image.width), min(y + h, image.height)
    if x1 <= x0 or y1 <= y0:
        raise UserError(f"{where}: bbox {bbox!r} has no area inside its image {image.file_name}")
    if (x0, y0, x1, y1) == (x, y, x + w, y + h):
        return (x, y, w, h)  # untouched: keep the exporter's numbers exactly
    return (x0, y0, x1 - x0, y1 - y0)


def _parse_annotations(
    path: Path, records: list, images: dict[int, Image], categories: dict[int, Category]
) -> list[Annotation]:
    annotations: list[Annotation] = []
    for where, record in _records(path, "annotation", records):
        image = images.get(record["image_id"])
        if image is None:
            raise UserError(f"{where}: image_id {record['image_id']} is not in 'images'")
        if record["category_id"] not in categories:
            raise UserError(f"{where}: category_id {record['category_id']} is not in 'categories'")
        bbox = _check_bbox(record["bbox"], image, where)
        annotations.append(Annotation(record["id"], image.id, record["category_id"], bbox))
    annotations.sort(key=lambda a: (images[a.image_id].file_name, a.id))
    return annotations


def load_coco(
    json_path: str | Path, split: str = "train", root: str | Path | None = None
) -> CocoSplit:
    """Read and validate one COCO json; image file names are relative to ``root`` (default:
    the json's folder). Raises :class:`UserError` on the first problem found."""
    path = Path(json_path)
    data = _read_json(path)
    categories = _parse_categories(path, data["categories"])
    images = _parse_images(path, data["images"])
    annotations = _parse_annotations(path, data["annotations"], images, categories)
    return CocoSplit(
        name=split,
        json_path=path,
        root=Path(root) if root is not None else path.parent,
        images=images,
        annotations=annotations,
        categories=categories,
    )


def load_image_list(json_path: str | Path) -> list[Image]:
    """The ``images`` of a COCO json, by file name, checked as :func:`load_coco` checks them;
    nothing else of the file is read: its ``annotations`` and ``categories`` may be missing or
    anything at all. For using an annotated export's drawings without its labels
    (``symclr-components``), so that no label can leak into what is made of them."""
    path = Path(json_path)
    data = read_json(path, "COCO json file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{path}: expected a COCO object with an 'images' list")
    return sorted(_parse_images(path, data["images"]).values(), key=lambda im: im.file_name)


def _check_categories_agree(splits: list[CocoSplit]) -> None:
    """Same id must mean the same name in every split: otherwise class indices would mix
    symbols up between training and evaluation."""
    first_seen: dict[int, tuple[str, Path]] = {}
    for split in splits:
        for cat in split.categories.values():
            if cat.id not in first_seen:
                first_seen[cat.id] = (cat.name, split.json_path)
                continue
            name, where = first_seen[cat.id]
            if name != cat.name:
                raise UserError(
                    f"{split.json_path}: category id {cat.id} is named {cat.name!r} but "
                    f"{where} names it {name!r}; the splits must share one category list"
                )


def usable_path(path: str | Path) -> Path:
    """``path`` as a Path, once the system agrees to look it up: a name it refuses (longer
    than the file system allows: ENAMETOOLONG; a loop of links) is a one-line UserError rather
    than an OSError from the first ``exists()``. A path that is simply absent is fine here."""
    path = Path(path)
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as err:
        name = str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."
        raise UserError(f"{name}: cannot be looked up ({err.strerror or err})") from None
    return path


def load_export(source: str | Path) -> Export:
    """Read a Roboflow COCO export folder (train/valid/test subfolders, any of them) or a single
    COCO json file (one split named ``train``), validating every json."""
    source = usable_path(source)
    if not source.exists():
        raise UserError(f"{source}: not found (expected a COCO export folder or a COCO json file)")
    if source.is_file():
        splits = [load_coco(source, "train")]
    else:
        present = [name for name in SPLITS if (source / name).is_dir()]
        if not present:
            raise UserError(
                f"{source}: no train/, valid/ or test/ folder with {ANNOTATIONS_FILE} "
                "(expected a Roboflow COCO export folder or a COCO json file)"
            )
        splits = []
        for name in present:
            json_path = source / name / ANNOTATIONS_FILE
            if not json_path.is_file():
                raise UserError(f"{source / name}: split folder has no {ANNOTATIONS_FILE}")
            splits.append(load_coco(json_path, name))
    _check_categories_agree(splits)
    return Export(source=source, splits=splits)


# --------------------------------------------------------------------------- image files


def check_image_files(split: CocoSplit) -> None:
    """Cheap up-front check that every image with a box exists, so that a missing file is
    reported before minutes of cropping rather than after."""
    for image, _ in split.annotations_by_image():
        where = f"{split.json_path}: image id {image.id}: image file {image.file_name}"
        try:
            found = split.image_path(image).is_file()
        except OSError as err:  # a name too long for the file system (ENAMETOOLONG), ...
            raise UserError(f"{where} cannot be looked up ({err.strerror or err})") from None
        if not found:
            raise UserError(f"{where} not found in {split.root}")


def open_image(split: CocoSplit, image: Image) -> PILImage.Image:
    """The decoded RGB pixels of one image (:func:`to_rgb`), checked against its json entry."""
    path = split.image_path(image)
    where = f"{split.json_path}: image id {image.id}"
    try:
        with PILImage.open(path) as img:
            img.load()
            size = img.size
            rgb = to_rgb(img, f"{where}: {path}")
    except FileNotFoundError:
        raise UserError(
            f"{where}: image file {image.file_name} not found in {split.root}"
        ) from None
    except PILImage.UnidentifiedImageError:
        raise UserError(f"{where}: {path} is not an image file PIL can read") from None
    except PILImage.DecompressionBombError:
        raise UserError(f"{where}: {path} is too large to decode safely") from None
    except OSError as err:
        reason = err.strerror or str(err)
        raise UserError(f"{where}: cannot read image file {path} ({reason})") from None
    except (ValueError, SyntaxError) as err:  # PIL raises these for some broken files
        raise UserError(f"{where}: cannot decode image file {path} ({err})") from None
    if size != (image.width, image.height):
        raise UserError(
            f"{where}: image file {image.file_name} is {size[0]}x{size[1]} but the json says "
            f"{image.width}x{image.height}"
        )
    return rgb


# --------------------------------------------------------------------------- image modes

# Modes with an alpha channel (P with a transparent colour joins them): composited on white.
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: PILImage.Image, where: str = "image") -> PILImage.Image:
    """An 8-bit RGB copy of ``image`` in which the drawing stays visible, whatever its mode.

    Pillow's ``convert("RGB")`` clips 16-bit samples (a 16-bit drawing turns all white) and
    drops alpha (ink drawn only in the alpha channel turns all black). Here:

    * 16-bit and 32-bit integer modes (``I;16``, ``I;16B``, ``I``) and float (``F``) are
      scaled to 0..255 from their range (0..65535, or 0..255 / 0..1 when the values fit);
      values outside 0..65535, or not finite, are refused;
    * modes with alpha (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) are
      composited on white; when the colour channels are blank and only alpha varies (the ink
      is only in the alpha channel), the alpha becomes dark ink on white (255 - alpha); when
      the image is transparent everywhere but coloured, the colours are kept;
    * every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ...) is Pillow's conversion.

    Anything Pillow cannot convert raises :class:`UserError` ``"<where>: ..."``, one line.
    """
    mode = image.mode
    try:
        if mode == "RGB":
            return image.copy()
        if mode.startswith("I") or mode == "F":
            return _scaled_to_8_bit(image, where).convert("RGB")
        if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
            return _flattened_on_white(image.convert("RGBA"))
        return image.convert("RGB")
    except ValueError as err:  # "conversion from X to Y not supported"
        raise UserError(f"{where}: image mode {mode} cannot be converted to RGB ({err})") from None


def _scaled_to_8_bit(image: PILImage.Image, where: str) -> PILImage.Image:
    values = np.asarray(image)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise UserError(f"{where}: image mode {image.mode} has values that are not finite")
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise UserError(
            f"{where}: image mode {image.mode} has values {low}..{high}, outside 0..65535"
        )
    if image.mode.startswith("I;16"):
        top = 65535  # the sample width says 16 bits, whatever this image's brightest pixel
    elif values.dtype.kind == "f" and high <= 1:
        top = 1
    else:
        top = 255 if high <= 255 else 65535
    scaled = np.rint(values.astype(np.float32) * (255 / top)).astype(np.uint8)
    return PILImage.fromarray(scaled, mode="L")


def _is_blank(image: PILImage.Image) -> bool:
    extrema = image.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(low == high for low, high in bands)


def _flattened_on_white(rgba: PILImage.Image) -> PILImage.Image:
    alpha, colours = rgba.getchannel("A"), rgba.convert("RGB")
    if alpha.getextrema()[0] == 255:  # opaque everywhere: exactly Pillow's conversion
        return colours
    if _is_blank(colours) and not _is_blank(alpha):  # the ink is only in the alpha channel
        return ImageOps.invert(alpha).convert("RGB")
    white = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat = PILImage.alpha_composite(white, rgba).convert("RGB")
    if _is_blank(flat) and not _is_blank(colours):  # transparent everywhere, but coloured
        return colours
    return flat
