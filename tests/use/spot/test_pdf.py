"""symclr-spot on PDF sheet sets: every page a drawing rasterised at --dpi, --pages, a broken
PDF skipped and listed, one takeoff row per page and class, and two processes as one."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest
from PIL import Image

from symclr_ft.use.spot.drawings import list_drawings, parse_pages
from symclr_ft.errors import UserError
from use.spot.test_spotting import BIN, canvas, exemplar_sheet, iou, plant, run, spot_cmd, tiny_model  # noqa: F401

RESOLUTION = 100  # dpi the test PDF's pages are made at: rasterised at it, a page is its PNG


def sheet_pages() -> list[Image.Image]:
    """Two drawings with planted symbols, in a palette (PIL writes a palette image into a PDF
    losslessly, so the PNG and the page hold the same pixels)."""
    pages = []
    for places in ([(0, 40, 30), (1, 150, 60), (0, 220, 140)], [(1, 60, 120), (0, 180, 40)]):
        image = canvas(300, 220)
        for design, x, y in places:
            plant(image, design, x, y)
        pages.append(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    return pages


@pytest.fixture(scope="module")
def pdf_set(tmp_path_factory) -> Path:
    """A folder with the two pages as a 2-page PDF and the first page as a PNG; exemplars."""
    root = tmp_path_factory.mktemp("pdf")
    first, second = sheet_pages()
    (root / "pdf").mkdir()
    first.save(root / "pdf" / "set.pdf", save_all=True, append_images=[second], resolution=RESOLUTION)
    (root / "png").mkdir()
    first.convert("RGB").save(root / "png" / "page1.png")
    exemplar_sheet(root, [0, 1])
    return root


def detections(out: Path) -> list[dict]:
    return json.loads((out / "detections.json").read_text())


def test_pages_and_ranges_are_listed(pdf_set, tmp_path):
    drawings = list_drawings(pdf_set / "pdf" / "set.pdf", dpi=RESOLUTION)
    assert [(d.file_name, d.page, d.image_id) for d in drawings] == [("set.pdf:1", 0, 0), ("set.pdf:2", 1, 1)]
    assert [d.file_name for d in list_drawings(pdf_set / "pdf", pages={2, 5})] == ["set.pdf:2"]
    assert parse_pages("1-3,7") == {1, 2, 3, 7}
    for bad in ("0", "3-1", "a", "1-"):
        with pytest.raises(UserError):
            parse_pages(bad)


@pytest.mark.parametrize("dpi", [RESOLUTION, 1.25 * RESOLUTION])
def test_a_pdf_page_gives_the_boxes_of_its_png_scaled_by_dpi(pdf_set, tiny_model, tmp_path, dpi):
    png = run(spot_cmd(tiny_model, pdf_set / "exemplars", pdf_set / "png", tmp_path / "png", "--count-score", "0.8"))
    pdf = run(spot_cmd(tiny_model, pdf_set / "exemplars", pdf_set / "pdf" / "set.pdf", tmp_path / "pdf",
                       "--count-score", "0.8", "--dpi", str(dpi), "--pages", "1"))
    assert png.returncode == 0 and pdf.returncode == 0, png.stderr[-1500:] + pdf.stderr[-1500:]
    scale = dpi / RESOLUTION
    want = [r for r in detections(tmp_path / "png") if r["score"] >= 0.8]
    got = [r for r in detections(tmp_path / "pdf") if r["score"] >= 0.8]
    assert len(want) == 3 and len(got) == len(want)
    for r in want:
        box = [v * scale for v in r["bbox"]]
        same = [g for g in got if g["category_id"] == r["category_id"] and iou(g["bbox"], box) >= 0.7]
        assert len(same) == 1
        if scale == 1:
            assert same[0]["bbox"] == r["bbox"]
    with open(tmp_path / "pdf" / "counts.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["file"], r["page"]) for r in rows} == {("set.pdf", "1")}
    assert sum(int(r["count"]) for r in rows) == 3


def test_a_broken_pdf_is_skipped_and_listed(pdf_set, tiny_model, tmp_path):
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    good = (pdf_set / "pdf" / "set.pdf").read_bytes()
    (drawings / "good.pdf").write_bytes(good)
    (drawings / "broken.pdf").write_bytes(good[: len(good) // 3])
    result = run(spot_cmd(tiny_model, pdf_set / "exemplars", drawings, tmp_path / "out", "--dpi", str(RESOLUTION)))
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "broken.pdf" in skipped and "cannot open PDF" in skipped and "good.pdf" not in skipped
    assert {r["image_id"] for r in detections(tmp_path / "out")} <= {1, 2}  # good.pdf's two pages
    with open(tmp_path / "out" / "counts.csv") as f:
        pages = {(r["file"], r["page"]) for r in csv.DictReader(f)}
    assert pages == {("broken.pdf", "1"), ("good.pdf", "1"), ("good.pdf", "2")}


def test_two_processes_count_a_pdf_set_as_one(pdf_set, tiny_model, tmp_path):
    """Pages split between two processes: each page once, the same detections and takeoff."""
    args = spot_cmd(tiny_model, pdf_set / "exemplars", pdf_set / "pdf", tmp_path / "one", "--dpi", str(RESOLUTION))
    one = run(args)
    with socket.socket() as free:  # a port of its own: other torchrun jobs on the machine use 29500
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    two = run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(port), "-m", "symclr_ft.use.spot.spotting",
               *spot_cmd(tiny_model, pdf_set / "exemplars", pdf_set / "pdf", tmp_path / "two", "--dpi",
                         str(RESOLUTION))[3:]])
    assert one.returncode == 0 and two.returncode == 0, one.stderr[-1500:] + two.stderr[-1500:]
    assert detections(tmp_path / "two") == detections(tmp_path / "one")
    assert (tmp_path / "two" / "counts.csv").read_text() == (tmp_path / "one" / "counts.csv").read_text()
