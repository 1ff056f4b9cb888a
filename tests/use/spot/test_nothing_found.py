"""symclr-spot on drawings where nothing is found: it says so, per drawing, and why."""

from __future__ import annotations

from PIL import Image

from symclr_ft.data import synth
from use.spot.test_spotting import canvas, exemplar_sheet, plant, run, spot_cmd, tiny_model  # noqa: F401


def test_empty_drawings_are_named_with_the_reason(tiny_model, tmp_path):
    """A blank sheet: no candidates at all. A sheet with a symbol but a count threshold no
    score reaches: its candidates, all below the threshold, with the best score seen. Both on
    the terminal and under the drawing in report.html; a drawing with a find is not named."""
    folder, _ = exemplar_sheet(tmp_path, [0, 1])
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    Image.new("RGB", (200, 160), synth.BACKGROUND).save(drawings / "blank.png")
    other = canvas(200, 160)
    plant(other, 5, 80, 50)  # a class without exemplar
    other.save(drawings / "other.png")
    result = run(spot_cmd(tiny_model, folder, drawings, tmp_path / "out", "--count-score", "0.999"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split(": ", 1)[0]: line for line in result.stdout.splitlines()}
    assert "nothing found: no candidates (no ink stands out from the paper" in lines["blank.png"]
    assert "no exemplar correlates" in lines["blank.png"]
    why = lines["other.png"]
    assert "nothing found:" in why and "candidates, all below the count threshold 0.999 (best score 0." in why
    page = (tmp_path / "out" / "report.html").read_text()
    assert "nothing found: no candidates" in page and "all below the count threshold 0.999" in page

    found = run(spot_cmd(tiny_model, folder, drawings, tmp_path / "out2", "--count-score", "0.0"))
    assert found.returncode == 0, found.stderr[-2000:]
    assert "other.png: nothing found" not in found.stdout and "blank.png: nothing found" in found.stdout
