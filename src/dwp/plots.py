"""Figures. Every function saves a PNG atomically and returns its path; nothing is shown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt
import numpy as np
import torch

from dwp.errors import DWPError
from dwp.io import atomic_path

__all__ = ["class_grid", "save_figure"]


def save_figure(fig, out: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``out`` (PNG) via a temporary file, then close it."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DWPError(f"figure path must end in .png, got {out}")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return out


def class_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    out: str | Path,
    per_class: int = 10,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """A grid of example images with one row per class, the class name at the row's left.

    Args:
        images: (N, C, H, W) in [0, 1]; C is 1 (grey) or 3 (RGB).
        labels: (N,) class indices.
        per_class: images per row, drawn at random (``seed``) from the class.
    """
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    rows = len(classes)
    fig, axes = plt.subplots(
        rows, per_class, figsize=(per_class * 0.7 + 1.0, rows * 0.7), squeeze=False
    )
    for r, name in enumerate(classes):
        idx = np.flatnonzero(labels_np == r)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(pick):
                img = images[pick[c]].permute(1, 2, 0).numpy()
                if img.shape[2] == 1:
                    ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(img.clip(0, 1))
        axes[r, 0].set_ylabel(str(name), rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return save_figure(fig, out)
