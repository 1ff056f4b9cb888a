"""report.html of symclr-spot, opened in a real browser (headless Chromium): the page must show
the drawings with their boxes and the counts table, not a blank page."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from symclr_ft.data import synth
from symclr_ft.use.spot.spotting import Drawing, Exemplars, SpotConfig, write_outputs
from symclr_ft.use.spot.report import FALSE_COLOUR, class_colours, draw_overlay, match_to_truth


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; installed with apt-get (Debian package ``chromium``) when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode:
            # a fresh machine has no package lists yet
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium is not installed and apt-get could not install it (no root or no apt)")
    return found


def fixture_outputs(tmp_path: Path) -> tuple[Path, list[tuple[int, int, int]]]:
    """Two drawings: one true detection per class, one false positive, one missed symbol."""
    drawings = []
    for k in range(2):
        image = Image.new("RGB", (320, 240), synth.BACKGROUND)
        image.save(tmp_path / f"d{k}.png")
        truth = [(1, [20.0, 20.0, 40.0, 40.0]), (2, [120.0, 60.0, 40.0, 40.0]), (2, [200.0, 150.0, 40.0, 40.0])]
        drawings.append(Drawing(tmp_path / f"d{k}.png", 10 + k, f"d{k}.png", truth))
    ex = Exemplars(torch.zeros(2, 4), torch.tensor([0, 1]), torch.ones(2, 2), ["alpha", "beta"], [1, 2])
    results = []
    for d in drawings:
        results += [
            {"image_id": d.image_id, "category_id": 1, "bbox": [21, 21, 40, 40], "score": 0.9},
            {"image_id": d.image_id, "category_id": 2, "bbox": [121, 59, 40, 40], "score": 0.8},
            {"image_id": d.image_id, "category_id": 1, "bbox": [240, 20, 40, 40], "score": 0.7},  # false
        ]  # the box at (200, 150) is missed
    out = tmp_path / "out"
    out.mkdir()
    write_outputs(out, drawings, ex, results, [("broken.png", "cannot decode image")], SpotConfig(count_score=0.5))
    return out, class_colours(2)


def test_matching_marks_false_positives_and_misses():
    truth = [(1, [0.0, 0.0, 10.0, 10.0]), (2, [50.0, 50.0, 10.0, 10.0])]
    rows = [{"category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.9},
            {"category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.8}]  # right place, wrong class
    assert match_to_truth(rows, truth) == ([True, False], [True, False])
    image = Image.new("RGB", (80, 80))
    _, tally = draw_overlay(image, rows, {1: (255, 0, 0), 2: (0, 255, 0)}, truth)
    assert tally == {"found": 1, "false": 1, "missed": 1}


def colour_rows(pixels: np.ndarray, colour, tol: int = 40) -> np.ndarray:
    """Row indices of pixels close to ``colour``."""
    near = (np.abs(pixels.astype(int) - np.array(colour)).max(axis=2) <= tol)
    return np.nonzero(near)[0]


def test_report_renders_drawings_boxes_and_counts_in_chromium(chromium, tmp_path):
    out, colours = fixture_outputs(tmp_path)
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={shot}", "--window-size=900,1600", (out / "report.html").resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # not a blank page
    magenta = colour_rows(pixels, FALSE_COLOUR)
    alpha, beta = colour_rows(pixels, colours[0]), colour_rows(pixels, colours[1])
    assert magenta.size and alpha.size and beta.size  # boxes of both classes and a false positive
    dark = np.bincount(colour_rows(pixels, synth.BACKGROUND, tol=6), minlength=pixels.shape[0])
    drawing_rows = np.nonzero(dark > 200)[0]  # rows crossing a drawing (320 px wide, dark)
    assert drawing_rows.size > 150  # the drawings themselves are on the page
    # the counts table (its class swatches) comes before the first drawing on the page
    assert alpha.min() < drawing_rows.min() and beta.min() < drawing_rows.min()
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (out / "report.html").resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'id="counts"' in dom and '<td class="off">2 / 1</td>' in dom and "broken.png" in dom
