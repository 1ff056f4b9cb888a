"""Synthetic engineering drawings in Roboflow's COCO layout, for tests and for a demo that
runs without the real (licence-restricted) data.

They imitate what makes the firefighting drawings hard: a dark background with thin coloured
line symbols (20-60 px) rotated by multiples of 90 degrees, wires running between them, text
scattered around that looks like the letters inside some symbols, and a strongly imbalanced
class frequency (one class about a third of all boxes, several rare ones). Like the real
export, category id 0 is an unused parent category and the classes are ids 1..N.

Each class is a fixed composition of line primitives (a frame: circle, box, diamond, ...; plus
marks: a cross, a diagonal, a dot, an arc, ... or a short text), chosen from the class index
alone, so class k looks the same in every generated dataset; ``seed`` only moves things around.

Example::

    write_synthetic_coco("data/synth", classes=12, seed=0)
    # data/synth/{train,valid,test}/_annotations.coco.json + JPEG drawings

    symclr-synth --out data/synth_demo --scale demo
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from symclr_ft.data.coco import ANNOTATIONS_FILE, usable_path
from symclr_ft.errors import (
    ArgumentParser, UserError, bounded_int, report_user_errors, sigterm_as_interrupt,
)
from symclr_ft.io import OutputKind, output_dir, read_json

BACKGROUND = (16, 18, 26)
SYMBOL_COLOURS = [
    (255, 90, 90), (90, 220, 255), (255, 220, 70), (120, 240, 120),
    (250, 130, 250), (255, 165, 60), (170, 170, 255), (235, 235, 235),
]  # fmt: skip
WIRE_COLOURS = [(190, 60, 60), (60, 150, 200), (190, 190, 70), (80, 170, 90)]
TEXT_COLOURS = [(160, 160, 160), (200, 200, 120), (120, 190, 190)]
FRAMES = ("circle", "box", "diamond", "triangle", "double-circle", "none")
MARKS = ("cross", "diagonal", "x", "dot", "bar", "arc", "ring", "zigzag", "arrow", "tail")
LETTERS = ("S", "H", "M", "FA", "T", "K", "E", "DC", "SL", "C", "I", "P")
DISTRACTOR_TEXT = (
    "WDZ", "ZR-2.5", "L1", "L2", "BV-3x2.5", "S", "H", "FA", "24V", "M", "K1", "T", "DC",
)  # fmt: skip
MIN_SYMBOL, MAX_SYMBOL = 20, 60
PARENT_CATEGORY = "synthetic-symbols"
MARKER_FILE = "README.synthetic.txt"
# What symclr-synth writes into --out (io.output_dir's rule); outputs written before outputs
# carried a manifest are told by the marker file.
SYNTH_OUTPUT = OutputKind("symclr-synth", ("train", "valid", "test", MARKER_FILE), legacy=(MARKER_FILE,))
MAX_SEED = 2**32 - 1  # numpy's and random's seeds alike

SCALES = {
    # small: a few seconds to generate; tests use smaller settings still.
    "small": {
        "classes": 12,
        "drawings_per_split": {"train": 24, "valid": 8, "test": 8},
        "image_size": (512, 448),
        "symbols_per_drawing": (10, 20),
    },
    # demo: enough crops (~1,000 in train) that a short training run learns something.
    "demo": {
        "classes": 16,
        "drawings_per_split": {"train": 60, "valid": 20, "test": 20},
        "image_size": (640, 560),
        "symbols_per_drawing": (12, 22),
    },
}


@dataclass(frozen=True)
class SymbolDesign:
    """How one class looks: a frame, then marks or a short text inside it, in one colour."""

    frame: str
    marks: tuple[str, ...]
    text: str
    colour: tuple[int, int, int]
    base_size: int  # instances vary around it by about 10%

    @property
    def name(self) -> str:
        inside = [self.text] if self.text else list(self.marks)
        return "-".join([self.frame, *inside]).lower()


def symbol_designs(classes: int) -> list[SymbolDesign]:
    """``classes`` designs with pairwise different shapes; design k depends only on k."""
    designs: list[SymbolDesign] = []
    seen: set[tuple] = set()
    for k in range(classes):
        rng = random.Random(104_729 + k)
        while True:
            frame = FRAMES[k % len(FRAMES)] if k < len(FRAMES) else rng.choice(FRAMES)
            text = "" if frame == "none" or rng.random() < 0.6 else rng.choice(LETTERS)
            n_marks = 0 if text else (2 if frame == "none" else rng.choice((1, 1, 2)))
            marks = tuple(sorted(rng.sample(MARKS, n_marks)))
            shape = (frame, marks, text)
            if shape not in seen:
                break
        seen.add(shape)
        colour = SYMBOL_COLOURS[rng.randrange(len(SYMBOL_COLOURS))]
        designs.append(SymbolDesign(frame, marks, text, colour, rng.randint(24, 46)))
    return designs


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def draw_symbol(design: SymbolDesign, size: int) -> Image.Image:
    """The symbol as an ``L`` mask of ``size`` x ``size`` (255 = ink), upright."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    width = 1 if size < 34 else 2
    m = width  # margin so strokes stay inside the tile
    lo, hi, mid = m, size - 1 - m, (size - 1) / 2
    frame_box = [lo, lo, hi, hi]
    if design.frame == "circle":
        draw.ellipse(frame_box, outline=255, width=width)
    elif design.frame == "box":
        draw.rectangle(frame_box, outline=255, width=width)
    elif design.frame == "diamond":
        draw.polygon([(mid, lo), (hi, mid), (mid, hi), (lo, mid)], outline=255, width=width)
    elif design.frame == "triangle":
        draw.polygon([(lo, hi), (mid, lo), (hi, hi)], outline=255, width=width)
    elif design.frame == "double-circle":
        draw.ellipse(frame_box, outline=255, width=width)
        inset = size * 0.16
        draw.ellipse([lo + inset, lo + inset, hi - inset, hi - inset], outline=255, width=width)
    # Marks sit inside the frame; without a frame they fill the tile, so that every symbol
    # is 20-60 px across like the real ones.
    a, b = (size * 0.3, size * 0.7) if design.frame != "none" else (lo + 1.0, hi - 1.0)
    for mark in design.marks:
        if mark == "cross":
            draw.line([(mid, a), (mid, b)], fill=255, width=width)
            draw.line([(a, mid), (b, mid)], fill=255, width=width)
        elif mark == "diagonal":
            draw.line([(a, a), (b, b)], fill=255, width=width)
        elif mark == "x":
            draw.line([(a, a), (b, b)], fill=255, width=width)
            draw.line([(a, b), (b, a)], fill=255, width=width)
        elif mark == "dot":
            r = max(2, size // 9)
            draw.ellipse([mid - r, mid - r, mid + r, mid + r], fill=255)
        elif mark == "bar":
            draw.line([(lo, mid), (hi, mid)], fill=255, width=width)
        elif mark == "arc":
            draw.arc([a, a, b, b], start=200, end=340, fill=255, width=width)
        elif mark == "ring":
            r0, r1 = size * 0.38, size * 0.62
            draw.ellipse([r0, r0, r1, r1], outline=255, width=width)
        elif mark == "zigzag":
            xs = [a + (b - a) * t / 4 for t in range(5)]
            draw.line([(x, mid + (size * 0.1 if i % 2 else -size * 0.1)) for i, x in enumerate(xs)],
                      fill=255, width=width)  # fmt: skip
        elif mark == "arrow":
            draw.line([(a, mid), (b, mid)], fill=255, width=width)
            back, spread = b - size * 0.12, size * 0.1
            draw.line([(back, mid - spread), (b, mid), (back, mid + spread)], fill=255, width=width)
        elif mark == "tail":  # an asymmetric stroke from the centre to the top edge
            draw.line([(mid, lo), (mid, mid)], fill=255, width=width)
            draw.line([(mid, mid), (b, mid)], fill=255, width=width)
    if design.text:
        font_size = max(8, int(size * (0.42 if len(design.text) == 1 else 0.32)))
        draw.text((mid, mid), design.text, fill=255, font=_font(font_size), anchor="mm")
    return mask


_ROTATIONS = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
)


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def _overlaps(box: Box, others: list[Box], gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < ox1 + gap and ox0 < x1 + gap and y0 < oy1 + gap and oy0 < y1 + gap
        for ox0, oy0, ox1, oy1 in others
    )


def _class_weights(classes: int) -> list[float]:
    """Zipf-like tail, and class 0 about a third of all boxes (as 24V-power-cord in the real
    data), so that majority-class guessing is a visible baseline."""
    tail = [1.0 / (1.0 + 0.3 * k) for k in range(1, classes)]
    return [0.55 * sum(tail) if tail else 1.0, *tail]


def _place_symbols(
    rng: random.Random, designs: list[SymbolDesign], labels: list[int], image_size: tuple[int, int]
) -> list[tuple[int, tuple[int, int, int, int], Image.Image]]:
    """(label, tile box, rotated ink mask) of each symbol that fits without touching another
    (in order: earlier labels are placed first, on an emptier sheet)."""
    width, height = image_size
    margin, gap = 4, 8
    placed: list[tuple[int, tuple[int, int, int, int], Image.Image]] = []
    for label in labels:
        design = designs[label]
        size = round(design.base_size * rng.uniform(0.88, 1.15))
        size = max(MIN_SYMBOL, min(MAX_SYMBOL, size, width - 2 * margin, height - 2 * margin))
        for _ in range(200):
            x = rng.randint(margin, width - size - margin)
            y = rng.randint(margin, height - size - margin)
            box = (x, y, x + size, y + size)
            if not _overlaps(box, [p[1] for p in placed], gap):
                break
        else:
            continue  # the sheet is full: drop this symbol
        mask = draw_symbol(design, size)
        turn = _ROTATIONS[rng.randrange(4)]
        placed.append((label, box, mask.transpose(turn) if turn is not None else mask))
    return placed


def _draw_wires(draw: ImageDraw.ImageDraw, rng: random.Random, boxes: list, size: tuple[int, int]):
    """L-shaped runs between consecutive symbols, plus a few long bus lines."""
    width, height = size
    wire = rng.choice(WIRE_COLOURS)
    centres = [((b[0] + b[2]) // 2, (b[1] + b[3]) // 2) for b in boxes]
    for (ax, ay), (bx, by) in zip(centres, centres[1:]):
        corner = (bx, ay) if rng.random() < 0.5 else (ax, by)
        draw.line([(ax, ay), corner, (bx, by)], fill=wire, width=1)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            y = rng.randrange(height)
            draw.line([(0, y), (width - 1, y)], fill=wire, width=1)
        else:
            x = rng.randrange(width)
            draw.line([(x, 0), (x, height - 1)], fill=wire, width=1)


def _draw_distractor_text(
    draw: ImageDraw.ImageDraw, rng: random.Random, boxes: list, size: tuple[int, int]
) -> None:
    """Text that looks like the letters inside some symbols, kept clear of the symbols."""
    width, height = size
    for _ in range(rng.randint(4, 10)):
        text = rng.choice(DISTRACTOR_TEXT)
        pos = (rng.randrange(width), rng.randrange(height))
        font = _font(rng.randint(9, 14))
        tb = tuple(int(v) for v in draw.textbbox(pos, text, font=font))
        inside = tb[0] >= 0 and tb[1] >= 0 and tb[2] < width and tb[3] < height
        if inside and not _overlaps(tb, boxes, 2):  # type: ignore[arg-type]
            draw.text(pos, text, fill=rng.choice(TEXT_COLOURS), font=font)


def draw_drawing(
    rng: random.Random,
    designs: list[SymbolDesign],
    labels: list[int],
    image_size: tuple[int, int],
) -> tuple[Image.Image, list[tuple[int, list[int]]]]:
    """One drawing holding the symbols ``labels`` (those that fit). Returns the image and
    ``(label, [x, y, w, h])`` for each placed symbol."""
    image = Image.new("RGB", image_size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    placed = _place_symbols(rng, designs, labels, image_size)
    boxes = [box for _, box, _ in placed]
    _draw_wires(draw, rng, boxes, image_size)
    _draw_distractor_text(draw, rng, boxes, image_size)
    # Symbols last, on a cleared tile, so wires end at their edge.
    annotations: list[tuple[int, list[int]]] = []
    for label, box, mask in placed:
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=BACKGROUND)
        image.paste(designs[label].colour, box, mask)
        ix0, iy0, ix1, iy1 = mask.getbbox()  # tight box of the ink, as an annotator draws it
        annotations.append((label, [box[0] + ix0, box[1] + iy0, ix1 - ix0, iy1 - iy0]))
    return image, annotations


def _split_labels(
    rng: random.Random,
    classes: int,
    drawings: int,
    symbols_per_drawing: tuple[int, int],
    every_class: bool,
) -> list[list[int]]:
    """Class labels for each drawing. With ``every_class`` each class is dealt once to some
    drawing first (and placed first there), so train holds every class."""
    weights = _class_weights(classes)
    per_drawing: list[list[int]] = [[] for _ in range(drawings)]
    if every_class:
        order = list(range(classes))
        rng.shuffle(order)
        for i, label in enumerate(order):
            per_drawing[i % drawings].append(label)
    for labels in per_drawing:
        n = rng.randint(*symbols_per_drawing)
        labels.extend(rng.choices(range(classes), weights=weights, k=max(0, n - len(labels))))
    return per_drawing


def _check_arguments(
    classes: int, drawings_per_split: dict[str, int], image_size: tuple[int, int],
    symbols_per_drawing: tuple[int, int], image_format: str,
) -> None:  # fmt: skip
    if classes < 1:
        raise ValueError(f"classes must be >= 1, got {classes}")
    if drawings_per_split.get("train", 0) < 1:
        raise ValueError("drawings_per_split needs at least one train drawing")
    lo, hi = symbols_per_drawing
    if not 1 <= lo <= hi:
        raise ValueError(
            f"symbols_per_drawing must be (min, max) with 1 <= min <= max, got {symbols_per_drawing}"
        )
    if min(image_size) < MIN_SYMBOL + 8:
        raise ValueError(f"image_size {image_size} is too small for {MIN_SYMBOL}-px symbols")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be jpg or png, got {image_format!r}")


def _write_split(
    folder: Path, split: str, rng: random.Random, designs: list[SymbolDesign], drawings: int,
    image_size: tuple[int, int], symbols_per_drawing: tuple[int, int], image_format: str,
) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Draw and save one split's drawings; returns its COCO ``images`` and ``annotations``."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    all_labels = _split_labels(rng, len(designs), drawings, symbols_per_drawing, split == "train")
    for image_id, labels in enumerate(all_labels):
        image, boxes = draw_drawing(rng, designs, labels, image_size)
        file_name = f"{split}-{image_id:04d}.{image_format}"
        if image_format == "jpg":
            image.save(folder / file_name, format="JPEG", quality=92)
        else:
            image.save(folder / file_name, format="PNG", compress_level=6)
        images.append(
            {"id": image_id, "license": 1, "file_name": file_name,
             "height": image_size[1], "width": image_size[0]}
        )  # fmt: skip
        for label, bbox in boxes:
            annotations.append(
                {"id": len(annotations), "image_id": image_id, "category_id": label + 1,
                 "bbox": bbox, "area": bbox[2] * bbox[3], "segmentation": [], "iscrowd": 0}
            )  # fmt: skip
    return images, annotations


def write_synthetic_coco(
    out_dir: str | Path,
    classes: int = 12,
    drawings_per_split: dict[str, int] | None = None,
    image_size: tuple[int, int] = (512, 448),
    symbols_per_drawing: tuple[int, int] = (10, 20),
    seed: int = 0,
    image_format: str = "jpg",
) -> Path:
    """Write a Roboflow-style COCO export of synthetic drawings into ``out_dir`` (created);
    ``image_size`` is (width, height). The same arguments give the same files."""
    if drawings_per_split is None:
        drawings_per_split = {"train": 24, "valid": 8, "test": 8}
    _check_arguments(classes, drawings_per_split, image_size, symbols_per_drawing, image_format)
    out_dir = Path(out_dir)
    designs = symbol_designs(classes)
    categories = [{"id": 0, "name": PARENT_CATEGORY, "supercategory": "none"}] + [
        {"id": k + 1, "name": d.name, "supercategory": PARENT_CATEGORY}
        for k, d in enumerate(designs)
    ]
    in_train: set[int] = set()
    for split_index, (split, drawings) in enumerate(drawings_per_split.items()):
        # One generator per split: changing the valid size does not change train.
        rng = random.Random(seed * 1_000_003 + split_index)
        images, annotations = _write_split(
            out_dir / split, split, rng, designs, drawings, image_size, symbols_per_drawing,
            image_format,
        )  # fmt: skip
        if split == "train":
            in_train.update(a["category_id"] - 1 for a in annotations)
        coco = {
            "info": {"description": "symclr_ft synthetic drawings", "version": "1", "seed": seed},
            "licenses": [{"id": 1, "name": "generated"}],
            "categories": categories,
            "images": images,
            "annotations": annotations,
        }
        (out_dir / split / ANNOTATIONS_FILE).write_text(json.dumps(coco, indent=1) + "\n")
    if len(in_train) < classes:  # only when the sheets are too small for every class
        raise ValueError(
            f"only {len(in_train)} of {classes} classes fit into the train drawings; "
            "use more or larger drawings"
        )
    (out_dir / MARKER_FILE).write_text(
        f"Synthetic drawings written by symclr-synth: classes={classes} seed={seed} "
        f"drawings={drawings_per_split} image_size={list(image_size)}\n"
    )
    return out_dir


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="symclr-synth",
        description="Write synthetic engineering drawings as a Roboflow-style COCO export.",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (new, empty, or an earlier symclr-synth output)"
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="write into a folder that is not an earlier output (only symclr-synth's own entries "
        "are replaced: train/, valid/, test/, README.synthetic.txt)",
    )
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="small",
        help="small: quick (12 classes, 24 train drawings); demo: for a short training run",
    )
    parser.add_argument(
        "--classes", type=bounded_int(1, 200), default=None,
        help="number of classes, 1..200 (default: from --scale)",
    )
    parser.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=0)
    return parser


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = dict(SCALES[args.scale])
    if args.classes is not None:
        settings["classes"] = args.classes
    out = usable_path(args.out)
    # Replace only a folder this command wrote: --out pointing at real data must not wipe it.
    with sigterm_as_interrupt(), output_dir(out, SYNTH_OUTPUT, args.overwrite) as tmp:
        try:  # a kill leaves no temporary folder
            write_synthetic_coco(tmp, seed=args.seed, **settings)
        except ValueError as err:
            raise UserError(f"{out}: {err}") from None
    counts = {
        split: len(read_json(out / split / ANNOTATIONS_FILE)["annotations"])
        for split in settings["drawings_per_split"]
    }
    summary = ", ".join(f"{split} {n} boxes" for split, n in counts.items())
    print(f"{settings['classes']} classes written to {out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
