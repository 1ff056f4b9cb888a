"""Old import paths of the flat package (before the floors), kept working for saved scripts.

``import symclr_ft.predict`` still gives the module that now lives at ``symclr_ft.use.predict``,
with a DeprecationWarning that names the new place.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "coco": "data.coco", "shards": "data.shards", "data": "data.shardset", "crops": "data.crops",
    "preprocess": "data.preprocess", "views": "data.views", "batches": "data.batches",
    "synth": "data.synth", "glyphs": "data.universe",
    "model": "models.backbones", "losses": "models.losses", "inference": "models.folding",
    "multilayer": "models.multilayer", "wise": "models.wise", "export": "models.export",
    "knn": "eval.knn", "metrics": "eval.metrics", "evaluate": "eval.evaluate", "report": "eval.report",
    "index": "use.index", "predict": "use.predict", "rejection": "use.rejection",
    "spot": "use.spot.spotting", "spot_objectness": "use.spot.objectness",
    "spot_report": "use.spot.report",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves ``symclr_ft.<old>`` to the module's new place (``symclr_ft.data`` is a package
    now, so only its old names that are not the package's own are aliased)."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.partition(".")
        if prefix != "symclr_ft" or old not in MOVED or old == "data":
            return None
        new = f"symclr_ft.{MOVED[old]}"
        warnings.warn(f"{fullname} moved to {new}; import it from there", DeprecationWarning,
                      stacklevel=2)
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
