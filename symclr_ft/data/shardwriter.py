"""Writing shard sets: contiguous classes of a COCO export, PNG bytes and tar files that are
byte-identical for the same input.

Why a module of its own: ``make-shards`` (:mod:`symclr_ft.data.shards`) is a command, and the
other writers of shard sets (``data.glyphs``, the benchmarks that copy a shard set) and the
readers that need make-shards' class indices (``data.crops``) must not import a command.
Example::

    out = ShardSequence(folder, "train", shard_size=1000)
    out.write("train_0000000", {"png": encode_png(crop), "cls": b"3"})
    out.close()  # folder/train-000000.tar
"""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import webdataset as wds

from symclr_ft.data.coco import SPLITS, Export
from symclr_ft.data.shardset import shard_name
from symclr_ft.errors import UserError
from symclr_ft.io import OutputKind

CLASSES_FILE = "classes.json"
STATS_FILE = "stats.json"
# Fixed so that the same crop always encodes to the same bytes.
PNG_SETTINGS = {"format": "PNG", "compress_level": 6, "optimize": False}


@dataclass(frozen=True)
class ClassEntry:
    index: int
    coco_id: int
    name: str


def build_classes(export: Export) -> list[ClassEntry]:
    """Contiguous class indices over the categories that have at least one box in any split,
    sorted by COCO id. Unused categories (the real data's id 0 parent) are not classes, and a
    class seen only in valid still gets an index so that evaluation can name it."""
    used = {ann.category_id for split in export.splits for ann in split.annotations}
    if not used:
        raise UserError(f"{export.source}: no annotated boxes in any split, nothing to crop")
    categories = export.categories()
    return [
        ClassEntry(index, coco_id, categories[coco_id].name)
        for index, coco_id in enumerate(sorted(used))
    ]


def sample_key(split: str, index: int) -> str:
    return f"{split}_{index:07d}"


def encode_png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **PNG_SETTINGS)
    return buffer.getvalue()


# Fixed tar headers (mtime 0, uid/gid 0, no user names), so that the tar bytes depend only on the
# samples; webdataset writes members in sorted extension order.
TAR_HEADERS = {"user": "", "group": "", "mode": 0o444, "mtime": 0, "encoder": False}


class ShardSequence:
    """``<split>-000000.tar``, ``<split>-000001.tar``, ... in ``folder`` with at most
    ``shard_size`` samples each (webdataset's ``ShardWriter`` with fixed tar headers); no file
    is created for a split without samples. ``count`` is the number of samples written."""

    def __init__(self, folder: Path, split: str, shard_size: int):
        self.folder, self.split, self.shard_size = Path(folder), split, shard_size
        self.files: list[Path] = []
        self.count = 0
        self._writer: wds.ShardWriter | None = None
        self._stream: BinaryIO | None = None

    def _open(self, number: str) -> BinaryIO:
        # Our own opener: the file name is never read as a URL (webdataset would run
        # "pipe:..." names as shell commands), and we close what we opened.
        path = self.folder / shard_name(self.split, int(number))
        self._stream = open(path, "wb")
        self.files.append(path)
        return self._stream

    def _closed(self, _name: str) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._writer is None:
            self._writer = wds.ShardWriter(
                "%d", maxcount=self.shard_size,  # the opener gets the shard number
                maxsize=float("inf"), verbose=0, opener=self._open, post=self._closed,
                **TAR_HEADERS,
            )  # fmt: skip
        self._writer.write({"__key__": key, **members})
        self.count += 1

    def close(self) -> None:
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
        finally:
            self._closed("")


def size_summary(values: list[int]) -> dict[str, float | int | None]:
    """min, median, mean (2 decimals) and max of crop sides, as stats.json records them."""
    if not values:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 2),
        "max": max(values),
    }


# What a shard set is made of, for the output rule (io.output_dir): make-shards writes among other
# files by design and replaces only these entries.
SHARD_OUTPUT = OutputKind(
    "make-shards", (CLASSES_FILE, STATS_FILE),
    tuple(f"{split}-{'[0-9]' * 6}.tar" for split in SPLITS), manifest=False,
)
