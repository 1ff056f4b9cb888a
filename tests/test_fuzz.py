"""Fuzzing what users hand to the commands: random config values, random bytes as model files,
as shard members and as the images of a COCO export. Two outcomes are accepted: success, or a
``UserError`` whose message is one line (what the commands print as ``error: ...``, exit 2).
Any other exception is a traceback a user would see, and fails the test.

Bounded so that the whole file runs in well under a minute on 2 cores;
``SYMCLR_FUZZ_EXAMPLES=500`` searches longer.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from symclr_ft import config, train

from symclr_ft.data import shards
from symclr_ft.data.coco import ANNOTATIONS_FILE
from symclr_ft.config import Config, config_to_dict
from symclr_ft.data.shardset import iter_shard, load_split
from symclr_ft.errors import UserError
from symclr_ft.models.backbones import load_model_file
from symclr_ft.data.shards import TAR_HEADERS


def fuzz(examples: int):
    return settings(
        max_examples=int(os.environ.get("SYMCLR_FUZZ_EXAMPLES", examples)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def succeeds_or_one_line(call) -> object:
    """Run ``call``; a UserError must be one line. Anything else propagates (a traceback)."""
    try:
        result = call()
    except UserError as err:
        event("one-line error")
        message = str(err)
        assert message and "\n" not in message and "Traceback" not in message, message
        return None
    event("success")
    return result


# Any value YAML can carry, and some it has trouble with.
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.sampled_from([10**400, -(2**63), "1e-3", "nan", "inf", "", "random", "simclr:", "/dev/null"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)  # fmt: skip
KEYS = [(s, k) for s, keys in config_to_dict(Config()).items() for k in keys]


# ============================================================================ config values


@fuzz(60)
@given(values=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=6))
def test_random_config_values_load_or_say_one_line(values):
    raw = config_to_dict(Config())
    for (section, key), value in values.items():
        raw[section][key] = value
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "config.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        cfg = succeeds_or_one_line(lambda: config.load_config(path))
    if cfg is not None:  # what loads also survives being written out and read back
        assert config.config_from_dict(config_to_dict(cfg)) == cfg


@fuzz(40)
@given(section_key=st.sampled_from(KEYS), value=VALUES)
def test_the_train_command_validates_random_overrides_before_training(section_key, value):
    """``symclr-train`` up to the point where training would start (train.train replaced)."""
    section, key = section_key
    text = yaml.safe_dump(value, allow_unicode=True, default_flow_style=True).removesuffix("\n...\n")
    override = f"{section}.{key}={text.strip()}"
    started = []
    real_train, train.train = train.train, lambda cfg, **kw: started.append(cfg) or {}
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = train.main([override])
    except SystemExit as exit_:
        code = exit_.code
    finally:
        train.train = real_train
    err = stderr.getvalue()
    if started:
        assert code == 0
    else:
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err


# ============================================================================ model files


@pytest.fixture(scope="module")
def model_header():
    """A model file's fields with a tiny state_dict (a real model file is 45 MB; the loader
    reads the header fields before the weights, which is where crafted values bite)."""
    return {"epoch": 1, "arch": "resnet18", "out_dim": 8, "input_norm": "none",
            "format_version": 1, "state_dict": {"backbone.fc.0.weight": torch.zeros(2, 2)}}  # fmt: skip


HEADER_VALUES = VALUES | st.sampled_from([-1, 0, 10**12, "resnet18", "imagenet", "x", 1.5])


@fuzz(25)
@given(data=st.data())
def test_random_model_files_load_or_say_one_line(data, model_header, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    kind = data.draw(st.sampled_from(["bytes", "header", "cut"]), label="kind")
    if kind == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=2048), label="bytes"))
    else:
        fields = dict(model_header)
        if kind == "header":
            key = data.draw(st.sampled_from(sorted(fields) + ["model", "extra"]), label="key")
            fields[key] = data.draw(HEADER_VALUES, label="value")
        buffer = io.BytesIO()
        torch.save(fields, buffer)
        raw = buffer.getvalue()
        if kind == "cut":
            raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
        path.write_bytes(raw)
    succeeds_or_one_line(lambda: load_model_file(path))


# ============================================================================ shard members


def _write_tar(path: Path, samples: dict[str, dict[str, bytes]]) -> None:
    with wds.TarWriter(str(path), **TAR_HEADERS) as writer:
        for key, members in samples.items():
            writer.write({"__key__": key, **members})


@fuzz(40)
@given(data=st.data())
def test_random_bytes_as_shard_members_load_or_say_one_line(data, synth_shards):
    """A shard whose members are replaced by random bytes, or cut, or given odd names."""
    original = dict(iter_shard(synth_shards / "test-000000.tar"))
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        for name in ("classes.json", "stats.json", "test-000001.tar"):
            shutil.copy(synth_shards / name, folder / name)
        samples = {key: dict(members) for key, members in original.items()}
        for _ in range(data.draw(st.integers(1, 3), label="changes")):
            key = data.draw(st.sampled_from(sorted(samples)), label="sample")
            ext = data.draw(st.sampled_from(["png", "cls", "json", "txt", "png.png"]), label="member")
            value = samples[key].get(ext, b"")
            samples[key][ext] = data.draw(
                st.binary(max_size=256)
                | st.just(value[: len(value) // 2])
                | st.sampled_from([b"-1", b"999", b"1e3", b"\xff\xfe", b"[]", b"{", b"NaN"]),
                label="bytes",
            )
        _write_tar(folder / "test-000000.tar", samples)
        crops = succeeds_or_one_line(lambda: load_split(folder, "test", 16))
        if crops is not None:
            assert len(crops) == len(load_split(synth_shards, "test", 16))


@fuzz(40)
@given(data=st.data())
def test_random_stats_and_class_maps_load_or_say_one_line(data, synth_shards):
    """stats.json (what the set is verified against) and classes.json set to random JSON,
    one value replaced, or random bytes."""
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        for path in [synth_shards / "classes.json", *synth_shards.glob("test-*.tar")]:
            shutil.copy(path, folder / path.name)
        stats = json.loads((synth_shards / "stats.json").read_text())
        name = data.draw(st.sampled_from(["stats.json", "classes.json"]), label="file")
        kind = data.draw(st.sampled_from(["value", "whole", "bytes"]), label="kind")
        if name == "classes.json":
            classes = json.loads((folder / name).read_text())
            classes["classes"][0]["index" if kind == "value" else "name"] = data.draw(VALUES)
            (folder / name).write_text(json.dumps(classes))
            (folder / "stats.json").write_text(json.dumps(stats))
        elif kind == "value":
            key = data.draw(st.sampled_from(["crops", "shards", "per_class"]), label="key")
            stats["splits"]["test"][key] = data.draw(VALUES, label="value")
            (folder / name).write_text(json.dumps(stats))
        elif kind == "whole":
            (folder / name).write_text(json.dumps(data.draw(VALUES, label="json")))
        else:
            (folder / name).write_bytes(data.draw(st.binary(max_size=64), label="bytes"))
        crops = succeeds_or_one_line(lambda: load_split(folder, "test", 16))
        if crops is not None:
            assert len(crops) == len(load_split(synth_shards, "test", 16))


# ============================================================================ images of an export


def _random_image(data: st.DataObject, size: tuple[int, int]) -> Image.Image:
    """A drawing of ``size`` in a random mode (the ones PNG and TIFF files carry)."""
    mode = data.draw(
        st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK"]), label="mode"
    )
    seed = data.draw(st.integers(0, 2**32 - 1), label="pixels")
    grey = np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * data.draw(st.sampled_from([1, 257, 1000])))
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / data.draw(st.sampled_from([1.0, 255.0])))
    if mode == "LA":
        return Image.fromarray(np.dstack([grey, grey[::-1]]), mode="LA")
    return Image.fromarray(grey).convert(mode)


@fuzz(40)
@given(data=st.data())
def test_random_images_in_an_export_give_shards_or_one_line(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    export = root / "coco" / "train"
    export.mkdir(parents=True)
    size = (24, 20)
    coco = {
        "images": [{"id": 1, "file_name": "d.png", "width": size[0], "height": size[1]}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 8]}],
        "categories": [{"id": 1, "name": "bell"}],
    }
    (export / ANNOTATIONS_FILE).write_text(json.dumps(coco))
    kind = data.draw(st.sampled_from(["image", "image", "bytes", "cut"]), label="kind")
    if kind == "bytes":
        (export / "d.png").write_bytes(data.draw(st.binary(max_size=512), label="bytes"))
    else:
        image, buffer = _random_image(data, size), io.BytesIO()
        fmt = data.draw(st.sampled_from(["PNG", "TIFF"]), label="format")
        try:
            image.save(buffer, format=fmt)
        except OSError:  # "cannot write mode CMYK as PNG"
            buffer = io.BytesIO()
            image.save(buffer, format="TIFF")
        raw = buffer.getvalue()
        if kind == "cut":
            raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
        (export / "d.png").write_bytes(raw)
    stats = succeeds_or_one_line(lambda: shards.make_shards(root / "coco", root / "out"))
    if stats is not None:
        crop = Image.open(io.BytesIO(next(iter_shard(root / "out" / "train-000000.tar"))[1]["png"]))
        assert crop.mode == "RGB" and crop.size == (12, 10)


# ============================================================================ command-line numbers


def _command_parsers() -> dict:
    """Every command's parser and the arguments it requires (paths are never opened here)."""
    from symclr_ft.data import synth, universe
    from symclr_ft.eval import evaluate, report
    from symclr_ft.models import export
    from symclr_ft.use import predict
    from symclr_ft.use.spot import spotting

    return {
        "make-shards": (shards.build_parser, ["--coco", "c", "--out", "o"]),
        "symclr-train": (train.build_parser, []),
        "symclr-evaluate": (evaluate.build_parser, ["--checkpoint", "random"]),
        "symclr-report": (report.build_parser, ["run"]),
        "symclr-synth": (synth.build_parser, ["--out", "o"]),
        "symclr-universe": (universe.build_parser, ["--out", "o", "--classes", "1"]),
        "symclr-embed": (predict.embed_parser, ["--model", "m", "--input", "i", "--out", "o"]),
        "symclr-predict": (predict.predict_parser, ["--model", "m", "--support", "s", "--query", "q", "--out", "o"]),
        "symclr-export": (export.build_parser, ["--model", "m", "--onnx", "o"]),
        "symclr-spot": (spotting.build_parser, ["--model", "m", "--exemplars", "e", "--drawings", "d", "--out", "o"]),
    }


def _typed_options(parser) -> list:
    """The options that take a number (every option with a type: the bounded helpers, and
    --reject / --count-score, which also take a word, and symclr-spot's --pages, page ranges)."""
    return [a for a in parser._actions if a.type not in (None, str) and a.option_strings]


def test_every_numeric_option_is_range_checked_by_the_one_helper():
    """No command parses a number with a bare ``int`` or ``float``: each goes through
    ``errors.bounded_int`` / ``bounded_float`` (or a type built on them), so its range is the
    parser's business and a bad value is one line before any work."""
    for name, (build, _) in _command_parsers().items():
        for action in _typed_options(build()):
            assert action.type not in (int, float), (name, action.option_strings)
            bounded = getattr(action.type, "bounds", None) is not None
            assert bounded or action.dest in ("reject", "count_score", "pages"), (name, action.option_strings)


NUMBER_TEXT = st.one_of(
    st.integers().map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "-nan", "inf", "-inf", "1e400", "-0", "0x10", "1_000", "\u0663",
                     "1e-400", "auto", "none", "9" * 5000, "\x00", "1.5", "+3", "0.5 ", "--"]),
    st.text(max_size=8),
)


@fuzz(200)
@given(data=st.data())
def test_random_numbers_for_every_command_option_parse_or_say_one_line(data):
    """Any text as the value of 1-3 numeric options of any command: it parses to a value in
    the option's range, or it is refused with one line (exit 2 in the command); never a
    traceback. The ``--opt=value`` form, so that a value starting with '-' stays a value."""
    parsers = {n: v for n, v in _command_parsers().items() if _typed_options(v[0]())}
    build, required = parsers[data.draw(st.sampled_from(sorted(parsers)), label="command")]
    parser = build()
    options = data.draw(st.lists(st.sampled_from(_typed_options(parser)), min_size=1, max_size=3,
                                 unique_by=lambda a: a.dest), label="options")
    argv = list(required) + [f"{a.option_strings[-1]}={data.draw(NUMBER_TEXT, label=a.dest)}" for a in options]
    args = succeeds_or_one_line(lambda: parser.parse_args(argv))
    for action in options if args is not None else []:
        value = getattr(args, action.dest)
        lo, hi = getattr(action.type, "bounds", (None, None))
        if action.dest in ("reject", "count_score"):  # a word, or a similarity
            assert value in ("none", "auto") or -1 <= float(value) <= 1, value
        else:
            assert isinstance(value, (int, float)) and math.isfinite(value), value
            assert (lo is None or value >= lo) and (hi is None or value <= hi), (action.dest, value)
