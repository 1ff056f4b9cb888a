"""Every setting of the spotting pipeline, in one dataclass shared by its parts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SpotConfig:
    """Every setting of the spotting pipeline. ``box_padding`` is refitted to the exemplars'
    annotations when they come from COCO; the scoring settings (objectness weight, box rule,
    NMS IoU, count threshold) are what ``bench/spotting.py --tune`` chooses between on the valid
    split (docs/RESULTS.md)."""

    ink_threshold: int = 90  # a pixel is ink when its brightest channel differs this much from paper
    saturation: int = 80  # HSV saturation above which a pixel belongs to a colour group
    line_length: int = 41  # straight runs at least this long are wires / staff lines, not symbols
    dilations: tuple[int, ...] = (0, 1, 2, 3)  # radii that join a symbol's separate strokes
    min_side: int = 6
    max_side: int = 140
    box_padding: float = 0.4  # ink box -> symbol box, per side, as a share of the ink box
    box_mode: str = "exemplar"  # "exemplar": matched exemplar's size; "candidate": own box
    crop_padding: float = 0.1  # make-shards' padding (the crop rule the model was trained on)
    nms_iou: float = 0.5
    class_agnostic_nms: bool = True
    min_score: float = 0.2  # detections below are not written at all
    count_score: float = 0.4  # detections counted, drawn and listed as found (chosen on valid)
    tile: int = 1536
    tile_overlap: int = 320  # at least 2 x (max_side + max dilation) so a symbol fits in some core
    batch_size: int = 128
    candidates_per_megapixel: int = 270  # crops embedded per drawing: the cost cap (top by objectness)
    min_candidates: int = 50
    max_candidates: int = 20000
    objectness_weight: float = 0.5  # score = similarity * P(symbol) ** weight (chosen on valid)
