"""Feature index folders: round trip, the model hash check, damaged files as one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from symclr_ft.errors import UserError
from symclr_ft.use.index import FeatureIndex, is_index, load_index, save_index


def make_index(n: int = 5, sha: str = "a" * 64) -> FeatureIndex:
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(n, 4, generator=g), dim=-1)
    labels = torch.tensor([0, 1, -1, 1, 0][:n])
    sources = [{"file": f"x{i}.png"} if i % 2 else {"image": "d.jpg", "bbox": [1.0, 2.0, 3.0, 4.0]}
               for i in range(n)]
    return FeatureIndex(feats, labels, ["valve", "pump"], sources, sha, 96, "imagenet")


def test_round_trip_is_exact_and_leaves_no_temporary(tmp_path):
    index = make_index()
    save_index(index, tmp_path / "idx")
    assert is_index(tmp_path / "idx")
    again = load_index(tmp_path / "idx", expect_sha256="a" * 64)
    assert torch.equal(again.features, index.features) and torch.equal(again.labels, index.labels)
    assert (again.class_names, again.sources, again.image_size, again.input_norm) == (
        index.class_names, index.sources, 96, "imagenet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    # no pickle anywhere: the tensors file is safetensors (a JSON header length, then JSON)
    assert (tmp_path / "idx" / "features.safetensors").read_bytes()[8:9] == b"{"


def test_precision_is_recorded_and_older_indexes_read_as_fp32(tmp_path):
    import json

    index = make_index()
    index.precision = "bf16"
    save_index(index, tmp_path / "idx")
    assert load_index(tmp_path / "idx").precision == "bf16"
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    del meta["precision"]  # written before the field existed
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    assert load_index(tmp_path / "idx").precision == "no"
    meta["precision"] = "fp8"
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="precision missing or malformed"):
        load_index(tmp_path / "idx")


def test_index_of_another_model_is_one_line_naming_both_hashes(tmp_path):
    save_index(make_index(sha="a" * 64), tmp_path / "idx")
    with pytest.raises(UserError) as err:
        load_index(tmp_path / "idx", expect_sha256="b" * 64)
    message = str(err.value)
    assert "a" * 16 in message and "b" * 16 in message and "\n" not in message


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "features.safetensors").write_bytes(b"\x00" * 20), "not a readable safetensors"),
    (lambda d: (d / "index.json").write_text("{}"), "not a feature index"),
    (lambda d: (d / "index.json").write_text("[1"), "not valid JSON"),
    (lambda d: (d / "index.json").unlink(), "not a feature index"),
])
def test_damaged_index_is_one_line(tmp_path, damage, message):
    save_index(make_index(), tmp_path / "idx")
    damage(tmp_path / "idx")
    with pytest.raises(UserError, match=message):
        load_index(tmp_path / "idx")


def test_mismatched_counts_and_labels_are_refused(tmp_path):
    index = make_index()
    index.sources = index.sources[:3]
    save_index(index, tmp_path / "a")
    with pytest.raises(UserError, match="5 features, 5 labels and 3 sources"):
        load_index(tmp_path / "a")
    index = make_index()
    index.labels = torch.tensor([0, 1, 2, 0, 0])
    save_index(index, tmp_path / "b")
    with pytest.raises(UserError, match="label is outside -1..1"):
        load_index(tmp_path / "b")
