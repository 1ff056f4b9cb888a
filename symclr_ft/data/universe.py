"""The symbol universe: thousands of symbol classes rendered from font glyphs, plus procedural ones.

Why: 40 firefighting classes teach a network those 40 classes, not what makes two drawn symbols
the same (issue 26: features near perfect on the trained classes, no better than ImageNet on
anything else). Few-shot learners that generalise train on thousands of classes (Omniglot's
1,623 characters); fonts installed from Debian packages hold tens of thousands of drawn shapes.

Classes come from two sources:

* **Font glyphs.** A class is one codepoint, drawn by every installed font that draws it *alike*
  (its canonical rendering correlates with the first font's at least ``ALIKE``): an instance then
  comes from any of those fonts, the way one symbol differs between two CAD libraries or two
  hands, while a font that draws the codepoint differently (a serif "g", an emoji-like arrow) is
  left out of the class instead of teaching that two different shapes are the same. One class
  per (codepoint, font) pair would instead make near-identical classes that the duplicate filter
  drops anyway. Left out: whitespace, control, format and combining marks, private use, glyphs
  without ink or drawn as the font's missing-glyph box, tiny glyphs (dots, accents), and the
  musical-symbol blocks (``EXCLUDED``), so that handwritten music stays an honest transfer test.
* **Procedural glyphs** (the former ``glyphs.py``): a fixed composition of 1-4 primitives
  (strokes, polylines, arcs, circles, boxes, triangles, dots, a letter); an instance jitters
  every point the way a hand does.

No two kept classes look the same: each class's canonical rendering (ink box padded to a square,
``CANON`` x ``CANON`` px, mean removed, unit norm) is compared with every kept one, and a class
whose normalised correlation with one of them reaches ``DUPLICATE`` is dropped (Latin "A" and
Greek "Alpha", "O" and "0" in many fonts). Candidates are drawn round-robin over strata (a
letter's script, "TANGUT", "EGYPTIAN", "CHEROKEE"; a symbol's 256-codepoint page: arrows, math
operators, technical, geometric shapes, dingbats), in an order fixed by the seed, so that a few
thousand classes span symbols, scripts and hieroglyphs rather than one big block.

Instances vary font, stroke weight, hand-drawn jitter (a smooth elastic warp), a small affine
(rotation up to 10 degrees, scale, shear), a crossing wire, short text beside the symbol, ink and
background colour and polarity, blur, scan noise and JPEG artefacts, and are cut in the frame
make-shards writes (the symbol's ink box plus ``coco.padded_crop_box`` padding 0.1). Everything
depends only on ``(seed, class, split, instance)``: the same bytes on every run, with any pool.

Example::

    symclr-universe --out universe/ --classes 3000 --per-class 16 --valid-per-class 2
    symclr-universe --out ff_universe/ --classes 3000 --per-class 16 --mix-with shards/

``--mix-with`` copies a make-shards set (valid and test unchanged) and appends the universe
classes to its train split after the set's own classes, so ``train.py`` mixes them into every
batch without a special case (``data.shards=ff_universe``).
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import shutil
import sys
import time
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage

from symclr_ft.data.coco import padded_crop_box
from symclr_ft.errors import UserError


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


def procedural_mask(cls: GlyphClass, size: int, rng: random.Random | None) -> np.ndarray:
    """The ink of ``cls`` as floats in [0, 1], its longer side ``size`` px; ``rng`` jitters
    every point (None: the canonical drawing, as the class was defined)."""
    w, h = (size, max(8, round(size / cls.aspect))) if cls.aspect >= 1 else (max(8, round(size * cls.aspect)), size)
    big_w, big_h = w * SUPERSAMPLE, h * SUPERSAMPLE
    image = Image.new("L", (big_w, big_h), 0)
    draw = ImageDraw.Draw(image)
    width = max(1, round(0.06 * min(w, h) * SUPERSAMPLE))
    for part in cls.parts:
        pts = _jitter(part.points, rng, 0.04, 0.0, 0.9, 0.0) if rng else _jitter(part.points, random.Random(0), 0.0, 0.0, 0.9, 0.0)
        _draw_part(draw, part, pts, big_w, big_h, 255, width)
    return np.asarray(image.resize((w, h), Image.BOX), dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# Fonts

# Debian package -> the faces of it that the universe reads (upright regular faces: stroke
# weight and slant are varied by the renderer, and Noto's many weights would only repeat shapes).
FONT_PACKAGES = {
    "fonts-symbola": r"Symbola.*\.ttf",
    "fonts-noto-core": r"Noto(Sans|Serif|Kufi|Naskh|Nastaliq|Looped|Rashi|Traditional)(?!Display)\w*-Regular\.ttf",
    "fonts-dejavu-core": r"DejaVu(Sans|Serif|SansMono)\.ttf",
    "fonts-stix": r"STIXGeneral-Regular\.otf",
    "fonts-freefont-ttf": r"Free(Sans|Serif|Mono)\.ttf",
}
FONT_SUFFIXES = (".ttf", ".otf")

# Unicode ranges never used: the musical-symbol blocks (Byzantine, Western musical symbols,
# Ancient Greek musical notation; Znamenny) and the music signs of Miscellaneous Symbols.
EXCLUDED = ((0x1D000, 0x1D24F), (0x1CF00, 0x1CFCF), (0x2669, 0x266F))
# Unicode general categories that are not a drawn symbol: marks (combining), separators
# (whitespace), control, format, surrogates, private use, unassigned.
SKIPPED_CATEGORIES = ("M", "Z", "C")

EM = 48  # canonical rendering size (px per em)
CANON = 24  # side of the canonical image compared between classes
ALIKE = 0.6  # correlation with the first font's drawing for another font to join a class
DUPLICATE = 0.85  # correlation at which two classes count as the same
MIN_INK_SIDE = 0.2  # longer ink side, in em, below which a glyph is tiny
MAX_FONTS = 6  # fonts per class at most
PADDING = 0.1  # make-shards' default crop padding


def excluded(codepoint: int) -> bool:
    """True for codepoints never made a class: the music blocks and non-drawn categories."""
    if any(lo <= codepoint <= hi for lo, hi in EXCLUDED):
        return True
    return unicodedata.category(chr(codepoint))[0] in SKIPPED_CATEGORIES


def find_fonts(folder: str | Path | None = None) -> list[Path]:
    """The font files the universe draws from, sorted by file name (the first font of a
    codepoint is its class's reference drawing). Without ``folder``: the system's fonts (as
    matplotlib finds them), and every package of ``FONT_PACKAGES`` must be there; with
    ``folder``: every .ttf/.otf under it."""
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{folder}: font folder not found")
        fonts = sorted((p for p in folder.rglob("*") if p.suffix.lower() in FONT_SUFFIXES), key=lambda p: p.name)
        if not fonts:
            raise UserError(f"{folder}: no .ttf or .otf font in the font folder")
        return fonts
    from matplotlib import font_manager

    system = [Path(p) for p in font_manager.findSystemFonts(fontext="ttf")]
    fonts = []
    for package, pattern in FONT_PACKAGES.items():
        found = [p for p in system if re.fullmatch(pattern, p.name)]
        if not found:
            raise UserError(f"{package}: font package not installed (apt-get install {' '.join(FONT_PACKAGES)})")
        fonts += found
    return sorted(set(fonts), key=lambda p: p.name)


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)


def font_codepoints(path: Path) -> set[int]:
    """The codepoints ``path`` maps to a real glyph (not .notdef); empty for an unreadable
    font, which is reported and skipped."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(path, lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
    except (TTLibError, OSError, AssertionError, KeyError) as err:
        print(f"warning: {path.name}: unreadable font skipped ({err})", file=sys.stderr)
        return set()
    return {cp for cp, glyph in cmap.items() if glyph != ".notdef" and not excluded(cp)}


def glyph_mask(path: str, codepoint: int, em: int) -> np.ndarray:
    """The ink of one glyph as floats in [0, 1], cut to its ink box (empty when it has none)."""
    font = _font(path, em)
    text = chr(codepoint)
    x0, y0, x1, y1 = font.getbbox(text)
    margin = 2 + em // 8
    image = Image.new("L", (max(1, x1 - x0) + 2 * margin, max(1, y1 - y0) + 2 * margin), 0)
    ImageDraw.Draw(image).text((margin - x0, margin - y0), text, fill=255, font=font)
    ink = np.asarray(image, dtype=np.float32) / 255.0
    return ink_crop(ink)


def ink_crop(ink: np.ndarray, level: float = 0.25) -> np.ndarray:
    """``ink`` cut to its ink box and scaled to full strength (a hairline that antialiasing
    greyed is still a line); an empty array when there is no ink."""
    peak = float(ink.max()) if ink.size else 0.0
    if peak <= 0:
        return ink[:0, :0]
    rows, cols = np.nonzero(ink > level * peak)
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] / peak


def canonical(ink: np.ndarray) -> np.ndarray:
    """A class's perceptual fingerprint: its ink box padded to a centred square (the aspect
    ratio counts, the size does not), ``CANON`` x ``CANON``, mean removed, unit norm; the dot
    product of two fingerprints is their normalised correlation."""
    h, w = ink.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = ink
    small = np.asarray(Image.fromarray((square * 255).astype(np.uint8)).resize((CANON, CANON), Image.BOX), np.float32)
    small = ndimage.gaussian_filter(small, 0.7).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 0 else small


# ---------------------------------------------------------------------------------------------
# Classes


@dataclass(frozen=True)
class UniverseClass:
    """One class: a codepoint and the fonts that draw it alike (with each font's longer ink
    side per em, to render it at a chosen pixel size), or procedural glyph ``glyph``."""

    name: str
    codepoint: int = -1
    fonts: tuple[str, ...] = ()
    ink_per_em: tuple[float, ...] = ()
    glyph: GlyphClass | None = None

    @property
    def key(self) -> int:
        return self.codepoint if self.glyph is None else 0x200000 + self.glyph.index


def _stratum(codepoint: int) -> tuple[str, int]:
    """Where a codepoint is drawn from, for the round-robin: a letter's script (the first word
    of its name; one stratum however many thousand letters it has, so that Tangut or cuneiform
    do not flood the first classes) or, for symbols, digits and punctuation, its 256-codepoint
    page (a stand-in for the Unicode block: the standard library has no block table)."""
    char = chr(codepoint)
    if unicodedata.category(char).startswith("L"):
        return (unicodedata.name(char, "unnamed").split(" ")[0], codepoint >> 16)
    return ("", codepoint >> 8)


def candidate_order(coverage: dict[int, list[str]], seed: int) -> list[int]:
    """Every covered codepoint once, round-robin over the strata, both shuffled by ``seed``."""
    rng = random.Random(f"universe-order:{seed}")
    strata: dict[tuple[str, int], list[int]] = {}
    for cp in sorted(coverage):
        strata.setdefault(_stratum(cp), []).append(cp)
    groups = [strata[k] for k in sorted(strata)]
    rng.shuffle(groups)
    for group in groups:
        rng.shuffle(group)
    order = []
    for depth in range(max((len(g) for g in groups), default=0)):
        order += [g[depth] for g in groups if depth < len(g)]
    return order


class _NotdefCache:
    """Each font's missing-glyph box, to recognise glyphs drawn as one."""

    def __init__(self):
        self.prints: dict[str, np.ndarray | None] = {}

    def looks_missing(self, path: str, fingerprint: np.ndarray) -> bool:
        if path not in self.prints:
            ink = glyph_mask(path, 0x10FFFD, EM)  # a private-use codepoint no font here maps
            self.prints[path] = canonical(ink) if ink.size else None
        box = self.prints[path]
        return box is not None and float(box @ fingerprint) >= 0.95


def font_class(cp: int, fonts: list[str], notdef: _NotdefCache) -> tuple[UniverseClass, np.ndarray] | None:
    """The class of codepoint ``cp`` and its fingerprint, or None when no font draws it as a
    usable symbol (no ink, tiny, a missing-glyph box)."""
    drawn = []
    for path in fonts:
        ink = glyph_mask(path, cp, EM)
        if ink.size == 0 or max(ink.shape) < MIN_INK_SIDE * EM or ink.sum() < 12:
            continue
        fingerprint = canonical(ink)
        if not fingerprint.any() or notdef.looks_missing(path, fingerprint):
            continue
        drawn.append((path, max(ink.shape) / EM, fingerprint))
    if not drawn:
        return None
    reference = drawn[0][2]
    alike = [(p, r) for p, r, f in drawn if float(f @ reference) >= ALIKE][:MAX_FONTS]
    name = f"U+{cp:04X} {unicodedata.name(chr(cp), '')}".strip()
    return UniverseClass(name, cp, tuple(p for p, _ in alike), tuple(r for _, r in alike)), reference


def procedural_class(index: int, seed: int) -> tuple[UniverseClass, np.ndarray]:
    cls = glyph_class(index, seed)
    return UniverseClass(f"glyph-{seed}-{index:05d}", glyph=cls), canonical(procedural_mask(cls, EM, None))


class DistinctSet:
    """Fingerprints of the classes kept so far; ``add`` keeps a new one only when it correlates
    below ``threshold`` with every kept one."""

    def __init__(self, dim: int = CANON * CANON, threshold: float = DUPLICATE):
        self.matrix = np.zeros((1024, dim), np.float32)
        self.count, self.threshold = 0, threshold

    def add(self, fingerprint: np.ndarray) -> bool:
        if self.count and float((self.matrix[: self.count] @ fingerprint).max()) >= self.threshold:
            return False
        if self.count == len(self.matrix):
            self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
        self.matrix[self.count] = fingerprint
        self.count += 1
        return True


def font_coverage(fonts: list[Path]) -> dict[int, list[str]]:
    """codepoint -> the fonts that map it, in ``fonts`` order."""
    coverage: dict[int, list[str]] = {}
    for path in fonts:
        for cp in sorted(font_codepoints(path)):
            coverage.setdefault(cp, []).append(str(path))
    return coverage


def build_universe(classes: int, seed: int = 0, fonts: list[Path] | None = None,
                   procedural: float = 0.1, where: str = "fonts") -> list[UniverseClass]:
    """``classes`` distinct classes: about ``procedural`` of them procedural glyphs, the rest
    font glyphs in the seed's round-robin order; a one-line error when the fonts hold fewer.
    ``classes=0`` asks for every distinct class there is (to count them)."""
    fonts = find_fonts() if fonts is None else fonts
    coverage = font_coverage(fonts)
    order = candidate_order(coverage, seed)
    want_procedural = round(procedural * classes) if classes else round(procedural * len(order))
    kept, distinct, notdef = [], DistinctSet(), _NotdefCache()
    for index in range(want_procedural):
        cls, fingerprint = procedural_class(index, seed)
        if distinct.add(fingerprint):
            kept.append(cls)
    for cp in order:
        if classes and len(kept) >= classes:
            break
        found = font_class(cp, coverage[cp], notdef)
        if found is not None and distinct.add(found[1]):
            kept.append(found[0])
    if classes and len(kept) < classes:
        raise UserError(f"{where}: --classes {classes}: only {len(kept)} distinct classes can be drawn from these fonts")
    return kept


# ---------------------------------------------------------------------------------------------
# Instances

SPLIT_STREAMS = {"train": 0, "valid": 1, "test": 2}
LABEL_CHARS = "ABCDEFGHKLMNPRSTUVXYZ0123456789"


def _symbol_ink(cls: UniverseClass, rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """The bare symbol, its longer side about ``size`` px, with a stroke weight of its own;
    returns (ink, the font file name or "procedural")."""
    if cls.glyph is not None:  # primitives fill their box loosely: scale the ink to ``size``
        ink, source = ink_crop(procedural_mask(cls.glyph, size, random.Random(int(rng.integers(2**32))))), "procedural"
        scale = size / max(ink.shape)
        shape = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
        ink = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(shape, Image.BILINEAR), np.float32) / 255
    else:
        i = int(rng.integers(len(cls.fonts)))
        ink = glyph_mask(cls.fonts[i], cls.codepoint, max(8, round(size / cls.ink_per_em[i])))
        source = Path(cls.fonts[i]).name
    weight = rng.choice(("thin", "plain", "plain", "bold", "heavy"))
    if weight == "thin":
        thinned = np.clip((ink - 0.4) / 0.6, 0, 1)
        if (thinned > 0.5).sum() >= 0.5 * (ink > 0.5).sum():  # thin strokes stay as they are
            ink = thinned
    elif weight != "plain":
        ink = ndimage.grey_dilation(ink, size=(2, 2) if weight == "bold" else (3, 3))
    return ink, source


def _warp(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``ink`` on a canvas with room around it, turned (up to 10 degrees), scaled, sheared and
    bent by a smooth random displacement (a hand's wobble)."""
    h, w = ink.shape
    margin = int(0.3 * max(h, w)) + 4
    canvas = np.zeros((h + 2 * margin, w + 2 * margin), np.float32)
    canvas[margin : margin + h, margin : margin + w] = ink
    H, W = canvas.shape
    turn, shear = math.radians(rng.uniform(-10, 10)), rng.uniform(-0.15, 0.15)
    sx, sy = rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)
    forward = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]]) @ np.array([[sx, shear], [0, sy]])
    inverse = np.linalg.inv(forward)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    amount = rng.uniform(0.0, 0.035) * max(h, w)
    coarse = rng.normal(0, amount, size=(2, 4, 4))
    bend = [np.asarray(Image.fromarray(c.astype(np.float32), "F").resize((W, H), Image.BICUBIC)) for c in coarse]
    src_x = inverse[0, 0] * (xx - cx) + inverse[0, 1] * (yy - cy) + cx + bend[0]
    src_y = inverse[1, 0] * (xx - cx) + inverse[1, 1] * (yy - cy) + cy + bend[1]
    return ndimage.map_coordinates(canvas, [src_y, src_x], order=1, mode="constant", cval=0.0)


def _context(shape: tuple[int, int], box: tuple[int, int, int, int], rng: np.random.Generator) -> np.ndarray:
    """What surrounds a symbol on a drawing: sometimes a wire through or near it, sometimes a
    short label beside it. ``box`` is the symbol's ink box (x, y, w, h)."""
    H, W = shape
    x, y, w, h = box
    image = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.35:
        width = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            at = y + h / 2 + rng.uniform(-0.6, 0.6) * h / 2
            draw.line([(0, at), (W, at + rng.uniform(-2, 2))], fill=255, width=width)
        else:
            at = x + w / 2 + rng.uniform(-0.6, 0.6) * w / 2
            draw.line([(at, 0), (at + rng.uniform(-2, 2), H)], fill=255, width=width)
    if rng.random() < 0.3:
        label = "".join(rng.choice(list(LABEL_CHARS), size=int(rng.integers(1, 4))))
        font = ImageFont.load_default(max(6, round(rng.uniform(0.2, 0.35) * max(w, h))))
        side = rng.choice(("left", "right", "top", "bottom"))
        gap = rng.uniform(-0.05, 0.08) * max(w, h)
        anchor, at = {"left": ("rm", (x - gap, y + h / 2)), "right": ("lm", (x + w + gap, y + h / 2)),
                      "top": ("mb", (x + w / 2, y - gap)), "bottom": ("mt", (x + w / 2, y + h + gap))}[side]
        draw.text(at, label, fill=255, font=font, anchor=anchor)
    return np.asarray(image, np.float32) / 255.0


def _ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(ink > 0.25 * max(float(ink.max()), 1e-6))
    if rows.size == 0:  # nothing drawn at all: the whole canvas is the box
        return 0, 0, ink.shape[1], ink.shape[0]
    x0, y0 = int(cols.min()), int(rows.min())
    return x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1


def _scan(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Blur, noise and JPEG artefacts, each sometimes, as a scanner and a mailer leave them."""
    if rng.random() < 0.35:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    if rng.random() < 0.5:
        pixels = np.asarray(image, np.float32)
        pixels = pixels + rng.normal(0, rng.uniform(2, 12), pixels.shape[:2])[..., None]
        if rng.random() < 0.3:  # dust and speckle
            speckle = rng.random(pixels.shape[:2]) < rng.uniform(0.002, 0.01)
            pixels[speckle] = 255 - pixels[speckle]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.35:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(25, 86)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def render_instance(cls: UniverseClass, instance: int, seed: int = 0, split: str = "train") -> tuple[Image.Image, dict]:
    """One instance of ``cls`` as an RGB crop in make-shards' frame (ink box + 10% padding),
    about 55-100 px on its longer side (a 46-69 px symbol, turned and padded), and a record of how it was drawn."""
    rng = np.random.default_rng([seed, cls.key, SPLIT_STREAMS[split], instance])
    ink, source = _symbol_ink(cls, rng, int(rng.integers(46, 70)))
    ink = _warp(ink, rng)
    box = _ink_box(ink)
    ink = np.maximum(ink, _context(ink.shape, box, rng))
    crop = padded_crop_box(box, ink.shape[1], ink.shape[0], PADDING)
    ink = ink[crop[1] : crop[3], crop[0] : crop[2], None]
    colour, background = (np.array(c, np.float32) for c in _colours(random.Random(int(rng.integers(2**32)))))
    pixels = background + (colour - background) * ink
    image = _scan(Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8)), rng)
    return image, {"class_name": cls.name, "source": source, "bbox": list(box), "crop": list(crop),
                   "instance": instance, "seed": seed, "split": split}


# ---------------------------------------------------------------------------------------------
# Shard sets


def _render_class(job: tuple[int, UniverseClass, int, dict[str, int], int]) -> dict[str, list]:
    """Every instance of one class, encoded: split -> [(key, members, (w, h))]."""
    from symclr_ft.data.shardwriter import encode_png

    index, cls, seed, counts, label = job
    out: dict[str, list] = {}
    for split, count in counts.items():
        for i in range(count):
            image, record = render_instance(cls, i, seed, split)
            record.update(class_index=label, category_name=cls.name)
            members = {"png": encode_png(image), "cls": str(label).encode("ascii"),
                       "json": json.dumps(record).encode("utf-8")}
            # Keys name the split beyond train: evaluation refuses a crop that is both support
            # and query, and tells them apart by key.
            key = f"universe_{index:05d}_{i:03d}" if split == "train" else f"universe_{index:05d}_{split}_{i:03d}"
            out.setdefault(split, []).append((key, members, image.size))
    return out


def _quiet_worker() -> None:
    """Workers leave Ctrl-C and SIGTERM to the parent (which cleans up and ends them), instead
    of inheriting its handlers and printing a traceback each."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _rendered(classes: list[UniverseClass], seed: int, counts: dict[str, int], offset: int, workers: int):
    """Rendered classes in order; a pool of ``workers`` processes renders ahead, and as each
    instance depends only on its own seed the bytes are the same for any pool size."""
    jobs = [(i, cls, seed, counts, offset + i) for i, cls in enumerate(classes)]
    if workers <= 1:
        yield from map(_render_class, jobs)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers, initializer=_quiet_worker) as pool:
        yield from pool.imap(_render_class, jobs, chunksize=8)


def _universe_stats(writers: dict, sizes: dict[str, list], names: list[str], counts: dict[str, int],
                    base: list[str], mix_with) -> dict:
    """stats.json as make-shards writes it; a mixed set keeps its source's valid and test counts."""
    from symclr_ft.data.shardwriter import size_summary as _summary
    from symclr_ft.data.shardset import load_stats

    splits = {k: v for k, v in load_stats(mix_with).get("splits", {}).items() if k != "train"} if mix_with else {}
    for split, writer in writers.items():
        splits[split] = {"crops": writer.count, "shards": len(writer.files),
                         "per_class": dict.fromkeys(names, counts[split]),
                         "crop_width": _summary([w for w, _ in sizes[split]]),
                         "crop_height": _summary([h for _, h in sizes[split]])}
    return {"splits": splits, "padding": PADDING, "classes": len(base) + len(names),
            "source": "symclr-universe" + (f" + {mix_with}" if mix_with else "")}


def _copy_source(source: Path, folder: Path, train) -> None:
    """valid and test shards copied as they are; train's samples rewritten into ``train``."""
    from symclr_ft.data.shardset import iter_shard, shard_paths

    for path in shard_paths(source, "valid") + shard_paths(source, "test"):
        shutil.copy(path, folder / path.name)
    for path in shard_paths(source, "train"):
        for key, fields in iter_shard(path):
            train.write(key, fields)


def universe_output():
    """What symclr-universe writes into its folder: make-shards' entries, under its own command
    name (io.output_dir's rule: a folder of the user's, or a make-shards set, is not written
    into without --overwrite; an earlier universe is replaced)."""
    from symclr_ft.data.shardwriter import SHARD_OUTPUT
    from symclr_ft.io import OutputKind

    return OutputKind("symclr-universe", SHARD_OUTPUT.names, SHARD_OUTPUT.patterns)


def write_universe(out: str | Path, classes: list[UniverseClass], per_class: int, valid_per_class: int = 2,
                   seed: int = 0, mix_with: str | Path | None = None, workers: int = 2,
                   shard_size: int = 1000, overwrite: bool = False) -> dict:
    """Write the universe as a make-shards set into ``out`` (complete or not at all, by the
    output rule of ``io.output_dir``: a new or empty folder or an earlier universe; any other
    folder only with ``overwrite``, and then only shard files are replaced): ``per_class``
    train and ``valid_per_class`` valid instances of every class. With ``mix_with``: a copy of
    that make-shards set whose train split also holds the universe classes, appended after its
    own (valid and test copied unchanged). Returns the stats (stats.json)."""
    from symclr_ft.data.shardwriter import ShardSequence
    from symclr_ft.data.shardset import load_classes, verify_split
    from symclr_ft.io import output_dir

    base = load_classes(mix_with) if mix_with else []
    for split in ("train", "valid", "test") if mix_with else ():
        verify_split(mix_with, split)
    counts = {"train": per_class} if mix_with else {"train": per_class, "valid": valid_per_class}
    counts = {k: v for k, v in counts.items() if v > 0}
    names = [c.name for c in classes]
    with output_dir(out, universe_output(), overwrite) as tmp:
        writers = {split: ShardSequence(tmp, split, shard_size) for split in counts}
        sizes: dict[str, list] = {split: [] for split in counts}
        try:
            if mix_with:
                _copy_source(Path(mix_with), tmp, writers["train"])
            for rendered in _rendered(classes, seed, counts, len(base), workers):
                for split, samples in rendered.items():
                    for key, members, size in samples:
                        writers[split].write(key, members)
                        sizes[split].append(size)
        finally:
            for writer in writers.values():
                writer.close()
        stats = _universe_stats(writers, sizes, names, counts, base, mix_with)
        stats["universe"] = {"classes": len(classes), "per_class": per_class, "valid_per_class": counts.get("valid", 0),
                             "seed": seed, "fonts": sorted({Path(f).name for c in classes for f in c.fonts})}
        entries = [{"index": i, "coco_id": i + 1, "name": n} for i, n in enumerate(base + names)]
        (tmp / "classes.json").write_text(json.dumps({"classes": entries}, indent=2) + "\n")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


# ---------------------------------------------------------------------------------------------
# Command


def build_parser():
    from symclr_ft.errors import ArgumentParser, bounded_float, bounded_int

    p = ArgumentParser(prog="symclr-universe",
                       description="Render font-glyph and procedural symbol classes into a make-shards set.")
    p.add_argument("--out", required=True, help="new shards folder (or an earlier universe: replaced)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not an earlier universe (only shard files, "
                   "classes.json and stats.json are replaced)")
    p.add_argument("--classes", type=bounded_int(1, 1_000_000), required=True, help="distinct classes to render")
    p.add_argument("--per-class", type=bounded_int(1, 100_000), default=16, help="train instances per class")
    p.add_argument("--valid-per-class", type=bounded_int(0, 100_000), default=2,
                   help="valid instances per class (not with --mix-with)")
    p.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0)
    p.add_argument("--fonts", default=None, help="font folder to use instead of the system's font packages")
    p.add_argument("--procedural", type=bounded_float(0.0, 1.0), default=0.1,
                   help="share of procedural glyph classes, in [0, 1]")
    p.add_argument("--mix-with", default=None, help="make-shards set to copy and append the classes to")
    p.add_argument("--workers", type=bounded_int(1, 1024), default=2,
                   help="rendering processes (the output does not depend on it)")
    return p


def _check_args(args) -> None:
    """What the parser cannot see; then the output folder, before any class is chosen."""
    from symclr_ft.io import check_output_dir

    if args.mix_with and Path(args.out).resolve() == Path(args.mix_with).resolve():
        raise UserError(f"{args.out}: must differ from --mix-with")
    check_output_dir(args.out, universe_output(), args.overwrite)


def main(argv: list[str] | None = None) -> int:
    from symclr_ft.errors import report_user_errors, sigterm_as_interrupt

    @report_user_errors
    def run() -> int:
        args = build_parser().parse_args(argv)
        _check_args(args)
        start = time.perf_counter()
        # only procedural classes (--procedural 1) need no font at all
        fonts = find_fonts(args.fonts) if args.procedural < 1 else []
        classes = build_universe(args.classes, args.seed, fonts, args.procedural, where=args.fonts or "system fonts")
        chosen = time.perf_counter()
        with sigterm_as_interrupt():
            stats = write_universe(args.out, classes, args.per_class, args.valid_per_class, args.seed,
                                   args.mix_with, args.workers, overwrite=args.overwrite)
        done = time.perf_counter()
        splits = ", ".join(f"{k}: {v['crops']} crops" for k, v in stats["splits"].items())
        print(f"{args.out}: {len(classes)} universe classes ({splits}); classes chosen in "
              f"{chosen - start:.1f} s, rendered in {done - chosen:.1f} s")
        return 0

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
