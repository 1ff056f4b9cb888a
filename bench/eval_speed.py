"""Evaluation speed: embedding throughput in fp32 and bf16, and the time of the 100-episode
k-NN evaluation on the real split sizes.

One command::

    python bench/eval_speed.py --shards shards/firefighting

* Embedding: ``symclr_ft.eval.embedding.embed_images`` (the function evaluation and training use) of
  ``--images`` train crops at ``--size`` px, batch ``--batch-size`` (EvalConfig's 256), a
  ResNet-18 in channels_last prepared by an ``Accelerator`` with ``mixed_precision`` "no" and
  "bf16", alternated. Also the agreement of the two (mean cosine similarity of the features).
* k-NN: ``symclr_ft.eval.fewshot.evaluate_model`` with 100 episodes on every train crop as support
  and every crop of the valid and test splits as queries (2,606 x 755 and 2,606 x 424 on the
  firefighting data), bf16; its own ``knn_seconds`` (episodes, k-NN votes, metrics; the
  embedding excluded) and ``embed_seconds`` are reported. The k-NN time does not depend on
  the image size, so these run at ``--knn-size`` px to keep the embedding short.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchlib import alternate, fmt, fresh_accelerator, machine, median, report, runs, table, timed
from symclr_ft.config import EvalConfig, ModelConfig
from symclr_ft.data.shardset import load_classes, load_split
from symclr_ft.models.backbones import build_model

from symclr_ft.eval.embedding import embed_images
from symclr_ft.eval.fewshot import evaluate_model


def embed(accelerator, net, images, batch_size):
    """Raw backbone features of in-memory crops, batch by batch (what evaluation does)."""
    return embed_images(accelerator, net, [images], batch_size)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="shards", help="folder written by make-shards")
    p.add_argument("--size", type=int, default=224, help="image size of the embedding benchmark")
    p.add_argument("--images", type=int, default=512, help="train crops embedded per run (0: all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=1, help="embedding passes timed per repetition")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--knn-size", type=int, default=64, help="image size of the k-NN evaluation")
    p.add_argument("--knn-splits", nargs="*", default=["valid", "test"],
                   help="query splits of the k-NN evaluation (none: skip it)")
    p.add_argument("--predict-model", default=None,
                   help="instead: symclr-predict speed with this model file (its run's size)")
    p.add_argument("--query-split", default="train", help="queries of the predict benchmark")
    return p.parse_args(argv)


def prepared_net(mixed_precision: str, state: dict | None = None):
    accelerator = fresh_accelerator(mixed_precision)
    net = build_model(ModelConfig())
    if state is not None:
        net.load_state_dict(state)
    net = accelerator.prepare(net.to(memory_format=torch.channels_last))
    return accelerator, net


def forward_rate(net, size: int, batch: int, repeats: int, precision: str = "no") -> list[float]:
    """Crops/s of the model's forward alone (uint8 -> float -> features, no decoding), in
    batches of ``batch`` rows, under autocast when ``precision`` is bf16. ``net`` may be an
    ``export.OnnxFeatures`` (ONNX Runtime)."""
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    net = net.eval().to(memory_format=torch.channels_last)
    rates = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    steps = 8
    with torch.no_grad(), autocast:
        net.features(x.float().div(255).contiguous(memory_format=torch.channels_last))
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                net.features(x.float().div_(255).contiguous(memory_format=torch.channels_last))
            rates.append(batch * steps / (time.perf_counter() - start))
    return rates


def predict_speed(args) -> None:
    """symclr-predict end to end (decode, embed, classify, write the CSV) with the model file
    (PyTorch, --mixed-precision auto) and with its ONNX export (ONNX Runtime, fp32), each
    against its forward alone; same model, size and threads, runs alternated."""
    import tempfile

    from symclr_ft.distributed import native_precision
    from symclr_ft.eval.embedding import FORWARD_ROWS
    from symclr_ft.models.export import OnnxFeatures, export_onnx
    from symclr_ft.models.folding import folded_for_inference
    from symclr_ft.models.backbones import file_sha256, load_model_file, model_file_info
    from symclr_ft.use.predict import embed_parser, predict_parser, run_embed, run_predict

    info = model_file_info(args.predict_model)
    size = info["image_size"]
    precision = native_precision("auto")  # what symclr-predict uses by default
    queries = len(load_split(args.shards, args.query_split, 16))  # count only
    net = load_model_file(args.predict_model)
    with tempfile.TemporaryDirectory(prefix="symclr_predict_") as tmp:
        onnx_file = export_onnx(net, size, f"{tmp}/model.onnx", {
            "image_size": size, "input_norm": net.input_norm, "sha256": file_sha256(args.predict_model)})
        run_embed(embed_parser().parse_args(["--model", args.predict_model, "--input", args.shards,
                                             "--split", "valid", "--out", f"{tmp}/support"]))

        def timed(model: str):
            argv = ["--model", model, "--support", f"{tmp}/support", "--query", args.shards,
                    "--query-split", args.query_split, "--out", f"{tmp}/preds.csv",
                    "--batch-size", str(args.batch_size)]

            def run(rep: int) -> float:
                start = time.perf_counter()
                run_predict(predict_parser().parse_args(argv))
                return queries / (time.perf_counter() - start)
            return run

        rates = alternate({"pt": timed(args.predict_model), "onnx": timed(str(onnx_file))},
                          args.repeats)
        folded, _ = folded_for_inference(net, size)  # what symclr-predict runs
        forward = forward_rate(folded, size, FORWARD_ROWS, args.repeats, precision)
        forward_onnx = forward_rate(OnnxFeatures(onnx_file), size, FORWARD_ROWS, args.repeats)
    rows = [
        [f"symclr-predict --model model.pt (PyTorch, {precision}; decode + embed + classify + CSV)",
         fmt(median(rates["pt"])), runs(rates["pt"])],
        [f"  its forward only ({FORWARD_ROWS} rows of uint8 in memory, batch norms folded)",
         fmt(median(forward)),
         runs(forward)],
        ["symclr-predict --model model.onnx (ONNX Runtime, fp32)", fmt(median(rates["onnx"])),
         runs(rates["onnx"])],
        [f"  its forward only ({FORWARD_ROWS} rows)", fmt(median(forward_onnx)), runs(forward_onnx)],
    ]
    best = max(median(rates["pt"]), median(rates["onnx"]))
    body = "\n".join([
        f"Machine: {machine('cpu')}; torch threads: {torch.get_num_threads()}.",
        f"{args.predict_model} and its export: {info['arch']} at {size} px, batch "
        f"{args.batch_size}; queries: {queries} crops of {args.shards} ({args.query_split}), "
        f"support: the valid split as an index; {args.repeats} repetitions, alternated.",
        "", table(["what", "crops/s (median)", "runs"], rows), "",
        f"Target: >= 400 query crops/s end to end: model.pt {fmt(median(rates['pt']))}, "
        f"model.onnx {fmt(median(rates['onnx']))}: {'met' if best >= 400 else '**missed**'} "
        "(best of the two).",
    ])
    report("eval_speed", "Prediction speed: symclr-predict vs the forward alone", body)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    if args.predict_model:
        predict_speed(args)
        return
    crops = load_split(args.shards, "train", args.size)
    images = crops.images if args.images <= 0 else crops.images[: args.images]
    acc32, net32 = prepared_net("no")
    acc16, net16 = prepared_net("bf16", net32.state_dict())
    device = acc16.device
    images = images.to(device)
    n = len(images)

    def embed_rate(accelerator, net):
        def run(rep: int) -> float:
            embed(accelerator, net, images[: args.batch_size], args.batch_size)  # warm-up
            seconds = timed(lambda: [embed(accelerator, net, images, args.batch_size)
                                     for _ in range(args.steps)], device)
            return args.steps * n / seconds
        return run

    print(f"embedding {n} crops at {args.size} px, batch {args.batch_size}, {args.repeats} repetitions",
          flush=True)
    rates = alternate({"fp32": embed_rate(acc32, net32), "bf16": embed_rate(acc16, net16)}, args.repeats)
    f32 = embed(acc32, net32, images[:256], args.batch_size)
    f16 = embed(acc16, net16, images[:256], args.batch_size)
    gap = 1 - F.cosine_similarity(f32, f16, dim=1)
    rel = (f32 - f16).norm(dim=1) / f32.norm(dim=1)
    r32, r16 = median(rates["fp32"]), median(rates["bf16"])
    rows = [
        [f"{args.size}", "fp32", fmt(r32), runs(rates["fp32"]), "1.00x"],
        [f"{args.size}", "bf16", fmt(r16), runs(rates["bf16"]), f"**{r16 / r32:.2f}x**"],
    ]
    lines = [
        f"Machine: {machine(device)}.",
        "Embedding: `symclr_ft.eval.embedding.embed_images`, "
        f"{n} train crops, batch {args.batch_size}, ResNet-18 channels_last, {args.steps} pass(es) "
        f"per repetition, {args.repeats} alternations.",
        "",
        table(["px", "precision", "crops/s (median)", "runs", "vs fp32"], rows),
        "",
        f"- bf16 vs fp32 features (same random-init weights, {len(gap)} crops): 1 - cosine "
        f"similarity at most {gap.max():.1e}; relative L2 difference at most {100 * rel.max():.2f}%.",
        f"- At the median bf16 rate, embedding every crop of train + valid + test "
        f"(2,606 + 755 + 424 = 3,785 on the firefighting data) at {args.size} px takes about "
        f"{3785 / r16:.0f} s ({3785 / r32:.0f} s in fp32).",
    ]

    if args.knn_splits:
        names = load_classes(args.shards)
        support = load_split(args.shards, "train", args.knn_size)
        cfg = EvalConfig(episodes=args.episodes)
        knn_rows = []
        for split in args.knn_splits:
            queries = load_split(args.shards, split, args.knn_size)
            results = []

            def run(rep: int) -> float:
                metrics = evaluate_model(acc16, net16, support, queries, cfg, names, None, split)
                results.append(metrics)
                return metrics["knn_seconds"]

            print(f"k-NN {split}: {len(support)} support x {len(queries)} queries, "
                  f"{args.episodes} episodes", flush=True)
            secs = alternate({f"knn {split}": run}, args.repeats)[f"knn {split}"]
            emb = [m["embed_seconds"] for m in results]
            total = [m["seconds"] for m in results]
            knn_rows.append([
                split, f"{len(support)} x {results[0]['queries']}", f"{args.episodes}",
                f"{median(secs):.2f}", runs(secs), f"{median(emb):.2f}", f"{median(total):.2f}",
            ])
        lines += [
            "",
            f"k-NN evaluation (`evaluate_model`, bf16, embeddings at {args.knn_size} px, "
            f"{args.repeats} repetitions):",
            "",
            table(["queries", "support x queries", "episodes", "k-NN s (median)", "runs",
                   f"embed s at {args.knn_size} px", "total s"], knn_rows),
        ]
    report("eval_speed", "Evaluation speed: embedding fp32 vs bf16, k-NN", "\n".join(lines))


if __name__ == "__main__":
    main()
