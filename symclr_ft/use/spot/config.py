"""Every setting of the spotting pipeline, in one dataclass shared by its parts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from symclr_ft.data.components import ComponentConfig


GREY_SCORING = {"template_weight": 0.875}  # SpotConfig.grey_scoring's default
GREY_SCORING_KEYS = ("template_weight", "template_floor", "feature_match_weight")  # what it may hold


@dataclass
class SpotConfig(ComponentConfig):
    """Every setting of the spotting pipeline. The ink components' settings (``ink_threshold``,
    ``saturation``, ``line_length``, ``dilations``, ``min_side``, ``max_side``, ``tile``,
    ``tile_overlap``) are inherited from :class:`~symclr_ft.data.components.ComponentConfig`,
    shared with ``symclr-components``. ``box_padding`` is refitted to the exemplars'
    annotations when they come from COCO; the scoring settings (objectness weight, box rule,
    NMS IoU, count threshold) are what ``bench/spotting.py --tune`` chooses between on the valid
    split (docs/RESULTS.md)."""

    # faint ink of grey scans and thinned copies: the drawing's own Otsu threshold when lower
    # (chosen on valid, docs/RESULTS.md; symclr-components keeps the fixed threshold)
    adaptive_ink_threshold: bool = True
    box_padding: float = 0.4  # ink box -> symbol box, per side, as a share of the ink box
    box_mode: str = "exemplar"  # "exemplar": matched exemplar's size; "candidate": own box
    crop_padding: float = 0.1  # make-shards' padding (the crop rule the model was trained on)
    nms_iou: float = 0.5
    class_agnostic_nms: bool = True
    min_score: float = 0.2  # detections below are not written at all
    count_score: float = 0.7  # detections counted, drawn and listed as found (chosen on valid)
    # class name -> its own count threshold (--thresholds, report.html's sliders); others: count_score
    class_count_scores: dict[str, float] = field(default_factory=dict)
    # --count-score per-class (calibration.py): thresholds from a sheet of the exemplars' own copies
    calibration_copies: int = 4  # copies of each exemplar per calibration page (the first unaltered)
    calibration_shift: float = 0.15  # a class's own threshold stays this close to count_score
    calibration_min_positives: int = 4  # fewer copies of a class found: it keeps count_score
    # "drawings": other annotated drawings of the exemplars' COCO split (up to
    # calibration_drawings, none an exemplar was cut from); "sheet": the exemplars' altered
    # copies; "auto": the drawings when there are any (chosen on valid, docs/RESULTS.md)
    calibration_source: str = "auto"
    calibration_drawings: int = 30
    # a class's threshold: "f1", best F1 of its true and false detections; "exact", the most
    # (page, class) counts exact
    calibration_rule: str = "f1"
    # with calibration on annotated drawings, each class's box size is also scaled to fit the
    # split's boxes of that class (calibration.choose_box_scale): annotators draw some classes'
    # boxes looser or tighter than the one exemplar's
    calibrate_boxes: bool = True
    # class name -> factor on the matched size of its boxes (calibration; others: 1)
    class_box_scales: dict[str, float] = field(default_factory=dict)
    batch_size: int = 128
    candidates_per_megapixel: int = 270  # crops embedded per drawing: the cost cap (top by objectness)
    min_candidates: int = 50
    max_candidates: int = 20000
    objectness_weight: float = 0.0  # score = similarity * P(symbol) ** weight (0 chosen on valid, with templates)
    # template matching (template.py): a second candidate source and a second score
    templates: bool = True
    # exemplar sizes tried, quarter turns each; with the blur each covers about +-15%
    template_scales: tuple[float, ...] = (0.7, 1.0, 1.4)
    template_turns: bool = True
    # the drawing is reduced while templates keep this many pixels. 24 (symclr-spot
    # --template-min-side 24) finds more on copies with lines a pixel thinner or thicker, at
    # about 1.7x the time and with less tolerance of scales between template_scales: not the
    # default (docs/RESULTS.md, issue 27, "Finer templates and a scan count threshold")
    template_min_side: int = 12
    template_blur: float = 1.0  # Gaussian sigma (px at the matching level): tolerance of scale and line weight
    template_peak: float = 0.6  # correlation from which a peak is a candidate (0.5: same recall on valid, 2x the peaks)
    template_slack: int = 2  # px (at the matching level) around a candidate's centre to look for its peak
    template_peaks_per_tile: int = 400  # per template and tile, highest first
    template_candidates_per_megapixel: int = 300  # template-only candidates kept (after NMS)
    max_template_candidates: int = 4000  # per drawing, the best correlations (a large sheet)
    template_budget: float = 600.0  # megapixels correlated per drawing; beyond, coarser templates
    template_dedup_iou: float = 0.7  # a peak this close to an ink candidate is that candidate
    # refine.py: the best classes of each detection left after NMS correlated again with finer
    # templates, in a window around it, at scales around the coarse match's (tells thinner lines
    # and look-alike classes apart without matching the whole drawing finer). Opt-in
    # (symclr-spot --refine-templates): better on valid, but 8% more time and no better on test's
    # thicker lines (docs/RESULTS.md, issue 27, "Refined template correlation")
    template_refine: bool = False
    template_refine_classes: int = 3  # the shortlist: this many best classes per candidate
    template_refine_min_side: int = 24  # px the refined template keeps on its shorter side
    template_refine_scales: tuple[float, ...] = (0.85, 0.92, 1.0, 1.08, 1.17)  # times the coarse match's
    template_refine_slack: float = 0.25  # window margin around the template, share of its longer side
    template_refine_sizes: bool = False  # the refined match's box size replaces the coarse one's (valid: no better)
    template_refine_from: float = 0.5  # detections scoring less are left as they are (they count for little)
    # scoring (scoring.class_evidence): how similarity and correlation combine, chosen by
    # bench/spotting.py --tune on the valid split and its coloured copies (0.7x, thinner and
    # thicker lines); grey drawings have their own template weight, grey_scoring below
    # (docs/RESULTS.md, issue 27, "Scoring grey and coloured drawings apart")
    score_rule: str = "sum"  # "sum": (1 - t) sim + t corr; "max": max(sim, t corr)
    template_weight: float = 0.625  # t on coloured drawings; 0: similarity alone (the score before templates)
    template_floor: float = 0.5  # correlation at or below this counts as no evidence
    # on a grey drawing (a scan, a greyscale export) the exemplars are matched grey and grey
    # softened (looks.py); coloured drawings are not affected
    grey_looks: bool = True
    # on a grey drawing (looks.grey_drawing) these scoring settings take the place of the ones
    # above: a scan has lost its colours and is blurred, so its crops' features say less and
    # the softened templates' correlation more than on a clean coloured drawing (chosen on the
    # valid split's scan copies: docs/RESULTS.md, issue 27, "Scoring grey and coloured drawings
    # apart"); {}: grey drawings scored as coloured ones
    grey_scoring: dict[str, float] = field(default_factory=lambda: dict(GREY_SCORING))
    # the drawing's own exemplars (scoring.py): a class's best match on the drawing, from this
    # score, is matched over the drawing too, and what looks like it inherits its score
    own_exemplars: bool = False
    own_exemplar_score: float = 0.85
    # feature template matching (feature_match.py): the exemplar's feature map correlated with the
    # drawing's (TMR's idea); opt-in, a third candidate source and a third score. It helps most on
    # scans and thin lines and costs several times the rest of a drawing's time, hence off by
    # default (weight and budget chosen on valid: docs/RESULTS.md, issue 27, "Feature matching
    # measured").
    feature_match: bool = False
    feature_match_stride: int = 8  # backbone level correlated (8 or 16: the stage with that stride)
    feature_match_peak: float = 0.5  # correlation from which a peak is a candidate
    feature_match_weight: float = 0.5  # u: score = (1 - u) * score + u * correlation ("sum" rule)
    feature_match_floor: float = 0.3  # correlation at or below this counts as no evidence
    feature_match_budget: float = 15.0  # megapixels through the backbone per drawing; beyond, coarser

    def for_drawing(self, grey: bool) -> SpotConfig:
        """The settings that score one drawing: with ``grey_scoring`` in place on a grey one."""
        return replace(self, **self.grey_scoring) if grey and self.grey_scoring else self

    def __post_init__(self):
        unknown = sorted(set(self.grey_scoring) - set(GREY_SCORING_KEYS))
        if unknown:
            raise ValueError(f"grey_scoring: {', '.join(unknown)} not among {', '.join(GREY_SCORING_KEYS)}")

    def count_score_of(self, class_name: str) -> float:
        """The score from which a detection of ``class_name`` is counted."""
        return self.class_count_scores.get(class_name, self.count_score)
