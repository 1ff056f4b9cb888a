"""Find and count symbols on whole drawings from Python: :class:`Spotter`.

The same pipeline as ``symclr-spot`` (:mod:`symclr_ft.use.spot.pipeline`: ink candidates, the
"is this a symbol" model fitted on the exemplars' COCO drawings, crops embedded and compared
with every exemplar in its four quarter turns, NMS, counts from ``count_score`` or per-class
``thresholds``), one drawing at a time, with the exemplars embedded once. Example::

    from symclr_ft import Spotter, load_model

    spotter = Spotter(load_model("runs/demo_cpu/model.pt"), "exemplars/")  # class subfolders
    found = spotter.spot("drawing.png")
    found.counts                       # {'valve': 3, 'pump': 1}
    found.boxes[0], found.labels[0], found.scores[0]
    # thresholds saved from symclr-spot's report.html (or a dict in that format)
    Spotter(model, "exemplars/", thresholds="thresholds.json")
    # each class's own threshold from the exemplars (calibration.py); spotter.calibration.seconds
    Spotter(model, "exemplars/", count_score="per-class")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from symclr_ft.data.coco import to_rgb
from symclr_ft.errors import UserError
from symclr_ft.use.embedder import Model, array_image
from symclr_ft.use.spot.calibration import calibrate_for, require_pictures
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.drawings import coco_json, open_rgb
from symclr_ft.use.spot.objectness import fit_objectness
from symclr_ft.use.spot.pipeline import (
    exemplars_of_index, load_exemplars, reject_threshold, spot_image, to_coco_results,
)
from symclr_ft.use.spot.report import count_detections, count_thresholds
from symclr_ft.use.spot.thresholds import apply_thresholds, read_thresholds
from symclr_ft.use.symbol_index import SymbolIndex

__all__ = ["Spots", "Spotter"]


@dataclass
class Spots:
    """Detections on one drawing, best first within NMS: ``boxes`` (N, 4) x0, y0, x1, y1 in
    pixels, their class ``labels`` and ``scores``; ``counts`` per class of the detections
    scoring at least their class's threshold: ``class_count_scores[label]`` where given, else
    ``count_score`` (every class named, 0 when none); ``skipped``: exemplars left out for this
    drawing (larger than it), with the reason."""

    boxes: torch.Tensor
    labels: list[str]
    scores: torch.Tensor
    counts: dict[str, int]
    count_score: float
    skipped: list = field(default_factory=list)
    class_count_scores: dict[str, float] = field(default_factory=dict)


def drawing_image(drawing, where: str = "drawing") -> tuple[Image.Image, str]:
    """A drawing as RGB pixels and its name: a path (decoded as ``symclr-spot`` decodes it),
    a PIL image or a numpy array (``data.coco.to_rgb``'s conversions)."""
    if isinstance(drawing, (str, Path)):
        return open_rgb(Path(drawing)), Path(drawing).name
    if isinstance(drawing, np.ndarray):
        drawing = array_image(drawing, where)
    if isinstance(drawing, Image.Image):
        return to_rgb(drawing, where), where
    raise UserError(f"{where}: expected a path, a PIL image or a numpy array, "
                    f"got {type(drawing).__name__}")


class Spotter:
    """Exemplar symbols, embedded once, to find on any number of drawings.

    ``exemplars``: a COCO split (json or split folder: ``shots`` boxes per class drawn with
    ``seed``; its drawings also fit the objectness model), a folder of class subfolders of
    crops, a ``symclr-embed`` index folder, or a :class:`~symclr_ft.use.symbol_index.SymbolIndex`.
    ``count_score``: the score from which a detection is counted (None: the config's, chosen on
    the valid split; "auto": ``symclr-predict``'s unknown threshold from the exemplars;
    "per-class": the config's, and each class's own from the exemplars' COCO split's other
    annotated drawings (with each class's box scale from their boxes), or without them from a
    calibration sheet of the exemplars' altered copies, :mod:`~symclr_ft.use.spot.calibration`,
    kept in ``self.calibration``).
    ``thresholds``: per-class count thresholds, a path or a dict in the format of
    ``symclr-spot --thresholds`` (:mod:`~symclr_ft.use.spot.thresholds`); its count_score,
    when given, overrides ``count_score``; with it, "per-class" calibrates nothing (the file
    wins, as in ``symclr-spot``)."""

    def __init__(self, model: Model, exemplars, shots: int = 1, seed: int = 0,
                 config: SpotConfig | None = None, count_score: float | str | None = None,
                 objectness: bool = True, thresholds=None):
        if not isinstance(model.net, torch.nn.Module) or not any(True for _ in model.net.parameters()):
            raise UserError(f"{model.path}: spotting needs a model.pt (ONNX exports are for "
                            "embedding and prediction)")
        if shots < 1:
            raise UserError(f"shots={shots}: must be at least 1")
        thresholds = None if thresholds is None else read_thresholds(thresholds)  # before any work
        self.model, self.cfg = model, config or SpotConfig()
        if isinstance(exemplars, SymbolIndex):
            self.exemplars = exemplars_of_index(exemplars.index)
        else:
            self.exemplars = load_exemplars(Path(exemplars), model.net, model.image_size, shots,
                                            seed, self.cfg, model.sha256)
        if count_score == "auto":
            self.cfg.count_score, _ = reject_threshold(self.exemplars)
        elif count_score == "per-class":  # the config's count_score; the classes' own below
            if thresholds is None:
                require_pictures(self.exemplars)  # before the objectness model is fitted
        elif count_score is not None:
            self.cfg.count_score = float(count_score)
        if thresholds is not None:
            apply_thresholds(self.cfg, thresholds, self.exemplars.class_names)
        self.objectness = None
        json_path = None if isinstance(exemplars, SymbolIndex) else coco_json(Path(exemplars))
        if json_path is not None and objectness:
            self.objectness = fit_objectness(json_path, self.cfg, seed=seed)
            if self.objectness is not None:
                self.cfg.box_padding = self.objectness.box_padding
        self.calibration = None
        if count_score == "per-class" and thresholds is None:  # with the objectness model spot() uses
            self.calibration = calibrate_for(model.net, self.exemplars, model.image_size, self.cfg, self.objectness,
                                             seed, json_path, shots=shots)
            self.cfg.class_count_scores = dict(self.calibration.thresholds)
            self.cfg.class_box_scales = dict(self.calibration.box_scales)

    @property
    def class_names(self) -> list[str]:
        return list(self.exemplars.class_names)

    @torch.no_grad()
    def spot(self, drawing) -> Spots:
        """Detections and counts on one drawing (a path, a PIL image or a numpy array), as
        ``symclr-spot`` writes them to detections.json and counts.csv."""
        image, name = drawing_image(drawing)
        ex = self.exemplars
        dets, too_large = spot_image(self.model.net, image, ex, self.model.image_size, self.cfg,
                                     self.objectness)
        rows = to_coco_results(dets, 0, ex)
        names = dict(zip(ex.category_ids, ex.class_names))
        counts = dict.fromkeys(ex.class_names, 0)
        per_class = count_thresholds(self.cfg, ex)
        for (_image, category), n in count_detections(rows, self.cfg.count_score, per_class).items():
            counts[names[category]] = n
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rows)],
                             dtype=torch.float32).reshape(-1, 4)
        skipped = [(f"exemplar of {n}", f"larger than drawing {name} ({image.width}x{image.height})")
                   for n in too_large]
        return Spots(boxes, [names[r["category_id"]] for r in rows],
                     torch.tensor([r["score"] for r in rows], dtype=torch.float32), counts,
                     self.cfg.count_score, skipped, dict(self.cfg.class_count_scores))
