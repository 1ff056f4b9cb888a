"""The ``symclr-components`` command: unannotated drawings -> a shard set of ink components,
every crop its own pseudo-class, for self-supervised adaptation (``configs/adapt.yaml``).

Users hold many drawings that nobody annotated. Cutting their ink components automatically
(:mod:`symclr_ft.data.components`, the boxes spotting proposes) gives crops of the user's own
symbols, lines and lettering; SimCLR on them (the two views of one crop are the positives,
every other crop a negative) adapts the universe weights to the user's drawing style without
one label.

The output is a make-shards set with one split, ``train``: each crop is cut in make-shards'
frame (the ink box grown by ``padding`` per side, :func:`~symclr_ft.data.coco.padded_crop_box`),
its class index is its own, and ``classes.json`` / ``stats.json`` are written as make-shards
writes them (``stats.json`` adds a ``components`` record: the settings, the crops per drawing,
the drawings skipped). Boxes that the dilations found twice are merged (IoU >= ``dedup_iou``),
each drawing gives at most ``per_page`` crops (a seeded choice), and the bytes are the same for
the same input and seed. The set appears complete or not at all (``io.output_dir``).

Inputs: a folder of images (PNG, JPEG, TIFF, ...; searched recursively, by relative path), a
COCO json or a COCO split folder, or a Roboflow COCO export (``--split`` picks the split, train
by default). Of a COCO json only the image list is read (``coco.load_image_list``): its
annotations are never opened, so no label reaches the shards. An image that cannot be read is
skipped and listed (stats.json and the command's output), never fatal.

Example::

    symclr-components --drawings ../shared/data/muscima --split train --out shards/music_components
    python -m symclr_ft.train --config configs/adapt.yaml data.shards=shards/music_components
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from symclr_ft.data.coco import (
    ANNOTATIONS_FILE, SPLITS, is_padding, load_image_list, padded_crop_box, to_rgb, usable_path,
)
from symclr_ft.data.components import ComponentConfig, dedup_boxes, drawing_components
from symclr_ft.data.shardwriter import (
    CLASSES_FILE, SHARD_OUTPUT, STATS_FILE, ShardSequence, encode_png, sample_key, size_summary,
)
from symclr_ft.errors import (
    ArgumentParser, UserError, bounded_float, bounded_int, report_user_errors, sigterm_as_interrupt,
)
from symclr_ft.io import OutputKind, output_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
SPLIT = "train"  # the one split written: every crop is for training
# What symclr-components writes into --out: make-shards' entries, under its own command name
# (io.output_dir's rule: a user's folder, or a make-shards set, is not written into without
# --overwrite; an earlier components set is replaced).
COMPONENTS_OUTPUT = OutputKind("symclr-components", SHARD_OUTPUT.names, SHARD_OUTPUT.patterns)


@dataclass(frozen=True)
class DrawingFile:
    path: Path
    name: str  # as stats.json and the crop records name it: relative to the input


@dataclass
class ComponentSettings:
    """Everything besides the input that decides which crops are written."""

    padding: float = 0.1  # make-shards' crop frame: the box grown by this share per side
    per_page: int = 200  # at most this many crops per drawing (a seeded choice)
    dedup_iou: float = 0.5  # boxes overlapping a larger kept box this much are the same component
    seed: int = 0
    components: ComponentConfig = field(default_factory=ComponentConfig)  # how ink becomes boxes

    def __post_init__(self):
        if not is_padding(self.padding):
            raise UserError(f"--padding {self.padding}: must be a finite number >= 0")
        if self.per_page < 1:
            raise UserError(f"--per-page {self.per_page}: must be at least 1")
        if not 0 < self.dedup_iou <= 1:
            raise UserError(f"--dedup-iou {self.dedup_iou}: must be in (0, 1]")
        c = self.components
        if not 1 <= c.min_side <= c.max_side:
            raise UserError(f"--min-side {c.min_side} / --max-side {c.max_side}: need 1 <= min <= max")


# --------------------------------------------------------------------------- the drawings


def _source_json(source: Path, split: str | None) -> Path | None:
    """The COCO json whose image list ``source`` means: the file itself, a split folder's, or
    the json of ``split`` (default train) of a Roboflow export (train/ valid/ test/); None for
    a plain folder of images. ``split`` is refused for anything but an export."""
    present = [s for s in SPLITS if source.is_dir() and (source / s / ANNOTATIONS_FILE).is_file()]
    export = bool(present) and not (source / ANNOTATIONS_FILE).is_file()
    if split is not None and not export:
        raise UserError(f"--split {split}: {source} is not a COCO export folder (train/ valid/ test/)")
    if source.is_file():
        if source.suffix.lower() != ".json":
            raise UserError(f"{source}: expected a folder of drawings or a COCO json file")
        return source
    if (source / ANNOTATIONS_FILE).is_file():
        return source / ANNOTATIONS_FILE
    if not export:
        return None
    split = split or SPLIT
    if split not in present:
        raise UserError(f"{source}: no {split}/{ANNOTATIONS_FILE} (splits here: {', '.join(present)})")
    return source / split / ANNOTATIONS_FILE


def list_drawings(source: str | Path, split: str | None = None) -> list[DrawingFile]:
    """The drawings of ``source``, in a fixed order: a COCO json (or a split folder holding
    one): its image list only; a Roboflow export: the image list of ``split`` (default train);
    else a folder of images, searched recursively, by relative path."""
    source = usable_path(source)
    if not source.exists():
        raise UserError(f"{source}: not found (expected a folder of drawings or a COCO json)")
    json_path = _source_json(source, split)
    if json_path is not None:
        drawings = [DrawingFile(json_path.parent / im.file_name, im.file_name) for im in load_image_list(json_path)]
    else:
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                       and (p.is_file() or p.is_symlink()))  # a broken link: skipped and listed
        drawings = [DrawingFile(p, p.relative_to(source).as_posix()) for p in files]
    if not drawings:
        raise UserError(f"{source}: no drawings ({', '.join(IMAGE_SUFFIXES)} files or a COCO image list)")
    return drawings


def read_drawing(drawing: DrawingFile) -> Image.Image:
    """The drawing's 8-bit RGB pixels (``coco.to_rgb``: 16-bit scaled, alpha on white); any
    problem is a UserError naming the file."""
    try:
        with Image.open(drawing.path) as img:
            img.load()
            return to_rgb(img, str(drawing.path))
    except Image.DecompressionBombError:
        raise UserError(f"{drawing.path}: too large to decode safely") from None
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise UserError(f"{drawing.path}: cannot read image ({reason})") from None


# --------------------------------------------------------------------------- the crops


def page_components(rgb: np.ndarray, name: str, settings: ComponentSettings) -> list[tuple[int, int, int, int]]:
    """The component boxes (xyxy) of one drawing that become crops: deduplicated, at most
    ``per_page``, chosen by a generator seeded with (seed, the drawing's name) so that a drawing's
    crops depend on nothing else; sorted."""
    boxes = dedup_boxes(drawing_components(rgb, settings.components), settings.dedup_iou)
    if len(boxes) > settings.per_page:
        rng = np.random.default_rng([settings.seed, zlib.crc32(name.encode("utf-8"))])
        keep = np.sort(rng.choice(len(boxes), settings.per_page, replace=False))
        boxes = [boxes[i] for i in keep]
    return boxes


def _write_crops(drawings: list[DrawingFile], folder: Path, settings: ComponentSettings, shard_size: int,
                 progress: tqdm | None) -> tuple[dict, list[str], dict[str, int], list[dict]]:
    """Every drawing's crops into ``folder``: (split stats, class names, crops per drawing,
    skipped drawings)."""
    shards = ShardSequence(folder, SPLIT, shard_size)
    names: list[str] = []
    per_page: dict[str, int] = {}
    skipped: list[dict] = []
    widths: list[int] = []
    heights: list[int] = []
    try:
        for image_id, drawing in enumerate(drawings):
            try:
                pixels = read_drawing(drawing)
            except UserError as err:
                skipped.append({"image": drawing.name, "reason": str(err)})
                continue
            finally:
                if progress is not None:
                    progress.update(1)
            boxes = page_components(np.asarray(pixels), drawing.name, settings)
            per_page[drawing.name] = len(boxes)
            for k, (x0, y0, x1, y1) in enumerate(boxes):
                index = shards.count
                bbox = [x0, y0, x1 - x0, y1 - y0]
                crop = padded_crop_box(bbox, pixels.width, pixels.height, settings.padding)
                names.append(f"{drawing.name}#{k}")
                record = {"image": drawing.name, "image_id": image_id, "component": k, "bbox": bbox,
                          "crop": list(crop), "category_name": names[-1], "class_index": index, "split": SPLIT}
                shards.write(sample_key(SPLIT, index), {
                    "png": encode_png(pixels.crop(crop)),
                    "cls": str(index).encode("ascii"),
                    "json": json.dumps(record).encode("utf-8"),
                })
                widths.append(crop[2] - crop[0])
                heights.append(crop[3] - crop[1])
    finally:
        shards.close()
    split_stats = {"crops": shards.count, "drawings": len(per_page), "shards": len(shards.files),
                   "per_class": dict.fromkeys(names, 1), "crop_width": size_summary(widths),
                   "crop_height": size_summary(heights)}
    return split_stats, names, per_page, skipped


def write_component_shards(drawings: list[DrawingFile], out: str | Path, settings: ComponentSettings | None = None,
                           shard_size: int = 1000, source: str = "", overwrite: bool = False) -> dict[str, Any]:
    """Cut the ink components of ``drawings`` into a make-shards set in ``out`` (one split,
    train; every crop its own class), verified before it is moved into place. Returns the
    stats (stats.json); a UserError when no drawing gives a single component."""
    from symclr_ft.data.shardset import verify_split

    settings = settings or ComponentSettings()
    if shard_size < 1:
        raise UserError(f"--shard-size {shard_size}: must be at least 1")
    bar = tqdm(total=len(drawings), unit="img", desc="symclr-components", file=sys.stderr, disable=None)
    try:
        with bar, output_dir(out, COMPONENTS_OUTPUT, overwrite) as tmp:
            split_stats, names, per_page, skipped = _write_crops(drawings, tmp, settings, shard_size, bar)
            if not names:
                why = f"; {len(skipped)} of {len(drawings)} could not be read" if skipped else ""
                raise UserError(f"{source or out}: no ink components found in any drawing{why}; nothing written")
            classes = [{"index": i, "coco_id": i + 1, "name": n} for i, n in enumerate(names)]
            (tmp / CLASSES_FILE).write_text(json.dumps({"classes": classes}, indent=2) + "\n")
            settings_record = {k: v for k, v in asdict(settings).items() if k != "components"}
            stats = {"splits": {SPLIT: split_stats}, "padding": settings.padding, "classes": len(names),
                     "source": source,
                     "components": {**settings_record, "ink": asdict(settings.components), "per_drawing": per_page,
                                    "skipped": skipped}}
            (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
            verify_split(tmp, SPLIT)  # the project's own check, before anything is moved into place
    except OSError as err:  # input problems are UserErrors by now: this is the output
        raise UserError(f"{out}: cannot write the shards ({err.strerror or err})") from None
    return stats


def make_component_shards(drawings: str | Path, out: str | Path, split: str | None = None,
                          settings: ComponentSettings | None = None, shard_size: int = 1000,
                          overwrite: bool = False) -> dict[str, Any]:
    """:func:`list_drawings` of ``drawings`` then :func:`write_component_shards`."""
    from symclr_ft.io import check_output_dir

    check_output_dir(out, COMPONENTS_OUTPUT, overwrite)  # before any drawing is read
    found = list_drawings(drawings, split)
    source = str(drawings) + (f" ({split} split)" if split else "")
    return write_component_shards(found, out, settings, shard_size, source, overwrite)


# --------------------------------------------------------------------------- the command


def build_parser() -> ArgumentParser:
    d, c = ComponentSettings(), ComponentConfig()
    p = ArgumentParser(prog="symclr-components",
                       description="Cut the ink components of unannotated drawings into shards, "
                                   "every crop its own class (for configs/adapt.yaml).")
    p.add_argument("--drawings", required=True,
                   help="folder of images (searched recursively), COCO json or split folder (only its image "
                        "list is read), or a COCO export folder (see --split)")
    p.add_argument("--split", default=None, choices=SPLITS,
                   help="of a COCO export folder: whose pages to use (default: train)")
    p.add_argument("--out", required=True, help="new shards folder (or an earlier symclr-components output)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not an earlier output (only shard files, classes.json "
                        "and stats.json are replaced)")
    p.add_argument("--per-page", type=bounded_int(1, 10**6), default=d.per_page, help="most crops per drawing")
    p.add_argument("--dedup-iou", type=bounded_float(0.0, 1.0), default=d.dedup_iou,
                   help="IoU from which two boxes are one component")
    p.add_argument("--padding", type=bounded_float(0.0), default=d.padding, help="crop padding, share of the box")
    p.add_argument("--min-side", type=bounded_int(1, 100_000), default=c.min_side, help="smallest component (px)")
    p.add_argument("--max-side", type=bounded_int(1, 100_000), default=c.max_side, help="largest component (px)")
    p.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=d.seed, help="which crops a full page keeps")
    p.add_argument("--shard-size", type=bounded_int(1), default=1000, help="samples per tar file")
    return p


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ink = ComponentConfig(min_side=args.min_side, max_side=args.max_side)
    settings = ComponentSettings(args.padding, args.per_page, args.dedup_iou, args.seed, ink)
    start = time.perf_counter()
    with sigterm_as_interrupt():
        stats = make_component_shards(args.drawings, args.out, args.split, settings, args.shard_size,
                                      args.overwrite)
    info, skipped = stats["splits"][SPLIT], stats["components"]["skipped"]
    for entry in skipped:
        print(f"skipped: {entry['reason']}", file=sys.stderr)
    print(f"{args.out}: {info['crops']} components from {info['drawings']} drawings "
          f"({len(skipped)} skipped), {info['shards']} shards in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
