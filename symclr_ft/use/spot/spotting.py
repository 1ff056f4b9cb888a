"""``symclr-spot``: find and count symbols on whole drawings, from a few exemplars each.

The pipeline is :mod:`symclr_ft.use.spot.pipeline` (candidates, embedding, scoring, NMS); this
module reads the command line, splits the drawings between processes and writes the output
folder (detections.json, counts.csv, skipped.csv, overlays, report.html). Example::

    symclr-spot --model runs/demo_cpu/model.pt --exemplars shards_coco/train --drawings sheets/ --out runs/spot
"""

from __future__ import annotations

import csv
import io as _io
import sys
from pathlib import Path

from symclr_ft.errors import (
    ArgumentParser, UserError, bounded_float, bounded_int, report_user_errors, sigterm_as_interrupt,
)
from symclr_ft.io import OutputKind
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.drawings import Drawing, coco_json, list_drawings
from symclr_ft.use.spot.objectness import fit_objectness
# The pipeline this command runs, importable from here as before (tests, bench/spotting.py).
from symclr_ft.use.spot.pipeline import (  # noqa: F401
    Candidates, Exemplars, crop_for_model, drawing_candidates, embed_crops, embed_exemplars,
    exemplars_of_index, folder_exemplars, index_exemplars, load_exemplars, model_and_size,
    pick_coco_exemplars, reject_threshold, score_candidates, spot_all, spot_drawing, spot_image,
    to_coco_results,
)
from symclr_ft.use.spot.report import count_detections, exact_count_share, write_report


def write_counts_csv(path: Path, drawings: list[Drawing], ex: Exemplars, counts: dict) -> None:
    """One row per drawing, one column per class: detections counted (score >= count_score)."""
    buffer = _io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["drawing", "image_id", *ex.class_names, "total"])
    for d in drawings:
        row = [counts.get((d.image_id, c), 0) for c in ex.category_ids]
        writer.writerow([d.file_name, d.image_id, *row, sum(row)])
    path.write_text(buffer.getvalue())


def write_outputs(out: Path, drawings, ex: Exemplars, results, skipped, cfg: SpotConfig) -> dict:
    """Everything in ``out`` (a fresh temporary folder): detections.json, counts.csv,
    skipped.csv, overlays/*.png, report.html. Returns the counts."""
    import json

    (out / "detections.json").write_text(json.dumps(results) + "\n")
    counts = count_detections(results, cfg.count_score)
    write_counts_csv(out / "counts.csv", drawings, ex, counts)
    buffer = _io.StringIO()
    csv.writer(buffer).writerows([("what", "reason"), *skipped])
    (out / "skipped.csv").write_text(buffer.getvalue())
    write_report(out, drawings, ex, results, cfg, skipped)
    return counts


# --------------------------------------------------------------------------- command


SPOT_OUTPUT = OutputKind(  # what symclr-spot writes into --out (io.output_dir's rule)
    "symclr-spot", ("detections.json", "counts.csv", "skipped.csv", "report.html", "overlays"),
    legacy=("detections.json", "counts.csv", "report.html"),
)


def build_parser() -> ArgumentParser:
    from symclr_ft.config import MAX_IMAGE_SIZE

    d = SpotConfig()
    p = ArgumentParser(prog="symclr-spot", description="Find and count symbols on whole drawings "
                       "from a few exemplars each, with a trained symclr model.")
    p.add_argument("--model", required=True, help="model file (model.pt of a run)")
    p.add_argument("--exemplars", required=True,
                   help="symclr-embed index, COCO split (json or split folder), or folder of class subfolders of crops")
    p.add_argument("--drawings", required=True, help="folder of drawings, or a COCO split (then scored against its boxes)")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty, or an earlier symclr-spot output (replaced when complete)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not an earlier output (only symclr-spot's own files are replaced)")
    p.add_argument("--shots", type=bounded_int(1, 1000), default=1, help="exemplars per class (default 1)")
    p.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0,
                   help="which exemplars are drawn from a COCO split")
    p.add_argument("--image-size", type=bounded_int(16, MAX_IMAGE_SIZE), default=None,
                   help=f"crop size, 16..{MAX_IMAGE_SIZE} (default: the model run's)")
    p.add_argument("--count-score", type=_count_score_option, default=str(d.count_score),
                   help=f"similarity in [-1, 1] from which a detection is counted and drawn (default "
                   f"{d.count_score}); 'auto': symclr-predict's unknown threshold from the exemplars")
    p.add_argument("--min-score", type=bounded_float(-1.0, 1.0), default=d.min_score,
                   help="detections below are not written, in [-1, 1]")
    p.add_argument("--box-mode", choices=["exemplar", "candidate"], default=d.box_mode,
                   help="box of a detection: the matched exemplar's size, or the candidate's own box")
    p.add_argument("--objectness-weight", type=bounded_float(0.0, 100.0), default=d.objectness_weight,
                   help="score = similarity x P(symbol) ** this (0: similarity alone)")
    p.add_argument("--nms-iou", type=bounded_float(0.0, 1.0), default=d.nms_iou,
                   help="NMS overlap (IoU) threshold, in [0, 1]")
    p.add_argument("--tile", type=bounded_int(256, 65_536), default=d.tile,
                   help="tile side in pixels for large drawings")
    p.add_argument("--max-drawings", type=bounded_int(0), default=0,
                   help="only the first N drawings (a quick look; 0: all)")
    p.add_argument("--no-objectness", action="store_true",
                   help="do not fit the is-this-a-symbol model on the exemplars' COCO drawings")
    return p


def _count_score_option(text: str) -> str:
    """argparse type of --count-score: 'auto' or a similarity in [-1, 1], kept as text."""
    if text != "auto":
        bounded_float(-1.0, 1.0)(text)
    return text


def _count_score(text: str, ex: Exemplars) -> tuple[float, str]:
    if text != "auto":
        return float(text), "given"
    found = reject_threshold(ex)
    if found is None:
        raise UserError("--count-score=auto: no threshold from these exemplars")
    return found


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with sigterm_as_interrupt():  # a kill cleans up as Ctrl-C does: no temporary folder left
        return run(args)


def run(args) -> int:
    """symclr-spot after its argument parsing: the output folder is checked before any work."""
    from symclr_ft.distributed import make_accelerator
    from symclr_ft.io import check_output_dir

    check_output_dir(args.out, SPOT_OUTPUT, args.overwrite)
    cfg = SpotConfig(min_score=args.min_score, box_mode=args.box_mode, tile=args.tile,
                     objectness_weight=args.objectness_weight, nms_iou=args.nms_iou)
    drawings = list_drawings(Path(args.drawings))[: args.max_drawings or None]
    net, image_size, sha = model_and_size(Path(args.model), args.image_size, cfg.batch_size)
    accelerator = make_accelerator()
    net = net.to(accelerator.device)
    ex = load_exemplars(Path(args.exemplars), net, image_size, args.shots, args.seed, cfg, sha)
    cfg.count_score, how = _count_score(args.count_score, ex)
    objectness = None
    json_path = coco_json(Path(args.exemplars))
    if json_path is not None and not args.no_objectness:
        objectness = fit_objectness(json_path, cfg, seed=args.seed)
        if objectness is not None:
            cfg.box_padding = objectness.box_padding
    results, skipped = spot_all(accelerator, net, drawings, ex, image_size, cfg, objectness)
    skipped = ex.skipped + skipped
    if accelerator.is_main_process:
        counts = publish_outputs(Path(args.out), args.overwrite, drawings, ex, results, skipped, cfg)
        print(summary_text(drawings, ex, results, counts, skipped, cfg, how))
        print(f"wrote {args.out}/report.html, detections.json, counts.csv")
    return 0


def publish_outputs(out: Path, overwrite: bool, drawings, ex: Exemplars, results, skipped,
                    cfg: SpotConfig) -> dict:
    """:func:`write_outputs` into a temporary folder moved into place by the output rule
    (``io.output_dir``); a full disk is one line and leaves ``out`` as it was."""
    from symclr_ft.io import output_dir

    with output_dir(out, SPOT_OUTPUT, overwrite) as tmp:
        try:
            return write_outputs(tmp, drawings, ex, results, skipped, cfg)
        except OSError as err:
            raise UserError(f"{out}: cannot write the output ({err.strerror or err}); nothing "
                            "was written") from None


def summary_text(drawings, ex: Exemplars, results, counts, skipped, cfg: SpotConfig, how: str) -> str:
    """What the command prints: totals per class, and the score on the ground truth if any."""
    per_class: dict[int, int] = {}
    for (_img, cat), n in counts.items():
        per_class[cat] = per_class.get(cat, 0) + n
    top = sorted(per_class.items(), key=lambda kv: -kv[1])
    names = dict(zip(ex.category_ids, ex.class_names))
    lines = [
        f"{len(drawings)} drawings, {len(ex.class_names)} classes, {len(results)} detections written, "
        f"{sum(per_class.values())} counted (score >= {cfg.count_score:.3f}, {how}); {len(skipped)} skipped",
        "counts: " + ", ".join(f"{names[c]} {n}" for c, n in top[:8]) + (" ..." if len(top) > 8 else ""),
    ]
    if all(d.truth is not None for d in drawings):
        share, mae = exact_count_share(drawings, ex, counts)
        lines.append(f"against the drawings' boxes: exact counts {share:.1%} of (drawing, class) pairs, "
                     f"mean absolute count error {mae:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
