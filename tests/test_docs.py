"""The docs anyone can rerun: no absolute paths of one machine in README.md and docs/, every
code path they name exists, every table of docs/RESULTS.md can be asked for by id from
bench/reproduce.sh, and the README's Python example runs as written."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A path starts with "/" at the start of a word (after a space, quote, bracket, "=", ":" or ",").
ABSOLUTE = re.compile(r"""(?:^|(?<=[\s`'"(\[=:,]))(/[A-Za-z0-9_.~-][^\s`'")\],;]*)""")
# Named as input the commands refuse (docs/RELIABILITY.md), not as paths to run anything with.
REFUSED_EXAMPLES = {"/etc/passwd", "/proc", "/sys"}


def absolute_paths(text: str) -> list[str]:
    """Absolute paths outside the repository: not /dev/null, not a refused-input example, not
    a path inside the repository written from its root (/docs/RESULTS.md)."""
    found = []
    for match in ABSOLUTE.finditer(text):
        path = match.group(1).rstrip(".:")
        first = path.split("/")[1]
        if path == "/dev/null" or path in REFUSED_EXAMPLES or (ROOT / first).exists():
            continue
        found.append(path)
    return found


def test_the_path_finder_finds_what_it_should():
    text = ("run `make-shards --out /tmp/x` and SYMCLR_DATA=/work/cache/ff; see (/home/me/a.md) "
            "but not https://example.com/a/b, runs/<name>/wandb, 2 / 3, /dev/null or /docs/USAGE.md")
    assert absolute_paths(text) == ["/tmp/x", "/work/cache/ff", "/home/me/a.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_absolute_paths_outside_the_repository(doc):
    lines = [f"{doc.name}:{i}: {path}" for i, line in enumerate(doc.read_text().splitlines(), 1)
             for path in absolute_paths(line)]
    assert not lines, "write these relative to the repository (shards/..., runs/...) or as " \
                      "an environment variable the doc sets:\n" + "\n".join(lines)


CODE_PATH = re.compile(r"(?<![\w/.-])((?:symclr_ft|tests|bench|configs|launch|examples)/[\w/.*-]+\.(?:py|sh|yaml))")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_code_paths_named_in_the_docs_exist(doc):
    """Catches paths left stale by a move (``symclr_ft/predict.py`` is ``symclr_ft/use/predict.py``)."""
    missing = sorted({p for p in CODE_PATH.findall(doc.read_text())
                      if not glob.glob(str(ROOT / p))})
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


# --------------------------------------------------------------------------- bench/reproduce.sh


def heading_id(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens; a
    repeated one gets -1, -2, ..."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return f"{slug}-{n}" if n else slug


def table_ids(markdown: str) -> list[str]:
    """Ids of the headings that have a table (outside code blocks) before the next heading."""
    ids, seen, current, fence = [], {}, None, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#+ (.*)", line)):
            current = heading_id(m.group(1), seen)
        elif not fence and line.startswith("|") and current and current not in ids:
            ids.append(current)
    return ids


def test_every_results_table_has_a_reproduce_entry():
    listed = subprocess.run(["bash", str(ROOT / "bench" / "reproduce.sh"), "--list"],
                            capture_output=True, text=True, check=True).stdout
    entries = [line.split("\t")[0] for line in listed.splitlines()]
    tables = table_ids((ROOT / "docs" / "RESULTS.md").read_text())
    assert len(tables) > 20
    assert not set(tables) - set(entries), f"tables without an entry: {set(tables) - set(entries)}"
    assert not set(entries) - set(tables), f"entries of no table: {set(entries) - set(tables)}"


def test_reproduce_prints_what_it_would_run(tmp_path):
    env = {**os.environ, "SYMCLR_DATA": "some/export"}
    out = subprocess.run(["bash", str(ROOT / "bench" / "reproduce.sh"),
                          "make-shards-on-the-firefighting-data", "--dry-run"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "make-shards --coco some/export --out shards/firefighting_t" in out
    unknown = subprocess.run(["bash", str(ROOT / "bench" / "reproduce.sh"), "no-such-table"],
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no-such-table")


# --------------------------------------------------------------------------- the README example


def readme_example() -> str:
    """The first Python block of the README's "Use it on your own symbols" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use it on your own symbols"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(synth_shards, synth_coco, tmp_path):
    """In a folder holding what the example names: a tiny model file with its run config,
    example crops of 3 classes, two crops of a fourth, a query crop and a drawing."""
    import torch
    from PIL import Image

    from symclr_ft.data.shardset import load_classes, load_split
    from symclr_ft.models.backbones import SimCLRNet, save_model_file

    run = tmp_path / "runs" / "demo_cpu"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    save_model_file(SimCLRNet("resnet10t", 8), run / "model.pt", epoch=1)
    (run / "config.yaml").write_text("data:\n  image_size: 32\n")
    crops, names = load_split(synth_shards, "train", 40), load_classes(synth_shards)
    saved: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(crops.images, crops.labels.tolist())):
        picture = Image.fromarray(image.permute(1, 2, 0).numpy())
        if label < 3 and saved.get(label, 0) < 2:
            (tmp_path / "my_symbols" / names[label]).mkdir(parents=True, exist_ok=True)
            picture.save(tmp_path / "my_symbols" / names[label] / f"{i}.png")
            saved[label] = saved.get(label, 0) + 1
        elif label == 3 and saved.get(3, 0) < 3:
            saved[3] = saved.get(3, 0) + 1
            picture.save(tmp_path / ("query.png" if saved[3] == 3 else f"new{saved[3]}.png"))
    Image.open(sorted((synth_coco / "test").glob("*.jpg"))[0]).save(tmp_path / "drawing.png")
    (tmp_path / "example.py").write_text(readme_example())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "my_index" / "index.json").is_file()
    printed = done.stdout.splitlines()
    assert len(printed) == 2 and printed[0].startswith("[") and printed[1].startswith("{")
