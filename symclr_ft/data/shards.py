"""The ``make-shards`` command: a COCO export -> WebDataset tars of symbol crops.

Every annotated box becomes one sample: the padded box cut from its drawing at native
resolution (PNG), its contiguous class index and a json record pointing back to the source
(see "Shard format" in docs/ARCHITECTURE.md). Cropping once, here, means training and
evaluation never touch the drawings or the COCO json again.

The output is byte-identical for the same input (fixed tar headers, sorted order, fixed PNG
settings), so shards can be compared by checksum, and it appears atomically: everything is
written into a temporary folder beside ``--out`` and moved in only when complete, so a run
that fails halfway (or is interrupted, SIGTERM included) leaves the previous shards as they
were. Only make-shards' own files in ``--out`` are ever replaced.

Example::

    make-shards --coco ../shared/data/firefighting --out shards/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from symclr_ft.data.coco import (
    CocoSplit,
    check_image_files,
    is_padding,
    load_export,
    open_image,
    padded_crop_box,
)
from symclr_ft.data.shardwriter import (  # noqa: F401  (PNG_SETTINGS, TAR_HEADERS: also read from here)
    CLASSES_FILE, PNG_SETTINGS, STATS_FILE, TAR_HEADERS, ClassEntry, ShardSequence, build_classes,
    SHARD_OUTPUT, encode_png, sample_key, size_summary,
)
from symclr_ft.errors import (
    ArgumentParser, UserError, bounded_float, bounded_int, report_user_errors, sigterm_as_interrupt,
)
from symclr_ft.io import output_dir

_summary = size_summary  # its name before it moved


def write_split(
    split: CocoSplit,
    classes: list[ClassEntry],
    folder: Path,
    padding: float,
    shard_size: int,
    progress: tqdm | None = None,
) -> dict[str, Any]:
    """Crop every box of one split into shards in ``folder``; returns the split's statistics."""
    class_of = {entry.coco_id: entry for entry in classes}
    per_class = {entry.name: 0 for entry in classes}
    widths: list[int] = []
    heights: list[int] = []
    shards = ShardSequence(folder, split.name, shard_size)
    try:
        for image, annotations in split.annotations_by_image():
            pixels = open_image(split, image)
            for ann in annotations:
                entry = class_of[ann.category_id]
                crop = padded_crop_box(ann.bbox, image.width, image.height, padding)
                record = {
                    "image": image.file_name,
                    "image_id": image.id,
                    "annotation_id": ann.id,
                    "bbox": list(ann.bbox),
                    "crop": list(crop),
                    "category_id": ann.category_id,
                    "category_name": entry.name,
                    "class_index": entry.index,
                    "split": split.name,
                }
                shards.write(
                    sample_key(split.name, shards.count),
                    {
                        "png": encode_png(pixels.crop(crop)),
                        "cls": str(entry.index).encode("ascii"),
                        "json": json.dumps(record).encode("utf-8"),
                    },
                )
                per_class[entry.name] += 1
                widths.append(crop[2] - crop[0])
                heights.append(crop[3] - crop[1])
            if progress is not None:
                progress.update(1)
    finally:
        shards.close()
    return {
        "crops": shards.count,
        "drawings": len(split.images),
        "shards": len(shards.files),
        "per_class": per_class,
        "crop_width": size_summary(widths),
        "crop_height": size_summary(heights),
    }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


# What make-shards writes into --out, and so all it may replace there: a user's own files
# (my_backup.tar, README.md, ...) are never moved or deleted. Its folder is shared (the
# repository's shards/ holds a tracked README), and its entries have names no one else uses,
# so it writes among other files without --overwrite (io.output_dir's rule, overwrite=True:
# only these entries are replaced).


def make_shards(
    coco: str | Path, out: str | Path, padding: float = 0.1, shard_size: int = 1000
) -> dict[str, Any]:
    """Validate the export, write all shards + classes.json + stats.json atomically into
    ``out``; returns the stats (the content of stats.json)."""
    if not is_padding(padding):
        raise UserError(f"--padding {padding}: must be a finite number >= 0")
    if shard_size < 1:
        raise UserError(f"--shard-size {shard_size}: must be at least 1")
    out = Path(out)
    export = load_export(coco)
    classes = build_classes(export)
    for split in export.splits:
        check_image_files(split)
    try:
        with output_dir(out, SHARD_OUTPUT, overwrite=True) as tmp:
            stats = _write_shard_set(export, classes, tmp, padding, shard_size, str(coco))
    except OSError as err:  # input problems are UserErrors by now: this is the output
        raise UserError(f"{out}: cannot write the shards ({err.strerror or err})") from None
    return stats


def _write_shard_set(export, classes, tmp: Path, padding: float, shard_size: int, source: str) -> dict:
    """Every split's shards, classes.json and stats.json into the temporary folder ``tmp``."""
    n_images = sum(1 for split in export.splits for _ in split.annotations_by_image())
    # disable=None: no bar when stderr is not a terminal (logs, tests).
    bar = tqdm(total=n_images, unit="img", desc="make-shards", file=sys.stderr, disable=None)
    with bar:
        split_stats = {
            split.name: write_split(split, classes, tmp, padding, shard_size, bar)
            for split in export.splits
        }
    _write_json(
        tmp / CLASSES_FILE,
        {"classes": [{"index": c.index, "coco_id": c.coco_id, "name": c.name} for c in classes]},
    )
    stats = {"splits": split_stats, "padding": padding, "classes": len(classes), "source": source}
    _write_json(tmp / STATS_FILE, stats)
    return stats


DESCRIPTION = "Cut every annotated symbol of a COCO export into WebDataset shards."
OPTIONS = [  # option, type, default (None: required), help
    ("--coco", str, None, "Roboflow COCO export folder (train/ valid/ test/) or one COCO json file"),
    ("--out", str, None, "output folder for the shards"),
    ("--padding", bounded_float(0.0), 0.1, "box padding, as a fraction of its size"),
    ("--shard-size", bounded_int(1), 1000, "samples per tar file"),
]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="make-shards", description=DESCRIPTION)
    for option, kind, default, help_text in OPTIONS:
        required = default is None
        parser.add_argument(option, type=kind, default=default, required=required, help=help_text)
    return parser


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    start = time.perf_counter()
    with sigterm_as_interrupt():
        stats = make_shards(args.coco, args.out, args.padding, args.shard_size)
    seconds = time.perf_counter() - start
    for name, split in stats["splits"].items():
        print(
            f"{name}: {split['crops']} crops from {split['drawings']} drawings, "
            f"{split['shards']} shards"
        )
    total = sum(split["shards"] for split in stats["splits"].values())
    print(f"{stats['classes']} classes; {total} shards written to {args.out} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
