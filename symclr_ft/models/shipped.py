"""The pretrained weights that ship with the repository: ``model.init=universe``.

Why: pretraining on the symbol universe takes about an hour of CPU; a user (and the main job)
should start from its result, not repeat it. The file is one fp16 safetensors file of at most
10 MB under ``weights/`` (safetensors: no pickle, nothing in it can run), with a JSON file beside
it holding its sha256, the architecture and input rule it was trained with, and the recipe.
Loading checks the sha256 first, so a truncated or swapped file is refused in one line.

Example::

    python -m symclr_ft.train --config configs/recommended.yaml      # model.init: universe
    python -m symclr_ft.models.shipped runs/universe/model.pt weights/universe_lite0   # re-ship
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from symclr_ft.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_NAME = "universe_lite0"
MAX_BYTES = 10 * 1024 * 1024


def shipped_paths(name_or_path: str = "") -> tuple[Path, Path]:
    """(weights file, metadata file) of ``universe`` (the default file under weights/) or of
    ``universe:PATH`` (a .safetensors file with its .json beside it)."""
    if name_or_path:
        file = Path(name_or_path).expanduser()
    else:
        file = WEIGHTS_DIR / f"{DEFAULT_NAME}.safetensors"
    return file, file.with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_shipped(name_or_path: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """The fp32 state dict and the metadata of shipped weights, after checking the sha256."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file, meta_file = shipped_paths(name_or_path)
    if not file.is_file():
        raise UserError(f"{file}: shipped weights not found (model.init=universe needs the "
                        "repository's weights/ folder, or universe:PATH)")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{meta_file}: cannot read the weights' metadata ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
        raise UserError(f"{meta_file}: no sha256 in the weights' metadata")
    actual = file_sha256(file)
    if actual != meta["sha256"]:
        raise UserError(f"{file}: sha256 {actual[:12]}... does not match {meta_file.name} "
                        f"({meta['sha256'][:12]}...): the file is damaged or not the shipped one")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{file}: not a safetensors file ({err})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, meta


def write_shipped(model_file: Path, out_stem: Path, recipe: str, max_bytes: int = MAX_BYTES) -> dict:
    """fp16 safetensors of a model file's weights plus its metadata JSON; refuses a file over
    ``max_bytes`` (the repository's limit for a committed weights file: 10 MB)."""
    from safetensors.torch import save_file

    from symclr_ft.io import atomic_path
    from symclr_ft.models.checkpoints import read_checkpoint

    data = read_checkpoint(model_file)
    state = {k: (v.to(torch.float16) if v.is_floating_point() else v).detach().contiguous()
             for k, v in data["state_dict"].items()}
    file, meta_file = out_stem.with_suffix(".safetensors"), out_stem.with_suffix(".json")
    with atomic_path(file) as tmp:
        save_file(state, str(tmp))
        if Path(tmp).stat().st_size > max_bytes:
            raise UserError(f"{file}: {Path(tmp).stat().st_size:,} bytes, over the {max_bytes:,}-byte limit")
    meta = {"sha256": file_sha256(file), "arch": data.get("arch"), "out_dim": data.get("out_dim"),
            "input_norm": data.get("input_norm"), "source": str(model_file), "recipe": recipe}
    with atomic_path(meta_file) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m symclr_ft.models.shipped MODEL.pt OUT_STEM RECIPE")
    print(json.dumps(write_shipped(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]), indent=2))
