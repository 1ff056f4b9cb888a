"""Reading checkpoint files safely: ``torch.load(..., weights_only=True)`` with one-line errors.

Why a module of its own: model files (:mod:`symclr_ft.models.backbones`) and the shipped fp16
weights (:mod:`symclr_ft.models.shipped`, which backbones loads from) both read checkpoints, and
neither may import the other back. Example::

    data = read_checkpoint("runs/demo_cpu/model.pt")  # {"arch": ..., "state_dict": {...}, ...}
"""

from __future__ import annotations

import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import torch

from symclr_ft.errors import UserError, library_message

__all__ = ["read_checkpoint"]


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load(..., weights_only=True)`` with one-line errors: a file that would need
    arbitrary unpickling (a crafted pickle can run code) is refused, not executed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint file not found")
    try:
        with warnings.catch_warnings():
            # Legacy (non-zip) files such as the efficientnet-lite0 package's use pickle
            # protocol 4; the weights-only unpickler reads them and warns every time.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"{path}: refused to load: not a plain weights file ({library_message(err)}); "
            "only tensors and plain containers are accepted (weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError,
            # the weights-only unpickler on a damaged or crafted stream (found by fuzzing)
            IndexError, KeyError, TypeError, AttributeError, struct.error, MemoryError) as err:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({library_message(err)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a dict of weights, got {type(data).__name__}")
    return data
