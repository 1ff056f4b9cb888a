"""The spotting pipeline: find and count exemplar symbols on whole drawings.

The trained embedder tells symbols apart once they are cut out; this module finds where to cut.
The pipeline, one drawing at a time (so the result of a drawing never depends on which process
or batch it went through):

1. **Candidates** (class-agnostic), from two sources. Ink (no learning): ink is split by colour
   (the CAD drawings draw symbols and wires in different colours), long straight horizontal and
   vertical runs (wires, staff lines, frames) are removed, and the connected components at a
   few dilation radii are the candidate symbols; their ink box is grown by ``box_padding``
   because annotators draw boxes looser than the ink. Template matching (``template.py``): the
   exemplars' pictures correlated with the drawing at three scales in four quarter turns; its
   peaks that no ink candidate covers are candidates too (grey, blurred or faint scans, where
   ink colours fail). Large drawings are processed in overlapping tiles; a tile keeps only
   what lies in its own (non-overlapping) core, so nothing is counted twice across tile borders.
2. **Embedding**: each candidate is cut exactly as make-shards cuts a symbol
   (:func:`symclr_ft.data.coco.padded_crop_box`, padding 0.1), resized to the model's size and
   embedded with ``net.features``. These features do not depend on the exemplars, so a benchmark
   embeds a drawing once and scores many exemplar draws against it.
3. **Scoring** (``scoring.py``): cosine similarity to every exemplar in its four
   quarter turns (symbols appear rotated), weighed by P(symbol), combined with the template
   correlation of each class; a candidate's class is its best. The box is the matched
   exemplar's size (at the template's scale and turn where the correlation counts) centred on
   the candidate, or the candidate's own box (``box_mode``).
4. **NMS** (``torchvision.ops.batched_nms``, class-agnostic by default: one symbol per place,
   then one box per place when a symbol matched at two scales), then counts of detections
   scoring at least their class's count threshold (``SpotConfig.count_score_of``).

Why both sources: ink candidates have the recall on clean CAD drawings and the crop embedder
then sees exactly the kind of crop it was trained on; template peaks hold on scans and copies
where ink thresholds find nothing (docs/RESULTS.md, sections "Spotting" and issue 27).

The command ``symclr-spot`` (:mod:`symclr_ft.use.spot.spotting`) and the Python API
(:class:`symclr_ft.use.spot.spotter.Spotter`) both run it. Example::

    ex = load_exemplars(Path("exemplars/"), net, 96, shots=1, seed=0, cfg=SpotConfig())
    rows, skipped = spot_drawing(net, Drawing(Path("sheet.png"), 0, "sheet.png"), ex, 96, SpotConfig())
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from symclr_ft.data.coco import load_coco, padded_crop_box
from symclr_ft.errors import UserError
from symclr_ft.use.spot.candidates import candidate_boxes_with_descriptors, pad_boxes, select_candidates
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.drawings import IMAGE_SUFFIXES, Drawing, coco_json, open_drawing, open_rgb
from symclr_ft.use.spot.looks import grey_drawing, softened, to_grey
from symclr_ft.use.spot.feature_match import exemplar_kernels, match_features
from symclr_ft.use.spot.records import Candidates, Exemplars  # noqa: F401 (importable from here as before)
from symclr_ft.use.spot.scoring import class_evidence, score_candidates  # noqa: F401 (the pipeline's API)
from symclr_ft.use.spot.template import Templates, exemplar_picture, make_templates, match_templates


# --------------------------------------------------------------------------- embedding


def crop_for_model(image: Image.Image | np.ndarray, box_xywh: list[float], size: int, padding: float) -> torch.Tensor:
    """The crop make-shards would cut around ``box_xywh``, resized (stretched) to ``size`` as
    data.load_split does: (3, size, size) uint8. ``image`` is a PIL image or an (H, W, 3) array
    (the same pixels: a large drawing is then held once, as an array)."""
    if isinstance(image, np.ndarray):
        x0, y0, x1, y1 = padded_crop_box(box_xywh, image.shape[1], image.shape[0], padding)
        crop = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    else:
        crop = image.crop(padded_crop_box(box_xywh, image.width, image.height, padding))
    crop = crop.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1)


@torch.no_grad()
def embed_crops(net, crops: torch.Tensor, batch_size: int, rotations: int = 0) -> torch.Tensor:
    """L2-normalised ``net.features`` of uint8 crops (N, 3, S, S), in fixed-size batches so the
    numbers do not depend on how many drawings or processes share the work."""
    device = next(net.parameters()).device
    out = []
    for start in range(0, crops.shape[0], batch_size):
        x = crops[start : start + batch_size].to(device).float().div_(255.0)
        if rotations % 4:
            x = torch.rot90(x, rotations, dims=(2, 3))
        x = x.contiguous(memory_format=torch.channels_last)
        out.append(F.normalize(net.features(x).float(), dim=-1).cpu())
    if not out:
        return torch.zeros((0, net.feature_dim))
    return torch.cat(out)


def embed_boxes(net, rgb: np.ndarray, boxes: torch.Tensor, image_size: int, cfg: SpotConfig) -> torch.Tensor:
    """Features of the crops around ``boxes`` (x0, y0, x1, y1), cut batch by batch (bounded
    memory however many boxes)."""
    feats = [torch.zeros((0, net.feature_dim))]
    for start in range(0, boxes.shape[0], cfg.batch_size):
        crops = [
            crop_for_model(rgb, [x0, y0, x1 - x0, y1 - y0], image_size, cfg.crop_padding)
            for x0, y0, x1, y1 in boxes[start : start + cfg.batch_size].tolist()
        ]
        feats.append(embed_crops(net, torch.stack(crops), cfg.batch_size))
    return torch.cat(feats)


def ink_candidates(net, rgb: np.ndarray, image_size: int, cfg: SpotConfig, objectness=None) -> Candidates:
    """Candidate boxes of one drawing (H, W, 3 uint8) from its ink, their P(symbol) and the
    features of their crops. They do not depend on the exemplars (a benchmark caches them)."""
    height, width = rgb.shape[:2]
    ink, desc = candidate_boxes_with_descriptors(rgb, cfg)
    ink, prob = select_candidates(ink, desc, objectness, width, height, cfg)
    boxes = pad_boxes(ink, cfg.box_padding, width, height)
    return Candidates(boxes, embed_boxes(net, rgb, boxes, image_size, cfg), prob)


def drawing_candidates(net, image: Image.Image, image_size: int, cfg: SpotConfig, objectness=None) -> Candidates:
    """:func:`ink_candidates` of a PIL image."""
    return ink_candidates(net, np.asarray(image.convert("RGB")), image_size, cfg, objectness)


def with_templates(net, rgb: np.ndarray, cands: Candidates, ex: Exemplars, image_size: int,
                   cfg: SpotConfig) -> Candidates:
    """The candidates with template evidence (template.py): every class's best correlation at
    each, and the template peaks that no candidate covers, embedded here as more candidates
    (P(symbol) 1: their shape was not judged). Unchanged without templates."""
    if not cfg.templates or ex.templates is None or not ex.templates.items:
        return cands
    ev = match_templates(rgb, ex.templates, cands.boxes, cfg)
    extra, corr, sizes = ev.extra, ev.extra_correlation, ev.extra_sizes
    feats = embed_boxes(net, rgb, extra, image_size, cfg)
    n = cands.boxes.shape[0]
    return Candidates(
        torch.cat([cands.boxes, extra]), torch.cat([cands.features, feats]),
        torch.cat([cands.objectness, torch.ones(extra.shape[0])]),
        torch.cat([ev.correlation, corr]), torch.cat([ev.sizes, sizes]),
        torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(extra.shape[0], dtype=torch.bool)]),
    )  # fmt: skip


def with_feature_matches(net, rgb: np.ndarray, cands: Candidates, ex: Exemplars, image_size: int,
                         cfg: SpotConfig) -> Candidates:
    """The candidates with feature-match evidence (feature_match.py): every class's best
    feature-map correlation at each, and the feature peaks that no candidate (ink or template)
    covers, embedded here as more candidates (P(symbol) 1; no template correlation: their
    template evidence is counted as none). Unchanged unless ``feature_match`` is on."""
    if not cfg.feature_match or ex.kernels is None or ex.kernels.crops.shape[0] == 0:
        return cands
    ev = match_features(net, rgb, ex.kernels, cands.boxes, cfg)
    extra, k, classes = ev.extra, ev.extra.shape[0], ex.kernels.classes
    n = cands.boxes.shape[0]
    none = torch.zeros(n, dtype=torch.bool)
    corr = sizes = from_template = None
    if cands.correlation is not None:
        corr = torch.cat([cands.correlation, torch.zeros((k, cands.correlation.shape[1]))])
        sizes = torch.cat([cands.template_sizes, torch.zeros((k, *cands.template_sizes.shape[1:]))])
    if cands.from_template is not None:
        from_template = torch.cat([cands.from_template, torch.zeros(k, dtype=torch.bool)])
    return Candidates(
        torch.cat([cands.boxes, extra]), torch.cat([cands.features, embed_boxes(net, rgb, extra, image_size, cfg)]),
        torch.cat([cands.objectness, torch.ones(k)]), corr, sizes, from_template,
        torch.cat([ev.correlation, ev.extra_correlation]).reshape(-1, classes),
        torch.cat([ev.sizes, ev.extra_sizes]).reshape(-1, classes, 2),
        torch.cat([none, torch.ones(k, dtype=torch.bool)]),
    )  # fmt: skip


def to_coco_results(dets: dict[str, torch.Tensor], image_id: int, ex: Exemplars) -> list[dict]:
    """COCO results records (image_id, category_id, bbox [x, y, w, h], score)."""
    rows = []
    for (x0, y0, x1, y1), score, label in zip(dets["boxes"].tolist(), dets["scores"].tolist(), dets["labels"].tolist()):
        rows.append(
            {
                "image_id": int(image_id),
                "category_id": int(ex.category_ids[label]),
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "score": round(float(score), 5),
            }
        )
    return rows


def reject_threshold(ex: Exemplars) -> tuple[float, str] | None:
    """The ``unknown`` threshold of symclr-predict (``rejection.auto_threshold``: leave-one-out
    similarities of the exemplars, 95% accepted); it needs at least two exemplars of some class
    (``--shots 2`` or more), else a one-line error. Without it counting uses ``count_score``."""
    from symclr_ft.use.rejection import auto_threshold

    return auto_threshold(ex.features, ex.labels, tpr=0.95, option="--count-score auto")


# --------------------------------------------------------------------------- inputs


def pick_coco_exemplars(json_path: Path, shots: int, seed: int, exclude: Iterable[str] = ()) -> list[tuple]:
    """``shots`` boxes per category, drawn with ``seed``: (category id, name, image path, bbox)."""
    split = load_coco(json_path)
    by_cat: dict[int, list] = {}
    for ann in split.annotations:
        by_cat.setdefault(ann.category_id, []).append(ann)
    rng = random.Random(seed)
    picked = []
    for cat_id in sorted(by_cat):
        name = split.categories[cat_id].name
        if name in set(exclude):
            continue
        anns = by_cat[cat_id]
        for ann in rng.sample(anns, min(shots, len(anns))):
            image = split.images[ann.image_id]
            picked.append((cat_id, name, split.image_path(image), list(ann.bbox)))
    return picked


def folder_exemplars(folder: Path, shots: int, padding: float) -> list[tuple]:
    """ImageFolder layout: each subfolder is a class, each image a crop cut like make-shards's
    (the symbol's box is the crop less its padding). Returns the same tuples as COCO's, with
    ``bbox`` None (the whole image is the crop)."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    picked = []
    for k, sub in enumerate(classes):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:shots]
        picked.extend((k + 1, sub.name, p, None) for p in files)
    return picked


def embed_exemplars(net, picked: list[tuple], image_size: int, cfg: SpotConfig) -> Exemplars:
    """Features of each exemplar in its four quarter turns (a turned symbol on a drawing then
    matches its exemplar's turn). Unreadable exemplar files are skipped with their reason.
    With ``grey_looks`` the result also holds the exemplars as a grey drawing shows them
    (:func:`grey_looks_of`), used on grey drawings."""
    images, skipped = {}, []
    for _cat, _name, path, _bbox in picked:
        if path not in images and not any(path == s[0] for s in skipped):
            try:
                images[path] = open_rgb(path)
            except UserError as err:
                skipped.append((path, str(err)))
    if not images:
        raise UserError("no exemplars could be read" + (f" ({skipped[0][1]})" if skipped else ""))
    ex = _embedded(net, picked, images, image_size, cfg)
    ex.skipped = [(str(path), why) for path, why in skipped]
    if cfg.grey_looks:
        ex.grey = grey_looks_of(net, picked, images, image_size, cfg)
    return ex


def grey_looks_of(net, picked: list[tuple], images: dict, image_size: int, cfg: SpotConfig) -> Exemplars:
    """The exemplars as a grey drawing (a scan, a greyscale export) shows them: features of
    their grey picture and of it softened by a scan's blur (``looks.softened``), matched as
    one set (a class's best), templates of the softened picture. A model trained on crisp
    coloured crops finds a grey, blurred symbol less like its coloured exemplar than like the
    exemplar made grey and blurred (docs/RESULTS.md, issue 27). With ``feature_match``, the
    feature kernels are the softened picture's too (without them a grey drawing got no feature
    matching at all)."""
    plain = replace(cfg, grey_looks=False)
    grey = _embedded(net, picked, {p: to_grey(im) for p, im in images.items()}, image_size,
                     replace(plain, templates=False, feature_match=False))
    soft = _embedded(net, picked, {p: softened(to_grey(im)) for p, im in images.items()}, image_size, plain)
    return replace(soft, features=torch.cat([grey.features, soft.features]), labels=torch.cat([grey.labels, soft.labels]),
                   sizes=torch.cat([grey.sizes, soft.sizes]))


def exemplars_for(rgb: np.ndarray, ex: Exemplars) -> Exemplars:
    """The exemplars to match on one drawing: their grey looks on a grey drawing, when made."""
    return ex.grey if ex.grey is not None and grey_drawing(rgb) else ex


def _embedded(net, picked: list[tuple], images: dict, image_size: int, cfg: SpotConfig) -> Exemplars:
    """:func:`embed_exemplars` of exemplars whose images are decoded (path -> PIL image; a path
    missing from ``images`` is an exemplar that could not be read, left out)."""
    cat_ids = sorted({p[0] for p in picked})
    names = {p[0]: p[1] for p in picked}
    crops, labels, sizes, pixels = [], [], [], []
    for cat_id, _name, path, bbox in picked:
        if path not in images:
            continue
        image = images[path]
        if bbox is None:  # a crop file: the symbol is the crop less make-shards' padding
            w, h = image.width / (1 + 2 * cfg.crop_padding), image.height / (1 + 2 * cfg.crop_padding)
            crop = torch.from_numpy(np.asarray(image.resize((image_size,) * 2, Image.BILINEAR)).copy()).permute(2, 0, 1)
            pixels.append((cat_ids.index(cat_id), np.asarray(image),
                           [(image.width - w) / 2, (image.height - h) / 2, w, h]))
        else:
            w, h = bbox[2], bbox[3]
            crop = crop_for_model(image, bbox, image_size, cfg.crop_padding)
            x0, y0, x1, y1 = padded_crop_box(bbox, image.width, image.height, cfg.crop_padding)
            pixels.append((cat_ids.index(cat_id), np.asarray(image)[y0:y1, x0:x1].copy(),
                           [bbox[0] - x0, bbox[1] - y0, w, h]))
        crops.append(crop)
        labels.append(cat_ids.index(cat_id))
        sizes.append((w, h))
    if not crops:
        raise UserError("no exemplars could be read")
    stack = torch.stack(crops)
    feats, labs, szs = [], [], []
    for turn in range(4):
        feats.append(embed_crops(net, stack, cfg.batch_size, rotations=turn))
        labs.append(torch.tensor(labels))
        s = torch.tensor(sizes, dtype=torch.float32)
        szs.append(s.flip(1) if turn % 2 else s)
    templates = picked_templates(picked, cfg, images) if cfg.templates else None
    kernels = None
    if cfg.feature_match:  # made once per exemplar set, like the features above
        kernels = exemplar_kernels(net, stack, torch.tensor(labels), torch.tensor(sizes, dtype=torch.float32),
                                   len(cat_ids), cfg)
    return Exemplars(
        torch.cat(feats), torch.cat(labs), torch.cat(szs),
        [names[c] for c in cat_ids], cat_ids, [], templates, kernels, pixels,
    )  # fmt: skip


def picked_templates(picked: list[tuple], cfg: SpotConfig, images: dict | None = None) -> Templates:
    """Template-matching pictures of picked exemplars (template.py), class indices as in
    :func:`embed_exemplars`; ``images`` holds drawings already decoded (path -> image). An
    unreadable exemplar has no template (embed_exemplars lists it as skipped)."""
    cat_ids = sorted({p[0] for p in picked})
    images = {} if images is None else images
    pictures = []
    for cat_id, _name, path, bbox in picked:
        try:
            image = images.get(path) or images.setdefault(path, open_rgb(path))
        except UserError:
            continue
        pictures.append((cat_ids.index(cat_id), exemplar_picture(np.asarray(image), bbox, cfg.crop_padding)))
    return make_templates(pictures, len(cat_ids), cfg)


def index_exemplars(path: Path, model_sha256: str | None, cfg: SpotConfig) -> Exemplars:
    """Exemplars from a symclr-embed index (issue 16's ``symclr_ft.use.index``): its features as
    they are (one turn), box sizes from the sources that name one (else 32 px)."""
    from symclr_ft.use.index import load_index

    return exemplars_of_index(load_index(path, expect_sha256=model_sha256), str(path))


def exemplars_of_index(index, where: str = "the index") -> Exemplars:
    """:func:`index_exemplars` of a :class:`~symclr_ft.use.index.FeatureIndex` in memory."""
    keep = index.labels >= 0
    if not bool(keep.any()):
        raise UserError(f"{where}: the index has no labelled features (no exemplars)")
    sizes = [
        (float(s["bbox"][2]), float(s["bbox"][3])) if isinstance(s, dict) and "bbox" in s else (32.0, 32.0)
        for s, k in zip(index.sources, keep.tolist()) if k
    ]
    feats = F.normalize(torch.as_tensor(index.features)[keep].float(), dim=-1)
    return Exemplars(
        feats, torch.as_tensor(index.labels)[keep].long(), torch.tensor(sizes),
        list(index.class_names), list(range(1, len(index.class_names) + 1)),
    )  # fmt: skip


def load_exemplars(source: Path, net, image_size: int, shots: int, seed: int, cfg: SpotConfig,
                   model_sha256: str | None = None) -> Exemplars:
    """Exemplars from an index file, a COCO split, or an ImageFolder of crops."""
    from symclr_ft.use.index import is_index

    if is_index(source):
        return index_exemplars(source, model_sha256, cfg)
    json_path = coco_json(source)
    if json_path is not None:
        picked = pick_coco_exemplars(json_path, shots, seed)
    elif source.is_dir():
        picked = folder_exemplars(source, shots, cfg.crop_padding)
    else:
        raise UserError(f"{source}: exemplars not found (expected an index, a COCO split or a folder)")
    if not picked:
        raise UserError(f"{source}: no exemplars (no boxes, or no class folders with images)")
    return embed_exemplars(net, picked, image_size, cfg)


# --------------------------------------------------------------------------- running


def model_and_size(path: Path, image_size: int | None, batch_size: int = SpotConfig.batch_size):
    """The network, its crop size (``--image-size``, else the run's, from the config.yaml
    beside the file) and the file's sha256 (``model.model_file_info``). The size is checked
    against ``MAX_IMAGE_SIZE`` and the memory a batch of ``batch_size`` crops needs before the
    network is built."""
    from symclr_ft.config import MAX_IMAGE_SIZE
    from symclr_ft.distributed import check_forward_memory
    from symclr_ft.models.backbones import load_model_file, model_file_info

    if path.suffix.lower() == ".onnx":
        raise UserError(f"{path}: symclr-spot needs a model.pt (ONNX exports are for embed/predict)")
    info = model_file_info(path)
    size = image_size or info["image_size"]
    if not size:
        raise UserError(f"{path}: --image-size is required (no config.yaml beside the model file)")
    if not 16 <= size <= MAX_IMAGE_SIZE:
        raise UserError(f"{path}: image size {size} must be in 16..{MAX_IMAGE_SIZE}")
    check_forward_memory(int(size), batch_size, "lower --image-size")
    from symclr_ft.models.folding import folded_for_inference

    # channels_last as training and evaluation use it: about 1.7x faster on the CPU here
    net = load_model_file(path).eval().to(memory_format=torch.channels_last)
    net, _ = folded_for_inference(net, int(size))  # the same features (checked), a faster forward
    return net, int(size), info["sha256"]


@dataclass
class DrawingNote:
    """What spotting saw on one drawing: enough to say why nothing was found there."""

    file_name: str
    ink_candidates: int
    template_candidates: int
    best_score: float  # the highest score of any class at any candidate (-1: no candidate)
    counted: int  # detections scoring at least their class's count threshold
    templates: bool  # whether template matching ran (exemplars with pictures, not an index)
    grey: bool = False  # a grey drawing (looks.grey_drawing): a scan, a photocopy, a greyscale export

    def suits_feature_matching(self, cfg: SpotConfig) -> bool:
        """Whether ``--feature-match``, off here, is worth suggesting for this drawing: a grey
        drawing with something on it, where feature matching finds what the other sources miss
        (docs/RESULTS.md, issue 27, "Feature matching measured")."""
        return self.grey and not cfg.feature_match and self.ink_candidates + self.template_candidates > 0

    def nothing_found(self, cfg: SpotConfig) -> str | None:
        """Why nothing was counted on this drawing, or None when something was."""
        if self.counted:
            return None
        if self.ink_candidates + self.template_candidates == 0:
            why = "no ink stands out from the paper by the ink threshold"
            if self.templates:
                why += f", and no exemplar correlates >= {cfg.template_peak} anywhere"
            elif not cfg.templates:
                why += "; template matching, which finds symbols on grey or faint copies, is off (--no-templates)"
            else:
                why += ("; template matching, which finds symbols on grey or faint copies, needs exemplars "
                        "from images, not an index")
            return f"nothing found: no candidates ({why})"
        per_class = " or their class's own (--thresholds)" if cfg.class_count_scores else ""
        return (f"nothing found: {self.ink_candidates + self.template_candidates} candidates, all below the count "
                f"threshold {cfg.count_score:.3f}{per_class} (best score {self.best_score:.3f}: other symbols than the "
                "exemplars', or set --count-score lower)")


def drawing_evidence(net, rgb: np.ndarray, ex: Exemplars, image_size: int, cfg: SpotConfig,
                     objectness=None) -> tuple[Candidates, Exemplars, list[str], int]:
    """Everything scoring needs from one decoded drawing (H, W, 3 uint8): its candidates with
    their evidence, the exemplars that fit on it (their looks for this drawing), the classes left
    out because all their exemplars are larger than the drawing, and how many candidates came
    from ink (the rest from template or feature matching)."""
    height, width = rgb.shape[:2]
    ex = exemplars_for(rgb, ex)
    fits = (ex.sizes[:, 0] <= width) & (ex.sizes[:, 1] <= height)
    skipped = sorted({ex.class_names[int(l)] for l in ex.labels[~fits].tolist()} - {
        ex.class_names[int(l)] for l in ex.labels[fits].tolist()})
    templates = ex.templates
    if templates is not None:
        templates = replace(templates, items=[t for t in templates.items if t.size[0] <= width and t.size[1] <= height])
    usable = Exemplars(ex.features[fits], ex.labels[fits], ex.sizes[fits], ex.class_names, ex.category_ids,
                       templates=templates, kernels=ex.kernels)
    ink = ink_candidates(net, rgb, image_size, cfg, objectness)
    cands = with_feature_matches(net, rgb, with_templates(net, rgb, ink, usable, image_size, cfg), usable, image_size, cfg)
    return cands, usable, skipped, ink.boxes.shape[0]


def spot_pixels(net, rgb: np.ndarray, ex: Exemplars, image_size: int, cfg: SpotConfig, objectness=None,
                name: str = "drawing") -> tuple[dict[str, torch.Tensor], list[str], "DrawingNote"]:
    """Detections of one decoded drawing (H, W, 3 uint8; ``{"boxes", "scores", "labels",
    "best_score"}``, after NMS), the classes left out because all their exemplars are larger
    than the drawing, and a :class:`DrawingNote` of what was seen. A grey drawing is scored
    with ``cfg.grey_scoring`` (:meth:`SpotConfig.for_drawing`)."""
    grey = grey_drawing(rgb)
    cands, usable, skipped, ink = drawing_evidence(net, rgb, ex, image_size, cfg, objectness)
    dets = score_candidates(cands, usable, cfg.for_drawing(grey), rgb)
    templates = usable.templates
    note = DrawingNote(name, ink, cands.boxes.shape[0] - ink, float(dets["best_score"]),
                       counted_among(dets, ex.class_names, cfg),
                       bool(cfg.templates and templates is not None and templates.items), grey)
    return dets, skipped, note


def counted_among(dets: dict[str, torch.Tensor], class_names: list[str], cfg: SpotConfig) -> int:
    """How many of ``dets`` score at least their class's count threshold (in float64, as
    ``report.count_detections`` compares the written scores)."""
    thresholds = torch.tensor([cfg.count_score_of(n) for n in class_names], dtype=torch.float64)
    if dets["scores"].numel() == 0:
        return 0
    return int((dets["scores"].double() >= thresholds[dets["labels"]]).sum())


def spot_image(net, image: Image.Image, ex: Exemplars, image_size: int, cfg: SpotConfig,
               objectness=None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Detections of one decoded drawing (``{"boxes", "scores", "labels"}``, after NMS) and
    the classes left out because all their exemplars are larger than the drawing."""
    dets, skipped, _note = spot_pixels(net, np.asarray(image.convert("RGB")), ex, image_size, cfg, objectness)
    return dets, skipped


def spot_drawing(net, drawing: Drawing, ex: Exemplars, image_size: int, cfg: SpotConfig, objectness=None):
    """Detections (COCO results rows) of one drawing, and the exemplars skipped for it."""
    rows, reasons, _note = spot_drawing_noted(net, drawing, ex, image_size, cfg, objectness)
    return rows, reasons


def spot_drawing_noted(net, drawing: Drawing, ex: Exemplars, image_size: int, cfg: SpotConfig,
                       objectness=None) -> tuple[list[dict], list[tuple[str, str]], DrawingNote]:
    """:func:`spot_drawing`, and a :class:`DrawingNote` of what was seen there."""
    rgb = np.asarray(open_drawing(drawing))  # the decoded image is dropped: one copy held
    dets, skipped, note = spot_pixels(net, rgb, ex, image_size, cfg, objectness, drawing.file_name)
    reasons = [(f"exemplar of {name}", f"larger than drawing {drawing.file_name} "
                f"({rgb.shape[1]}x{rgb.shape[0]})") for name in skipped]
    return to_coco_results(dets, drawing.image_id, ex), reasons, note


def spot_all(accelerator, net, drawings: list[Drawing], ex: Exemplars, image_size: int, cfg: SpotConfig,
             objectness=None):
    """Every drawing, split between processes; every process returns the full, ordered result:
    ``(results, skipped)``. A drawing that cannot be decoded is skipped with its reason."""
    results, skipped, _notes = spot_all_noted(accelerator, net, drawings, ex, image_size, cfg, objectness)
    return results, skipped


def spot_all_noted(accelerator, net, drawings: list[Drawing], ex: Exemplars, image_size: int, cfg: SpotConfig,
                   objectness=None) -> tuple[list[dict], list[tuple[str, str]], list[DrawingNote]]:
    """:func:`spot_all`, and the :class:`DrawingNote` of every readable drawing, in order."""
    from accelerate.utils import gather_object

    mine = list(range(len(drawings)))[accelerator.process_index :: accelerator.num_processes]
    local = []
    for i in mine:
        try:
            local.append((i, *spot_drawing_noted(net, drawings[i], ex, image_size, cfg, objectness)))
        except UserError as err:
            local.append((i, [], [(str(drawings[i].path), str(err))], None))
    gathered = gather_object(local) if accelerator.num_processes > 1 else local
    results, skipped, notes = [], [], []
    for _i, rows, reasons, note in sorted(gathered, key=lambda t: t[0]):
        results.extend(rows)
        skipped.extend(reasons)
        notes.extend([note] if note is not None else [])
    return results, skipped, notes
