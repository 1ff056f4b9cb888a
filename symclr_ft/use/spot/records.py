"""What the spotting pipeline passes between its parts: the exemplars of a run and the
candidates of one drawing (plain records; ``pipeline.py`` makes them, ``scoring.py`` reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from symclr_ft.use.spot.feature_match import FeatureKernels
from symclr_ft.use.spot.template import Templates


@dataclass
class Exemplars:
    """L2-normalised features of the exemplars, each in its quarter turns."""

    features: torch.Tensor  # (E, D)
    labels: torch.Tensor  # (E,) class index into class_names
    sizes: torch.Tensor  # (E, 2) float box width, height as seen in this turn
    class_names: list[str]
    category_ids: list[int]  # COCO id of each class (index + 1 when not from COCO)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    templates: Templates | None = None  # pictures for template matching (None: from an index)
    kernels: FeatureKernels | None = None  # feature maps for feature matching (cfg.feature_match)
    # (class index, RGB pixels of make-shards' padded crop, symbol box [x, y, w, h] in them) of each
    # exemplar from an image: what the calibration sheet pastes (None: from an index)
    crops: list[tuple[int, np.ndarray, list[float]]] | None = None
    grey: "Exemplars | None" = None  # the same exemplars as a grey drawing shows them (embed_exemplars)


@dataclass
class Candidates:
    boxes: torch.Tensor  # (N, 4) x0, y0, x1, y1 float, the candidate's own (padded ink) box
    features: torch.Tensor  # (N, D) L2-normalised
    objectness: torch.Tensor  # (N,) P(symbol), 1 without an objectness model
    correlation: torch.Tensor | None = None  # (N, C) best template correlation of each class
    template_sizes: torch.Tensor | None = None  # (N, C, 2) box (w, h) of that best template
    from_template: torch.Tensor | None = None  # (N,) bool: proposed by template matching alone
    feature_correlation: torch.Tensor | None = None  # (N, C) best feature-map correlation of each class
    feature_sizes: torch.Tensor | None = None  # (N, C, 2) box (w, h) of that best feature match
    from_features: torch.Tensor | None = None  # (N,) bool: proposed by feature matching alone
