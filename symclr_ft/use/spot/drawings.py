"""Where drawings come from: a COCO split (with its boxes as ground truth), a folder of images
and PDF sheet sets, or one PDF (every page a drawing, rasterised with pypdfium2), decoded to
RGB with one-line errors."""

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


PDF_SUFFIX = ".pdf"
MAX_PAGE = 100_000  # --pages beyond: a typo, not a sheet set
DEFAULT_DPI = 150.0  # PDF pages: enough for symbols of a few millimetres, a tenth of an A0's 300 dpi pixels


@dataclass
class Drawing:
    """One input drawing: where it is, its id in the output, and its ground truth if any. A PDF
    page has its 0-based ``page`` and the ``dpi`` it is rasterised at; its ``file_name`` is
    ``<file>:<page number>``."""

    path: Path
    image_id: int
    file_name: str
    truth: list[tuple[int, list[float]]] | None = None  # (category id, [x, y, w, h])
    page: int | None = None
    dpi: float = DEFAULT_DPI


def parse_pages(text: str) -> set[int]:
    """``--pages``: 1-based page numbers and ranges, ``1-3,7`` -> {1, 2, 3, 7}."""
    pages: set[int] = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise UserError(f"--pages={text}: expected page numbers and ranges like 1-3,7") from None
        if not 1 <= first <= last <= MAX_PAGE:
            raise UserError(f"--pages={text}: pages count from 1 to {MAX_PAGE:,}, ranges go up ({part.strip()})")
        pages.update(range(first, last + 1))
    return pages


def _pdfium():
    try:
        import pypdfium2
    except ImportError:
        raise UserError("PDF drawings need the pypdfium2 package: pip install -e '.[spot]'") from None
    return pypdfium2


def pdf_page_count(path: Path) -> int | None:
    """Pages of a PDF; None when it cannot be opened (broken, encrypted): it is then listed as
    one drawing that fails to decode, with the reason."""
    pdfium = _pdfium()
    try:
        pdf = pdfium.PdfDocument(str(path))
    except (pdfium.PdfiumError, OSError):
        return None
    try:
        return len(pdf)
    finally:
        pdf.close()


def pdf_drawings(path: Path, first_id: int, dpi: float, pages: set[int] | None) -> list[Drawing]:
    """The pages of one PDF as drawings (only ``pages``, 1-based, when given), ids from
    ``first_id``."""
    count = pdf_page_count(path)
    numbers = [1] if count is None else [k for k in range(1, count + 1) if pages is None or k in pages]
    return [Drawing(path, first_id + i, f"{path.name}:{k}", page=k - 1, dpi=dpi) for i, k in enumerate(numbers)]


def render_pdf_page(path: Path, page: int, dpi: float) -> Image.Image:
    """One PDF page rasterised at ``dpi`` on white; a page that cannot be read or would exceed
    MAX_PIXELS is a UserError naming the file and page."""
    pdfium = _pdfium()
    where = f"{path}: page {page + 1}"
    try:
        pdf = pdfium.PdfDocument(str(path))
    except (pdfium.PdfiumError, OSError) as err:
        raise UserError(f"{path}: cannot open PDF ({err})") from None
    try:
        if page >= len(pdf):
            raise UserError(f"{where}: the file has {len(pdf)} pages")
        sheet = pdf[page]
        width, height = sheet.get_size()  # points, 1/72 inch
        scale = dpi / 72.0
        if width * height * scale * scale > MAX_PIXELS:
            raise UserError(f"{where}: {width * scale:.0f} x {height * scale:.0f} px at {dpi:g} dpi is more than "
                            f"{MAX_PIXELS:,} pixels; lower --dpi")
        return sheet.render(scale=scale, fill_color=(255, 255, 255, 255)).to_pil().convert("RGB")
    except pdfium.PdfiumError as err:
        raise UserError(f"{where}: cannot render ({err})") from None
    finally:
        pdf.close()


def open_drawing(drawing: Drawing) -> Image.Image:
    """A drawing's RGB pixels: its image file, or its PDF page rasterised at its dpi."""
    if drawing.page is not None:
        return render_pdf_page(drawing.path, drawing.page, drawing.dpi)
    return open_rgb(drawing.path)


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


def list_drawings(source: Path, dpi: float = DEFAULT_DPI, pages: set[int] | None = None) -> list[Drawing]:
    """Drawings of a COCO split (json or split folder; with their ids and ground truth), of one
    PDF (each page, or ``pages``, 1-based), or of a plain folder of images and PDFs (ids 0.. in
    file-name order, a PDF's pages in order; no ground truth). PDF pages are rasterised at
    ``dpi``."""
    if source.is_file() and source.suffix.lower() == PDF_SUFFIX:
        return pdf_drawings(source, 0, dpi, pages)
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
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, PDF_SUFFIX)
                   and (p.is_file() or p.is_symlink()))  # a broken link is skipped and listed
    if not files:
        raise UserError(f"{source}: no drawings (no image or PDF files, no {ANNOTATIONS_FILE})")
    drawings: list[Drawing] = []
    for p in files:
        if p.suffix.lower() == PDF_SUFFIX and p.exists():
            drawings.extend(pdf_drawings(p, len(drawings), dpi, pages))
        else:
            drawings.append(Drawing(p, len(drawings), p.name))
    return drawings
