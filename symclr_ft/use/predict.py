"""Use a trained model on your own symbols: ``symclr-embed`` and ``symclr-predict``.

``symclr-embed`` turns crops (an image folder, a COCO export, a shard split) into a feature
index (:mod:`symclr_ft.use.index`). ``symclr-predict`` labels every query crop by its nearest
support crops (k-NN, or the nearest class mean with ``--prototypes``) and answers ``unknown``
when its score (its best similarity to a class's mean of support crops and their augmented
views) is below a threshold (``--reject``): ``none`` (always a class), a number, or ``auto``
(chosen from the support alone). The score and the threshold are :mod:`symclr_ft.use.rejection`'s.

Queries stream batch by batch and rows are written as they come, so memory stays flat
whatever the number of queries. A crop that cannot be decoded is skipped and listed with its
reason in the skip list, named after the output (``p.skipped.csv`` beside ``p.csv``;
``skipped.csv`` inside an index folder); the run fails only when nothing was readable.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from symclr_ft.data.crops import CropSource, open_source
from symclr_ft.errors import (
    ArgumentParser, UserError, bounded_float, bounded_int, report_user_errors, sigterm_as_interrupt,
)
from symclr_ft.eval.embedding import embed_stream
from symclr_ft.io import atomic_files, ensure_writable_dir
from symclr_ft.use.index import (
    INDEX_OUTPUT, SKIPPED_FILE, FeatureIndex, is_index, load_index, write_index,
)
# The library both commands are made of, shared with the Python API (symclr_ft.use.embedder,
# symclr_ft.use.symbol_index); importable from here as before.
from symclr_ft.use.embedder import (  # noqa: F401
    Model, _progress, embed_source, embed_views, iter_crops, open_model,
)
from symclr_ft.use.rejection import VIEWS_PER_CROP, auto_threshold
from symclr_ft.use.symbol_index import (  # noqa: F401
    UNKNOWN, Support, choose_shots, classify, shots_per_class, source_text,
)

# --------------------------------------------------------------------------- embedding sources


def load_model(path: str | Path, image_size: int | None, accelerator,
               precision: str = "no", batch_size: int | None = None) -> Model:
    """A model file (model.pt) on the accelerator's device, or its export (FILE.onnx, run by
    ONNX Runtime in fp32): :func:`symclr_ft.use.embedder.open_model`. With ``batch_size``, a
    crop size whose batches would not fit in memory is refused first."""
    return open_model(path, image_size, accelerator.device, precision, batch_size)


def write_skipped(path: Path, skipped: list[tuple[dict, str]]) -> None:
    """The skip list (source, reason) into ``path``, a file of an output's temporary folder."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "reason"])
        writer.writerows([source_text(s), why] for s, why in skipped)


# --------------------------------------------------------------------------- classification


def parse_reject(text: str) -> str | float:
    """``none``, ``auto`` or a cosine similarity in [-1, 1]."""
    if text in ("none", "auto"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -1.0 <= value <= 1.0:
        raise UserError(f"--reject={text!r}: expected none, auto or a cosine similarity in [-1, 1]")
    return value


def _reject_option(text: str) -> str:
    """argparse type of --reject: checked by :func:`parse_reject` (a bad value is the
    parser's one line), kept as the text."""
    import argparse

    try:
        parse_reject(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def load_support(accelerator, model: Model, args) -> tuple[FeatureIndex, list]:
    """The labelled support index (read, or embedded from a source), cut to --shots."""
    if is_index(args.support):
        index, skipped = load_index(args.support, expect_sha256=model.sha256), []
    else:
        source = open_source(args.support, model.image_size, args.support_split)
        if not source.labelled:
            raise UserError(f"{args.support}: the support must be labelled (class folders, a "
                            "COCO export or shards), not a flat folder of images")
        if args.reject == "auto" and len(source.class_names) < 2:
            raise UserError(f"{args.support}: --reject auto needs a support of at least two "
                            f"classes, it has {len(source.class_names)}")
        if args.shots:  # draw from the labels first: only the chosen crops are decoded
            source = choose_shots(source, args.shots, args.seed)
        index, skipped = embed_source(accelerator, model, source, args.batch_size, "support")
        return index, skipped
    if bool((index.labels < 0).any()):
        raise UserError(f"{args.support}: the support index has unlabelled crops")
    if args.shots:
        rows = shots_per_class(index.labels, args.shots, args.seed)
        index = FeatureIndex(index.features[rows], index.labels[rows], index.class_names,
                             [index.sources[i] for i in rows], index.model_sha256,
                             index.image_size, index.input_norm, index.precision,
                             None if index.views is None else index.views[rows])
    return index, skipped


def support_views(accelerator, model: Model, index: FeatureIndex, args) -> torch.Tensor | None:
    """(N, V, D) features of augmented views of every support crop, for the unknown score and
    the threshold of one-example classes (:mod:`symclr_ft.use.rejection`); None when nothing is
    rejected, or when the support is an index made without ``--views``."""
    if parse_reject(args.reject) == "none":
        return None
    if is_index(args.support):
        return index.views
    return embed_views(accelerator, model, args.support, args.support_split, index.sources,
                       args.seed, args.batch_size)


def choose_threshold(support: FeatureIndex, views: torch.Tensor | None, args):
    """(threshold or None, how it was chosen) for --reject."""
    rule = parse_reject(args.reject)
    if rule == "none":
        return None, "no rejection (--reject none): every query gets a class"
    if rule != "auto":
        return float(rule), f"threshold {float(rule):.4f} given with --reject"
    return auto_threshold(support.features, support.labels, args.tpr, views, args.prototypes)


@dataclass
class QueryBatch:
    features: torch.Tensor  # (n, D), zero rows where unreadable
    readable: torch.Tensor  # (n,) bool
    sources: list[dict]
    labels: list[int]  # index into class_names, -1 unlabelled
    problems: list  # (row, reason)


def query_batches(accelerator, model: Model, args):
    """(class names of the queries, an iterator of :class:`QueryBatch`) for --query."""
    if is_index(args.query):
        index = load_index(args.query, expect_sha256=model.sha256)
        step = max(1, args.batch_size)
        batches = (
            QueryBatch(index.features[i : i + step], torch.ones(len(index.sources[i : i + step]),
                       dtype=torch.bool), index.sources[i : i + step],
                       index.labels[i : i + step].tolist(), [])
            for i in range(0, len(index), step)
        )
        return index.class_names, batches
    source = open_source(args.query, model.image_size, args.query_split)
    return source.class_names, _embedded_queries(accelerator, model, source, args.batch_size)


def _embedded_queries(accelerator, model: Model, source: CropSource, batch_size: int):
    pending: list = []  # (source, label) read ahead of the batch being embedded

    def loads():
        for crop in source.crops:
            pending.append((crop.source, crop.label))
            yield crop.load

    total = len(source.crops) if hasattr(source.crops, "__len__") else None
    with _progress(accelerator, total, "queries") as bar:
        for batch in embed_stream(accelerator, model.net, loads(), batch_size,
                                  precision=model.precision):
            n = len(batch.readable)
            mine, pending[:n] = pending[:n], []
            bar.update(n)
            yield QueryBatch(batch.features, batch.readable, [s for s, _ in mine],
                             [label for _, label in mine], batch.problems)


@dataclass
class Outcome:
    """Per readable query: the score --reject compares, predicted support class, true support
    class (-1: a class the support lacks, -2: unlabelled); and the skipped crops."""

    score: list
    pred: list
    truth: list
    skipped: list


PRED_COLUMNS = ["source", "predicted", "similarity", "score", "runner_up",
                "runner_up_similarity", "true_label"]


def write_predictions(handle, support: Support, threshold: float | None, query_names: list[str],
                      batches) -> Outcome:
    """Classify each batch and write its rows as they come (memory stays flat)."""
    to_support = {n: i for i, n in enumerate(support.class_names)}
    writer = csv.writer(handle)
    writer.writerow(PRED_COLUMNS)
    out = Outcome([], [], [], [])
    for batch in batches:
        out.skipped += [(batch.sources[row], why) for row, why in batch.problems]
        rows = batch.readable.nonzero()[:, 0]
        pred, best, runner, runner_sim = classify(support, batch.features[rows])
        score = support.scores(batch.features[rows], best)
        for j, i in enumerate(rows.tolist()):
            label = batch.labels[i]
            name = query_names[label] if label >= 0 else ""
            rejected = threshold is not None and float(score[j]) < threshold
            has_runner = bool(torch.isfinite(runner_sim[j]))
            writer.writerow([
                source_text(batch.sources[i]),
                UNKNOWN if rejected else support.class_names[int(pred[j])],
                f"{float(best[j]):.4f}",
                f"{float(score[j]):.4f}",
                support.class_names[int(runner[j])] if has_runner else "",
                f"{float(runner_sim[j]):.4f}" if has_runner else "",
                name,
            ])
            out.score.append(float(score[j]))
            out.pred.append(int(pred[j]))
            out.truth.append(to_support.get(name, -1) if label >= 0 else -2)
    return out


def summary_lines(out: Outcome, support: Support, threshold: float | None) -> tuple[list[str], dict]:
    """What a person reads after a run, and the same numbers as a dict."""
    from symclr_ft.eval.metrics import episode_accuracies, open_set_summary

    score, pred, truth = (np.asarray(v) for v in (out.score, out.pred, out.truth))
    accepted = score >= threshold if threshold is not None else np.ones(len(score), dtype=bool)
    lines = [f"{len(score)} queries predicted: {int(accepted.sum())} labelled, "
             f"{int((~accepted).sum())} unknown; {len(out.skipped)} skipped"]
    numbers: dict = {"queries": len(score), "unknown": int((~accepted).sum()),
                     "skipped": len(out.skipped)}
    known = truth >= 0
    if known.any():
        c = len(support.class_names)
        final = torch.from_numpy(np.where(accepted, pred, -1)[known])
        target = torch.from_numpy(truth[known])
        micro, macro = (float(v[0]) for v in episode_accuracies(final[None], target, c))
        closed = torch.from_numpy(pred[known])
        c_micro, c_macro = (float(v[0]) for v in episode_accuracies(closed[None], target, c))
        numbers.update(micro=micro, macro=macro, closed_micro=c_micro, closed_macro=c_macro)
        lines.append(f"accuracy on {int(known.sum())} queries of support classes: micro "
                     f"{100 * micro:.1f}%, macro {100 * macro:.1f}% (closed set, no rejection: "
                     f"{100 * c_micro:.1f}% / {100 * c_macro:.1f}%)")
    labelled = truth >= -1
    if (truth == -1).any() and known.any():
        o = open_set_summary(score[labelled], known[labelled], (pred == truth)[labelled], threshold)
        numbers["open_set"] = o
        text = (f"open set: {o['unknown']} queries of classes not in the support: AUROC "
                f"{o['auroc']:.3f}, FPR at 95% TPR {100 * o['fpr_at_95_tpr']:.1f}%")
        if threshold is not None:
            text += (f"; at the threshold {100 * o['known_accepted_correct']:.1f}% of known "
                     f"queries accepted and correct, {100 * o['unknown_accepted']:.1f}% of "
                     "unknown accepted")
        lines.append(text)
    return lines, numbers


MAX_SEED = 2**32 - 1  # seeds of the shots drawn and the augmented views
MAX_BATCH = 65_536
SIDE_SUFFIXES = (".skipped.csv", ".threshold.json")


def predict_parser() -> ArgumentParser:
    p = ArgumentParser(prog="symclr-predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True,
                   help="model file (config.yaml beside it: image size), or its symclr-export .onnx")
    p.add_argument("--support", required=True, help="index, labelled image folder, COCO, shards")
    p.add_argument("--query", required=True, help="index, image folder, COCO export or shards")
    p.add_argument("--out", required=True,
                   help="predictions CSV; its side files are named after it: p.csv -> "
                        "p.threshold.json and, when crops were skipped, p.skipped.csv")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a CSV of that name that an earlier symclr-predict did not write")
    p.add_argument("--support-split", default=None, help="split of a shard folder / COCO export")
    p.add_argument("--query-split", default=None, help="split of a shard folder / COCO export")
    p.add_argument("--k", type=bounded_int(1, 10_000), default=1,
                   help="neighbours that vote (default 1)")
    p.add_argument("--prototypes", action="store_true", help="nearest class mean instead")
    p.add_argument("--shots", type=bounded_int(0, 10**6), default=0,
                   help="at most N support crops per class (0: all)")
    p.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=0,
                   help="for --shots and augmented views")
    p.add_argument("--reject", type=_reject_option, default="none",
                   help="none | auto | a similarity threshold in [-1, 1]")
    p.add_argument("--tpr", type=bounded_float(0.0, 1.0, above=True), default=0.95,
                   help="share of known accepted by auto, in (0, 1]")
    add_batch_and_size_options(p)
    add_precision_option(p)
    return p


def add_batch_and_size_options(p: ArgumentParser) -> None:
    from symclr_ft.config import MAX_IMAGE_SIZE

    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=256,
                   help="crops per forward (default 256)")
    p.add_argument("--image-size", type=bounded_int(16, MAX_IMAGE_SIZE), default=None,
                   help=f"crop side, 16..{MAX_IMAGE_SIZE} (default: the model's run)")


def add_precision_option(p: ArgumentParser) -> None:
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="precision of the embedding; auto: bf16 where the hardware has it "
                        "natively, else fp32 (no)")


def _check_args(args) -> None:
    parse_reject(args.reject)  # callers that build args without the parser
    for name in ("support", "query"):
        if not Path(getattr(args, name)).exists():
            raise UserError(f"{getattr(args, name)}: not found (--{name})")


# --------------------------------------------------------------------------- prediction files


def prediction_files(out: str | Path) -> tuple[Path, Path, Path]:
    """The predictions CSV and its side files, named after it so that they never take a name
    the user may have used (a plain skipped.csv): p.csv -> p.skipped.csv, p.threshold.json."""
    out = Path(out)
    return out, out.with_suffix(".skipped.csv"), out.with_suffix(".threshold.json")


def _earlier_predictions(threshold_file: Path) -> bool:
    """Whether the side file says symclr-predict wrote this set (the keys it has always had
    tell the files written before it named its command)."""
    try:
        data = json.loads(threshold_file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (data.get("command") == "symclr-predict"
                                       or {"reject", "threshold", "how"} <= set(data))


def check_prediction_out(args) -> list[Path]:
    """Refuse, before any work, a --out that could lose a file: a folder, a name kept for side
    files, an input of this run, or a set of files an earlier symclr-predict did not write
    (unless --overwrite). Returns the files of the set that exist: the run replaces them."""
    out = Path(args.out)
    if out.name in ("", ".", "..") or out.is_dir():
        raise UserError(f"{out}: is a folder; --out names the predictions CSV file")
    if out.name.endswith(SIDE_SUFFIXES):
        raise UserError(f"{out}: names ending in {' or '.join(SIDE_SUFFIXES)} are kept for the "
                        "side files of a predictions CSV; choose another --out")
    files = prediction_files(out)
    inputs = {Path(getattr(args, n)).resolve(): n for n in ("model", "support", "query")}
    for path in files:
        if path.resolve() in inputs:
            raise UserError(f"{path}: is the --{inputs[path.resolve()]} input; choose another --out")
        if path.is_dir():
            raise UserError(f"{path}: is a folder, where the predictions need a file")
    existing = [f for f in files if os.path.lexists(f)]
    if existing and not getattr(args, "overwrite", False) and not _earlier_predictions(files[2]):
        raise UserError(f"{existing[0]}: exists and was not written by symclr-predict (no "
                        f"{files[2].name} of an earlier run beside it); choose another --out, or "
                        "pass --overwrite to replace it")
    ensure_writable_dir(out.parent)
    return existing


def _same_width(batches, width: int, args):
    """The query batches, refused at the first whose features are not as wide as the
    support's (indexes made by different models)."""
    for batch in batches:
        if batch.features.shape[1] != width:
            raise UserError(f"{args.query}: query features have {batch.features.shape[1]} "
                            f"dimensions, the support's ({args.support}) have {width}; embed "
                            "both with the same model")
        yield batch


def write_prediction_files(args, main_process: bool, replace: list[Path], support: Support,
                           threshold, query_names, batches, skipped: list, record: dict):
    """Classify every query and write the predictions, the skip list and the threshold
    together (``io.atomic_files``: all of them appear, or none). Every process classifies;
    only the main one writes. Returns the summary lines, their numbers and the skipped crops."""
    files = prediction_files(args.out)
    output = atomic_files(files, replace) if main_process else contextlib.nullcontext(None)
    with output as tmp:
        try:
            with open(tmp / files[0].name if tmp else os.devnull, "w", newline="") as handle:
                outcome = write_predictions(handle, support, threshold, query_names, batches)
            if not outcome.score:
                raise UserError(f"{args.query}: no readable query crop ({len(outcome.skipped)} "
                                "skipped)")
            lines, numbers = summary_lines(outcome, support, threshold)
            skipped = skipped + outcome.skipped
            if tmp is not None and skipped:
                write_skipped(tmp / files[1].name, skipped)
            if tmp is not None:
                record = {**record, "files": [f.name for f in files[: 2 if skipped else 1]],
                          "summary": numbers}
                (tmp / files[2].name).write_text(json.dumps(record, indent=2) + "\n")
        except OSError as err:  # a full disk: the temporaries go, nothing appears
            raise UserError(f"{files[0]}: cannot write the predictions ({err.strerror or err}); "
                            "nothing was written") from None
    return lines, numbers, skipped


def run_predict(args) -> dict:
    """symclr-predict without the argument parsing (tests call it)."""
    from symclr_ft.distributed import native_precision, make_accelerator

    _check_args(args)
    replace = check_prediction_out(args)
    accelerator = make_accelerator()
    model = load_model(args.model, args.image_size, accelerator,
                       native_precision(args.mixed_precision), args.batch_size)
    query_names, batches = query_batches(accelerator, model, args)  # checks --query early
    index, skipped = load_support(accelerator, model, args)
    views = support_views(accelerator, model, index, args)
    threshold, how = choose_threshold(index, views, args)
    if views is None and args.reject != "none":
        how += ("; unknown score: the similarity alone (the support index has no augmented "
                "views: symclr-embed --views 8 stores them)")
    support = Support(index.features, index.labels, index.class_names, args.k, args.prototypes,
                      views)
    record = {"command": "symclr-predict", "reject": args.reject, "threshold": threshold,
              "how": how, "tpr": args.tpr, "support": len(index),
              "classes": len(index.class_names), "precision": model.precision}
    lines, numbers, skipped = write_prediction_files(
        args, accelerator.is_main_process, replace, support, threshold, query_names,
        _same_width(batches, support.features.shape[1], args), skipped, record)
    if accelerator.is_main_process:
        csv_file, skipped_file, threshold_file = prediction_files(args.out)
        print(how)
        print("\n".join(lines) + (f" (listed in {skipped_file})" if skipped else ""))
        print(f"wrote {csv_file} and {threshold_file}")
    return numbers


@report_user_errors
def predict_main(argv: list[str] | None = None) -> int:
    args = predict_parser().parse_args(argv)
    with sigterm_as_interrupt():  # a kill cleans up as Ctrl-C does: no temporaries left
        run_predict(args)
    return 0


# --------------------------------------------------------------------------- symclr-embed


def embed_parser() -> ArgumentParser:
    p = ArgumentParser(prog="symclr-embed", description="Embed crops into a feature index.")
    p.add_argument("--model", required=True,
                   help="model file (config.yaml beside it: image size), or its symclr-export .onnx")
    p.add_argument("--input", required=True,
                   help="image folder (class subfolders: labelled), COCO export or json, shards")
    p.add_argument("--out", required=True,
                   help="index folder to write: new, empty, or an earlier index (replaced)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not an earlier index (only the index's "
                        "own files are replaced; the others stay)")
    p.add_argument("--split", default=None, help="split of a shard folder or COCO export")
    p.add_argument("--views", type=bounded_int(0, 64), default=0,
                   help=f"also store N augmented views per crop (use {VIEWS_PER_CROP} for a support "
                        "index: symclr-predict --reject scores queries against them)")
    p.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=0, help="for --views")
    add_batch_and_size_options(p)
    add_precision_option(p)
    return p


def run_embed(args) -> FeatureIndex:
    from symclr_ft.distributed import native_precision, make_accelerator
    from symclr_ft.io import check_output_dir, output_dir

    overwrite = getattr(args, "overwrite", False)
    check_output_dir(args.out, INDEX_OUTPUT, overwrite)  # before any work
    accelerator = make_accelerator()
    model = load_model(args.model, args.image_size, accelerator,
                       native_precision(args.mixed_precision), args.batch_size)
    source = open_source(args.input, model.image_size, args.split)
    index, skipped = embed_source(accelerator, model, source, args.batch_size)
    if args.views:
        index.views = embed_views(accelerator, model, args.input, args.split, index.sources,
                                  args.seed, args.batch_size, args.views)
    if accelerator.is_main_process:
        with output_dir(args.out, INDEX_OUTPUT, overwrite) as tmp:
            write_index(index, tmp, args.out)
            if skipped:
                try:
                    write_skipped(tmp / SKIPPED_FILE, skipped)
                except OSError as err:
                    raise UserError(f"{args.out}: cannot write {SKIPPED_FILE} ({err.strerror})") from None
        labelled = int((index.labels >= 0).sum())
        views = f", {args.views} augmented views each" if args.views else ""
        print(f"{len(index)} crops embedded ({labelled} labelled, {len(index.class_names)} "
              f"classes{views}), {len(skipped)} skipped -> {args.out}")
    return index


@report_user_errors
def embed_main(argv: list[str] | None = None) -> int:
    args = embed_parser().parse_args(argv)
    with sigterm_as_interrupt():  # a kill cleans up as Ctrl-C does: no temporaries left
        run_embed(args)
    return 0


if __name__ == "__main__":
    # python -m symclr_ft.use.predict embed ... is symclr-embed; without "embed", symclr-predict.
    if sys.argv[1:2] == ["embed"]:
        sys.exit(embed_main(sys.argv[2:]))
    sys.exit(predict_main())
