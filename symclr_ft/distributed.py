"""What Accelerate has no call for: gathering embeddings *with gradient*, and batch-norm
statistics over the global batch on CPU processes.

InfoNCE needs every process's embeddings as negatives and the gradient to flow back to the
process that computed them; ``accelerator.gather`` detaches. Batch norm must see the global
batch for the numbers not to depend on the process count; torch's ``SyncBatchNorm`` runs on
GPUs only, so CPU processes (gloo) use :class:`GlobalBatchNorm2d`. And the memory a batch of
crops will need, checked before a command starts (:func:`check_forward_memory`).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from accelerate import Accelerator
from torch import nn


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every process) from all processes, rank order, keeping
    the gradient path to each process's own rows. Identity with one process.

    Every process then computes the same loss on the global batch; the backward of the
    all-gather sums each row's gradient from all processes, and DDP's averaging of parameter
    gradients divides that factor out again, so the update equals the single-process one.
    """
    if _world() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)


def gather_plain(x: torch.Tensor) -> torch.Tensor:
    """All-gather without gradient (labels, masks)."""
    if _world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of all processes (any backend).

    Sums and squared sums are all-reduced with gradient; with one process, or in eval mode, it
    is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _world() == 1:
            return super().forward(x)
        channels = x.shape[1]
        xf = x.float()
        count = torch.tensor([xf.numel() / channels], device=x.device)
        stats = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)), count])
        stats = dist_fn.all_reduce(stats)
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels : 2 * channels] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
            self.num_batches_tracked.add_(1)
        y = (xf - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make batch norm global when several processes train: torch's SyncBatchNorm on GPUs,
    :class:`GlobalBatchNorm2d` elsewhere. No-op with one process."""
    if _world() == 1:
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm2d):
            new = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats,
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_batchnorm(child, device)
    return module


def native_precision(choice: str, device_type: str | None = None) -> str:
    """Accelerate's ``mixed_precision`` for training or embedding: ``choice`` itself, or for
    ``auto`` bf16 where the hardware computes it natively (a CUDA GPU with bf16, a CPU with
    AVX512-BF16 or AMX) and ``no`` (fp32) elsewhere, where emulated bf16 would be slower than
    fp32. ``device_type`` ("cuda", "cpu", ...) is the device that will run; None: the one
    Accelerate would choose (a CUDA GPU when there is one).

    Why: on such a CPU bf16 runs the forward about twice as fast; on an AVX2-only CPU, emulated
    bf16 makes a training step several times slower than fp32 (docs/RESULTS.md). A training
    run evaluates in its own precision, so the accuracy it reports is that of its features;
    bf16 against fp32 moves them a little, and a nearest neighbour's label almost never."""
    if choice != "auto":
        return choice
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if device_type != "cpu":  # mps and others: fp32, the precision every backend has
        return "no"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native else "no"


def make_accelerator(**kwargs) -> Accelerator:
    """An ``Accelerator`` that also forms a process group of CPU processes.

    Accelerate only chooses its multi-CPU (gloo) mode when told to use the CPU; started by
    ``torchrun`` on a machine without CUDA it would otherwise run every process as if it were
    alone. So: several processes and no CUDA means ``cpu=True``.
    """
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several and not torch.cuda.is_available():
        kwargs.setdefault("cpu", True)
    return Accelerator(**kwargs)


def leave_process_group() -> None:
    """Leave the process group (if any) before the interpreter exits, with no barrier: a
    process that finished first (symclr-spot's other ranks, while rank 0 writes the output)
    otherwise tears its gloo threads down at exit, which once aborted a rank ("terminate called
    without an active exception") in the test suite's two-process run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# Peak memory of an inference forward of one crop, as a multiple of its float32 input
# (3 x S x S x 4 bytes): the peak resident growth measured at 224 px, batch 16, was 14x for
# ResNet-18 and 28x for EfficientNet-lite0; the input itself and some margin make 32.
FORWARD_MEMORY_FACTOR = 32


def free_memory() -> int | None:
    """Bytes free where the forward runs: the GPU's when there is one, else what Linux says
    is available (``MemAvailable``); None when it cannot be told."""
    if torch.cuda.is_available():
        try:
            return int(torch.cuda.mem_get_info()[0])
        except RuntimeError:
            return None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_forward_memory(image_size: int, batch_size: int, hint: str) -> None:
    """Refuse, before any work, a crop size and batch whose forward would not fit in the
    memory free now: one line saying what it needs and ``hint`` (what to lower), instead of
    minutes of work ended by the kernel's out-of-memory killer."""
    from symclr_ft.errors import UserError

    need = batch_size * 3 * image_size**2 * 4 * FORWARD_MEMORY_FACTOR
    free = free_memory()
    if free is not None and need > free:
        raise UserError(
            f"--image-size {image_size} with batches of {batch_size} crops needs about "
            f"{need / 2**30:.1f} GiB for a forward, more than the {free / 2**30:.1f} GiB free "
            f"here; {hint}")


def __getattr__(name: str):
    """``inference_precision``, this function's name before training used it too, still works."""
    if name == "inference_precision":
        import warnings

        warnings.warn("symclr_ft.distributed.inference_precision is now native_precision", DeprecationWarning,
                      stacklevel=2)
        return native_precision
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
