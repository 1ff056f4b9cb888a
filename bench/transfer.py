"""Transfer benchmark: how well features recognise symbols never trained on, in styles never seen.

    python bench/transfer.py --imagenet --model lite0=runs/lite0/model.pt --folds lite0=runs/novel_lite0 \
        --model universe=runs/universe/model.pt,untrained_ff=1 \
        --ff-shards shards --domain music=../shared/data/muscima --cache runs/transfer/domains \
        --out runs/transfer

One run, one table; a row per model (``--imagenet`` adds the untrained ImageNet EfficientNet-lite0;
``--model NAME=universe`` the shipped universe weights, at configs/universe.yaml's input rule),
columns:

* firefighting, trained classes: support the train split, queries ``--split`` (test);
* firefighting, held-out folds: for a model given ``--folds NAME=DIR`` (``DIR/summary.json`` from
  bench/novel_classes.py, ``DIR/fold{k}/model.pt`` trained without fold k's classes), each fold's
  own model among the fold's 10 classes only (support their train crops, queries their
  ``--split`` crops), averaged over the folds. A model that never trained on firefighting (the
  untrained ImageNet row, and ``--model NAME=PATH,untrained_ff=1``, e.g. pretrained on the symbol
  universe only) needs no fold models: every class is held out for it, so the model itself is
  evaluated among the same folds' classes (those of ``--fold-classes DIR``, else of the first
  ``--folds``);
* every ``--domain NAME=PATH``: a COCO export (shards made on the fly with make-shards into
  ``--cache/NAME``, reused while the source is the same) or a shards folder; support every crop
  of its train split, queries its
  ``--split`` split, as symclr-evaluate does. ``--support-cap`` / ``--query-cap`` (per class,
  every domain) make choosing on valid splits cheaper; the reported run uses neither.
* every domain that has classes drawn as letters or digits (:func:`is_text_class`; in music the
  dynamics f, m, p, s and the time-signature numerals) gets a second column over its other
  classes: any font-rendered training set holds letters and digits, so only the other classes
  measure transfer to symbols never seen.

Numbers: mean of ``--episodes`` seeded episodes, ± the 95% interval half-width (for the mean of
folds: the folds' intervals combined as independent, sqrt(sum ci^2) / K), and macro
(class-balanced) accuracy. Each model is evaluated with its own input rule (image size, ink,
letterbox) from the config.yaml beside its file, the rule it was trained with.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from symclr_ft.config import EvalConfig, ModelConfig, read_yaml  # noqa: E402
from symclr_ft.data.shardset import CropSet, iter_shard, load_classes, shard_paths  # noqa: E402
from symclr_ft.errors import ArgumentParser, UserError, report_user_errors  # noqa: E402
from symclr_ft.io import read_json, write_json, write_text  # noqa: E402
from symclr_ft.data.preprocess import INK_MODES, decode_crop  # noqa: E402

METRICS = ("one_shot", "five_shot")
IMAGENET = "efficientnet_lite0"
UNIVERSE = "universe"  # the shipped universe weights (weights/, model.init=universe), no model file
UNTRAINED_ON_FF = (IMAGENET, UNIVERSE)

# Classes drawn as text. MUSCIMA++ names its dynamics letters dynamicLetterF/M/P/S and its
# time-signature digits numeral2..numeral8; a class named by one letter or digit is text too.
# ornamentTrill and timeSigCommon stay symbols: music fonts draw them as their own glyphs.
TEXT_CLASS = re.compile(r"dynamicLetter[A-Za-z]|numeral\d+|[A-Za-z0-9]")
SYMBOLS_SUFFIX = " w/o letters, digits"


def is_text_class(name: str) -> bool:
    """Whether a class is a letter or a digit (:data:`TEXT_CLASS`), which any font universe
    holds, so that recognising it says little about transfer to unseen symbols."""
    return TEXT_CLASS.fullmatch(name) is not None


def symbol_classes(names: list[str]) -> set[int] | None:
    """Indices of the classes that are not letters or digits; None when there is no text class
    (then the domain needs no second column) or nothing else."""
    keep = {i for i, name in enumerate(names) if not is_text_class(name)}
    return keep if 0 < len(keep) < len(names) else None


def domain_columns(domain: "Domain") -> list[str]:
    """The table's columns of a domain: all classes, and the non-text classes when they differ."""
    return [domain.name] + ([domain.name + SYMBOLS_SUFFIX] if domain.symbols is not None else [])


@dataclass(frozen=True)
class InputRule:
    """How a crop becomes the model's input: what it was trained with."""

    size: int = 96
    ink: str = "none"
    box: bool = False


@dataclass
class ModelSpec:
    name: str
    path: str  # a model file, "efficientnet_lite0" (the untrained ImageNet weights) or "universe" (the shipped ones)
    rule: InputRule
    wise: float = 1.0  # WiSE-FT: weights (1 - wise) * ImageNet init + wise * the file's
    layers: tuple[str, ...] = ()  # features from these stages (symclr_ft.models.multilayer); (): the head's
    untrained_ff: bool = False  # never trained on firefighting: its held-out folds need no fold models

    def __post_init__(self):
        # the untrained ImageNet weights, and the universe weights (pretrained on rendered symbols only)
        self.untrained_ff = self.untrained_ff or self.path in UNTRAINED_ON_FF


def rule_from_config(path: Path, fallback: InputRule) -> InputRule:
    """The input rule in the config.yaml beside a model file (``eval.image_size`` or
    ``data.image_size``, ``data.ink``, ``data.letterbox``); ``fallback`` where absent."""
    config = path.parent / "config.yaml"
    if not config.is_file():
        return fallback
    raw = read_yaml(config) or {}
    data, ev = raw.get("data") or {}, raw.get("eval") or {}
    size = int(ev.get("image_size") or data.get("image_size") or fallback.size)
    return InputRule(size, str(data.get("ink", fallback.ink)), bool(data.get("letterbox", fallback.box)))


def parse_model(text: str, default: InputRule) -> ModelSpec:
    """``NAME=PATH[,size=N][,ink=MODE][,box=0|1][,wise=A][,untrained_ff=0|1]`` (options override
    the config's rule; ``wise`` evaluates the WiSE-FT average with the ImageNet init,
    symclr_ft.models.wise; ``untrained_ff=1``: the model never saw a firefighting class)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UserError(f"--model {text}: expected NAME=PATH")
    path, *opts = rest.split(",")
    if path in UNTRAINED_ON_FF:
        rule = default if path == IMAGENET else universe_rule()
    else:
        rule = rule_from_config(Path(path), default)
    if path not in UNTRAINED_ON_FF and not Path(path).is_file():
        raise UserError(f"{path}: model file not found")
    wise, layers, untrained = 1.0, (), False
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "untrained_ff" and value in ("0", "1"):
            untrained = value == "1"
        elif key == "wise" and _is_fraction(value):
            wise = float(value)
        elif key == "layers" and value:
            layers = tuple(value.split("+"))
        elif key == "size" and value.isdigit() and int(value) >= 16:
            rule = InputRule(int(value), rule.ink, rule.box)
        elif key == "ink" and value in INK_MODES:
            rule = InputRule(rule.size, value, rule.box)
        elif key == "box" and value in ("0", "1"):
            rule = InputRule(rule.size, rule.ink, value == "1")
        else:
            raise UserError(
                f"--model {text}: bad option {opt!r} (size=N>=16, ink={'|'.join(INK_MODES)}, box=0|1, "
                "wise=0..1, layers=4+5+head, untrained_ff=0|1)"
            )
    return ModelSpec(name, path, rule, wise, layers, untrained)


def _is_fraction(value: str) -> bool:
    try:
        return 0.0 <= float(value) <= 1.0
    except ValueError:
        return False


def universe_rule() -> InputRule:
    """The input rule the shipped universe weights were trained with: configs/universe.yaml's."""
    from symclr_ft.config import load_config

    data = load_config(REPO / "configs" / "universe.yaml").data
    return InputRule(data.image_size, data.ink, data.letterbox)


def universe_network():
    """The shipped universe weights (``model.init=universe``: sha256 checked) as a network."""
    from symclr_ft.models.backbones import build_model
    from symclr_ft.models.shipped import read_shipped

    meta = read_shipped()[1]
    cfg = ModelConfig(arch=meta["arch"], out_dim=meta["out_dim"], input_norm=meta["input_norm"], init=UNIVERSE)
    return build_model(cfg).eval()


def imagenet_network():
    from symclr_ft.models.backbones import build_model

    cfg = ModelConfig(arch="tf_efficientnet_lite0", init=IMAGENET, input_norm="imagenet")
    return build_model(cfg).eval()


def load_network(spec: ModelSpec):
    """The spec's network; with ``wise < 1`` the WiSE-FT average with the ImageNet init."""
    from symclr_ft.models.backbones import load_model_file
    from symclr_ft.models.multilayer import MultiLayerFeatures
    from symclr_ft.models.wise import wise_network

    if spec.path in UNTRAINED_ON_FF:
        net = imagenet_network() if spec.path == IMAGENET else universe_network()
    else:
        net = load_model_file(spec.path).eval()
    if spec.wise < 1.0 and spec.path != IMAGENET:
        net = wise_network(imagenet_network(), net, spec.wise).eval()
    if spec.layers:
        try:
            net = MultiLayerFeatures(net, list(spec.layers)).eval()
        except (ValueError, AttributeError) as err:
            raise UserError(f"--model {spec.name}: {err}") from None
    return net


# --------------------------------------------------------------------------- domains


def domain_shards(name: str, source: Path, cache: Path) -> Path:
    """A shards folder for the domain: ``source`` itself when it is one, else make-shards of
    the COCO export into ``cache/name`` (kept while stats.json names the same source)."""
    if (source / "classes.json").is_file():
        return source
    if not source.exists():
        raise UserError(f"domain {name}: {source} not found")
    from symclr_ft.data.shards import make_shards

    out = cache / name
    stats = out / "stats.json"
    if stats.is_file() and read_json(stats).get("source") == str(source.resolve()):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        make_shards(source.resolve(), out)
    except UserError as err:
        raise UserError(f"domain {name}: {err}") from None
    return out


def read_split(name: str, shards: Path, split: str, cap: int = 0, seed: int = 0):
    """(PNG bytes, labels, keys) of one split; at most ``cap`` crops per class (0: all), seeded."""
    try:
        paths = shard_paths(shards, split)
    except UserError:
        raise UserError(f"domain {name}: no {split} split in {shards}") from None
    pngs, labels, keys = [], [], []
    for path in paths:
        for key, fields in iter_shard(path):
            pngs.append(fields["png"])
            labels.append(int(fields["cls"]))
            keys.append(key)
    labels_t = torch.tensor(labels, dtype=torch.int64)
    if cap and len(labels):
        g = torch.Generator().manual_seed(seed)
        keep = torch.cat([
            torch.nonzero(labels_t == c)[:, 0][torch.randperm(int((labels_t == c).sum()), generator=g)[:cap]]
            for c in labels_t.unique()
        ]).sort().values
        pngs, labels_t, keys = [pngs[i] for i in keep], labels_t[keep], [keys[i] for i in keep]
    return pngs, labels_t, keys


def check_shared_classes(name: str, support_labels: torch.Tensor, query_labels: torch.Tensor, split: str) -> None:
    if not set(support_labels.tolist()) & set(query_labels.tolist()):
        raise UserError(f"domain {name}: no class has crops in both train (support) and {split} (queries)")


def to_cropset(raw, rule: InputRule) -> CropSet:
    pngs, labels, keys = raw
    if not pngs:
        return CropSet(torch.zeros(0, 3, rule.size, rule.size, dtype=torch.uint8), labels, [])
    images = torch.stack([decode_crop(p, rule.size, rule.ink, rule.box) for p in pngs])
    return CropSet(images, labels, keys)


@dataclass
class Domain:
    """A support/query pair of one domain, decoded lazily per input rule."""

    name: str
    classes: list[str]
    support_raw: tuple
    query_raw: tuple
    _decoded: dict | None = None
    symbols: set[int] | None = None  # the classes that are not letters or digits (symbol_classes)

    def sets(self, rule: InputRule) -> tuple[CropSet, CropSet]:
        self._decoded = self._decoded or {}
        if rule not in self._decoded:
            self._decoded = {rule: (to_cropset(self.support_raw, rule), to_cropset(self.query_raw, rule))}
        return self._decoded[rule]


def load_domain(name: str, shards: Path, split: str, cap: int = 0, query_cap: int = 0) -> Domain:
    """Support (train) and queries (``split``) of a domain, each at most ``cap`` /
    ``query_cap`` crops per class (0: all), checked for shared classes."""
    classes = load_classes(shards)
    support = read_split(name, shards, "train", cap)
    queries = read_split(name, shards, split, query_cap, seed=1)
    check_shared_classes(name, support[1], queries[1], split)
    return Domain(name, classes, support, queries, symbols=symbol_classes(classes))


# --------------------------------------------------------------------------- evaluation


def summarise(metrics: dict) -> dict:
    """The table's numbers (percent) from evaluate_model's metrics."""
    out = {}
    for m in METRICS:
        block = metrics[m]
        out[m] = {k: 100 * block[f"{k}"] for k in ("micro_mean", "micro_ci95", "macro_mean")}
    return out


def evaluate_on(accelerator, net, domain: Domain, rule: InputRule, cfg: EvalConfig, split: str, keep_classes=None) -> dict:
    """evaluate_model on a domain (optionally only the classes ``keep_classes``)."""
    from symclr_ft.eval.fewshot import evaluate_model

    support, queries = domain.sets(rule)
    if keep_classes is not None:
        wanted = torch.tensor(sorted(keep_classes))
        support, queries = support.subset(torch.isin(support.labels, wanted)), queries.subset(torch.isin(queries.labels, wanted))
    metrics = evaluate_model(accelerator, net.to(accelerator.device), support, queries, cfg, domain.classes, None, split)
    return summarise(metrics)


def evaluate_subsets(accelerator, net, domain: Domain, rule: InputRule, cfg: EvalConfig, split: str,
                     subsets: dict[str, set[int] | None]) -> dict[str, dict]:
    """:func:`evaluate_on` for several class subsets of one domain (None: every class), the
    crops embedded once: a subset's numbers are those of its crops' features, the episodes
    drawn from its support labels as evaluate_model draws them."""
    from symclr_ft.eval.evaluate import embed_feature_sets, evaluate_features

    support, queries = domain.sets(rule)
    sets = embed_feature_sets(accelerator, net.to(accelerator.device), lambda: [support.images],
                              lambda: [queries.images], cfg, (len(support), len(queries)))
    out = {}
    for key, classes in subsets.items():
        s_keep, q_keep = _in_classes(support.labels, classes), _in_classes(queries.labels, classes)
        part = {sfx: (s[s_keep.to(s.device)], q[q_keep.to(q.device)]) for sfx, (s, q) in sets.items()}
        metrics = evaluate_features(
            accelerator, part, _labelled(support, s_keep), _labelled(queries, q_keep), cfg,
            domain.classes, None, split, rule.size)
        out[key] = summarise(metrics)
    return out


def _in_classes(labels: torch.Tensor, classes: set[int] | None) -> torch.Tensor:
    if classes is None:
        return torch.ones(len(labels), dtype=torch.bool)
    return torch.isin(labels, torch.tensor(sorted(classes), dtype=labels.dtype))


def _labelled(crops: CropSet, keep: torch.Tensor):
    from symclr_ft.eval.evaluate import Labelled

    return Labelled(crops.labels[keep].cpu(), [k for k, kept in zip(crops.keys, keep.tolist()) if kept])


def mean_of_folds(results: list[dict]) -> dict:
    """Mean over folds; intervals of independent folds combined: sqrt(sum ci^2) / K."""
    k = len(results)
    out = {}
    for m in METRICS:
        out[m] = {
            "micro_mean": sum(r[m]["micro_mean"] for r in results) / k,
            "micro_ci95": math.sqrt(sum(r[m]["micro_ci95"] ** 2 for r in results)) / k,
            "macro_mean": sum(r[m]["macro_mean"] for r in results) / k,
        }
    return out


def read_folds(folds_dir: Path, class_names: list[str]) -> list[tuple[Path, list[int]]]:
    """(fold model file, class indices) of each fold in ``folds_dir/summary.json``."""
    summary = read_json(folds_dir / "summary.json", "folds summary")
    index = {n: i for i, n in enumerate(class_names)}
    out = []
    for fold in summary.get("folds", []):
        model = folds_dir / f"fold{fold['fold']}" / "model.pt"
        unknown = [c for c in fold["classes"] if c not in index]
        if unknown:
            raise UserError(f"{folds_dir / 'summary.json'}: class {unknown[0]!r} is not a firefighting class")
        out.append((model, [index[c] for c in fold["classes"]]))
    if not out:
        raise UserError(f"{folds_dir / 'summary.json'}: no folds")
    return out


def firefighting_columns(accelerator, net, spec: ModelSpec, ff: Domain, folds: list | None,
                         cfg: EvalConfig, split: str) -> dict:
    """The trained-classes column and, with ``folds`` ((model file or None, classes) each), the
    held-out column: None as the file means the model itself (it never trained on firefighting),
    and then the domain is embedded once for every fold."""
    if folds is None or any(f is not None for f, _ in folds):
        out = {"firefighting": evaluate_on(accelerator, net, ff, spec.rule, cfg, split)}
        per_fold = [evaluate_on(accelerator, load_network(
            ModelSpec(spec.name, str(f), spec.rule, spec.wise, spec.layers)), ff, spec.rule, cfg, split, classes)
            for f, classes in folds or []]
    else:
        subsets = {"firefighting": None} | {f"fold{k}": set(classes) for k, (_, classes) in enumerate(folds)}
        columns = evaluate_subsets(accelerator, net, ff, spec.rule, cfg, split, subsets)
        out = {"firefighting": columns.pop("firefighting")}
        per_fold = list(columns.values())
    if folds is not None:
        out["heldout"] = {**mean_of_folds(per_fold), "folds": per_fold}
    return out


def run_benchmark(accelerator, models: list[ModelSpec], folds: dict[str, Path], ff: Domain | None,
                  domains: list[Domain], cfg: EvalConfig, split: str, fold_classes: Path | None = None) -> list[dict]:
    """Every column for every model: a list of rows ``{"model", "rule", COLUMN: numbers}``.
    The rows of models that never trained on firefighting use the fold classes of
    ``fold_classes`` (a summary.json's folder), else those of the first of ``folds``."""
    fold_sets = {name: read_folds(d, ff.classes) for name, d in folds.items()} if ff else {}
    shared_folds = next(iter(fold_sets.values()), None)
    if ff and fold_classes is not None:
        shared_folds = read_folds(fold_classes, ff.classes)
    columns = [c for d in domains for c in domain_columns(d)]
    rows = []
    for spec in models:
        net = load_network(spec)
        row = {"model": spec.name, "path": spec.path, "rule": vars(spec.rule), "wise": spec.wise,
               "layers": list(spec.layers) or [x for x in getattr(net, "feature_layers", "").split("+") if x],
               "untrained_ff": spec.untrained_ff}
        if ff is not None:
            fold_list = fold_sets.get(spec.name)
            if fold_list is None and spec.untrained_ff and shared_folds is not None:
                fold_list = [(None, classes) for _, classes in shared_folds]
            row.update(firefighting_columns(accelerator, net, spec, ff, fold_list, cfg, split))
        for domain in domains:
            subsets = {domain.name: None} | ({domain.name + SYMBOLS_SUFFIX: domain.symbols} if domain.symbols else {})
            row.update(evaluate_subsets(accelerator, net, domain, spec.rule, cfg, split, subsets))
        rows.append(row)
        # A row as soon as it is known: a long run can be read (or stopped) half-way.
        print(markdown_table([row], columns).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def _cell(block: dict | None) -> str:
    if block is None:
        return "–"
    one, five = block["one_shot"], block["five_shot"]
    return (f"{one['micro_mean']:.1f} ± {one['micro_ci95']:.1f} ({one['macro_mean']:.1f}) / "
            f"{five['micro_mean']:.1f} ± {five['micro_ci95']:.1f} ({five['macro_mean']:.1f})")


def markdown_table(rows: list[dict], domains: list[str]) -> str:
    """One row per model: 1-shot ± CI (macro) / 5-shot ± CI (macro) per column, and each extra
    domain's 1-shot gain over the untrained ImageNet row when it is there."""
    base = next((r for r in rows if r["path"] == IMAGENET), None)
    head = ["model", "input", "firefighting trained", "firefighting held-out (10-way)", *domains]
    if base is not None:
        head += [f"{d} 1-shot vs ImageNet" for d in domains]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rule = r["rule"]
        wise = f", WiSE {r['wise']:g}" if r.get("wise", 1.0) < 1.0 else ""
        wise += f", layers {'+'.join(r['layers'])}" if r.get("layers") else ""
        wise += ", never trained on firefighting" if r.get("untrained_ff") and r["path"] != IMAGENET else ""
        cells = [r["model"], f"{rule['size']} px, ink {rule['ink']}, {'letterbox' if rule['box'] else 'stretch'}{wise}",
                 _cell(r.get("firefighting")), _cell(r.get("heldout")), *(_cell(r.get(d)) for d in domains)]
        if base is not None:
            cells += [f"{r[d]['one_shot']['micro_mean'] - base[d]['one_shot']['micro_mean']:+.1f}" for d in domains]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="bench/transfer.py", description="Transfer benchmark (one table).")
    p.add_argument("--model", action="append", default=[],
                   help="NAME=PATH[,size=N,ink=MODE,box=0|1,wise=A,untrained_ff=1]; PATH universe: the shipped "
                        "universe weights")
    p.add_argument("--imagenet", action="store_true", help="add the untrained ImageNet EfficientNet-lite0")
    p.add_argument("--imagenet-size", type=int, default=96)
    p.add_argument("--folds", action="append", default=[], help="NAME=DIR of bench/novel_classes.py")
    p.add_argument("--fold-classes", default=None,
                   help="DIR of bench/novel_classes.py whose summary.json gives the held-out classes of the rows "
                        "that never trained on firefighting (default: those of the first --folds); no model read")
    p.add_argument("--ff-shards", default=None, help="firefighting shards (trained + held-out columns)")
    p.add_argument("--domain", action="append", default=[], help="NAME=COCO export or shards folder")
    p.add_argument("--cache", default="runs/transfer/domains", help="where domain shards are made")
    p.add_argument("--split", default="test", help="query split (valid: for choosing)")
    p.add_argument("--support-cap", type=int, default=0, help="max train crops per class, every domain (0: all)")
    p.add_argument("--query-cap", type=int, default=0,
                   help="max query crops per class, every domain (0: all; for cheaper choosing: micro then "
                        "weighs classes more evenly than the full split)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"])
    p.add_argument("--out", default="runs/transfer")
    return p


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for text in items:
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise UserError(f"{flag} {text}: expected NAME=PATH")
        out.append((name, value))
    return out


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default = InputRule(args.imagenet_size)
    models = ([ModelSpec("ImageNet (untrained)", IMAGENET, default)] if args.imagenet else [])
    models += [parse_model(m, default) for m in args.model]
    if not models:
        raise UserError("no models: give --model NAME=PATH and/or --imagenet")
    folds = {name: Path(d) for name, d in _pairs(args.folds, "--folds")}
    unknown = set(folds) - {m.name for m in models}
    if unknown:
        raise UserError(f"--folds {sorted(unknown)[0]}: no --model of that name")
    untrained = sorted(set(folds) & {m.name for m in models if m.untrained_ff})
    if untrained:
        raise UserError(f"--folds {untrained[0]}: that model never trained on firefighting (untrained_ff=1); "
                        "its held-out column evaluates the model itself, no fold models")
    # Every domain is read and checked before any model is evaluated: bad input fails fast.
    caps = (args.support_cap, args.query_cap)
    ff = load_domain("firefighting", Path(args.ff_shards), args.split, *caps) if args.ff_shards else None
    domains = [load_domain(n, domain_shards(n, Path(p), Path(args.cache)), args.split, *caps)
               for n, p in _pairs(args.domain, "--domain")]
    from symclr_ft.distributed import make_accelerator

    accelerator = make_accelerator(mixed_precision=args.mixed_precision)
    cfg = EvalConfig(split=args.split, episodes=args.episodes, seed=args.seed)
    fold_classes = Path(args.fold_classes) if args.fold_classes else None
    rows = run_benchmark(accelerator, models, folds, ff, domains, cfg, args.split, fold_classes)
    table = markdown_table(rows, [c for d in domains for c in domain_columns(d)])
    out = Path(args.out)
    write_json(out / "transfer.json", {"split": args.split, "episodes": args.episodes, "support_cap": args.support_cap,
                                       "query_cap": args.query_cap,
                                       "command": " ".join(sys.argv), "rows": rows})
    write_text(out / "transfer.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
