"""symclr_ft: few-shot recognition of symbols in engineering drawings.

COCO drawings -> make-shards -> contrastive fine-tuning (Accelerate) -> k-NN few-shot
evaluation -> feature indexes, predictions with "unknown", and spotting on whole drawings.

The Python API, the same calls the commands make::

    from symclr_ft import Spotter, SymbolIndex, load_model

    model = load_model("runs/demo_cpu/model.pt")             # or an ONNX export
    index = SymbolIndex.from_folder(model, "my_symbols/")    # one subfolder of crops per class
    result = index.predict(["crop.png"], reject="auto")      # labels, or "unknown"
    found = Spotter(model, "my_symbols/").spot("drawing.png")  # boxes, labels, scores, counts

The names are imported on first use (a module ``__getattr__``), so ``import symclr_ft`` stays
light: the commands import ``symclr_ft.errors`` before torch on purpose.
"""

from __future__ import annotations

import importlib

from symclr_ft import _moved

__version__ = "0.1.0"

_moved.install()

# public name -> the module that defines it
_API = {
    "load_model": "symclr_ft.use.embedder",
    "Model": "symclr_ft.use.embedder",
    "Embedder": "symclr_ft.use.embedder",
    "SymbolIndex": "symclr_ft.use.symbol_index",
    "Prediction": "symclr_ft.use.symbol_index",
    "Spotter": "symclr_ft.use.spot.spotter",
    "Spots": "symclr_ft.use.spot.spotter",
    "SpotConfig": "symclr_ft.use.spot.config",
    "UserError": "symclr_ft.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'symclr_ft' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # the next access does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
