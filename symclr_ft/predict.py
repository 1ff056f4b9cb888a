"""Use a trained model on your own symbols: ``symclr-embed`` and ``symclr-predict``.

``symclr-embed`` turns crops (an image folder, a COCO export, a shard split) into a feature
index (:mod:`symclr_ft.index`). ``symclr-predict`` labels every query crop by its nearest
support crops (k-NN, or the nearest class mean with ``--prototypes``) and answers ``unknown``
when even the best match is less similar than a threshold (``--reject``):

* ``none``: always a class (closed set);
* a number: that cosine similarity;
* ``auto``: chosen from the support set alone, no query labels (:func:`auto_threshold`). Each
  support crop is held out in turn and scored against the rest of its class (leave-one-out);
  the threshold accepts ``--tpr`` (95%) of these known-class scores. A class with one example
  has nothing to hold out, so its crop is compared with augmented views of itself (random
  crops of 30-100% of the area, flips and blur, :func:`augmented_views`): a stand-in for
  "another drawing of the same symbol" that needs no second example.

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

from symclr_ft.crops import CropSource, open_source
from symclr_ft.errors import ArgumentParser, UserError, report_user_errors
from symclr_ft.evaluate import embed_images, embed_stream
from symclr_ft.index import FeatureIndex, is_index, load_index, save_index
from symclr_ft.knn import class_prototypes, class_similarity, draw_supports, knn_vote

UNKNOWN = "unknown"
VIEWS_PER_CROP = 8
# Views of a one-example class: crops of 30-100% of the area, flips, blur. Chosen on the valid
# classes (bench/open_set.py, docs/RESULTS.md): milder views (60-100%, no blur) are so close to
# their crop that the threshold rejected a fifth of the known queries.
VIEW_SCALE_MIN = 0.3
VIEW_BLUR = True


# --------------------------------------------------------------------------- embedding sources


@dataclass
class Model:
    """A loaded model file and what an index must record about it."""

    net: torch.nn.Module
    sha256: str
    image_size: int
    input_norm: str
    path: Path


def load_model(path: str | Path, image_size: int | None, accelerator) -> Model:
    from symclr_ft.model import load_model_file, model_file_info

    info = model_file_info(path)
    size = image_size or info["image_size"]
    if not size:
        raise UserError(f"{path}: no config.yaml beside it to take the image size from; "
                        "pass --image-size")
    if size < 16:
        raise UserError(f"--image-size={size} must be at least 16")
    net = load_model_file(path).to(accelerator.device).to(memory_format=torch.channels_last)
    return Model(net, info["sha256"], int(size), info["input_norm"], Path(path))


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
        for batch in embed_stream(accelerator, model.net, loads(), batch_size):
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


# --------------------------------------------------------------------------- the threshold


def augmented_views(images: torch.Tensor, count: int, seed: int = 0,
                    scale_min: float = VIEW_SCALE_MIN, blur: bool = VIEW_BLUR) -> torch.Tensor:
    """``count`` augmented views of each uint8 crop: (N * count, 3, S, S) uint8, crop-major.
    Random crops of ``scale_min``-100% of the area (aspect 3/4..4/3), flips, and with ``blur``
    a Gaussian blur (sigma 0.1-2 px, like thicker or scanned lines); no colour changes (the
    drawings are black on white)."""
    from symclr_ft.config import ViewsConfig
    from symclr_ft.views import apply_views, sample_view_params

    cfg = ViewsConfig(preset="simclr", crop_scale_min=scale_min, color_jitter_p=0.0,
                      grayscale_p=0.0, blur=blur)
    repeated = images.repeat_interleave(count, dim=0)
    params = sample_view_params(cfg, len(repeated), torch.Generator().manual_seed(seed))
    return apply_views(repeated, params).mul_(255).round_().to(torch.uint8)


def loo_scores(features: torch.Tensor, labels: torch.Tensor, prototypes: bool = False):
    """Leave-one-out scores: for each crop whose class has at least two, its similarity to the
    rest of its class (best crop, or the class mean without it); for every crop, its best
    similarity to any other class (what an unknown symbol might score). (own, other)."""
    sim = features @ features.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    has_peer = (same & ~eye).any(dim=1)
    if prototypes:
        one_hot = torch.nn.functional.one_hot(labels).to(features.dtype)
        sums = one_hot.T @ features  # (C, D)
        own_mean = torch.nn.functional.normalize(sums[labels] - features, dim=-1)
        own = (features * own_mean).sum(dim=1)
        protos = torch.nn.functional.normalize(sums, dim=-1)
        scores = (features @ protos.T).scatter(1, labels[:, None], float("-inf"))
        other = scores.max(dim=1).values
    else:
        own = sim.masked_fill(~same | eye, float("-inf")).max(dim=1).values
        other = sim.masked_fill(same, float("-inf")).max(dim=1).values
    return own[has_peer], other


def auto_threshold(features: torch.Tensor, labels: torch.Tensor, tpr: float = 0.95,
                   view_features: torch.Tensor | None = None,
                   prototypes: bool = False) -> tuple[float, str]:
    """A similarity threshold from labelled support features alone: the ``1 - tpr`` quantile
    of the known-class scores, so that ``tpr`` of them would be accepted. Known-class scores
    are leave-one-out scores (:func:`loo_scores`) and, for crops alone in their class, the
    similarity of their ``view_features`` (N, V, D) to the crop itself. Returns the threshold
    and a sentence saying how it was chosen."""
    labels = labels.cpu()
    if len(torch.unique(labels)) < 2:
        raise UserError("--reject auto: needs a support of at least two classes")
    own, other = loo_scores(features.cpu(), labels, prototypes)
    parts, how = [own], [f"{own.numel()} leave-one-out scores"] if own.numel() else []
    counts = torch.bincount(labels)
    alone = counts[labels] == 1
    if bool(alone.any()) and view_features is None:
        if not own.numel():
            raise UserError("--reject auto: every class has one example; that needs augmented "
                            "views of the examples (give the support as images, not an index)")
        how.append(f"{int(alone.sum())} one-example classes left out (no views)")
    elif bool(alone.any()):
        views = view_features.cpu()[alone]  # (A, V, D)
        parts.append((views * features.cpu()[alone][:, None, :]).sum(dim=-1).flatten())
        how.append(f"{int(alone.sum())} one-example classes x {views.shape[1]} augmented views")
    positives = torch.cat(parts).double()
    threshold = float(torch.quantile(positives, 1.0 - tpr))
    accepted = float((other >= threshold).double().mean()) if other.numel() else float("nan")
    sentence = (
        f"threshold {threshold:.4f}: {100 * tpr:.0f}% of the support's own-class similarities "
        f"({' + '.join(how)}) are at or above it"
    )
    if other.numel():
        sentence += f"; {100 * accepted:.1f}% of their best other-class similarities are too"
    return threshold, sentence


# --------------------------------------------------------------------------- classification


@dataclass
class Support:
    features: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    k: int = 1
    prototypes: bool = False

    def __post_init__(self):
        if self.prototypes:
            self.protos, self.present = class_prototypes(
                self.features, self.labels, len(self.class_names)
            )


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


def reload_crops(path, size: int, split: str | None, wanted: list[dict]) -> torch.Tensor:
    """The uint8 pixels of the crops of ``path`` whose source is in ``wanted``, in that order
    (read again rather than kept: only these few are needed, for augmented views)."""
    keys = {_source_key(s): i for i, s in enumerate(wanted)}
    found: dict[int, torch.Tensor] = {}
    for crop in open_source(path, size, split).crops:
        i = keys.get(_source_key(crop.source))
        if i is not None:
            found[i] = crop.load()
    return torch.stack([found[i] for i in range(len(wanted))])


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
                             index.image_size, index.input_norm)
    return index, skipped


def choose_threshold(accelerator, model: Model, support: FeatureIndex, args):
    """(threshold or None, how it was chosen) for --reject."""
    rule = parse_reject(args.reject)
    if rule == "none":
        return None, "no rejection (--reject none): every query gets a class"
    if rule != "auto":
        return float(rule), f"threshold {float(rule):.4f} given with --reject"
    counts = torch.bincount(support.labels, minlength=len(support.class_names))
    alone = (counts[support.labels] == 1).nonzero()[:, 0]
    views = None
    if alone.numel() and len(torch.unique(support.labels)) >= 2 and not is_index(args.support):
        images = reload_crops(args.support, model.image_size, args.support_split,
                              [support.sources[i] for i in alone])
        feats = embed_images(accelerator, model.net, [augmented_views(images, VIEWS_PER_CROP,
                                                                      args.seed)], args.batch_size)
        views = torch.zeros(len(support), VIEWS_PER_CROP, feats.shape[1])
        views[alone] = feats.view(len(alone), VIEWS_PER_CROP, -1)
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
        for batch in embed_stream(accelerator, model.net, loads(), batch_size):
            n = len(batch.readable)
            mine, pending[:n] = pending[:n], []
            bar.update(n)
            yield QueryBatch(batch.features, batch.readable, [s for s, _ in mine],
                             [label for _, label in mine], batch.problems)


@dataclass
class Outcome:
    """Per readable query: best similarity, predicted support class, true support class
    (-1: a class the support lacks, -2: unlabelled); and the skipped crops."""

    score: list
    pred: list
    truth: list
    skipped: list


PRED_COLUMNS = ["source", "predicted", "similarity", "runner_up", "runner_up_similarity",
                "true_label"]


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
        for j, i in enumerate(rows.tolist()):
            label = batch.labels[i]
            name = query_names[label] if label >= 0 else ""
            rejected = threshold is not None and float(best[j]) < threshold
            has_runner = bool(torch.isfinite(runner_sim[j]))
            writer.writerow([
                source_text(batch.sources[i]),
                UNKNOWN if rejected else support.class_names[int(pred[j])],
                f"{float(best[j]):.4f}",
                support.class_names[int(runner[j])] if has_runner else "",
                f"{float(runner_sim[j]):.4f}" if has_runner else "",
                name,
            ])
            out.score.append(float(best[j]))
            out.pred.append(int(pred[j]))
            out.truth.append(to_support.get(name, -1) if label >= 0 else -2)
    return out


def summary_lines(out: Outcome, support: Support, threshold: float | None) -> tuple[list[str], dict]:
    """What a person reads after a run, and the same numbers as a dict."""
    from symclr_ft.metrics import episode_accuracies, open_set_summary

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
    p.add_argument("--model", required=True, help="model file (config.yaml beside it: image size)")
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
    return p


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

    from symclr_ft.distributed import make_accelerator
    from symclr_ft.io import atomic_path, write_json

    _check_args(args)
    accelerator = make_accelerator(mixed_precision="no")
    model = load_model(args.model, args.image_size, accelerator)
    query_names, batches = query_batches(accelerator, model, args)  # checks --query early
    index, skipped = load_support(accelerator, model, args)
    threshold, how = choose_threshold(accelerator, model, index, args)
    support = Support(index.features, index.labels, index.class_names, args.k, args.prototypes)
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
            "support": len(index), "classes": len(index.class_names), "summary": numbers,
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
    p.add_argument("--model", required=True, help="model file (config.yaml beside it: image size)")
    p.add_argument("--input", required=True,
                   help="image folder (class subfolders: labelled), COCO export or json, shards")
    p.add_argument("--out", required=True, help="index folder to write")
    p.add_argument("--split", default=None, help="split of a shard folder or COCO export")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=None, help="default: the model's run")
    return p


def run_embed(args) -> FeatureIndex:
    from symclr_ft.distributed import make_accelerator

    if args.batch_size < 1:
        raise UserError(f"--batch-size={args.batch_size}: must be >= 1")
    accelerator = make_accelerator(mixed_precision="no")
    model = load_model(args.model, args.image_size, accelerator)
    source = open_source(args.input, model.image_size, args.split)
    index, skipped = embed_source(accelerator, model, source, args.batch_size)
    if accelerator.is_main_process:
        save_index(index, args.out)
        if skipped:
            write_skipped(Path(args.out) / "skipped.csv", skipped)
        labelled = int((index.labels >= 0).sum())
        print(f"{len(index)} crops embedded ({labelled} labelled, {len(index.class_names)} "
              f"classes), {len(skipped)} skipped -> {args.out}")
    return index


@report_user_errors
def embed_main(argv: list[str] | None = None) -> int:
    run_embed(embed_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    # python -m symclr_ft.predict embed ... is symclr-embed; without "embed", symclr-predict.
    if sys.argv[1:2] == ["embed"]:
        sys.exit(embed_main(sys.argv[2:]))
    sys.exit(predict_main())
