"""Procedurally generated glyph classes: as many symbol classes as training wants.

Why: 40 firefighting classes teach a network those 40 classes, not what makes two drawn
symbols the same. Omniglot-style training on many classes is the known remedy; drawings with
thousands of labelled symbol kinds do not exist here, but symbol *kinds* can be generated: a
class is a fixed composition of 1-4 primitives (strokes, polylines, arcs, circles, boxes,
triangles, dots, a letter), and its instances are that composition drawn again with jitter
(each point moved a little, the whole turned, scaled and sheared slightly, another line
width, another ink and background colour, either polarity). Two instances of one class differ
the way two hand-drawn or two CAD-exported copies of a symbol do; two classes differ in
structure.

A class depends only on ``(seed, index)``, an instance on ``(seed, index, instance)``, so the
set is reproducible and any class can be regenerated alone. Example::

    image = render_glyph(glyph_class(7, seed=0), instance=3, seed=0)   # PIL RGB, 24-64 px

``write_glyph_shards`` appends such classes to a copy of make-shards output, so that the
training loop mixes them into every batch without knowing about them (classes.json grows;
valid/test are copied unchanged).
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

KINDS = ("line", "polyline", "arc", "ellipse", "box", "triangle", "dots", "letter", "zigzag")
LETTERS = "ABCDEFGHKLMNPRSTUVXYZ0123456789#&+?"
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Primitive:
    kind: str
    points: tuple[tuple[float, float], ...]  # in the unit square
    filled: bool = False
    extra: float = 0.0  # arc: start angle in degrees; letter: index into LETTERS


@dataclass(frozen=True)
class GlyphClass:
    index: int
    parts: tuple[Primitive, ...]
    aspect: float  # width / height of the glyph's box


def _point(rng: random.Random) -> tuple[float, float]:
    return (rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95))


def _primitive(rng: random.Random) -> Primitive:
    kind = rng.choice(KINDS)
    n = {"line": 2, "polyline": rng.randint(3, 5), "arc": 2, "ellipse": 2, "box": 2, "triangle": 3,
         "dots": rng.randint(1, 3), "letter": 1, "zigzag": 2}[kind]
    points = [_point(rng) for _ in range(n)]
    if kind in ("arc", "ellipse", "box"):  # two corners of a box at least 0.25 wide and high
        (x0, y0), (x1, y1) = points
        points = [(min(x0, x1), min(y0, y1)), (max(max(x0, x1), min(x0, x1) + 0.25), max(max(y0, y1), min(y0, y1) + 0.25))]
    filled = kind in ("ellipse", "box", "triangle") and rng.random() < 0.3
    extra = rng.uniform(0, 360) if kind == "arc" else float(rng.randrange(len(LETTERS)))
    return Primitive(kind, tuple(points), filled, extra)


def glyph_class(index: int, seed: int = 0) -> GlyphClass:
    """Class ``index`` of the set ``seed``: 1-4 primitives and an aspect ratio."""
    rng = random.Random(f"glyph-class:{seed}:{index}")
    parts = tuple(_primitive(rng) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
    return GlyphClass(index, parts, math.exp(rng.uniform(-0.5, 0.5)))


def _jitter(points, rng: random.Random, amount: float, turn: float, scale: float, shear: float):
    """Move each point by up to ``amount``, then turn/scale/shear about the centre."""
    c, s = math.cos(turn), math.sin(turn)
    out = []
    for x, y in points:
        x, y = x + rng.uniform(-amount, amount) - 0.5, y + rng.uniform(-amount, amount) - 0.5
        x = x + shear * y
        out.append((0.5 + scale * (c * x - s * y), 0.5 + scale * (s * x + c * y)))
    return out


def _draw_part(draw: ImageDraw.ImageDraw, part: Primitive, pts, w: int, h: int, ink, width: int) -> None:
    xy = [(x * w, y * h) for x, y in pts]
    if part.kind in ("line", "polyline"):
        draw.line(xy, fill=ink, width=width, joint="curve")
    elif part.kind == "zigzag":
        (x0, y0), (x1, y1) = xy
        steps = 5
        zig = [(x0 + (x1 - x0) * t / steps + (width * 2 if t % 2 else -width * 2), y0 + (y1 - y0) * t / steps) for t in range(steps + 1)]
        draw.line(zig, fill=ink, width=width, joint="curve")
    elif part.kind in ("arc", "ellipse", "box"):
        (x0, y0), (x1, y1) = xy
        box = [min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1]
        if part.kind == "arc":
            draw.arc(box, part.extra, part.extra + 200, fill=ink, width=width)
        elif part.kind == "ellipse":
            draw.ellipse(box, fill=ink if part.filled else None, outline=ink, width=width)
        else:
            draw.rectangle(box, fill=ink if part.filled else None, outline=ink, width=width)
    elif part.kind == "triangle":
        draw.polygon(xy, fill=ink if part.filled else None, outline=ink, width=width)
    elif part.kind == "dots":
        r = width * 1.5
        for x, y in xy:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    else:  # letter
        x, y = xy[0]
        size = max(8, int(0.45 * min(w, h)))
        draw.text((x, y), LETTERS[int(part.extra)], fill=ink, font=ImageFont.load_default(size), anchor="mm")


def _colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(ink, background): dark-on-light or light-on-dark, sometimes coloured."""
    dark = tuple(rng.randint(0, 60) for _ in range(3))
    light = tuple(rng.randint(190, 255) for _ in range(3))
    if rng.random() < 0.4:  # a saturated colour, as CAD layers are, kept clearly brighter
        for _ in range(20):
            colour = tuple(rng.choice((rng.randint(0, 80), rng.randint(180, 255))) for _ in range(3))
            if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] >= 120:
                light = colour
                break
    return (dark, light) if rng.random() < 0.5 else (light, dark)


def render_glyph(cls: GlyphClass, instance: int, seed: int = 0) -> Image.Image:
    """One instance of ``cls``: an RGB crop of 24-64 px on its longer side, 10% padding (as
    make-shards' crops), drawn with jitter, line width and colours of its own."""
    rng = random.Random(f"glyph-instance:{seed}:{cls.index}:{instance}")
    side = rng.randint(24, 64)
    aspect = cls.aspect * math.exp(rng.uniform(-0.1, 0.1))
    w, h = (side, max(8, round(side / aspect))) if aspect >= 1 else (max(8, round(side * aspect)), side)
    pad_w, pad_h = max(1, round(0.1 * w)), max(1, round(0.1 * h))
    big_w, big_h = (w + 2 * pad_w) * SUPERSAMPLE, (h + 2 * pad_h) * SUPERSAMPLE
    ink, background = _colours(rng)
    image = Image.new("RGB", (big_w, big_h), background)
    draw = ImageDraw.Draw(image)
    width = max(1, round(rng.uniform(0.03, 0.09) * min(w, h) * SUPERSAMPLE))
    turn, scale, shear = math.radians(rng.uniform(-8, 8)), rng.uniform(0.85, 1.1), rng.uniform(-0.12, 0.12)
    inner = Image.new("RGB", (w * SUPERSAMPLE, h * SUPERSAMPLE), background)
    inner_draw = ImageDraw.Draw(inner)
    for part in cls.parts:
        pts = _jitter(part.points, rng, 0.04, turn, scale, shear)
        _draw_part(inner_draw, part, pts, w * SUPERSAMPLE, h * SUPERSAMPLE, ink, width)
    image.paste(inner, (pad_w * SUPERSAMPLE, pad_h * SUPERSAMPLE))
    del draw
    return image.resize((w + 2 * pad_w, h + 2 * pad_h), Image.LANCZOS)


def write_glyph_shards(source: Path, out: Path, classes: int, per_class: int, seed: int = 0) -> int:
    """A copy of the shards in ``source`` whose train split also holds ``classes`` glyph
    classes x ``per_class`` instances, appended after the source's classes (indices C..C+G-1).
    valid and test are copied unchanged. Returns the train crops written."""
    from symclr_ft.data.shardset import iter_shard, load_classes, load_stats, shard_paths
    from symclr_ft.io import atomic_dir
    from symclr_ft.data.shards import ShardSequence, encode_png

    names = load_classes(source)
    with atomic_dir(out) as tmp:
        for path in shard_paths(source, "valid") + shard_paths(source, "test"):
            shutil.copy(path, tmp / path.name)
        train = ShardSequence(tmp, "train", shard_size=1000)
        for path in shard_paths(source, "train"):
            for key, fields in iter_shard(path):
                train.write(key, fields)
        for g in range(classes):
            cls = glyph_class(g, seed)
            for i in range(per_class):
                png = encode_png(render_glyph(cls, i, seed))
                record = json.dumps({"glyph_class": g, "instance": i, "seed": seed}).encode()
                train.write(f"glyph-{g:05d}-{i:03d}", {"png": png, "cls": str(len(names) + g).encode(), "json": record})
        train.close()
        entries = [{"index": i, "coco_id": i + 1, "name": n} for i, n in enumerate(names)]
        entries += [{"index": len(names) + g, "coco_id": len(names) + g + 1, "name": f"glyph-{seed}-{g:05d}"} for g in range(classes)]
        (tmp / "classes.json").write_text(json.dumps({"classes": entries}, indent=1) + "\n")
        # valid and test are copies: their counts stand; train's are the new ones
        splits = {k: v for k, v in load_stats(source).get("splits", {}).items() if k != "train"}
        splits["train"] = {"crops": train.count, "shards": len(shard_paths(tmp, "train"))}
        stats = {"splits": splits, "glyphs": {"classes": classes, "per_class": per_class, "seed": seed},
                 "source": str(source)}
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
        return train.count


def build_parser():
    from symclr_ft.errors import ArgumentParser

    p = ArgumentParser(prog="python -m symclr_ft.data.glyphs",
                       description="Copy make-shards output and add procedural glyph classes to its train split.")
    p.add_argument("--shards", required=True, help="make-shards output to start from")
    p.add_argument("--out", required=True, help="new shards folder")
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    from symclr_ft.errors import UserError, report_user_errors

    @report_user_errors
    def run() -> int:
        args = build_parser().parse_args(argv)
        if args.classes < 1 or args.per_class < 1:
            raise UserError("--classes and --per-class must be at least 1")
        if Path(args.out).resolve() == Path(args.shards).resolve():
            raise UserError(f"{args.out}: must differ from --shards")
        n = write_glyph_shards(Path(args.shards), Path(args.out), args.classes, args.per_class, args.seed)
        print(f"{args.out}: {n} train crops ({args.classes} glyph classes x {args.per_class} added)")
        return 0

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
