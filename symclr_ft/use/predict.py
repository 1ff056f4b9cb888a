"""Use a trained model on your own symbols: ``symclr-embed`` and ``symclr-predict``.

``symclr-embed`` turns crops (an image folder, a COCO export, a shard split) into a feature
index (:mod:`symclr_ft.use.index`). ``symclr-predict`` labels every query crop by its nearest
support crops (k-NN, or the nearest class mean with ``--prototypes``) and answers ``unknown``
when its score (its best similarity to a class's mean of support crops and their augmented
views) is below a threshold (``--reject``): ``none`` (always a class), a number, or ``auto``
(chosen from the support alone). The score and the threshold are :mod:`symclr_ft.use.rejection`'s.

Queries stream batch by batch and rows are written as they come, so memory stays flat
whatever the number of queries. A crop that cannot be decoded is skipped and listed in
``skipped.csv``; the run fails only when nothing was readable.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from symclr_ft.data.crops import CropSource, open_source
from symclr_ft.errors import ArgumentParser, UserError, report_user_errors
from symclr_ft.eval.evaluate import embed_images, embed_stream
from symclr_ft.use.index import FeatureIndex, is_index, load_index, save_index
from symclr_ft.models.folding import folded_for_inference
from symclr_ft.eval.knn import class_prototypes, class_similarity, draw_supports, knn_vote
from symclr_ft.use.rejection import (
    VIEWS_PER_CROP, auto_threshold, view_features, view_prototypes, view_scores,
)

UNKNOWN = "unknown"


# --------------------------------------------------------------------------- embedding sources


@dataclass
class Model:
    """A loaded model file and what an index must record about it."""

    net: torch.nn.Module
    sha256: str
    image_size: int
    input_norm: str
    path: Path
    precision: str = "no"


def load_model(path: str | Path, image_size: int | None, accelerator,
               precision: str = "no") -> Model:
    """A model file (model.pt), or its export (FILE.onnx, run by ONNX Runtime in fp32)."""
    from symclr_ft.models.backbones import load_model_file, model_file_info

    if Path(path).suffix == ".onnx":
        from symclr_ft.models.export import OnnxFeatures

        onnx = OnnxFeatures(path)
        info = onnx.info
        if image_size and image_size != info["image_size"]:
            raise UserError(f"{path}: exported for {info['image_size']} px crops, not "
                            f"--image-size={image_size}")
        return Model(onnx, info["sha256"], info["image_size"], info["input_norm"], Path(path))
    info = model_file_info(path)
    size = image_size or info["image_size"]
    if not size:
        raise UserError(f"{path}: no config.yaml beside it to take the image size from; "
                        "pass --image-size")
    if size < 16:
        raise UserError(f"--image-size={size} must be at least 16")
    net = load_model_file(path).to(accelerator.device).to(memory_format=torch.channels_last)
    net, _ = folded_for_inference(net, int(size))  # the same features, a faster forward
    return Model(net, info["sha256"], int(size), info["input_norm"], Path(path), precision)


def _progress(accelerator, total: int | None, what: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="crop", disable=not accelerator.is_main_process,
                file=sys.stderr, dynamic_ncols=True, mininterval=1.0)


def embed_source(accelerator, model: Model, source: CropSource, batch_size: int,
                 what: str = "embedding") -> tuple[FeatureIndex, list[tuple[dict, str]]]:
    """Embed every crop of ``source`` into an index; unreadable crops are left out and
    returned as (source, reason)."""
    sources, labels = [], []

    def loads():
        for crop in source.crops:
            sources.append(crop.source)
            labels.append(crop.label)
            yield crop.load

    total = len(source.crops) if hasattr(source.crops, "__len__") else None
    feats, keep, skipped = [], [], []
    with _progress(accelerator, total, what) as bar:
        for batch in embed_stream(accelerator, model.net, loads(), batch_size,
                                  precision=model.precision):
            start = len(keep)
            skipped += [(start + row, why) for row, why in batch.problems]
            feats.append(batch.features[batch.readable])
            keep += batch.readable.tolist()
            bar.update(len(batch.readable))
    if not any(keep):
        raise UserError(f"{source.description}: no readable crop")
    rows = [i for i, ok in enumerate(keep) if ok]
    index = FeatureIndex(
        torch.cat(feats), torch.tensor(labels, dtype=torch.int64)[rows], list(source.class_names),
        [sources[i] for i in rows], model.sha256, model.image_size, model.input_norm,
        model.precision,
    )
    return index, [(sources[i], why) for i, why in skipped]


def write_skipped(path: Path, skipped: list[tuple[dict, str]]) -> None:
    from symclr_ft.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "reason"])
        writer.writerows([source_text(s), why] for s, why in skipped)


def source_text(source: dict) -> str:
    """``file`` as is, or ``image#x,y,w,h`` for a box of a drawing."""
    if "file" in source:
        return str(source["file"])
    bbox = ",".join(f"{v:g}" for v in source.get("bbox") or [])
    return f"{source.get('image')}#{bbox}"


# --------------------------------------------------------------------------- classification


@dataclass
class Support:
    features: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    k: int = 1
    prototypes: bool = False
    views: torch.Tensor | None = None  # (N, V, D) augmented views of each crop: the unknown score

    def __post_init__(self):
        if self.prototypes:
            self.protos, self.present = class_prototypes(
                self.features, self.labels, len(self.class_names)
            )
        if self.views is not None:
            self.view_protos, self.view_present = view_prototypes(
                self.features, self.labels, self.views, len(self.class_names)
            )

    def scores(self, queries: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """What --reject compares: :func:`~symclr_ft.use.rejection.view_scores` with views, else
        the predicted class's similarity ``best``."""
        if self.views is None:
            return best
        return view_scores(queries, self.view_protos, self.view_present)


def classify(support: Support, queries: torch.Tensor):
    """(predicted class, its similarity, runner-up class, its similarity) for each query.

    The similarity of a class is that of its most similar support crop (or of its mean with
    ``prototypes``); the prediction is the best class, or the k-NN vote when k > 1."""
    c = len(support.class_names)
    if support.prototypes:
        scores = (queries @ support.protos.T).masked_fill(~support.present, float("-inf"))
        pred = scores.argmax(dim=1)
    else:
        sim = queries @ support.features.T
        scores = class_similarity(sim, support.labels, c)
        pred = scores.argmax(dim=1)
        if support.k > 1:
            nearest = sim.topk(min(support.k, sim.shape[1]), dim=1).indices
            pred = knn_vote(support.labels[nearest], c)
    best = scores.gather(1, pred[:, None]).squeeze(1)
    rest = scores.scatter(1, pred[:, None], float("-inf"))
    runner_sim, runner = rest.max(dim=1)
    return pred, best, runner, runner_sim


def shots_per_class(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Indices of at most ``shots`` support crops per class, drawn with ``seed``."""
    return draw_supports(labels, shots, 1, torch.Generator().manual_seed(seed))[0].sort().values


def parse_reject(text: str) -> str | float:
    if text in ("none", "auto"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -1.0 <= value <= 1.0:
        raise UserError(f"--reject={text!r}: expected none, auto or a cosine similarity in [-1, 1]")
    return value


def _source_key(source: dict) -> str:
    import json

    return json.dumps(source, sort_keys=True)


def iter_crops(path, size: int, split: str | None, wanted: list[dict]):
    """The uint8 pixels of the crops of ``path`` whose source is in ``wanted``, in that order,
    read again (for augmented views) rather than kept since the embedding. An index lists its
    crops in the source's order, so nothing waits in ``early`` unless the order differs."""
    rows: dict[str, list[int]] = {}  # one source may be listed twice (a repeated box)
    for i, source in enumerate(wanted):
        rows.setdefault(_source_key(source), []).append(i)
    early: dict[int, torch.Tensor] = {}
    upcoming = 0
    for crop in open_source(path, size, split).crops:
        mine = [i for i in rows.get(_source_key(crop.source), []) if i >= upcoming and i not in early]
        if not mine:
            continue
        pixels = crop.load()
        early.update((i, pixels) for i in mine)
        while upcoming in early:
            yield early.pop(upcoming)
            upcoming += 1
    if upcoming < len(wanted):
        raise UserError(f"{path}: {len(wanted) - upcoming} support crops are no longer there "
                        "(was it changed since it was embedded?)")


def embed_views(accelerator, model: Model, path, split: str | None, sources: list[dict],
                seed: int, batch_size: int, count: int = VIEWS_PER_CROP) -> torch.Tensor:
    """(N, count, D) features of augmented views of the crops ``sources`` of ``path``."""
    embed = lambda views: embed_images(accelerator, model.net, [views], batch_size,  # noqa: E731
                                       precision=model.precision)
    return view_features(embed, iter_crops(path, model.image_size, split, sources), count, seed)


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
            crops = list(source.crops)
            labels = torch.tensor([c.label for c in crops], dtype=torch.int64)
            rows = shots_per_class(labels, args.shots, args.seed).tolist()
            source = CropSource(source.class_names, [crops[i] for i in rows], True,
                                source.description)
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


def predict_parser() -> ArgumentParser:
    p = ArgumentParser(prog="symclr-predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True,
                   help="model file (config.yaml beside it: image size), or its symclr-export .onnx")
    p.add_argument("--support", required=True, help="index, labelled image folder, COCO, shards")
    p.add_argument("--query", required=True, help="index, image folder, COCO export or shards")
    p.add_argument("--out", required=True, help="predictions CSV")
    p.add_argument("--support-split", default=None, help="split of a shard folder / COCO export")
    p.add_argument("--query-split", default=None, help="split of a shard folder / COCO export")
    p.add_argument("--k", type=int, default=1, help="neighbours that vote (default 1)")
    p.add_argument("--prototypes", action="store_true", help="nearest class mean instead")
    p.add_argument("--shots", type=int, default=0, help="at most N support crops per class")
    p.add_argument("--seed", type=int, default=0, help="for --shots and augmented views")
    p.add_argument("--reject", default="none", help="none | auto | a similarity threshold")
    p.add_argument("--tpr", type=float, default=0.95, help="share of known accepted by auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=None, help="default: the model's run")
    add_precision_option(p)
    return p


def add_precision_option(p: ArgumentParser) -> None:
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="precision of the embedding; auto: bf16 where the hardware has it "
                        "natively, else fp32 (no)")


def _check_args(args) -> None:
    parse_reject(args.reject)
    for name in ("support", "query"):
        if not Path(getattr(args, name)).exists():
            raise UserError(f"{getattr(args, name)}: not found (--{name})")
    if args.k < 1 or args.shots < 0 or args.batch_size < 1:
        raise UserError("--k and --batch-size must be >= 1, --shots >= 0")
    if not 0.0 < args.tpr <= 1.0:
        raise UserError(f"--tpr={args.tpr}: must be in (0, 1]")


def run_predict(args) -> dict:
    """symclr-predict without the argument parsing (tests call it)."""
    import contextlib
    import os

    from symclr_ft.distributed import inference_precision, make_accelerator
    from symclr_ft.io import atomic_path, write_json

    _check_args(args)
    accelerator = make_accelerator()
    model = load_model(args.model, args.image_size, accelerator,
                       inference_precision(args.mixed_precision))
    query_names, batches = query_batches(accelerator, model, args)  # checks --query early
    index, skipped = load_support(accelerator, model, args)
    views = support_views(accelerator, model, index, args)
    threshold, how = choose_threshold(index, views, args)
    if views is None and args.reject != "none":
        how += ("; unknown score: the similarity alone (the support index has no augmented "
                "views: symclr-embed --views 8 stores them)")
    support = Support(index.features, index.labels, index.class_names, args.k, args.prototypes,
                      views)
    out = Path(args.out)
    main_process = accelerator.is_main_process
    # Every process classifies (the embedding is shared); only the main one writes.
    with (atomic_path(out) if main_process else contextlib.nullcontext(os.devnull)) as target:
        with open(target, "w", newline="") as handle:
            outcome = write_predictions(handle, support, threshold, query_names, batches)
        if not outcome.score:
            raise UserError(f"{args.query}: no readable query crop ({len(outcome.skipped)} "
                            "skipped)")
    lines, numbers = summary_lines(outcome, support, threshold)
    skipped += outcome.skipped
    if main_process:
        if skipped:
            write_skipped(out.parent / "skipped.csv", skipped)
        write_json(out.with_suffix(".threshold.json"), {
            "reject": args.reject, "threshold": threshold, "how": how, "tpr": args.tpr,
            "support": len(index), "classes": len(index.class_names),
            "precision": model.precision, "summary": numbers,
        })
        print(how)
        print("\n".join(lines) + (f" (listed in {out.parent / 'skipped.csv'})" if skipped else ""))
        print(f"wrote {out} and {out.with_suffix('.threshold.json')}")
    return numbers


@report_user_errors
def predict_main(argv: list[str] | None = None) -> int:
    run_predict(predict_parser().parse_args(argv))
    return 0


# --------------------------------------------------------------------------- symclr-embed


def embed_parser() -> ArgumentParser:
    p = ArgumentParser(prog="symclr-embed", description="Embed crops into a feature index.")
    p.add_argument("--model", required=True,
                   help="model file (config.yaml beside it: image size), or its symclr-export .onnx")
    p.add_argument("--input", required=True,
                   help="image folder (class subfolders: labelled), COCO export or json, shards")
    p.add_argument("--out", required=True, help="index folder to write")
    p.add_argument("--split", default=None, help="split of a shard folder or COCO export")
    p.add_argument("--views", type=int, default=0,
                   help=f"also store N augmented views per crop (use {VIEWS_PER_CROP} for a support "
                        "index: symclr-predict --reject scores queries against them)")
    p.add_argument("--seed", type=int, default=0, help="for --views")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=None, help="default: the model's run")
    add_precision_option(p)
    return p


def run_embed(args) -> FeatureIndex:
    from symclr_ft.distributed import inference_precision, make_accelerator

    if args.batch_size < 1 or args.views < 0:
        raise UserError(f"--batch-size={args.batch_size} must be >= 1 and --views={args.views} "
                        ">= 0")
    accelerator = make_accelerator()
    model = load_model(args.model, args.image_size, accelerator,
                       inference_precision(args.mixed_precision))
    source = open_source(args.input, model.image_size, args.split)
    index, skipped = embed_source(accelerator, model, source, args.batch_size)
    if args.views:
        index.views = embed_views(accelerator, model, args.input, args.split, index.sources,
                                  args.seed, args.batch_size, args.views)
    if accelerator.is_main_process:
        save_index(index, args.out)
        if skipped:
            write_skipped(Path(args.out) / "skipped.csv", skipped)
        labelled = int((index.labels >= 0).sum())
        views = f", {args.views} augmented views each" if args.views else ""
        print(f"{len(index)} crops embedded ({labelled} labelled, {len(index.class_names)} "
              f"classes{views}), {len(skipped)} skipped -> {args.out}")
    return index


@report_user_errors
def embed_main(argv: list[str] | None = None) -> int:
    run_embed(embed_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    # python -m symclr_ft.use.predict embed ... is symclr-embed; without "embed", symclr-predict.
    if sys.argv[1:2] == ["embed"]:
        sys.exit(embed_main(sys.argv[2:]))
    sys.exit(predict_main())
