"""What bf16 and batch-norm folding change in the embedding: speed, and how far the features
and their nearest neighbours move against the plain network in fp32.

One command (docs/RESULTS.md, "Prediction speed")::

    python bench/bf16_agree.py --shards shards/firefighting --model runs/lite0_main/model.pt

Every crop of ``--split`` is decoded once into memory at the model's size and embedded with
``symclr_ft.eval.embedding.embed_images`` (what evaluation, symclr-embed and symclr-predict call)
four ways: the plain network and the folded one (``models.folding.folded_for_inference``), each
in fp32 and in bf16. Against plain fp32: 1 - cos (max and mean), and over the leave-one-out
nearest neighbours of the crops, how many stay the same crop and how many keep its label.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchlib import machine
from symclr_ft.data.shardset import load_split
from symclr_ft.eval.embedding import embed_images
from symclr_ft.models.backbones import load_model_file, run_image_size
from symclr_ft.models.folding import folded_for_inference
from symclr_ft.use.embedder import LocalProcess


def neighbours(feats: torch.Tensor) -> torch.Tensor:
    """Index of each crop's nearest other crop (cosine)."""
    sim = feats @ feats.T
    return sim.fill_diagonal_(float("-inf")).argmax(dim=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="shards/firefighting")
    p.add_argument("--model", required=True, help="model file; its run's config.yaml gives the size")
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()
    size = run_image_size(args.model) or 96
    crops = load_split(args.shards, args.split, size)
    plain = load_model_file(args.model).eval().to(memory_format=torch.channels_last)
    folded, count = folded_for_inference(load_model_file(args.model).to(memory_format=torch.channels_last), size)
    local = LocalProcess("cpu")
    rows, reference = [], None
    for name, net in (("plain", plain), (f"folded ({count} batch norms)", folded)):
        for precision in ("no", "bf16"):
            start = time.perf_counter()
            feats = embed_images(local, net, [crops.images], args.batch_size, precision=precision)
            rate = len(feats) / (time.perf_counter() - start)
            if reference is None:
                reference, nearest = feats, neighbours(feats)
            gap = 1 - (feats * reference).sum(dim=1)
            mine = neighbours(feats)
            rows.append(f"| {name}, {'fp32' if precision == 'no' else precision} | {rate:.0f} | "
                        f"{float(gap.max()):.2e} / {float(gap.mean()):.2e} | "
                        f"{int((mine == nearest).sum()):,} of {len(feats):,} | "
                        f"{int((crops.labels[mine] == crops.labels[nearest]).sum()):,} |")
    print(machine())
    print(f"{len(crops.labels):,} {args.split} crops at {size} px, batch {args.batch_size}\n")
    print("| features | embedding, crops/s | 1 - cos, max / mean | leave-one-out nearest neighbour the same | its label the same |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
