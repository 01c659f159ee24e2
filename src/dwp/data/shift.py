"""Inputs a classifier was not trained on: out-of-distribution sets (another catalog dataset's
test images, shaped like the target's) and dataset shift (the target's test images rotated)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from dwp.data.catalog import DATASETS, load_dataset
from dwp.errors import DWPError

__all__ = ["ROTATIONS", "ood_images", "rotate", "subset"]

#: The rotation angles (degrees) of the shift evaluation: 0 to 180 in steps of 15 (Ovadia et
#: al. 2019 show rotated MNIST this way).
ROTATIONS = tuple(range(0, 181, 15))


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """``images`` (N, C, H, W) rotated counter-clockwise by ``degrees`` about their centre,
    bilinear, the corners filled with 0 (the background of digits). Multiples of 90 degrees
    on square images move pixels exactly (as :func:`torch.rot90`)."""
    if images.ndim != 4:
        raise DWPError(f"rotate: expected images (N, C, H, W), got shape {tuple(images.shape)}")
    if degrees % 360 == 0:
        return images.clone()
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    # grid_sample's theta maps output coordinates (x right, y down) to input coordinates
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def ood_images(
    name: str,
    like: tuple[int, ...],
    n: int | None = None,
    data_root: str | Path | Sequence[str | Path] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """The test images of catalog dataset ``name`` as an out-of-distribution set for a target
    whose images are ``like`` = (C, H, W): all, or ``n`` of them drawn without replacement by
    ``seed`` (:func:`subset`: a test part stored class by class gives every class its share).
    An error names the shapes when they differ (a net cannot take them)."""
    if name not in DATASETS:
        raise DWPError(f"unknown out-of-distribution set {name!r}; choose from "
                       f"{', '.join(DATASETS)} (see `dwp data list`)")  # fmt: skip
    images = load_dataset(name, data_root).test.images
    shape = tuple(int(v) for v in images.shape[1:])
    if shape != tuple(like):
        raise DWPError(
            f"out-of-distribution set {name} has images of shape {shape}, but the model takes "
            f"{tuple(like)}; pick a set of the target's image shape"
        )
    return images if n is None else images[subset(len(images), n, seed)]


def subset(total: int, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``min(n, total)`` of ``total`` examples drawn without replacement by ``seed``,
    in increasing order; all of them, in order, when ``n >= total``."""
    if n < 1:
        raise DWPError(f"subset: n must be >= 1, got {n}")
    if n >= total:
        return torch.arange(total)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=g)[:n].sort().values
