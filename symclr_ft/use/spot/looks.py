"""How a grey drawing shows a symbol: the looks that exemplars are given to match one.

Users spot on scans, photocopies and greyscale exports with exemplars cut from clean, coloured
CAD drawings. The crop embedder was trained on the coloured crops, and a grey, blurred symbol
is further from its coloured exemplar than from that exemplar made grey and blurred; the
template of a coloured exemplar correlates less with a blurred grey copy than its softened
grey picture does. So when a drawing is grey (:func:`grey_drawing`), spotting matches the
exemplars in these looks (``pipeline.grey_looks_of``). Grey is told from colour exactly
(channels equal, or nearly, in a JPEG), so coloured drawings are matched as before.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from symclr_ft.data.components import sparse_sample

GREY_SPREAD = 24  # channel spread (max - min) below which a pixel is grey, JPEG chroma noise included
GREY_SHARE = 0.0005  # a drawing is grey when fewer of its pixels than this share are coloured
SOFTEN_SIGMA = 1.0  # px: a scan's blur


def coloured_share(rgb: np.ndarray) -> float:
    """The share of a drawing's pixels (those of ``components.sparse_sample``: every other of
    every other row, sparser on a large sheet) whose channels are ``GREY_SPREAD`` or more apart."""
    sample = sparse_sample(rgb)
    spread = sample.max(axis=-1).astype(np.int16) - sample.min(axis=-1)
    return float(np.count_nonzero(spread >= GREY_SPREAD)) / spread.size


def grey_drawing(rgb: np.ndarray) -> bool:
    """Whether a drawing (H, W, 3 uint8) is grey: its :func:`coloured_share` is under
    ``GREY_SHARE``. Clean coloured CAD drawings have many times that share (a few symbols and
    wires are enough; the shares measured: docs/RESULTS.md)."""
    return coloured_share(rgb) < GREY_SHARE


def to_grey(image: Image.Image) -> Image.Image:
    """The picture in grey (ITU-R 601 luma, as PIL converts and as a greyscale scan records), RGB."""
    return image.convert("L").convert("RGB")


def softened(image: Image.Image) -> Image.Image:
    """The picture blurred as a scan blurs it (Gaussian, ``SOFTEN_SIGMA`` px)."""
    return image.filter(ImageFilter.GaussianBlur(SOFTEN_SIGMA))
