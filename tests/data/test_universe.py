"""The symbol universe: font-glyph and procedural classes, distinct, deterministic, and written as
a shard set that passes make-shards' verification."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from symclr_ft.data import universe
from symclr_ft.data.shards import encode_png
from symclr_ft.data.shardset import iter_shard, load_classes, load_split, shard_paths, verify_split
from symclr_ft.errors import UserError

PACKAGES = list(universe.FONT_PACKAGES)


@pytest.fixture(scope="session")
def system_fonts() -> list[Path]:
    """The fonts of the five Debian packages; installed with apt-get when missing (as root)."""
    try:
        return universe.find_fonts()
    except UserError:
        pass
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        from matplotlib import font_manager

        font_manager._get_fontconfig_fonts.cache_clear()  # fc-list's answer is cached
        try:
            return universe.find_fonts()
        except UserError:
            pass
    pytest.skip(f"font packages missing and apt-get could not install them: {' '.join(PACKAGES)}")


def font_dir(fonts: list[Path], tmp_path: Path, *names: str) -> Path:
    """A folder holding links to the named system fonts (a small universe, fast to build)."""
    folder = tmp_path / "fonts"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).symlink_to(next(p for p in fonts if p.name == name))
    return folder


@pytest.fixture
def small_fonts(system_fonts, tmp_path) -> Path:
    return font_dir(system_fonts, tmp_path, "DejaVuSans.ttf", "FreeSans.ttf", "NotoSansSymbols2-Regular.ttf")


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---- procedural classes (the former glyphs.py) ---------------------------------------------


def procedural(index: int, seed: int = 0) -> universe.UniverseClass:
    return universe.procedural_class(index, seed)[0]


def test_procedural_classes_and_instances_are_deterministic():
    a, b = universe.glyph_class(5, seed=1), universe.glyph_class(5, seed=1)
    assert a == b and universe.glyph_class(6, seed=1) != a and universe.glyph_class(5, seed=2) != a
    png = lambda cls, i: encode_png(universe.render_instance(cls, i, seed=1)[0])  # noqa: E731
    assert png(procedural(5, 1), 3) == png(procedural(5, 1), 3)
    assert png(procedural(5, 1), 3) != png(procedural(5, 1), 4)


def test_every_procedural_instance_has_ink_and_a_crop_size():
    for index in range(30):
        cls = procedural(index)
        assert 1 <= len(cls.glyph.parts) <= 4 and all(p.kind in universe.KINDS for p in cls.glyph.parts)
        for instance in range(3):
            image, record = universe.render_instance(cls, instance)
            rgb = np.asarray(image).astype(int)
            assert 40 <= max(rgb.shape[:2]) <= 112, (index, instance, rgb.shape)
            ink = np.abs(rgb - rgb[0, 0]).max(axis=2) > 60
            assert ink.sum() >= 20, (index, instance)
            assert record["source"] == "procedural"


# ---- font classes ---------------------------------------------------------------------------


def test_no_class_from_the_music_blocks(system_fonts, tmp_path):
    folder = font_dir(system_fonts, tmp_path, "Symbola_hint.ttf")
    from fontTools.ttLib import TTFont

    music = [cp for cp in TTFont(folder / "Symbola_hint.ttf").getBestCmap()
             if any(lo <= cp <= hi for lo, hi in universe.EXCLUDED)]
    assert len(music) > 100  # Symbola draws them: the filter below has work to do
    coverage = universe.font_coverage(universe.find_fonts(folder))
    assert not [cp for cp in coverage if any(lo <= cp <= hi for lo, hi in universe.EXCLUDED)]
    classes = universe.build_universe(400, seed=3, fonts=universe.find_fonts(folder), procedural=0)
    assert len(classes) == 400
    assert not [c for c in classes if any(lo <= c.codepoint <= hi for lo, hi in universe.EXCLUDED)]


def test_skipped_codepoints_are_not_drawn_symbols():
    for cp in (0x20, 0x0A, 0x0301, 0x200B, 0xE000, 0x1D11E, 0x266A, 0x1CF50):
        assert universe.excluded(cp), hex(cp)
    for cp in (0x41, 0x2192, 0x2668, 0x2670, 0x1D2E0):
        assert not universe.excluded(cp), hex(cp)


def test_the_duplicate_filter_drops_a_look_alike(small_fonts):
    fonts = [str(p) for p in universe.find_fonts(small_fonts)]
    notdef = universe._NotdefCache()
    latin_a, greek_alpha, arrow = (universe.font_class(cp, fonts, notdef) for cp in (0x41, 0x391, 0x2192))
    distinct = universe.DistinctSet()
    assert distinct.add(latin_a[1]) and not distinct.add(greek_alpha[1]) and distinct.add(arrow[1])
    assert distinct.count == 2


def test_a_planted_duplicate_class_is_removed(monkeypatch, small_fonts):
    original = universe.glyph_class
    # class 3 planted as a copy of class 1's drawing (another index, the same shape)
    monkeypatch.setattr(universe, "glyph_class", lambda i, seed=0: original(1 if i == 3 else i, seed))
    classes = universe.build_universe(20, seed=0, fonts=universe.find_fonts(small_fonts), procedural=0.3)
    names = [c.name for c in classes]
    assert "glyph-0-00001" in names and "glyph-0-00003" not in names and len(classes) == 20
    prints = np.stack([universe.canonical(universe.procedural_mask(c.glyph, 48, None)) for c in classes if c.glyph])
    corr = prints @ prints.T - np.eye(len(prints))
    assert corr.max() < universe.DUPLICATE


def test_a_class_draws_alike_in_each_of_its_fonts(small_fonts):
    classes = universe.build_universe(60, seed=1, fonts=universe.find_fonts(small_fonts), procedural=0)
    several = [c for c in classes if len(c.fonts) > 1]
    assert several, "no codepoint drawn by two of the fonts"
    for cls in several[:10]:
        prints = [universe.canonical(universe.glyph_mask(f, cls.codepoint, 48)) for f in cls.fonts]
        assert min(float(p @ prints[0]) for p in prints) >= universe.ALIKE


# ---- the command ----------------------------------------------------------------------------


def run(argv):
    try:
        return universe.main(argv)
    except SystemExit as exit:
        return exit.code


def test_shards_are_deterministic_verified_and_counted_as_asked(small_fonts, tmp_path):
    args = ["--classes", "12", "--per-class", "3", "--valid-per-class", "2", "--seed", "4", "--fonts", str(small_fonts)]
    assert run(["--out", str(tmp_path / "a"), "--workers", "2", *args]) == 0
    assert run(["--out", str(tmp_path / "b"), "--workers", "1", *args]) == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")  # same bytes, whatever the pool
    out = tmp_path / "a"
    assert len(load_classes(out)) == 12
    for split, per_class in (("train", 3), ("valid", 2)):
        verify_split(out, split)  # make-shards' own check: names, counts, unique keys, whole tars
        crops = load_split(out, split, 32)
        assert torch.equal(torch.bincount(crops.labels, minlength=12), torch.full((12,), per_class))
    keys = {split: {key for path in shard_paths(out, split) for key, _ in iter_shard(path, read=False)}
            for split in ("train", "valid")}
    assert not keys["train"] & keys["valid"]  # evaluation refuses a crop that is support and query
    record = json.loads(next(iter_shard(shard_paths(out, "train")[0]))[1]["json"])
    x0, y0, x1, y1 = record["crop"]
    assert 50 <= max(x1 - x0, y1 - y0) <= 112  # make-shards' frame around a 46-69 px symbol
    assert run(["--out", str(tmp_path / "c"), *args[:-4], "--seed", "5", "--fonts", str(small_fonts)]) == 0
    assert digest(tmp_path / "c") != digest(out)


def test_mix_with_appends_classes_to_a_copy_of_the_users_shards(synth_shards, small_fonts, tmp_path):
    out = tmp_path / "mixed"
    assert run(["--out", str(out), "--classes", "5", "--per-class", "3", "--fonts", str(small_fonts),
                "--mix-with", str(synth_shards)]) == 0
    base, names = load_classes(synth_shards), load_classes(out)
    assert names[: len(base)] == base and len(names) == len(base) + 5
    for split in ("train", "valid", "test"):
        verify_split(out, split)
    train, original = load_split(out, "train", 16), load_split(synth_shards, "train", 16)
    assert len(train) == len(original) + 15
    extra = train.labels[train.labels >= len(base)]
    assert torch.equal(torch.bincount(extra - len(base)), torch.full((5,), 3))
    for split in ("valid", "test"):
        assert [p.read_bytes() for p in shard_paths(out, split)] == [p.read_bytes() for p in shard_paths(synth_shards, split)]


@pytest.mark.parametrize("case", ["no font folder", "too many classes", "same as mix", "no font package"])
def test_bad_requests_get_one_line_and_exit_2(case, system_fonts, synth_shards, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    if case == "no font folder":
        argv, expect = ["--out", str(out), "--classes", "5", "--fonts", str(tmp_path / "nowhere")], "font folder not found"
    elif case == "too many classes":  # Ogham: some 30 letters, not 500 distinct classes
        folder = font_dir(system_fonts, tmp_path, "NotoSansOgham-Regular.ttf")
        argv, expect = ["--out", str(out), "--classes", "500", "--procedural", "0", "--fonts", str(folder)], "only"
    elif case == "same as mix":
        argv, expect = ["--out", str(synth_shards), "--classes", "5", "--mix-with", str(synth_shards)], "must differ"
    else:
        from matplotlib import font_manager

        others = [str(p) for p in system_fonts if not p.name.startswith("Symbola")]
        monkeypatch.setattr(font_manager, "findSystemFonts", lambda fontext="ttf": others)
        argv, expect = ["--out", str(out), "--classes", "5"], "fonts-symbola: font package not installed"
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expect in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_an_unreadable_font_is_skipped_and_named(small_fonts, tmp_path, capsys):
    (small_fonts / "broken.ttf").write_bytes(b"not a font at all")
    classes = universe.build_universe(10, seed=0, fonts=universe.find_fonts(small_fonts), procedural=0)
    assert len(classes) == 10 and not any("broken" in f for c in classes for f in c.fonts)
    assert "warning: broken.ttf: unreadable font skipped" in capsys.readouterr().err


def test_procedural_classes_alone_need_no_font(tmp_path, monkeypatch):
    monkeypatch.setattr(universe, "find_fonts", lambda folder=None: pytest.fail("fonts were looked for"))
    assert run(["--out", str(tmp_path / "p"), "--classes", "6", "--per-class", "2", "--procedural", "1"]) == 0
    assert load_classes(tmp_path / "p") == [f"glyph-0-{i:05d}" for i in range(6)]
    verify_split(tmp_path / "p", "train")


def test_a_users_folder_is_kept_and_only_its_own_set_replaced(tmp_path, capsys):
    """The output rule of every command (io.output_dir, issue 24): a folder of the user's is
    refused (glyphs.py used to delete it whole); with --overwrite only shard files are
    replaced; an earlier universe is replaced without it."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.md").write_text("the user's notes")
    argv = ["--out", str(out), "--classes", "2", "--per-class", "1", "--procedural", "1", "--workers", "1"]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an earlier symclr-universe output" in err[0]
    assert [p.name for p in out.iterdir()] == ["notes.md"]
    assert run(argv + ["--overwrite"]) == 0 and len(load_classes(out)) == 2
    assert run([*argv[:3], "3", *argv[4:]]) == 0 and len(load_classes(out)) == 3  # its own set
    assert (out / "notes.md").read_text() == "the user's notes"
