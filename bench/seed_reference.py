"""The seed's training pipeline, reproduced as the reference for the speed benchmarks.

What the seed did per step (sthalles/SimCLR ``data_aug`` + ``simclr.py``):

* crops are PIL images (here decoded from the shards once, at native resolution, and kept in
  memory: the reference is not charged for PNG decoding);
* a ``DataLoader`` whose workers apply, per sample and twice (two views), the PIL transforms
  ``RandomResizedCrop(size) -> RandomHorizontalFlip -> RandomApply([ColorJitter(0.8s, 0.8s,
  0.8s, 0.2s)], p=0.8) -> RandomGrayscale(p=0.2) -> GaussianBlur(int(0.1 size)) -> ToTensor``,
  with sthalles' own ``GaussianBlur`` (always applied, sigma ~ U(0.1, 2), kernel made odd);
* the default collate, ``torch.cat`` of the two views, an fp32 forward of the same network
  (``symclr_ft.models.backbones.SimCLRNet``, contiguous memory format), ``symclr_ft.models.losses.info_nce``,
  backward, ``Adam``.

Example::

    data = SeedCropDataset("shards", "train", simclr_transform(224))
    loader = seed_loader(data, batches, num_workers=2)
    seed = SeedPath(torch.device("cpu"))
    for views, labels in loader:
        seed.step(views)
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from symclr_ft.data.shardset import iter_shard, shard_paths  # noqa: E402
from symclr_ft.models.losses import info_nce  # noqa: E402
from symclr_ft.models.backbones import SimCLRNet  # noqa: E402


class GaussianBlur:
    """sthalles/SimCLR ``data_aug/gaussian_blur.py``: blur one PIL image on the CPU with a
    separable kernel of ``2 * (kernel_size // 2) + 1`` taps and sigma ~ U(0.1, 2)."""

    def __init__(self, kernel_size: int):
        radius = kernel_size // 2
        kernel_size = radius * 2 + 1
        self.blur_h = nn.Conv2d(3, 3, kernel_size=(kernel_size, 1), stride=1, padding=0, bias=False, groups=3)
        self.blur_v = nn.Conv2d(3, 3, kernel_size=(1, kernel_size), stride=1, padding=0, bias=False, groups=3)
        self.k = kernel_size
        self.r = radius
        self.blur = nn.Sequential(nn.ReflectionPad2d(radius), self.blur_h, self.blur_v)
        self.pil_to_tensor = transforms.ToTensor()
        self.tensor_to_pil = transforms.ToPILImage()

    def __call__(self, img: Image.Image) -> Image.Image:
        img = self.pil_to_tensor(img).unsqueeze(0)
        sigma = np.random.uniform(0.1, 2.0)
        x = np.arange(-self.r, self.r + 1)
        x = np.exp(-np.power(x, 2) / (2 * sigma * sigma))
        x = x / x.sum()
        x = torch.from_numpy(x).view(1, -1).repeat(3, 1)
        self.blur_h.weight.data.copy_(x.view(3, 1, self.k, 1))
        self.blur_v.weight.data.copy_(x.view(3, 1, 1, self.k))
        with torch.no_grad():
            img = self.blur(img)
            img = img.squeeze()
        return self.tensor_to_pil(img)


def simclr_transform(size: int, s: float = 1.0) -> transforms.Compose:
    """sthalles/SimCLR ``get_simclr_pipeline_transform(size, s)``."""
    color_jitter = transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    return transforms.Compose([
        transforms.RandomResizedCrop(size=size),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([color_jitter], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        GaussianBlur(kernel_size=int(0.1 * size)),
        transforms.ToTensor(),
    ])


class SeedCropDataset(Dataset):
    """The crops of one split as decoded PIL images; an item is ([view1, view2], label)."""

    def __init__(self, shard_dir: str | Path, split: str, transform, n_views: int = 2):
        self.images: list[Image.Image] = []
        self.labels: list[int] = []
        for path in shard_paths(shard_dir, split):
            for _key, fields in iter_shard(path):
                with Image.open(io.BytesIO(fields["png"])) as img:
                    self.images.append(img.convert("RGB"))  # convert() loads the pixels
                self.labels.append(int(fields["cls"]))
        self.transform = transform
        self.n_views = n_views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = self.images[index]
        return [self.transform(img) for _ in range(self.n_views)], self.labels[index]


def seed_loader(dataset: SeedCropDataset, batches: list[np.ndarray], num_workers: int,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader over given index batches (so both paths see the same crops)."""
    return DataLoader(
        dataset,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


class SeedPath:
    """The seed's model step: fp32, contiguous, InfoNCE, Adam (lr 3e-4, weight decay 1e-4)."""

    def __init__(self, device: torch.device, temperature: float = 0.07, lr: float = 3e-4,
                 weight_decay: float = 1e-4, out_dim: int = 128):
        self.device = device
        self.temperature = temperature
        self.net = SimCLRNet("resnet18", out_dim).to(device)
        self.net.train()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)

    def batch_to_device(self, views: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(views, dim=0).to(self.device, non_blocking=True)

    def model_step(self, x: torch.Tensor) -> float:
        _, z = self.net(x)
        z1, z2 = z.chunk(2)
        loss = info_nce(z1, z2, self.temperature)
        value = loss.item()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return value

    def step(self, views: list[torch.Tensor]) -> float:
        return self.model_step(self.batch_to_device(views))
