"""``symclr-spot``: find and count symbols on whole drawings, from a few exemplars each.

The pipeline is :mod:`symclr_ft.use.spot.pipeline` (candidates, embedding, scoring, NMS); this
module reads the command line, splits the drawings between processes and writes the output
folder (detections.json, counts.csv, skipped.csv, overlays, report.html). Drawings are image
files, PDF sheet sets (every page, or ``--pages``, rasterised at ``--dpi``) or a COCO split.
Example::

    symclr-spot --model runs/demo_cpu/model.pt --exemplars shards_coco/train --drawings sheets/ --out runs/spot

A detection is counted from ``--count-score``, or from per-class thresholds: ``--thresholds
FILE`` reads ``{"count_score": 0.7, "classes": {"valve": 0.65}}`` (classes not named use
count_score; the file's count_score, when given, overrides ``--count-score``; an unknown class
or a value outside [-1, 1] is refused: :mod:`symclr_ft.use.spot.thresholds`). report.html's
sliders save such a file and show the command line that passes it back. ``--count-score
per-class`` derives each class's threshold, around the default count_score, from what the
exemplars come with (:mod:`~symclr_ft.use.spot.calibration`): the other annotated drawings of
their COCO split (up to 30, spotted once), or else a sheet of their altered copies. ``--thresholds``
wins over it: with a file, nothing is calibrated (a file saved from a per-class run already
holds every class's threshold), so re-running with the saved file counts the same. Every run
writes the thresholds it counted with to ``thresholds.json`` in the output folder, in the
``--thresholds`` format.
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import shlex
import sys
from pathlib import Path

from symclr_ft.errors import (
    ArgumentParser, UserError, bounded_float, bounded_int, report_user_errors, sigterm_as_interrupt,
)
from symclr_ft.io import OutputKind
from symclr_ft.use.spot.calibration import calibrate_for
from symclr_ft.use.spot.config import SpotConfig
from symclr_ft.use.spot.drawings import DEFAULT_DPI, Drawing, coco_json, list_drawings, parse_pages
from symclr_ft.use.spot.objectness import fit_objectness
# The pipeline this command runs, importable from here as before (tests, bench/spotting.py).
from symclr_ft.use.spot.pipeline import (  # noqa: F401
    Candidates, DrawingNote, Exemplars, crop_for_model, drawing_candidates, embed_crops, embed_exemplars, exemplars_for,
    exemplars_of_index, folder_exemplars, index_exemplars, ink_candidates, load_exemplars, model_and_size,
    pick_coco_exemplars, picked_templates, reject_threshold, score_candidates, spot_all, spot_all_noted,
    spot_drawing, spot_drawing_noted, spot_image, to_coco_results, with_feature_matches, with_templates,
)
from symclr_ft.use.spot.report import (
    THRESHOLDS_FILE, count_detections, count_thresholds, exact_count_share, write_report,
)
from symclr_ft.use.spot.thresholds import CountThresholds, apply_thresholds, read_thresholds, thresholds_of


COUNTS_HEADER = ("file", "page", "image_id", "class", "count")


def write_counts_csv(path: Path, drawings: list[Drawing], ex: Exemplars, counts: dict) -> None:
    """The takeoff table: one row per drawing (a file, or a PDF file and its 1-based page) and
    class, with the detections counted there (score >= the class's threshold), zeros included."""
    buffer = _io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COUNTS_HEADER)
    for d in drawings:
        file, page = (d.path.name, d.page + 1) if d.page is not None else (d.file_name, "")
        for cat, name in zip(ex.category_ids, ex.class_names):
            writer.writerow([file, page, d.image_id, name, counts.get((d.image_id, cat), 0)])
    path.write_text(buffer.getvalue())


def write_outputs(out: Path, drawings, ex: Exemplars, results, skipped, cfg: SpotConfig, notes=None,
                  command: str | None = None) -> dict:
    """Everything in ``out`` (a fresh temporary folder): detections.json, counts.csv,
    skipped.csv, thresholds.json (the thresholds counted with, in the ``--thresholds`` format),
    overlays/*.png, report.html (with why nothing was found on a drawing, from ``notes``, and
    ``command``, the line to run again with saved thresholds). Returns the counts."""
    import json

    (out / "detections.json").write_text(json.dumps(results) + "\n")
    (out / THRESHOLDS_FILE).write_text(json.dumps(thresholds_of(cfg), indent=1) + "\n")
    counts = count_detections(results, cfg.count_score, count_thresholds(cfg, ex))
    write_counts_csv(out / "counts.csv", drawings, ex, counts)
    buffer = _io.StringIO()
    csv.writer(buffer).writerows([("what", "reason"), *skipped])
    (out / "skipped.csv").write_text(buffer.getvalue())
    write_report(out, drawings, ex, results, cfg, skipped, nothing_found(notes or [], cfg), command)
    return counts


def nothing_found(notes: list[DrawingNote], cfg: SpotConfig) -> dict[str, str]:
    """File name -> why nothing was counted there, for the drawings where nothing was."""
    return {n.file_name: why for n in notes if (why := n.nothing_found(cfg))}


# --------------------------------------------------------------------------- command


SPOT_OUTPUT = OutputKind(  # what symclr-spot writes into --out (io.output_dir's rule)
    "symclr-spot", ("detections.json", "counts.csv", "skipped.csv", THRESHOLDS_FILE, "report.html", "overlays"),
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
    p.add_argument("--drawings", required=True,
                   help="folder of drawings (images and PDF sheet sets), one PDF, or a COCO split (then scored "
                   "against its boxes)")
    p.add_argument("--dpi", type=bounded_float(10.0, 1200.0), default=DEFAULT_DPI,
                   help=f"resolution PDF pages are rasterised at (default {DEFAULT_DPI:g})")
    p.add_argument("--pages", type=_pages_option, default=None,
                   help="only these pages of every PDF, 1-based: e.g. 1-3,7 (default: all)")
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
                   f"{d.count_score}); 'auto': symclr-predict's unknown threshold from the exemplars; 'per-class': "
                   "each class's own (around the default), from the exemplars' COCO split's other annotated drawings, else "
                   "from a calibration sheet of the exemplars' altered copies")
    p.add_argument("--thresholds", default=None, metavar="FILE",
                   help='count thresholds per class, JSON: {"count_score": 0.7, "classes": {"name": 0.65}} '
                   "(report.html and every run save one; its count_score overrides --count-score; with it, "
                   "per-class calibrates nothing)")
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
    add_matching_options(p, d)
    return p


def add_matching_options(p: ArgumentParser, d: SpotConfig) -> None:
    """symclr-spot's options for the matching sources past the ink candidates (defaults from ``d``)."""
    p.add_argument("--no-templates", action="store_true",
                   help="no template matching: ink candidates and feature similarity only (faster; "
                   "finds nothing on grey or faint scans)")
    p.add_argument("--template-min-side", type=bounded_int(4, 256), default=d.template_min_side, metavar="PX",
                   help=f"template matching runs on the drawing reduced as far as the exemplars' templates keep "
                   f"this many pixels (default {d.template_min_side}; 24: more symbols found where lines are a pixel "
                   "thinner or thicker than the exemplars', about 1.7x the time, less tolerance of other scales)")
    p.add_argument("--refine-templates", action="store_true", default=d.template_refine,
                   help="correlate the best classes of each detection again with finer templates, at scales "
                   "around the coarse match's (finds more where lines are a pixel thinner than the exemplars', "
                   "counts scans more exactly; about 8%% more time)")
    p.add_argument("--feature-match", action="store_true",
                   help="also correlate the exemplars' feature maps with the drawing's (a third candidate "
                   "source and score: finds more on scans and thin lines; several times slower, the drawing "
                   "going through the backbone at each exemplar scale)")


def _pages_option(text: str) -> set[int]:
    """argparse type of --pages (``drawings.parse_pages``)."""
    try:
        return parse_pages(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[-1]) from None


PER_CLASS = "per-class"
COUNT_SCORE_WORDS = ("auto", PER_CLASS)


def _count_score_option(text: str) -> str:
    """argparse type of --count-score: 'auto', 'per-class' or a similarity in [-1, 1], kept as text."""
    if text not in COUNT_SCORE_WORDS:
        bounded_float(-1.0, 1.0)(text)
    return text


def _count_score(text: str, ex: Exemplars) -> tuple[float, str]:
    if text == PER_CLASS:  # the global one, the classes' own around it (calibrated later)
        return SpotConfig.count_score, "default"
    if text != "auto":
        return float(text), "given"
    found = reject_threshold(ex)
    if found is None:
        raise UserError("--count-score=auto: no threshold from these exemplars")
    return found


def rerun_command(argv: list[str]) -> str:
    """The command line that counts again with thresholds saved from report.html: these
    arguments, with ``--thresholds`` (or an abbreviation argparse took) replaced."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        option = token.split("=", 1)[0]
        if option.startswith("--th") and "--thresholds".startswith(option):
            skip = "=" not in token
            continue
        kept.append(token)
    return shlex.join(["symclr-spot", *kept, "--thresholds", THRESHOLDS_FILE])


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command = rerun_command(argv)
    from symclr_ft.distributed import leave_process_group

    with sigterm_as_interrupt():  # a kill cleans up as Ctrl-C does: no temporary folder left
        try:
            return run(args)
        finally:
            leave_process_group()


def run(args) -> int:
    """symclr-spot after its argument parsing: the output folder is checked before any work."""
    from symclr_ft.distributed import make_accelerator
    from symclr_ft.io import check_output_dir

    check_output_dir(args.out, SPOT_OUTPUT, args.overwrite)
    thresholds = read_thresholds(args.thresholds) if args.thresholds else None  # before any work
    cfg = SpotConfig(min_score=args.min_score, box_mode=args.box_mode, tile=args.tile,
                     objectness_weight=args.objectness_weight, nms_iou=args.nms_iou, templates=not args.no_templates,
                     feature_match=args.feature_match, template_min_side=args.template_min_side,
                     template_refine=args.refine_templates)
    drawings = list_drawings(Path(args.drawings), args.dpi, args.pages)[: args.max_drawings or None]
    net, image_size, sha = model_and_size(Path(args.model), args.image_size, cfg.batch_size)
    accelerator = make_accelerator()
    net = net.to(accelerator.device)
    ex = load_exemplars(Path(args.exemplars), net, image_size, args.shots, args.seed, cfg, sha)
    cfg.count_score, how = _count_score(args.count_score, ex)
    if thresholds is not None:
        apply_thresholds(cfg, thresholds, ex.class_names)
        how = thresholds_how(thresholds, how)
    objectness = None
    json_path = coco_json(Path(args.exemplars))
    if json_path is not None and not args.no_objectness:
        objectness = fit_objectness(json_path, cfg, seed=args.seed)
        if objectness is not None:
            cfg.box_padding = objectness.box_padding
    if args.count_score == PER_CLASS and thresholds is None:  # every process alike: the same sheet, seed
        calibration = calibrate_for(net, ex, image_size, cfg, objectness, args.seed, json_path, shots=args.shots)
        cfg.class_count_scores = dict(calibration.thresholds)
        cfg.class_box_scales = dict(calibration.box_scales)
        how += (f"; {len(calibration.thresholds)} classes with their own from the exemplars' calibration "
                f"({calibration.pages}), {len(calibration.box_scales)} with their own box scale")
        if accelerator.is_main_process:
            print(calibration.summary(), flush=True)
    results, skipped, notes = spot_all_noted(accelerator, net, drawings, ex, image_size, cfg, objectness)
    skipped = ex.skipped + skipped
    if accelerator.is_main_process:
        counts = publish_outputs(Path(args.out), args.overwrite, drawings, ex, results, skipped, cfg, notes,
                                 args.command)
        print(summary_text(drawings, ex, results, counts, skipped, cfg, how, notes))
        print(f"wrote {args.out}/report.html, detections.json, counts.csv, {THRESHOLDS_FILE}")
    return 0


def thresholds_how(thresholds: CountThresholds, how: str) -> str:
    """Where the count thresholds came from, for the summary line."""
    where = "from " + thresholds.source if thresholds.count_score is not None else how
    own = len(thresholds.classes)
    return where + (f"; {own} class{'es' if own != 1 else ''} with their own from {thresholds.source}" if own else "")


def publish_outputs(out: Path, overwrite: bool, drawings, ex: Exemplars, results, skipped,
                    cfg: SpotConfig, notes=None, command: str | None = None) -> dict:
    """:func:`write_outputs` into a temporary folder moved into place by the output rule
    (``io.output_dir``); a full disk is one line and leaves ``out`` as it was."""
    from symclr_ft.io import output_dir

    with output_dir(out, SPOT_OUTPUT, overwrite) as tmp:
        try:
            return write_outputs(tmp, drawings, ex, results, skipped, cfg, notes, command)
        except OSError as err:
            raise UserError(f"{out}: cannot write the output ({err.strerror or err}); nothing "
                            "was written") from None


NOTHING_FOUND_LINES = 10  # drawings named on the terminal; report.html names them all


def summary_text(drawings, ex: Exemplars, results, counts, skipped, cfg: SpotConfig, how: str, notes=None) -> str:
    """What the command prints: totals per class, the score on the ground truth if any, the
    grey drawings, for which ``--feature-match`` is worth its time, and the drawings where
    nothing was found, with why (``notes``)."""
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
    # feature matching needs the exemplars' pictures: an index (ex.crops None) has none
    grey = [n.file_name for n in notes or [] if n.suits_feature_matching(cfg)] if ex.crops is not None else []
    if grey:
        lines.append(f"{len(grey)} of {len(drawings)} drawings are grey (scans, photocopies, greyscale exports; "
                     f"{', '.join(grey[:3])}{' ...' if len(grey) > 3 else ''}): --feature-match finds more "
                     "symbols on those, at several times the time")
    empty = nothing_found(notes or [], cfg)
    for name, why in list(empty.items())[:NOTHING_FOUND_LINES]:
        lines.append(f"{name}: {why}")
    if len(empty) > NOTHING_FOUND_LINES:
        lines.append(f"... nothing found on {len(empty) - NOTHING_FOUND_LINES} more drawings (report.html lists them)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
