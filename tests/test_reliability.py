"""Reliability of the data and config side: every kind of bad input gets one line
(``error: <file>: <problem>`` on stderr, exit status 2) and leaves no half-written output.

The two property tests break a valid COCO export and a valid config at random and accept only
two outcomes: success, or that one line; any other exception is a traceback the user would
see. The table of all cases is docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import sys
import tarfile
import tempfile
import typing
from pathlib import Path

import pytest
import webdataset as wds
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import SYNTH_CLASSES
from symclr_ft import config
from symclr_ft.data import shards, synth
from symclr_ft.data.coco import ANNOTATIONS_FILE, SPLITS
from symclr_ft.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)
from symclr_ft.data.shardset import iter_shard, load_classes, load_split, verify_split
from symclr_ft.errors import UserError
from symclr_ft.io import atomic_dir, atomic_path, write_json
from symclr_ft.data.shards import TAR_HEADERS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# SYMCLR_FUZZ_EXAMPLES=2000 for a longer hunt; 40 keeps the suite fast.
PROPERTY = settings(
    max_examples=int(os.environ.get("SYMCLR_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_command(main, argv: list[str]) -> tuple[int, str, str]:
    """A command's ``main`` in-process: (exit status, stdout, stderr). Any exception other
    than SystemExit propagates, so a traceback fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return (0 if code is None else code), out.getvalue(), err.getvalue()


def one_error_line(code: int, stderr: str, path: str | Path) -> str:
    """Exit status 2 and exactly one stderr line, ``error: ...`` naming ``path`` (or a file
    under it)."""
    lines = stderr.splitlines()
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert str(path) in lines[0], lines[0]
    return lines[0]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Temporary files or folders a command left beside its output."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ============================================================================ make-shards

BAD_VALUES = [
    None, math.nan, math.inf, -math.inf, -1, 0, -(10**9), 10**400, 1e308, 2**63, 3.5, True,
    False, "", "x", "../../etc/passwd", "/etc/passwd", "C:\\x.png", [], [1, 2], [0, 0, 1, 1],
    {}, {"id": 1},
]  # fmt: skip
RECORD_KEYS = {
    "images": ["id", "file_name", "width", "height"],
    "annotations": ["id", "image_id", "category_id", "bbox", "area", "iscrowd"],
    "categories": ["id", "name", "supercategory"],
}


def _pick_record(data: st.DataObject, coco: dict) -> tuple[dict, str] | None:
    """A record of images/annotations/categories and one of its keys, or None."""
    section = data.draw(st.sampled_from(sorted(RECORD_KEYS)), label="section")
    records = coco.get(section)
    if not isinstance(records, list) or not records:
        return None
    record = records[data.draw(st.integers(0, len(records) - 1), label="index")]
    if not isinstance(record, dict):
        return None
    return record, data.draw(st.sampled_from(RECORD_KEYS[section]), label="key")


def _mutate_coco(data: st.DataObject, coco: dict) -> None:
    """One random breakage of a parsed COCO json, in place."""
    kind = data.draw(
        st.sampled_from(
            ["delete key", "bad value", "bad bbox number", "drop record", "duplicate record",
             "dangling reference", "bad top level", "harmless"]
        ),
        label="mutation",
    )  # fmt: skip
    if kind == "harmless":  # fields make-shards does not use, extra keys: must still work
        picked = _pick_record(data, coco)
        if picked and picked[1] in ("area", "iscrowd", "supercategory"):
            picked[0].pop(picked[1], None)
        elif picked:
            picked[0]["extra"] = data.draw(st.sampled_from(BAD_VALUES), label="value")
        coco.pop(data.draw(st.sampled_from(["info", "licenses"])), None)
    elif kind == "delete key":
        picked = _pick_record(data, coco)
        if picked:
            picked[0].pop(picked[1], None)
    elif kind == "bad value":
        picked = _pick_record(data, coco)
        if picked:
            picked[0][picked[1]] = data.draw(st.sampled_from(BAD_VALUES), label="value")
    elif kind == "bad bbox number":
        anns = coco.get("annotations")
        if isinstance(anns, list) and anns:
            ann = anns[data.draw(st.integers(0, len(anns) - 1), label="index")]
            if isinstance(ann, dict) and isinstance(ann.get("bbox"), list) and ann["bbox"]:
                i = data.draw(st.integers(0, len(ann["bbox"]) - 1), label="coordinate")
                ann["bbox"][i] = data.draw(st.sampled_from(BAD_VALUES), label="value")
    elif kind in ("drop record", "duplicate record"):
        section = data.draw(st.sampled_from(sorted(RECORD_KEYS)), label="section")
        records = coco.get(section)
        if isinstance(records, list) and records:
            i = data.draw(st.integers(0, len(records) - 1), label="index")
            if kind == "drop record":
                del records[i]
            else:
                records.append(copy.deepcopy(records[i]))
    elif kind == "dangling reference":
        anns = coco.get("annotations")
        if isinstance(anns, list) and anns and isinstance(anns[-1], dict):
            key = data.draw(st.sampled_from(["image_id", "category_id"]), label="key")
            anns[-1][key] = 10**6
    else:
        key = data.draw(st.sampled_from(["images", "annotations", "categories", "info"]))
        if data.draw(st.booleans(), label="delete"):
            coco.pop(key, None)
        else:
            coco[key] = data.draw(st.sampled_from(BAD_VALUES), label="value")


def _broken_json_bytes(data: st.DataObject, coco: dict) -> bytes:
    """The json text after random record mutations, or a broken file."""
    text = json.dumps(coco).encode()
    kind = data.draw(
        st.sampled_from(["records", "records", "records", "truncated", "garbage", "other json"]),
        label="file",
    )
    if kind == "records":
        for _ in range(data.draw(st.integers(1, 2), label="mutations")):
            _mutate_coco(data, coco)
        return json.dumps(coco).encode()
    if kind == "truncated":
        return text[: data.draw(st.integers(0, len(text) - 1), label="cut")]
    if kind == "garbage":
        return data.draw(st.binary(max_size=64), label="bytes")
    return data.draw(st.sampled_from([b"[]", b"null", b"1", b'"coco"', b"NaN", b"{}"]))


@PROPERTY
@given(data=st.data())
def test_make_shards_on_a_randomly_broken_export_succeeds_or_says_one_line(
    data, synth_coco, synth_shards
):
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        coco_dir = work / "coco"
        shutil.copytree(synth_coco, coco_dir)
        split = data.draw(st.sampled_from(SPLITS), label="split")
        json_path = coco_dir / split / ANNOTATIONS_FILE
        json_path.write_bytes(_broken_json_bytes(data, json.loads(json_path.read_text())))
        out = work / "shards"
        shutil.copytree(synth_shards, out)  # a previous good shard set
        (out / "README.md").write_text("not a shard: kept\n")
        before = folder_bytes(out)

        code, stdout, stderr = run_command(
            shards.main, ["--coco", str(coco_dir), "--out", str(out), "--shard-size", "32"]
        )
        event("make-shards succeeded" if code == 0 else "make-shards refused the input")
        if code == 0:
            assert stderr == "" and "shards written to" in stdout
            assert (out / "README.md").read_text() == "not a shard: kept\n"
            load_classes(out)  # the new set is complete and readable
            assert json.loads((out / "stats.json").read_text())["source"] == str(coco_dir)
        else:
            one_error_line(code, stderr, work)
            assert folder_bytes(out) == before  # the previous shards, untouched
        assert leftovers(work) == []


def test_export_without_any_box(synth_coco, tmp_path):
    coco_dir = tmp_path / "coco"
    shutil.copytree(synth_coco, coco_dir)
    for split in SPLITS:
        path = coco_dir / split / ANNOTATIONS_FILE
        path.write_text(json.dumps({**json.loads(path.read_text()), "annotations": []}))
    code, _, stderr = run_command(shards.main, ["--coco", str(coco_dir), "--out", str(tmp_path / "o")])
    line = one_error_line(code, stderr, coco_dir)
    assert line == f"error: {coco_dir}: no annotated boxes in any split, nothing to crop"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], "make-shards: the following arguments are required: --coco, --out"),
        (["--coco", "c", "--out", "o", "--padding", "wide"], "argument --padding: expected a number, got 'wide'"),
        (["--coco", "c", "--out", "o", "--shard-size", "1.5"], "argument --shard-size: expected a whole number, got '1.5'"),
    ],
)
def test_make_shards_usage_mistakes_are_one_line(argv, words):
    code, stdout, stderr = run_command(shards.main, argv)
    line = one_error_line(code, stderr, "")
    assert words in line and line.endswith("(see make-shards --help)") and stdout == ""


def test_disk_full_while_writing_shards(synth_coco, synth_shards, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    shutil.copytree(synth_shards, out)
    before = folder_bytes(out)
    written = []

    def write(self, key, members):
        written.append(key)
        if len(written) == 60:
            raise OSError(28, "No space left on device")
        return real_write(self, key, members)

    real_write = shards.ShardSequence.write
    monkeypatch.setattr(shards.ShardSequence, "write", write)
    code, _, stderr = run_command(shards.main, ["--coco", str(synth_coco), "--out", str(out)])
    line = one_error_line(code, stderr, out)
    assert line == f"error: {out}: cannot write the shards (No space left on device)"
    assert folder_bytes(out) == before and leftovers(tmp_path) == []


# ============================================================================ configs


def _garbage() -> st.SearchStrategy:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**6), 10**6),
        st.sampled_from([10**30, -(10**30), 10**400, 2**63]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.none()), inner, max_size=3),
        max_leaves=6,
    )


KEYS = {section: list(values) for section, values in config_to_dict(Config()).items()}
ANNOTATIONS = {
    section: typing.get_type_hints(type(getattr(Config(), section))) for section in KEYS
}


def _plausible(section: str, key: str) -> st.SearchStrategy:
    """Values of the right type near the default (mostly valid, so that both outcomes are
    well exercised)."""
    default = getattr(getattr(Config(), section), key)
    annotation = ANNOTATIONS[section][key]
    if typing.get_origin(annotation) is typing.Literal:
        return st.sampled_from(typing.get_args(annotation))
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(max(default, 16), max(default, 16) * 4)
    if isinstance(default, float):
        return st.floats(default / 2, default) if default > 0 else st.just(0.0)
    return st.just(default)


RANGE_PROBES = [-(10**9), -1, -0.5, 0, 1e-300, 0.5, 1, 2, 15, 16, 10**9, 1e308]


def _mutate_config(data: st.DataObject, raw: dict) -> None:
    kind = data.draw(
        st.sampled_from(
            ["unknown section", "unknown key", "wrong type", "range", "delete", "bad section",
             "valid value"]
        ),
        label="mutation",
    )  # fmt: skip
    section = data.draw(st.sampled_from(sorted(KEYS)), label="section")
    key = data.draw(st.sampled_from(KEYS[section]), label="key")
    if kind == "valid value":
        if isinstance(raw.get(section), dict):
            raw[section][key] = data.draw(_plausible(section, key), label="value")
    elif kind == "unknown section":
        name = data.draw(st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans()))
        raw[name] = data.draw(_garbage(), label="value")
    elif kind == "unknown key":
        name = data.draw(st.one_of(st.text(max_size=8), st.integers(), st.floats()), label="key")
        if isinstance(raw.get(section), dict):
            raw[section][name] = data.draw(_garbage(), label="value")
    elif kind == "wrong type":
        if isinstance(raw.get(section), dict):
            raw[section][key] = data.draw(_garbage(), label="value")
    elif kind == "range":
        if isinstance(raw.get(section), dict):
            raw[section][key] = data.draw(st.sampled_from(RANGE_PROBES), label="value")
    elif kind == "delete":
        if data.draw(st.booleans(), label="whole section"):
            raw.pop(section, None)
        elif isinstance(raw.get(section), dict):
            raw[section].pop(key, None)
    else:
        raw[section] = data.draw(_garbage(), label="value")


def _config_text(data: st.DataObject) -> bytes:
    raw = config_to_dict(load_config(CONFIGS / "baseline.yaml"))
    kind = data.draw(
        st.sampled_from(["mutations"] * 4 + ["truncated", "garbage", "not a mapping"]),
        label="file",
    )
    if kind == "mutations":
        for _ in range(data.draw(st.integers(1, 3), label="mutations")):
            _mutate_config(data, raw)
        return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode()
    text = yaml.safe_dump(raw, sort_keys=False).encode()
    if kind == "truncated":
        return text[: data.draw(st.integers(0, len(text) - 1), label="cut")]
    if kind == "garbage":
        return data.draw(st.binary(max_size=64), label="bytes")
    not_a_mapping = [b"- a\n- b\n", b"3\n", b"just text\n", b"[unclosed\n",
                     b"!!python/object/apply:os.system [echo]\n"]  # fmt: skip
    return data.draw(st.sampled_from(not_a_mapping))


def _overrides(data: st.DataObject) -> list[str]:
    """0-2 ``section.key=value`` overrides with arbitrary values (no leading dash: argparse
    options are the command line's business, not the config's)."""
    items = []
    for _ in range(data.draw(st.integers(0, 2), label="overrides")):
        section = data.draw(st.sampled_from(sorted(KEYS)), label="section")
        key = data.draw(st.sampled_from(KEYS[section] + ["nope"]), label="key")
        if key != "nope" and data.draw(st.booleans(), label="plausible"):
            value = yaml.safe_dump(data.draw(_plausible(section, key))).removesuffix("\n...\n")
        else:
            value = data.draw(
                st.text(max_size=12) | st.sampled_from(["1e-3", "[1,2", "{a: 1}", "nan", "1" * 5000])
            )
        items.append(f"{section}.{key}={value.strip()}")
    return items


@PROPERTY
@given(data=st.data())
def test_a_randomly_broken_config_loads_or_says_one_line(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("config")
    path = folder / "run.yaml"
    path.write_bytes(_config_text(data))
    overrides = _overrides(data)

    try:
        cfg = load_config(path, overrides)
    except ConfigError as err:
        event("config refused")
        message = str(err)
        assert "\n" not in message, message
        assert message.startswith((f"{path}: ", "override ")), message
        cfg = None
    else:
        event("config valid")
        # a valid config stays valid written out and read back (what a run folder stores)
        assert config_from_dict(yaml.safe_load(dump_config(cfg)), "again") == cfg

    code, stdout, stderr = run_command(config.main, ["--config", str(path), *overrides])
    if cfg is None:
        line = one_error_line(code, stderr, "")
        assert line == "error: " + " ".join(message.split())
        assert stdout == ""
    else:
        assert code == 0 and stderr == ""
        assert config_from_dict(yaml.safe_load(stdout)) == cfg


@pytest.mark.parametrize(
    "text, words",
    [
        ("data: {}\n1: a\nfoo: b\n", "unknown section 1, foo"),  # keys of mixed types
        ("data: {1: a, foo: b}\n", "unknown key data.1"),
        ('data: {"a\\nb": 1}\n', "unknown key data.'a\\nb'"),  # stays one line
        ("optim: {lr: " + "1" * 400 + "}\n", "optim.lr: expected a finite number"),
        ("data: 0\n", "section data must be a mapping of keys, got int"),
        ("data: []\n", "section data must be a mapping of keys, got list"),
        ("[" * 5000, "nested too deeply"),
        pytest.param(
            "data: {image_size: " + "1" * 5000 + "}\n", "not valid YAML",
            marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="no digit limit"),
        ),
        ("run: {name: 2024-13-45}\n", "not valid YAML"),  # a date YAML cannot construct
    ],
)
def test_config_files_found_by_fuzzing(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and words in str(err.value)
    assert "\n" not in str(err.value)


def test_config_path_that_is_a_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config \(Is a directory\)"):
        load_config(tmp_path)


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"data:\n  \xff\xfe: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML \(not UTF-8 text\)"):
        load_config(path)


@pytest.mark.parametrize("override", ["optim.lr=[1,2", "optim.lr=!!python/object:os.system x"])
def test_override_that_is_not_yaml(override):
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(None, [override])


def test_a_broken_section_is_reported_even_with_an_override_for_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: 3\n")
    with pytest.raises(ConfigError, match="section optim must be a mapping"):
        load_config(path, ["optim.lr=1e-3"])


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--config"], "argument --config: expected one argument"),
        (["--get"], "argument --get: expected one argument"),
        (["--get", "optim.nope"], "--get optim.nope: no such key"),
        (["lr=3"], "expected section.key=value"),
    ],
)
def test_config_command_usage_mistakes_are_one_line(argv, words):
    code, stdout, stderr = run_command(config.main, argv)
    assert words in one_error_line(code, stderr, "") and stdout == ""


# ============================================================================ reading shards


@pytest.fixture
def shard_copy(synth_shards, tmp_path) -> Path:
    """The synthetic shards' classes.json and test split, safe to break."""
    out = tmp_path / "shards"
    out.mkdir()
    for path in [synth_shards / "classes.json", synth_shards / "stats.json", *sorted(synth_shards.glob("test-*.tar"))]:
        shutil.copy(path, out / path.name)
    return out


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def _load_error(shard_dir: Path, split: str = "test") -> str:
    with pytest.raises(UserError) as err:
        load_split(shard_dir, split, 16)
    message = str(err.value)
    assert "\n" not in message
    return message


def _write_samples(path: Path, samples: dict[str, dict[str, bytes]]) -> None:
    with wds.TarWriter(str(path), **TAR_HEADERS) as writer:
        for key, members in samples.items():
            writer.write({"__key__": key, **members})


def _first_sample(shard: Path) -> dict[str, bytes]:
    with tarfile.open(shard) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("test_0000000.")]
        return {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in members}


def test_the_unbroken_copy_loads(shard_copy):
    crops = load_split(shard_copy, "test", 16)
    assert len(crops) == 49 and crops.images.shape[1:] == (3, 16, 16)


def test_tar_truncated_inside_a_member(shard_copy):
    shard = shard_copy / "test-000000.tar"
    member = _members(shard)[7]
    shard.write_bytes(shard.read_bytes()[: member.offset_data + member.size // 2 + 1])
    message = _load_error(shard_copy)
    assert message.startswith(f"{shard}: truncated or corrupt shard")


def test_tar_truncated_between_samples_is_not_silently_shorter(shard_copy):
    # tarfile itself stops quietly at the cut: 3 samples instead of 32, no error
    shard = shard_copy / "test-000000.tar"
    member = _members(shard)[9]  # the first member of the 4th sample
    shard.write_bytes(shard.read_bytes()[: member.offset])
    assert _load_error(shard_copy) == (
        f"{shard}: truncated or corrupt shard (ends early at byte {member.offset}; "
        "samples after it would be lost)"
    )


def test_tar_with_garbage_over_a_header(shard_copy):
    shard = shard_copy / "test-000001.tar"
    member = _members(shard)[6]
    raw = bytearray(shard.read_bytes())
    raw[member.offset : member.offset + 512] = os.urandom(512)
    shard.write_bytes(bytes(raw))
    message = _load_error(shard_copy)
    assert message.startswith(f"{shard}: truncated or corrupt shard") and "damaged header" in message


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"\x1f\x8b\x08" + bytes(600)])
def test_file_that_is_not_a_tar(shard_copy, content):
    shard = shard_copy / "test-000001.tar"
    shard.write_bytes(content)
    assert _load_error(shard_copy).startswith(f"{shard}: truncated or corrupt shard")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"png": b"not a png at all"}, "sample test_0000000 is corrupt"),
        ({"png": None}, "sample test_0000000 has no png member"),
        ({"cls": b"seven"}, "sample test_0000000 is corrupt"),
        ({"cls": None}, "sample test_0000000 has no cls member"),
        ({"cls": b"99"}, f"sample test_0000000 has class 99, but classes.json has {SYNTH_CLASSES}"),
        ({"cls": b"-1"}, "sample test_0000000 has class -1"),
    ],
)
def test_bad_sample(shard_copy, change, words):
    shard = shard_copy / "test-000000.tar"
    sample = _first_sample(shard)
    for ext, value in change.items():
        if value is None:
            del sample[ext]
        else:
            sample[ext] = value
    _write_samples(shard, {"test_0000000": sample})
    assert _load_error(shard_copy).startswith(f"{shard}: {words}")


def test_png_cut_short_or_with_a_broken_chunk(shard_copy):
    shard = shard_copy / "test-000000.tar"
    sample = _first_sample(shard)
    png = sample["png"]
    for broken in (png[: len(png) // 2], png[:16] + b"\xff" * 8 + png[24:]):
        _write_samples(shard, {"test_0000000": {**sample, "png": broken}})
        assert _load_error(shard_copy).startswith(f"{shard}: sample test_0000000 is corrupt")


@PROPERTY
@given(data=st.data())
def test_randomly_damaged_shard_loads_whole_or_says_which_file(data, synth_shards):
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        shutil.copy(synth_shards / "classes.json", folder / "classes.json")
        shutil.copy(synth_shards / "stats.json", folder / "stats.json")
        shard = folder / "test-000000.tar"
        raw = bytearray((synth_shards / "test-000000.tar").read_bytes())
        expected = len(load_split(synth_shards, "test", 16))
        if data.draw(st.booleans(), label="truncate"):
            raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
        else:
            start = data.draw(st.integers(0, len(raw) - 1), label="start")
            junk = data.draw(st.binary(min_size=1, max_size=600), label="junk")
            raw[start : start + len(junk)] = junk
        shard.write_bytes(bytes(raw))
        shutil.copy(synth_shards / "test-000001.tar", folder / "test-000001.tar")
        try:
            crops = load_split(folder, "test", 16)
        except UserError as err:
            event("shard refused")
            message = str(err)
            assert message.startswith(f"{shard}: ") and "\n" not in message, message
        else:
            event("shard loaded whole")
            assert len(crops) == expected  # never silently fewer samples


def test_streaming_with_fewer_shards_than_readers(synth_shards):
    from symclr_ft.data.shardset import stream_batches

    with pytest.raises(UserError) as err:
        stream_batches(synth_shards, "test", 16, 4, 1, rank=0, world=2, seed=0, num_workers=2)
    assert str(err.value).startswith(
        f"{synth_shards}: split 'test' has 2 shards, fewer than the 4 readers"
    )


def test_sampler_that_mixes_classes_needs_masking():
    from symclr_ft.data.shardset import check_batch_size

    with pytest.raises(UserError, match="data.sampler=random puts crops of one class"):
        check_batch_size("random", [0, 0, 1, 2], 2, same_class_ok=False)
    check_batch_size("random", [0, 0, 1, 2], 2, same_class_ok=True)


def test_missing_classes_json(shard_copy):
    (shard_copy / "classes.json").unlink()
    for call in (lambda: load_classes(shard_copy), lambda: load_split(shard_copy, "test", 16)):
        with pytest.raises(UserError) as err:
            call()
        assert str(err.value) == (
            f"{shard_copy / 'classes.json'}: class map not found (run make-shards first)"
        )


@pytest.mark.parametrize(
    "content, words",
    [
        (b"{not json", "class map is not valid JSON"),
        (b"\xff\xfe garbage", "class map is not valid JSON"),
        (b"[" * 100000, "class map is not valid JSON"),
        (b"[1, 2]", "class map must be a JSON object"),
        (b"{}", "malformed class map ('classes' must be a list)"),
        (b'{"classes": {"a": 1}}', "malformed class map ('classes' must be a list)"),
        (b'{"classes": [1, 2]}', "malformed class map"),
        (b'{"classes": [{"index": 0, "name": "a"}, {"index": 2, "name": "b"}]}', "indices are not 0..C-1"),
        (b'{"classes": [{"index": 0, "name": "a"}, {"index": "1", "name": "b"}]}', "malformed class map"),
        (b'{"classes": [{"index": 0}]}', "a class has no 'name' key"),
        (b'{"classes": [{"index": 0, "name": null}]}', "every class needs a string 'name'"),
        (b'{"classes": []}', "malformed class map (no classes)"),
    ],
)
def test_malformed_classes_json(shard_copy, content, words):
    path = shard_copy / "classes.json"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_classes(shard_copy)
    assert str(err.value).startswith(f"{path}: ") and words in str(err.value)
    assert "\n" not in str(err.value)


def test_classes_json_that_is_a_folder(shard_copy):
    path = shard_copy / "classes.json"
    path.unlink()
    path.mkdir()
    with pytest.raises(UserError, match=r"classes.json: is a folder, expected a class map"):
        load_classes(shard_copy)


def test_split_without_shards_and_missing_folder(shard_copy, tmp_path):
    assert _load_error(shard_copy, "train") == (
        f"{shard_copy}: no shards for split 'train' (train-000000.tar ...)"
    )
    for tar in shard_copy.glob("*.tar"):
        tar.unlink()
    _write_samples(shard_copy / "test-000000.tar", {})  # a valid tar with no samples
    assert _load_error(shard_copy).startswith(f"{shard_copy / 'test-000001.tar'}: shard missing")
    with pytest.raises(UserError, match=r": split 'test' has no crops$"):
        load_split(shard_copy, "test", 16, allow_subset=True)
    assert _load_error(tmp_path / "nope") == (
        f"{tmp_path / 'nope'}: shard folder not found (run make-shards first)"
    )


def test_paths_too_long_for_the_file_system_are_one_line(synth_coco, tmp_path):
    """ENAMETOOLONG from the first look at a path the user typed, in every command of ours."""
    long = str(tmp_path / ("a" * 300))
    for main, argv in [
        (shards.main, ["--coco", long, "--out", str(tmp_path / "o")]),
        (shards.main, ["--coco", str(synth_coco), "--out", long]),
        (shards.main, ["--coco", str(synth_coco), "--out", long + "/shards"]),
        (synth.main, ["--out", long]),
    ]:
        code, _, stderr = run_command(main, argv)
        line = one_error_line(code, stderr, tmp_path)
        assert line.endswith(": cannot be looked up (File name too long)"), line
    with pytest.raises(UserError, match=r"\.\.\.: cannot be looked up \(File name too long\)$"):
        load_split(long, "train", 16)
    assert leftovers(tmp_path) == []


# ============================================================================ damaged shard sets


@pytest.fixture(scope="module")
def small_shards(synth_coco, tmp_path_factory) -> Path:
    """The synthetic export in shards of 16 samples: train spans several tars."""
    out = tmp_path_factory.mktemp("small_shards") / "shards"
    shards.make_shards(synth_coco, out, shard_size=16)
    assert len(list(out.glob("train-*.tar"))) >= 3
    return out


@pytest.fixture
def set_copy(small_shards, tmp_path) -> Path:
    """A copy of ``small_shards``, safe to break."""
    out = tmp_path / "shards"
    shutil.copytree(small_shards, out)
    return out


def _train_error(shard_dir: Path, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        load_split(shard_dir, "train", 16, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_middle_shard_is_refused_unless_a_subset_is_allowed(set_copy):
    whole = len(load_split(set_copy, "train", 16))
    shard = set_copy / "train-000001.tar"
    in_it = len(list(iter_shard(shard, read=False)))
    shard.unlink()
    message = _train_error(set_copy)
    assert message.startswith(f"{shard}: shard missing from the set (train-000002.tar exists)")
    assert message.endswith("allow a subset (data.allow_subset=true, symclr-evaluate --allow-subset)")
    assert len(load_split(set_copy, "train", 16, allow_subset=True)) == whole - in_it


def test_missing_last_shard_is_refused(set_copy):
    last = sorted(set_copy.glob("train-*.tar"))[-1]
    last.unlink()
    assert _train_error(set_copy).startswith(f"{last}: shard missing from the set (stats.json lists")


def test_duplicated_shard_is_refused(set_copy):
    shards_before = sorted(set_copy.glob("train-*.tar"))
    extra = set_copy / f"train-{len(shards_before):06d}.tar"
    shutil.copy(shards_before[0], extra)  # one more file than stats.json lists
    assert _train_error(set_copy).startswith(f"{extra}: shard not part of the set")
    # the same file over another one: the shard count is right, the keys repeat
    extra.unlink()
    shutil.copy(shards_before[0], shards_before[1])
    assert _train_error(set_copy) == (
        f"{shards_before[1]}: sample train_0000000 appears twice (also in train-000000.tar; "
        "a copied shard?)"
    )
    # repeated keys are refused even for a subset
    assert "appears twice" in _train_error(set_copy, allow_subset=True)


def test_a_zeroed_4k_page_anywhere_is_refused_naming_the_shard(set_copy):
    """A zeroed page over a header made tarfile stop there quietly (534 of 2,606 crops lost on
    the real data); every page of a shard is tried."""
    shard = set_copy / "train-000001.tar"
    original = shard.read_bytes()
    whole = len(load_split(set_copy, "train", 16))
    for start in range(0, len(original), 4096):
        page = original[start : start + 4096]
        shard.write_bytes(original[:start] + bytes(len(page)) + original[start + 4096 :])
        try:
            crops = load_split(set_copy, "train", 16)
        except UserError as err:
            assert str(err).startswith(f"{shard}: "), (start, str(err))
        else:
            assert not page.strip(b"\0") and len(crops) == whole, start  # page already zeros


def test_shortened_shard_is_named_by_its_count(set_copy):
    shard = set_copy / "train-000001.tar"
    samples = list(iter_shard(shard))
    _write_samples(shard, dict(samples[:-3]))  # a valid tar, three samples short
    message = _train_error(set_copy)
    assert message.startswith(f"{shard}: split 'train' has ") and "but stats.json says" in message


def test_stats_without_the_split_or_missing(set_copy):
    # what bench/ scripts write: crops only, for the split they train on
    crops = len(load_split(set_copy, "train", 16))
    (set_copy / "stats.json").write_text(json.dumps({"splits": {"train": {"crops": crops}}}))
    assert len(load_split(set_copy, "train", 16)) == crops
    with pytest.raises(UserError, match=r"stats.json: no crop count for split 'valid'; to use"):
        load_split(set_copy, "valid", 16)
    (set_copy / "stats.json").unlink()
    assert "stats.json: shard statistics not found" in _train_error(set_copy)
    assert len(load_split(set_copy, "train", 16, allow_subset=True)) == crops


def test_verify_split_reads_headers_only_and_checks_the_same(set_copy):
    assert verify_split(set_copy, "train") == sorted(set_copy.glob("train-*.tar"))
    (set_copy / "train-000001.tar").unlink()
    with pytest.raises(UserError, match="train-000001.tar: shard missing"):
        verify_split(set_copy, "train")


def test_streaming_refuses_a_damaged_set_and_a_damaged_sample(set_copy):
    from symclr_ft.data.shardset import stream_batches

    (set_copy / "train-000001.tar").unlink()
    with pytest.raises(UserError, match="train-000001.tar: shard missing"):
        stream_batches(set_copy, "train", 16, 4, 2, rank=0, world=1, seed=0, num_workers=1)
    # a corrupt png inside a worker process: one line naming the shard and the sample
    loader = stream_batches(  # enough steps to read every sample at least once
        set_copy, "train", 16, 4, 100, rank=0, world=1, seed=0, num_workers=1, allow_subset=True
    )
    shard = set_copy / "train-000000.tar"
    samples = dict(iter_shard(shard))
    first = next(iter(samples))
    samples[first] = {**samples[first], "png": b"not a png"}
    _write_samples(shard, samples)
    with pytest.raises(UserError) as err:
        list(loader)
    assert str(err.value).startswith(f"{shard}: sample {first} is corrupt (")
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


# ============================================================================ outputs that cannot be written


def _unwritable_outputs(tmp_path: Path) -> list[Path]:
    """Output paths no command can create, as root too (chmod does not stop root): one under
    a regular file, and under /proc and /sys where this system refuses new folders."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder\n")
    paths = [blocker / "out"]
    for system in (Path("/proc"), Path("/sys")):
        probe = system / "symclr_ft_probe"
        try:
            probe.mkdir()
        except OSError:
            paths.append(system / "symclr_ft_out")
        else:  # a system where it can be written: not a test of anything here
            probe.rmdir()
    return paths


def test_make_shards_into_an_unwritable_place(synth_coco, tmp_path):
    for out in _unwritable_outputs(tmp_path):
        code, stdout, stderr = run_command(shards.main, ["--coco", str(synth_coco), "--out", str(out)])
        line = one_error_line(code, stderr, out)
        assert "cannot" in line or "not writable" in line, line
        assert not out.exists()
    assert leftovers(tmp_path) == []


def test_symclr_synth_into_an_unwritable_place(tmp_path):
    for out in _unwritable_outputs(tmp_path):
        code, _, stderr = run_command(synth.main, ["--out", str(out)])
        one_error_line(code, stderr, out.parent)
        assert not out.exists()


def test_atomic_writes_into_an_unwritable_place(tmp_path):
    """io.py, which every run file goes through (metrics, history, config, model file)."""
    outputs = _unwritable_outputs(tmp_path)
    # the folder itself cannot be made, or it exists (/proc) but takes no new file
    for out in outputs + [out.parent for out in outputs]:
        for write in (
            lambda: write_json(out / "metrics.json", {"a": 1}),
            lambda: atomic_path(out / "model.pt").__enter__(),
            lambda: atomic_dir(out / "eval").__enter__(),
        ):
            with pytest.raises(UserError) as err:
                write()
            assert str(out) in str(err.value) and "\n" not in str(err.value)
    assert leftovers(tmp_path) == []


def _interrupt_once(monkeypatch, when) -> None:
    """Make the first ``os.replace(src, dst)`` for which ``when(src, dst)`` holds raise
    KeyboardInterrupt (Ctrl-C at the worst moment); later calls, the rollback's, work."""
    real_replace = os.replace
    fired = []

    def replace(src, dst):
        if not fired and when(Path(src), Path(dst)):
            fired.append(dst)
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_folder_swap_interrupted_halfway_keeps_the_previous_folder(tmp_path, monkeypatch):
    target = tmp_path / "eval"
    target.mkdir()
    (target / "old.json").write_text("previous\n")
    # Ctrl-C after the old folder was moved aside, before the new one is moved in
    _interrupt_once(monkeypatch, lambda src, dst: src.name.endswith(".tmp") and dst == target)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "new.json").write_text("new\n")
    assert folder_bytes(target) == {"old.json": b"previous\n"}
    assert leftovers(tmp_path) == []


def test_make_shards_interrupted_while_moving_into_place_keeps_the_old_shards(
    synth_coco, synth_shards, tmp_path, monkeypatch
):
    out = tmp_path / "shards"
    shutil.copytree(synth_shards, out)
    before = folder_bytes(out)
    moved_in = []

    def third_new_file(src, dst):
        if dst.parent == out:
            moved_in.append(dst)
        return len(moved_in) == 3

    _interrupt_once(monkeypatch, third_new_file)
    code, _, stderr = run_command(
        shards.main, ["--coco", str(synth_coco), "--out", str(out), "--padding", "0.2"]
    )
    assert (code, stderr) == (130, "interrupted\n")
    assert folder_bytes(out) == before
    assert leftovers(tmp_path) == []
