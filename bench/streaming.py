"""Training from a shard set larger than memory: peak resident memory and images/s at two sizes.

    python bench/streaming.py --work runs/stream_bench --sizes 100000 1000000 --steps 200

For each size it writes a synthetic shard set of that many crops (PNG crops copied from the
real or synthetic shards given by --source, cycled, under shuffled class labels; 10,000 crops a
tar), then trains ``--steps`` steps from it in streaming mode (``data.streaming=true``) in a
fresh process and reads that process's peak RSS. If memory stays flat while the shard set grows
tenfold, training does not hold the data.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from symclr_ft.data.shardset import iter_shard, shard_paths  # noqa: E402


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_large_shards(source: Path, out: Path, crops: int, classes: int, per_tar: int = 10_000) -> float:
    """``crops`` samples cycled from the source's train crops, labels spread over ``classes``."""
    pngs = [fields["png"] for path in shard_paths(source, "train") for _, fields in iter_shard(path)]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for shard in range((crops + per_tar - 1) // per_tar):
        with tarfile.open(out / f"train-{shard:06d}.tar", "w") as tar:
            for i in range(shard * per_tar, min(crops, (shard + 1) * per_tar)):
                key = f"train_{i:07d}"
                _add(tar, f"{key}.cls", str((i * 7919) % classes).encode())
                _add(tar, f"{key}.png", pngs[i % len(pngs)])
    names = [{"index": c, "coco_id": c + 1, "name": f"class-{c}"} for c in range(classes)]
    (out / "classes.json").write_text(json.dumps({"classes": names}))
    (out / "stats.json").write_text(json.dumps({"splits": {"train": {"crops": crops}}}))
    return time.perf_counter() - start


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.tar"))


def train_streaming(shards: Path, runs: Path, steps: int, batch: int, size: int, workers: int) -> dict:
    """Train in a fresh process; its peak RSS comes from the kernel's accounting of children."""
    cmd = [
        sys.executable, "-m", "symclr_ft.train", "--config", str(REPO / "configs/demo_cpu.yaml"),
        f"data.shards={shards}", "data.streaming=true", f"data.num_workers={workers}",
        f"data.batch_size={batch}", f"data.image_size={size}", "train.epochs=1",
        f"train.max_steps={steps}", "eval.split=none", "run.tracking=none",
        f"run.out_dir={runs}", f"run.name={shards.name}", "--overwrite",
    ]
    log = runs / f"{shards.name}.log"
    runs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed, see {log}:\n{log.read_text()[-3000:]}")
    row = json.loads((runs / shards.name / "history.jsonl").read_text().splitlines()[-1])
    return {
        # the largest RSS of the training process or of one of its loader workers
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "images_per_s": row["images_per_s"], "steps": row["step"], "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="shards", help="shards whose train crops are cycled")
    parser.add_argument("--work", default="runs/stream_bench")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.work)
    rows = []
    for crops in sorted(args.sizes):
        shards = work / f"crops_{crops}"
        if not (shards / "stats.json").exists():
            seconds = write_large_shards(Path(args.source), shards, crops, args.classes)
            print(f"wrote {crops:,} crops ({disk_bytes(shards) / 2**20:.0f} MiB) in {seconds:.0f}s", flush=True)
        result = train_streaming(shards, work / "runs", args.steps, args.batch, args.image_size, args.workers)
        rows.append({"crops": crops, "shard_mib": disk_bytes(shards) / 2**20, **result})
        print(rows[-1], flush=True)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores; command: python bench/streaming.py "
        + " ".join(sys.argv[1:]),
        "",
        "| crops in shards | shards on disk | steps | images/s | peak RSS of the training process |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['crops']:,} | {r['shard_mib']:,.0f} MiB | {r['steps']} | {r['images_per_s']:.0f} "
            f"| {r['peak_rss_mib']:,.0f} MiB |"
        )
    text = "\n".join(lines)
    print(text)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    with open(results / "streaming.md", "a") as f:
        f.write(text + "\n\n")


if __name__ == "__main__":
    main()
