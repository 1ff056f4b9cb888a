"""Feature index files: the embedded crops of a support (or query) set, kept to be reused.

An index is a folder written by the output rule of ``io.output_dir`` (complete or not at all;
only a folder it wrote itself is replaced, and in it only its own files)::

    INDEX/features.safetensors   features (N, D) float32, L2-normalised; labels (N,) int64;
                                 with symclr-embed --views, views (N, V, D) float32
    INDEX/index.json             class names, sources, model sha256, image size, input norm,
                                 precision of the embedding

safetensors and JSON, never pickle: an index from someone else cannot run code when loaded.
Features of two models are not comparable, so the index records the SHA-256 of the model
file that made it and :func:`load_index` refuses it for another model (one line, both hashes).

Example::

    save_index(FeatureIndex(feats, labels, ["valve", "pump"], sources, sha, 96, "imagenet"), "idx")
    index = load_index("idx", expect_sha256=model_file_info("model.pt")["sha256"])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from symclr_ft.errors import UserError, library_message
from symclr_ft.io import OutputKind, output_dir, read_json

FEATURES_FILE = "features.safetensors"
META_FILE = "index.json"
FORMAT = "symclr_ft feature index 1"
SKIPPED_FILE = "skipped.csv"  # crops symclr-embed could not decode, with the reason
# What symclr-embed writes into its folder; an index written before outputs carried a
# manifest is told by its two files.
INDEX_OUTPUT = OutputKind("symclr-embed", (FEATURES_FILE, META_FILE, SKIPPED_FILE),
                          legacy=(FEATURES_FILE, META_FILE))


@dataclass
class FeatureIndex:
    features: torch.Tensor  # (N, D) float32, L2-normalised
    labels: torch.Tensor  # (N,) int64, -1 = unlabelled
    class_names: list[str]
    sources: list[dict]  # {"file": ...} or {"image": ..., "bbox": [x, y, w, h]}
    model_sha256: str
    image_size: int
    input_norm: str
    precision: str = "no"  # of the embedding: "no" (fp32), "bf16" or "fp16"
    views: torch.Tensor | None = None  # (N, V, D) augmented views of each crop (symclr-embed --views)

    def __len__(self) -> int:
        return int(self.labels.numel())


def is_index(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / META_FILE).is_file() and (path / FEATURES_FILE).is_file()


def save_index(index: FeatureIndex, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``index`` to the folder ``path``: a new or empty folder, or an earlier index
    (replaced only when the new one is complete); any other folder only with ``overwrite``,
    and then only the index's own files in it are replaced (``io.output_dir``)."""
    with output_dir(path, INDEX_OUTPUT, overwrite) as tmp:
        write_index(index, tmp, path)
    return Path(path)


def write_index(index: FeatureIndex, folder: Path, where: str | Path) -> None:
    """The index's two files into ``folder`` (the temporary folder of the output ``where``,
    which messages name); a full disk is one line (safetensors raises its own error type)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    meta = {
        "format": FORMAT,
        "class_names": list(index.class_names),
        "model_sha256": index.model_sha256,
        "image_size": int(index.image_size),
        "input_norm": index.input_norm,
        "precision": index.precision,
        "count": len(index),
        "sources": list(index.sources),
    }
    tensors = {
        "features": index.features.detach().to("cpu", torch.float32).contiguous(),
        "labels": index.labels.detach().to("cpu", torch.int64).contiguous(),
    }
    if index.views is not None:
        tensors["views"] = index.views.detach().to("cpu", torch.float32).contiguous()
    try:
        save_file(tensors, str(folder / FEATURES_FILE))
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    except (SafetensorError, OSError) as err:
        reason = getattr(err, "strerror", None) or library_message(err)
        raise UserError(f"{where}: cannot write the feature index ({reason})") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable safetensors file ({first[:160]})") from None


def _check_meta(meta, where: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{where}: not a feature index (format is not {FORMAT!r})")
    checks = {
        "class_names": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
        "model_sha256": lambda v: isinstance(v, str),
        "image_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 16,
        "input_norm": lambda v: v in ("none", "imagenet"),
        "precision": lambda v: v in (None, "no", "bf16", "fp16"),
        "sources": lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v),
    }
    for key, ok in checks.items():
        if not ok(meta.get(key)):
            raise UserError(f"{where}: {key} missing or malformed")


def _check_tensors(tensors: dict, meta: dict, where: Path) -> None:
    feats, labels = tensors.get("features"), tensors.get("labels")
    if feats is None or labels is None or feats.dim() != 2 or labels.dim() != 1:
        raise UserError(f"{where}: needs features (N, D) and labels (N,)")
    if feats.dtype != torch.float32 or labels.dtype != torch.int64:
        raise UserError(f"{where}: features must be float32 and labels int64")
    n = labels.numel()
    if feats.shape[0] != n or len(meta["sources"]) != n:
        raise UserError(
            f"{where}: {feats.shape[0]} features, {n} labels and {len(meta['sources'])} sources"
        )
    if n and (int(labels.min()) < -1 or int(labels.max()) >= len(meta["class_names"])):
        raise UserError(f"{where}: a label is outside -1..{len(meta['class_names']) - 1}")
    if not bool(torch.isfinite(feats).all()):
        raise UserError(f"{where}: features are not all finite")
    views = tensors.get("views")
    if views is not None and (views.dtype != torch.float32 or views.dim() != 3
                              or views.shape[0] != n or views.shape[2] != feats.shape[1]
                              or not bool(torch.isfinite(views).all())):
        raise UserError(f"{where}: views must be finite float32 (N, V, D) matching the features")


def load_index(path: str | Path, expect_sha256: str | None = None) -> FeatureIndex:
    """Read and check an index folder; with ``expect_sha256``, refuse one made by another
    model file."""
    path = Path(path)
    if not is_index(path):
        raise UserError(f"{path}: not a feature index (needs {FEATURES_FILE} and {META_FILE})")
    meta = read_json(path / META_FILE, "feature index")
    _check_meta(meta, path / META_FILE)
    if expect_sha256 is not None and meta["model_sha256"] != expect_sha256:
        raise UserError(
            f"{path}: made with model sha256 {meta['model_sha256'][:16]}, but the model given "
            f"has sha256 {expect_sha256[:16]}; embed it again with this model"
        )
    tensors = _read_tensors(path / FEATURES_FILE)
    _check_tensors(tensors, meta, path / FEATURES_FILE)
    return FeatureIndex(
        tensors["features"], tensors["labels"], meta["class_names"], meta["sources"],
        meta["model_sha256"], meta["image_size"], meta["input_norm"],
        str(meta.get("precision", "no")),  # indexes written before it was recorded: fp32
        tensors.get("views"),
    )
