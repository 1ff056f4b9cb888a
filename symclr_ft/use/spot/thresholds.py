"""Count thresholds per class: the file ``symclr-spot --thresholds`` reads and report.html saves.

A detection is counted (in counts.csv, the report and ``Spots.counts``) when its score is at
least its class's threshold; a class the file does not name uses the global ``count_score``.
The format is one JSON object::

    {"count_score": 0.7, "classes": {"valve": 0.65, "pump": 0.8}, "box_scales": {"valve": 1.2}}

- ``count_score`` (optional): the global threshold, a number in [-1, 1]; it overrides
  ``--count-score`` (or ``Spotter(count_score=...)``); without it that one applies.
- ``classes`` (optional): class name -> threshold in [-1, 1], for the classes that differ.
- ``box_scales`` (optional): class name -> factor on its boxes' size, in (0, 10], for the
  classes whose boxes per-class calibration rescaled (``--count-score per-class`` writes them;
  the boxes decide NMS, so the file reproduces the run's counts only with them).

Any other key, a threshold that is not a number in [-1, 1], a box scale outside (0, 10], and a
class name that is not among the exemplars' classes are refused with one line naming the file:
a misspelt class would otherwise be counted at the global threshold without a word, and the
takeoff would be off unnoticed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from symclr_ft.errors import UserError

KEYS = ("count_score", "classes", "box_scales")
MAX_BOX_SCALE = 10.0
SHOWN_NAMES = 8  # exemplar classes named in the unknown-class error (a sheet set may have hundreds)


@dataclass(frozen=True)
class CountThresholds:
    """A parsed thresholds file: the global threshold (None: keep the one given elsewhere) and
    the per-class ones; ``source`` names it in errors."""

    count_score: float | None = None
    classes: dict[str, float] = field(default_factory=dict)
    source: str = "thresholds"
    box_scales: dict[str, float] = field(default_factory=dict)


def _threshold(value, where: str) -> float:
    """A threshold from JSON: a finite number in [-1, 1] (scores are cosine similarities and
    their combinations with correlations), else one line naming ``where``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not -1.0 <= value <= 1.0:
        raise UserError(f"{where} must be a number in [-1, 1], got {json.dumps(value)}")
    return float(value)


def parse_thresholds(data, source: str = "thresholds") -> CountThresholds:
    """The thresholds of an already decoded file (or a dict given from Python), checked."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a JSON object like {{\"count_score\": 0.7, \"classes\": "
                        f"{{\"name\": 0.65}}}}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise UserError(f"{source}: unknown key {', '.join(map(repr, unknown))} (a thresholds file has "
                        "count_score, classes and box_scales)")
    count_score = None
    if data.get("count_score") is not None:
        count_score = _threshold(data["count_score"], f"{source}: count_score")
    classes = data.get("classes") or {}
    if not isinstance(classes, dict):
        raise UserError(f"{source}: classes must be an object of class name -> threshold, "
                        f"got {type(classes).__name__}")
    checked = {str(name): _threshold(v, f"{source}: classes[{json.dumps(name)}]") for name, v in classes.items()}
    scales = data.get("box_scales") or {}
    if not isinstance(scales, dict):
        raise UserError(f"{source}: box_scales must be an object of class name -> factor, got {type(scales).__name__}")
    return CountThresholds(count_score, checked, source,
                           {str(name): _box_scale(v, f"{source}: box_scales[{json.dumps(name)}]")
                            for name, v in scales.items()})


def _box_scale(value, where: str) -> float:
    """A box scale from JSON: a finite number in (0, MAX_BOX_SCALE], else one line naming ``where``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0.0 < value <= MAX_BOX_SCALE:
        raise UserError(f"{where} must be a number in (0, {MAX_BOX_SCALE:g}], got {json.dumps(value)}")
    return float(value)


def read_thresholds(source) -> CountThresholds:
    """A thresholds file (path) or dict, checked; an unreadable or malformed file is one line."""
    if isinstance(source, dict):
        return parse_thresholds(source)
    path = Path(source)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such thresholds file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the thresholds file ({getattr(err, 'strerror', None) or err})") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise UserError(f"{path}: not JSON ({err})") from None
    return parse_thresholds(data, str(path))


def check_classes(thresholds: CountThresholds, class_names: list[str]) -> None:
    """Refuse class names that are not the exemplars' (with the names that are, or some)."""
    known_names = set(class_names)
    unknown = [n for n in [*thresholds.classes, *thresholds.box_scales] if n not in known_names]
    unknown = list(dict.fromkeys(unknown))
    if unknown:
        known = ", ".join(class_names[:SHOWN_NAMES]) + (" ..." if len(class_names) > SHOWN_NAMES else "")
        which = f"class {unknown[0]!r} is" if len(unknown) == 1 else f"classes {', '.join(map(repr, unknown))} are"
        raise UserError(f"{thresholds.source}: {which} not among the exemplars' classes ({known})")


def apply_thresholds(cfg, thresholds: CountThresholds, class_names: list[str]) -> None:
    """Set ``cfg.count_score`` (when the file gives one), ``cfg.class_count_scores`` and
    ``cfg.class_box_scales`` from ``thresholds``, after checking its class names against the
    exemplars'."""
    check_classes(thresholds, class_names)
    if thresholds.count_score is not None:
        cfg.count_score = thresholds.count_score
    cfg.class_count_scores = dict(thresholds.classes)
    cfg.class_box_scales = dict(thresholds.box_scales)


def thresholds_of(cfg) -> dict:
    """The thresholds file's content for ``cfg`` (what ``--thresholds`` reads back); box
    scales only where calibration set some."""
    out = {"count_score": cfg.count_score, "classes": dict(cfg.class_count_scores)}
    if cfg.class_box_scales:
        out["box_scales"] = dict(cfg.class_box_scales)
    return out
