"""report.html of symclr-spot, opened in a real browser (headless Chromium): the page must show
the drawings with their boxes and the counts table, not a blank page; its sliders must count
as report.count_detections does, class by class, and save the file --thresholds reads."""

from __future__ import annotations

import csv
import html as htmllib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
from PIL import Image

from symclr_ft.data import synth
from symclr_ft.use.spot.spotting import Drawing, Exemplars, SpotConfig, write_outputs
from symclr_ft.use.spot.report import (
    FALSE_COLOUR, OVERLAY_MAX_SIDE, class_colours, count_detections, count_thresholds, draw_overlay, is_counted,
    match_to_truth,
)
from symclr_ft.use.spot.thresholds import apply_thresholds, read_thresholds
from use.spot.test_spotting import cli_run, run, tiny_model  # noqa: F401  (the command's fixtures)


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


# --------------------------------------------------------------------------- the review (script)


def dump_dom(chromium: str, page: Path, fragment: str = "") -> str:
    """The page's DOM after its script ran, opened at ``#fragment`` (the hash moves sliders)."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert "</html>" in dom, "chromium dumped no page"
    return dom


def shown_counts(dom: str) -> dict[tuple[str, str], str]:
    """The counts table as shown: (drawing file, class name) -> its cell ("n" or "n / true")."""
    table = re.search(r'<table id="counts">(.*?)</table>', dom, re.S).group(1)
    rows = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", table)]
    names = [re.sub(r"<[^>]+>", "", c) for c in rows[0][1:]]
    return {(row[0], name): cell for row in rows[1:] for name, cell in zip(names, row[1:])}


def tallies(dom: str) -> list[str]:
    return re.findall(r'<span class="tally">(.*?)</span>', dom)


def review_fixture(tmp_path: Path, size=(320, 240)):
    """Three classes on two drawings with ground truth; detections near most true boxes and
    elsewhere, with scores spread over [0.3, 1] (seeded), so that every threshold between
    0.3 and 1 changes some count, some match and some miss."""
    rng = np.random.default_rng(0)
    ex = Exemplars(torch.zeros(3, 4), torch.tensor([0, 1, 2]), torch.ones(3, 2), ["alpha", "beta", "gamma"], [1, 2, 3])
    drawings, results = [], []
    for k in range(2):
        Image.new("RGB", size, synth.BACKGROUND).save(tmp_path / f"d{k}.png")
        truth = [(int(rng.integers(1, 4)), [float(x), float(y), 30.0, 30.0])
                 for x in range(10, size[0] - 40, 60) for y in range(10, size[1] - 40, 60)]
        drawings.append(Drawing(tmp_path / f"d{k}.png", 10 + k, f"d{k}.png", truth))
        for cat, (x, y, w, h) in truth:
            if rng.random() < 0.8:  # found, at some score; sometimes as the wrong class
                label = cat if rng.random() < 0.8 else int(rng.integers(1, 4))
                results.append({"image_id": 10 + k, "category_id": label, "bbox": [x + 2, y - 1, w, h],
                                "score": round(float(rng.uniform(0.3, 1.0)), 5)})
        for _ in range(6):  # on nothing
            results.append({"image_id": 10 + k, "category_id": int(rng.integers(1, 4)),
                            "bbox": [float(rng.uniform(0, size[0] - 30)), float(rng.uniform(0, size[1] - 30)), 25, 25],
                            "score": round(float(rng.uniform(0.3, 1.0)), 5)})
    results[0]["score"] = 0.45  # exactly at a threshold the tests move to: counted
    out = tmp_path / "out"
    out.mkdir()
    cfg = SpotConfig(count_score=0.7)
    write_outputs(out, drawings, ex, results, [], cfg)
    return out, drawings, ex, results


def expected_view(drawings, ex, results, count_score: float, own: dict[str, float]):
    """What the page must show at these thresholds, from the Python rules: the counts table
    cells and each drawing's tally against the ground truth."""
    cfg = SpotConfig(count_score=count_score, class_count_scores=own)
    per_class = count_thresholds(cfg, ex)
    counts = count_detections(results, count_score, per_class)
    cells = {}
    for d in drawings:
        for cat, name in zip(ex.category_ids, ex.class_names):
            true = sum(c == cat for c, _ in d.truth)
            cells[(d.file_name, name)] = f"{counts.get((d.image_id, cat), 0)} / {true}"
    texts = []
    for d in drawings:
        rows = [r for r in results if r["image_id"] == d.image_id and is_counted(r, count_score, per_class)]
        _, t = draw_overlay(Image.new("RGB", (8, 8)), rows, dict.fromkeys(ex.category_ids, (0, 0, 0)), d.truth)
        texts.append(f"{t['found']} found, {t['false']} false (magenta cross), {t['missed']} missed (white box)")
    return cells, texts


def test_the_global_slider_counts_as_count_detections(chromium, tmp_path):
    out, drawings, ex, results = review_fixture(tmp_path)
    seen = set()
    for t in (0.7, 0.45, 0.9):
        dom = dump_dom(chromium, out / "report.html", f"count_score={t}")
        cells, texts = expected_view(drawings, ex, results, t, {})
        assert shown_counts(dom) == cells and tallies(dom) == texts
        total = sum(count_detections(results, t).values())
        assert f'<span id="total">{total}</span>' in dom
        seen.add(total)
    assert len(seen) == 3  # each threshold showed other counts: the slider did move them


def test_a_class_slider_changes_only_that_class(chromium, tmp_path):
    out, drawings, ex, results = review_fixture(tmp_path)
    alone = shown_counts(dump_dom(chromium, out / "report.html", "count_score=0.5"))
    dom = dump_dom(chromium, out / "report.html", "count_score=0.5&class.beta=0.85")
    moved = shown_counts(dom)
    cells, texts = expected_view(drawings, ex, results, 0.5, {"beta": 0.85})
    assert moved == cells and tallies(dom) == texts
    changed = {name for (_, name), cell in moved.items() if cell != alone[(_, name)]}
    assert changed == {"beta"}


def test_saved_thresholds_are_the_file_format(chromium, tmp_path):
    """The "Save thresholds" button downloads a Blob: the test page catches the Blob's text
    and the download's name (the page's own script, then a stub, then a click)."""
    out, drawings, ex, results = review_fixture(tmp_path)
    saved = save_from_page(chromium, out, "count_score=0.55&class.gamma=0.8&class.alpha=0.95")
    assert saved["name"] == "thresholds.json" and saved["type"] == "application/json"
    assert json.loads(saved["text"]) == {"count_score": 0.55, "classes": {"alpha": 0.95, "gamma": 0.8}}
    cfg = SpotConfig()
    apply_thresholds(cfg, read_thresholds(json.loads(saved["text"])), ex.class_names)
    assert cfg.count_score == 0.55 and cfg.count_score_of("gamma") == 0.8 and cfg.count_score_of("beta") == 0.55


def test_saved_thresholds_keep_the_runs_box_scales(chromium, tmp_path):
    """A run whose per-class calibration rescaled a class's boxes saves those scales with the
    thresholds (the boxes decide NMS: the rerun counts as the run did)."""
    _, drawings, ex, results = review_fixture(tmp_path)
    scaled = tmp_path / "scaled"
    scaled.mkdir()
    write_outputs(scaled, drawings, ex, results, [], SpotConfig(count_score=0.7, class_box_scales={"beta": 1.3}))
    saved = save_from_page(chromium, scaled, "count_score=0.6")
    assert json.loads(saved["text"]) == {"count_score": 0.6, "classes": {}, "box_scales": {"beta": 1.3}}


SAVE_CATCHER = """<script>
(() => {
  const seen = {};
  window.Blob = class extends Blob {
    constructor(parts, opts) { super(parts, opts); seen.text = parts.join(""); seen.type = opts.type; }
  };
  HTMLAnchorElement.prototype.click = function () { seen.name = this.download; };
  document.getElementById("save").click();
  const pre = document.createElement("pre");
  pre.id = "caught";
  pre.textContent = JSON.stringify(seen);
  document.body.appendChild(pre);
})();
</script></body>"""


def save_from_page(chromium: str, out: Path, fragment: str) -> dict:
    """Click "Save thresholds" on report.html at ``#fragment``: the Blob's text and type and
    the download's file name."""
    page = out / "save-test.html"
    page.write_text((out / "report.html").read_text().replace("</body>", SAVE_CATCHER))
    dom = dump_dom(chromium, page, fragment)
    caught = re.search(r'<pre id="caught">(.*?)</pre>', dom, re.S).group(1)
    return json.loads(htmllib.unescape(caught))


def test_boxes_of_a_reduced_sheet_are_scaled(chromium, tmp_path):
    out, drawings, ex, results = review_fixture(tmp_path, size=(OVERLAY_MAX_SIDE + 200, 200))
    dom = dump_dom(chromium, out / "report.html", "count_score=0.3")
    svg = re.search(r'<svg viewBox="0 0 (\d+) (\d+)"[^>]*>(.*?)</svg>', dom, re.S)
    assert svg.group(1, 2) == (str((OVERLAY_MAX_SIDE + 200 + 1) // 2), "100")  # reduced by 2
    assert Image.open(out / "overlays" / "plain" / "00000.png").size == (2148, 100)
    first = next(r for r in results if r["image_id"] == drawings[0].image_id)
    rect = re.search(r'<rect x="([\d.]+)" y="([\d.-]+)" width="([\d.]+)" height="([\d.]+)"', svg.group(3))
    assert [float(v) for v in rect.groups()] == pytest.approx([v / 2 for v in first["bbox"]])
    assert 'src="overlays/plain/00000.png"' in dom


def test_without_its_script_the_page_shows_the_counts_and_overlays(chromium, tmp_path):
    out, drawings, ex, results = review_fixture(tmp_path)
    static = out / "static.html"
    static.write_text(re.sub(r"<script>.*?</script>", "", (out / "report.html").read_text(), flags=re.S))
    dom = dump_dom(chromium, static)
    assert '<aside id="review" hidden="">' in dom and 'src="overlays/00000.png"' in dom
    shown = shown_counts(dom)
    cells, _ = expected_view(drawings, ex, results, 0.7, {})
    assert shown and all(cells[key] == cell for key, cell in shown.items())


def test_saved_thresholds_round_trip_through_the_command(chromium, cli_run, tiny_model, synth_coco, tmp_path):
    """symclr-spot's page, sliders moved, thresholds saved, the command the page shows run with
    them: its counts.csv is what the page counted, and what count_detections gives."""
    first, _ = cli_run  # counted from --count-score 0.9
    out = tmp_path / "first"
    shutil.copytree(first, out)
    rows = json.loads((out / "detections.json").read_text())
    categories = json.loads((synth_coco / "test" / "_annotations.coco.json").read_text())["categories"]
    name_of = {c["id"]: c["name"] for c in categories}
    busiest = max(name_of, key=lambda c: sum(r["category_id"] == c and r["score"] >= 0.8 for r in rows))
    fragment = f"count_score=0.8&class.{quote(name_of[busiest])}=0.95"
    saved = save_from_page(chromium, out, fragment)
    page = shown_counts(dump_dom(chromium, out / "report.html", fragment))
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(saved["text"])

    command = re.search(r'"command":"((?:[^"\\]|\\.)*)"', (out / "report.html").read_text()).group(1)
    args = shlex.split(json.loads(f'"{command}"'))
    assert args[0] == "symclr-spot" and args[-2:] == ["--thresholds", "thresholds.json"]
    args[args.index("--out") + 1], args[-1] = str(tmp_path / "again"), str(thresholds)
    result = run([sys.executable, "-m", "symclr_ft.use.spot.spotting", *args[1:]])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"from {thresholds}" in result.stdout

    again = list(csv.DictReader(open(tmp_path / "again" / "counts.csv")))
    expected = count_detections(rows, 0.8, {busiest: 0.95})
    ids = {c["name"]: c["id"] for c in categories}
    assert {(r["file"], r["class"]): int(r["count"]) for r in again} == {
        (r["file"], r["class"]): expected.get((int(r["image_id"]), ids[r["class"]]), 0) for r in again}
    for (file, name), cell in page.items():
        shown = int(cell.split(" / ")[0])
        assert shown == next(int(r["count"]) for r in again if (r["file"], r["class"]) == (file, name))
    assert (tmp_path / "again" / "counts.csv").read_text() != (first / "counts.csv").read_text()
