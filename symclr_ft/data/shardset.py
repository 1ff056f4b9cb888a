"""Reading shards (decoded once into memory, or streamed), and the batch samplers.

Two ways to read a split:

* :func:`load_split` decodes every crop once, resizes it to ``S x S`` and keeps the split as
  one uint8 tensor. The real train split is 2,606 small crops (about 72 MB at 96 px, 390 MB at
  224 px): decoding PNGs every epoch would cost more than the training step.
* :func:`stream_batches` reads shards that do not fit in memory with WebDataset, split by
  process (node) and by DataLoader worker.

The samplers produce *global* batches (all processes together) as index arrays;
:func:`local_part` cuts one global batch into the part of one process. Every process computes
the same global batches from the seed and the epoch, so no communication is needed and the
data and its order do not depend on the number of processes.
"""

from __future__ import annotations

import json
import math
import tarfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from symclr_ft.data.coco import is_int, usable_path
from symclr_ft.errors import UserError
from symclr_ft.io import read_json
from symclr_ft.data.preprocess import decode_crop


@dataclass
class CropSet:
    """A split decoded once and kept in memory as uint8 tensors."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    keys: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: torch.Tensor) -> "CropSet":
        index = torch.nonzero(mask, as_tuple=True)[0]
        return CropSet(self.images[index], self.labels[index], [self.keys[i] for i in index])


# ---------------------------------------------------------------------------------------------
# Shard files


# The way out for a user who removed shards on purpose (every check against stats.json off).
SUBSET_HINT = (
    "to use the shards present on purpose, allow a subset (data.allow_subset=true, "
    "symclr-evaluate --allow-subset)"
)


def shard_name(split: str, number: int) -> str:
    """The file name of a split's shard number ``number`` (written by make-shards)."""
    return f"{split}-{number:06d}.tar"


def _shard_dir(shard_dir: str | Path) -> Path:
    shard_dir = usable_path(shard_dir)
    if not shard_dir.is_dir():
        raise UserError(f"{shard_dir}: shard folder not found (run make-shards first)")
    return shard_dir


def shard_paths(shard_dir: str | Path, split: str, allow_subset: bool = False) -> list[Path]:
    """The tar files of one split, in order: ``<split>-000000.tar`` upwards without a gap
    (unless ``allow_subset``); a one-line error when there are none or one is missing."""
    shard_dir = _shard_dir(shard_dir)
    paths = sorted(shard_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))
    if not paths:
        raise UserError(f"{shard_dir}: no shards for split '{split}' ({split}-000000.tar ...)")
    for number, path in enumerate(paths):
        if path.name != shard_name(split, number) and not allow_subset:
            raise UserError(
                f"{shard_dir / shard_name(split, number)}: shard missing from the set "
                f"({path.name} exists); {SUBSET_HINT}"
            )
    return paths


def _read_json(path: Path, what: str, missing_hint: str = "run make-shards first") -> dict:
    data = read_json(path, what, missing_hint)
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} must be a JSON object")
    return data


def load_classes(shard_dir: str | Path) -> list[str]:
    """Class names by contiguous index, from ``classes.json``."""
    path = _shard_dir(shard_dir) / "classes.json"
    data = _read_json(path, "class map")
    try:
        if not isinstance(data.get("classes"), list):
            raise ValueError("'classes' must be a list")
        classes = sorted(data["classes"], key=lambda c: c["index"])
        if [c["index"] for c in classes] != list(range(len(classes))):
            raise ValueError("indices are not 0..C-1")
        if not all(isinstance(c["name"], str) for c in classes):
            raise ValueError("every class needs a string 'name'")
        names = [c["name"] for c in classes]
    except KeyError as err:
        raise UserError(f"{path}: malformed class map (a class has no {err} key)") from None
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: malformed class map ({err})") from None
    if not names:
        raise UserError(f"{path}: malformed class map (no classes)")
    return names


def load_stats(shard_dir: str | Path) -> dict:
    return _read_json(Path(shard_dir) / "stats.json", "shard statistics")


def is_components_set(shard_dir: str | Path) -> bool:
    """Whether a shard set was cut by ``symclr-components`` (its stats.json has a
    ``components`` record): every crop its own pseudo-class, so there is nothing to evaluate
    few-shot recognition on."""
    try:
        return "components" in load_stats(shard_dir)
    except UserError:  # no stats.json (a subset on purpose): then it is not one we wrote
        return False


def _is_count(value: object) -> bool:
    return is_int(value) and value >= 0


def expected_size(shard_dir: str | Path, split: str) -> tuple[int, int | None]:
    """``(crops, shards)`` of ``split`` as stats.json records them; ``shards`` is None when
    the file does not say (sets written by bench/ scripts record only the crops)."""
    path = Path(shard_dir) / "stats.json"
    stats = _read_json(path, "shard statistics", f"run make-shards first, or {SUBSET_HINT}")
    splits = stats.get("splits")
    entry = splits.get(split) if isinstance(splits, dict) else None
    if not (isinstance(entry, dict) and _is_count(entry.get("crops"))):
        raise UserError(f"{path}: no crop count for split '{split}'; {SUBSET_HINT}")
    shards = entry.get("shards")
    return entry["crops"], shards if _is_count(shards) else None


class SplitCheck:
    """Verifies one split while its samples are read once: keys unique across its shards,
    and (unless ``allow_subset``) the number of shards and of samples equal to stats.json.
    A missing, duplicated or silently shortened shard is then an error naming that shard,
    never a smaller or repeated training set."""

    def __init__(self, shard_dir: Path, split: str, paths: list[Path], allow_subset: bool):
        self.split, self.paths = split, paths
        self.expected = None if allow_subset else expected_size(shard_dir, split)
        self.first_seen: dict[str, Path] = {}
        self.per_shard = {path: 0 for path in paths}
        shards = self.expected[1] if self.expected else None
        if shards is not None and shards != len(paths):
            odd = Path(shard_dir) / shard_name(split, min(shards, len(paths)))
            problem = "missing from the set" if shards > len(paths) else "not part of the set"
            raise UserError(
                f"{odd}: shard {problem} (stats.json lists {shards} shards for split "
                f"'{split}', found {len(paths)}); {SUBSET_HINT}"
            )

    def add(self, path: Path, key: str) -> None:
        if key in self.first_seen:
            first = self.first_seen[key]
            where = "earlier in this shard" if first == path else f"in {first.name}"
            raise UserError(f"{path}: sample {key} appears twice (also {where}; a copied shard?)")
        self.first_seen[key] = path
        self.per_shard[path] += 1

    def finish(self) -> None:
        if self.expected is None:
            return
        crops, total = self.expected[0], sum(self.per_shard.values())
        if total != crops:
            raise UserError(
                f"{self._suspect()}: split '{self.split}' has {total} crops but stats.json says "
                f"{crops} (a shard damaged or replaced?); {SUBSET_HINT}"
            )

    def _suspect(self) -> Path:
        """The shard whose count differs from the others' (make-shards fills every shard but
        the last one to the same size), else the last shard."""
        counts = [self.per_shard[path] for path in self.paths[:-1]]
        usual = max(set(counts), key=counts.count) if counts else None
        odd = [path for path, n in zip(self.paths, counts) if n != usual]
        return odd[0] if odd else self.paths[-1]


def _check_end_of_archive(tar: tarfile.TarFile, path: Path) -> None:
    """tarfile ends its iteration quietly at a damaged, missing or zeroed header: only the
    end-of-archive marker (a zero block) followed by nothing but zeros says it read it all."""
    tar.fileobj.seek(tar.offset)
    end = tar.fileobj.read(tarfile.BLOCKSIZE)
    if end != tarfile.NUL * tarfile.BLOCKSIZE:
        problem = "ends early" if len(end) < tarfile.BLOCKSIZE else "has a damaged header"
    elif tar.fileobj.read().strip(tarfile.NUL):
        problem = "has a zeroed block followed by more data"
    else:
        return
    raise UserError(
        f"{path}: truncated or corrupt shard ({problem} at byte {tar.offset}; "
        "samples after it would be lost)"
    )


def iter_shard(path: Path, read: bool = True) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of one tar as (key, {extension: bytes}), in file order; with ``read=False``
    only the member names are read (the values are empty), which is fast.

    WebDataset's own reader drops the file name from its errors; reading the tar here lets a
    truncated or corrupt shard be reported as exactly that file.
    """
    try:
        with tarfile.open(path, "r:") as tar:  # plain tar, as make-shards writes
            current, fields = None, {}
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if key != current and current is not None:
                    yield current, fields
                    fields = {}
                current = key
                handle = tar.extractfile(member) if read else None
                fields[ext] = handle.read() if handle else b""
            _check_end_of_archive(tar, path)
            if current is not None:
                yield current, fields
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"{path}: truncated or corrupt shard ({err})") from None


def verify_split(shard_dir: str | Path, split: str, allow_subset: bool = False) -> list[Path]:
    """Check a split against stats.json without decoding it (tar headers only): shard names
    without a gap, the shard and sample counts, unique keys, every tar read to its end.
    Returns the split's shard paths."""
    paths = shard_paths(shard_dir, split, allow_subset)
    check = SplitCheck(Path(shard_dir), split, paths, allow_subset)
    for path in paths:
        for key, _ in iter_shard(path, read=False):
            check.add(path, key)
    check.finish()
    return paths


def decode_sample(
    path: str | Path, key: str, fields: dict[str, bytes], size: int, num_classes: int,
    ink: str = "none", letterbox: bool = False,
) -> tuple[torch.Tensor, int]:
    """One sample's (crop, class index); every member parsed (``json`` too, when present).
    The crop becomes a ``size`` square by the input rule (``ink``, ``letterbox``: see
    symclr_ft.data.preprocess; by default stretched, as the seed's ``Resize((s, s))`` does).
    Anything unreadable is a one-line error naming the shard and the sample."""
    try:
        label = int(fields["cls"])
        image = decode_crop(fields["png"], size, ink, letterbox)
        if "json" in fields:
            json.loads(fields["json"])
    except KeyError as err:
        raise UserError(f"{path}: sample {key} has no {err.args[0]} member") from None
    except (
        ValueError,  # cls not a number, json not JSON (JSONDecodeError, UnicodeDecodeError)
        OSError,  # PIL: not an image, truncated, broken data stream
        SyntaxError,  # PIL: broken PNG chunk
        EOFError,
        RecursionError,  # json nested too deeply
        Image.DecompressionBombError,
    ) as err:
        raise UserError(f"{path}: sample {key} is corrupt ({err})") from None
    if not 0 <= label < num_classes:
        raise UserError(f"{path}: sample {key} has class {label}, but classes.json has {num_classes}")
    return image, label


def load_split(
    shard_dir: str | Path, split: str, image_size: int, allow_subset: bool = False,
    ink: str = "none", letterbox: bool = False,
) -> CropSet:
    """Decode every crop of ``split`` once, resized to ``image_size`` squared, as uint8.
    The split is verified against stats.json as it is read (:class:`SplitCheck`);
    ``allow_subset`` accepts a set from which shards were removed on purpose."""
    images, labels, keys = [], [], []
    num_classes = len(load_classes(shard_dir))
    for path, key, fields in iter_split(shard_dir, split, allow_subset):
        image, label = decode_sample(path, key, fields, image_size, num_classes, ink, letterbox)
        images.append(image)
        labels.append(label)
        keys.append(key)
    return CropSet(torch.stack(images), torch.tensor(labels, dtype=torch.int64), keys)


def iter_split(
    shard_dir: str | Path, split: str, allow_subset: bool = False
) -> Iterator[tuple[Path, str, dict[str, bytes]]]:
    """``(shard path, key, members)`` of every sample of ``split``, in shard order, verified
    against stats.json as it is read (:class:`SplitCheck`): the one way to read a split, for
    loading it whole and for streaming it through a model alike."""
    paths = shard_paths(shard_dir, split, allow_subset)
    check = SplitCheck(Path(shard_dir), split, paths, allow_subset)
    for path in paths:
        for key, fields in iter_shard(path):
            check.add(path, key)
            yield path, key, fields
    if not any(check.per_shard.values()):
        raise UserError(f"{shard_dir}: split '{split}' has no crops")
    check.finish()


# ---------------------------------------------------------------------------------------------
# Samplers: each returns the global batches of one epoch as arrays of indices.


def class_unique_batches(
    labels: np.ndarray, batch_size: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """Global batches in which no class appears twice, using every index exactly once.

    Rule: each batch takes one crop from each of the ``batch_size`` classes with the most
    crops left (ties broken at random). This greedy choice is optimal: it gives exactly
    ``max(largest class, ceil(N / batch_size))`` batches,
    the least any class-unique schedule can. Batches are full while at least ``batch_size``
    classes have crops left and shrink after that; on imbalanced data (one class with 940 of
    2,606 crops) most batches are small, which is why the ``random`` sampler with same-class
    masking exists too. The batch order is shuffled so that small batches are spread out.
    Deterministic for (seed, epoch).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, epoch])
    classes = np.unique(labels)
    queues = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    remaining = np.array([len(q) for q in queues])
    taken = np.zeros(len(classes), dtype=np.int64)
    batches = []
    while remaining.sum() > 0:
        order = np.lexsort((rng.random(len(classes)), -remaining))
        chosen = [c for c in order[:batch_size] if remaining[c] > 0]
        batch = np.array([queues[c][taken[c]] for c in chosen], dtype=np.int64)
        taken[chosen] += 1
        remaining[chosen] -= 1
        batches.append(rng.permutation(batch))
    return [batches[i] for i in rng.permutation(len(batches))]


def random_batches(labels: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled full batches, every index once per epoch, the last one possibly smaller."""
    order = np.random.default_rng([seed, epoch]).permutation(len(labels))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def m_per_class_batches(
    labels: np.ndarray, batch_size: int, m: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """Batches of ``batch_size // m`` distinct classes with ``m`` crops each (for SupCon).

    Class-balanced: each batch draws its classes uniformly, and each class serves its crops
    from a reshuffled cycle, so rare classes are seen as often as common ones and the epoch has
    ``ceil(N / batch_size)`` batches. A class with fewer than ``m`` crops gives all it has.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, epoch])
    classes = np.unique(labels)
    per_batch = max(1, min(len(classes), batch_size // m))
    pools = {c: np.flatnonzero(labels == c) for c in classes}
    cycles = {c: deque(rng.permutation(p)) for c, p in pools.items()}
    batches = []
    for _ in range(math.ceil(len(labels) / batch_size)):
        chosen = rng.choice(classes, size=per_batch, replace=False)
        batch = []
        for c in chosen:
            for _ in range(min(m, len(pools[c]))):
                if not cycles[c]:
                    cycles[c].extend(rng.permutation(pools[c]))
                batch.append(cycles[c].popleft())
        batches.append(np.array(batch, dtype=np.int64))
    return batches


def epoch_batches(
    sampler: str, labels: np.ndarray, batch_size: int, seed: int, epoch: int, m: int = 2
) -> list[np.ndarray]:
    """The global batches of one epoch for the configured sampler."""
    if sampler == "class_unique":
        return class_unique_batches(labels, batch_size, seed, epoch)
    if sampler == "random":
        return random_batches(labels, batch_size, seed, epoch)
    if sampler == "m_per_class":
        return m_per_class_batches(labels, batch_size, m, seed, epoch)
    raise ValueError(f"unknown sampler {sampler!r}")


def check_batch_size(sampler: str, labels: np.ndarray, batch_size: int, same_class_ok: bool):
    """A class-unique global batch cannot hold more classes than the data has: refuse before
    training rather than silently training on smaller batches than configured."""
    num_classes = len(np.unique(labels))
    if sampler == "class_unique" and batch_size > num_classes:
        raise UserError(
            f"data.batch_size={batch_size} exceeds the {num_classes} classes in the training "
            "split: a class-unique batch cannot be that large; lower data.batch_size, or use "
            "data.sampler=random with loss.mask_same_class=true"
        )
    if sampler in ("random", "m_per_class") and not same_class_ok:
        raise UserError(
            f"data.sampler={sampler} puts crops of one class in the same batch: set "
            "loss.mask_same_class=true (or loss.name=supcon) so they are not used as negatives"
        )


def local_part(batch: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of a global batch that process ``rank`` of ``world`` trains on.

    Positions ``rank, rank + world, ...``: disjoint across processes, together the whole batch.
    Every process gets the same number of rows, ``ceil(len(batch) / world)``, so that gathers
    need no size exchange; the rows beyond its share repeat a crop of the batch and are marked
    invalid (``valid`` is False), and the loss leaves them out.
    """
    rows = math.ceil(len(batch) / world)
    mine = batch[rank::world]
    valid = np.ones(rows, dtype=bool)
    if len(mine) < rows:
        filler = np.full(rows - len(mine), batch[0], dtype=batch.dtype)
        valid[len(mine) :] = False
        mine = np.concatenate([mine, filler])
    return mine, valid


# ---------------------------------------------------------------------------------------------
# Streaming: shard sets larger than memory.


def greedy_unique_batches(samples, batch_size: int, max_pending: int):
    """Group a stream of (image, label) into batches of distinct classes.

    Holds at most ``max_pending`` samples, one queue per class; emits a batch from the classes
    with the most pending samples as soon as ``batch_size`` classes are pending, or (when the
    buffer is full, as with one dominant class) a smaller batch from whatever is pending.
    Guarantee: classes are unique within each process's batch. Across processes they are not
    coordinated, so streaming training masks same-class pairs in the loss.
    """
    queues: dict[int, deque] = {}
    pending = 0

    def emit():
        nonlocal pending
        order = sorted(queues, key=lambda c: -len(queues[c]))[:batch_size]
        batch = [queues[c].popleft() for c in order]
        for c in order:
            if not queues[c]:
                del queues[c]
        pending -= len(batch)
        images = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
        return images, labels

    for image, label in samples:
        queues.setdefault(int(label), deque()).append((image, int(label)))
        pending += 1
        if len(queues) >= batch_size or pending >= max_pending:
            yield emit()
    while queues:
        yield emit()


def stream_batches(
    shard_dir: str | Path,
    split: str,
    image_size: int,
    local_batch: int,
    steps: int,
    rank: int,
    world: int,
    seed: int,
    num_workers: int = 2,
    shuffle_buffer: int = 2000,
    allow_subset: bool = False,
) -> "OneLineErrors":
    """A DataLoader of ``steps`` class-unique local batches (uint8 images, labels) per epoch.

    Shards are split by process and then by worker (each reads different files), shuffled
    within a bounded buffer, and repeated, so every process yields exactly ``steps`` batches
    however the shards divide; memory stays bounded by the buffers, not the shard set.

    Before each call (each epoch) the split is verified against stats.json from its tar
    headers (:func:`verify_split`: no missing, extra, copied or shortened shard), and every
    sample is parsed as it is streamed: damaged data stops training with one line naming the
    shard, it is never skipped.
    """
    import webdataset as wds

    paths = [str(p) for p in verify_split(shard_dir, split, allow_subset)]
    readers = world * max(1, num_workers)
    if len(paths) < readers:
        raise UserError(
            f"{shard_dir}: split '{split}' has {len(paths)} shards, fewer than the "
            f"{readers} readers ({world} processes x {max(1, num_workers)} workers); "
            "write smaller shards (make-shards --shard-size) or use fewer workers"
        )
    # By hand rather than wds.split_by_node, which takes the rank from the environment or
    # torch.distributed instead of the process index the caller passes (from Accelerate).
    mine = paths[rank::world]
    num_classes = len(load_classes(shard_dir))

    def decode(sample):
        return decode_sample(
            sample["__url__"], sample["__key__"], sample, image_size, num_classes
        )

    pipeline = wds.DataPipeline(
        wds.SimpleShardList(mine, seed=seed),
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100)),
        wds.map(decode),
        lambda src: greedy_unique_batches(src, local_batch, max_pending=4 * local_batch),
    ).repeat(nepochs=10**9)
    per_worker = math.ceil(steps / max(1, num_workers))
    pipeline = pipeline.with_epoch(per_worker)
    return OneLineErrors(
        torch.utils.data.DataLoader(
            pipeline, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0
        )
    )


class OneLineErrors:
    """Iterates a DataLoader; a :class:`UserError` raised in a worker process arrives wrapped
    in torch's multi-line report ("Caught UserError in DataLoader worker ... Traceback ..."):
    it is raised again as the original one line."""

    def __init__(self, loader: torch.utils.data.DataLoader):
        self.loader = loader

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except UserError as err:
                last = str(err).strip().splitlines()[-1]
                raise UserError(last.split("UserError: ", 1)[-1]) from None
            yield batch
