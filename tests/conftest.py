"""Shared fixtures: a tiny synthetic Roboflow export and its shards, made once per session.

Treat both as read-only: every test file may use them. A test that needs to break the data
copies it first (see tests/test_shards.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from symclr_ft.data import shards, synth

SYNTH_CLASSES = 12
SYNTH_DRAWINGS = {"train": 6, "valid": 6, "test": 6}
SYNTH_SHARD_SIZE = 32  # small, so that train spans several tar files


def real_data_dir() -> Path:
    """The firefighting export: $SYMCLR_DATA, else ../shared/data/firefighting beside the repo."""
    env = os.environ.get("SYMCLR_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared/data/firefighting"


@pytest.fixture(scope="session")
def synth_coco(tmp_path_factory) -> Path:
    """A Roboflow-style export: train/valid/test with 6 drawings of 256x256 each, 12 classes
    (COCO ids 1-12, plus the unused parent id 0), every class present in train."""
    out = tmp_path_factory.mktemp("synth") / "coco"
    return synth.write_synthetic_coco(
        out,
        classes=SYNTH_CLASSES,
        drawings_per_split=dict(SYNTH_DRAWINGS),
        image_size=(256, 256),
        symbols_per_drawing=(6, 10),
        seed=0,
    )


@pytest.fixture(scope="session")
def synth_shards(synth_coco, tmp_path_factory) -> Path:
    """``make-shards --coco <synth_coco> --out <tmp>/shards --shard-size 32``."""
    out = tmp_path_factory.mktemp("synth_shards") / "shards"
    code = shards.main(
        ["--coco", str(synth_coco), "--out", str(out), "--shard-size", str(SYNTH_SHARD_SIZE)]
    )
    assert code == 0
    return out


@pytest.fixture(scope="session")
def firefighting_dir() -> Path:
    """The real dataset, or skip the test when it is not on this machine."""
    path = real_data_dir()
    if not (path / "train" / "_annotations.coco.json").is_file():
        pytest.skip(f"real dataset not found at {path} (set SYMCLR_DATA)")
    return path


def odd_images(ink: np.ndarray) -> dict[str, Image.Image]:
    """The drawing ``ink`` (grey, dark ink on light paper) in the modes that Pillow's own
    ``convert("RGB")`` gets wrong and ``coco.to_rgb`` gets right: 16-bit (it clipped to white)
    and ink only in the alpha channel (it turned black). The make-shards tests
    (tests/data/test_coco.py) and the tests of every command that decodes images use them,
    so all decode alike."""
    rgba = np.dstack([np.zeros_like(ink)] * 3 + [255 - ink])
    return {
        "16-bit": Image.fromarray(ink.astype(np.uint16) * 257),
        "alpha-only": Image.fromarray(rgba, mode="RGBA"),
    }
