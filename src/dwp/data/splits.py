"""Few-shot training subsets, stratified by class, as in the paper (n = 50..1000, seeds 0..9)."""

from __future__ import annotations

import numpy as np
import torch

from dwp.errors import DWPError

__all__ = ["few_shot", "stratified_indices"]


def stratified_indices(labels: np.ndarray | torch.Tensor, n: int, split_seed: int) -> np.ndarray:
    """Indices of ``n`` examples drawn without replacement, stratified by class.

    Every class gets ``n // K`` examples (``K`` classes present); the ``n % K`` left over go to
    classes chosen at random. The draw depends only on ``split_seed`` and the labels, and subsets
    of one seed are nested: the first ``m`` per class of a larger ``n`` are those of a smaller one.
    Returned indices are sorted.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    k = len(classes)
    if n < k:
        raise DWPError(f"few-shot size n={n} is smaller than the number of classes ({k})")
    rng = np.random.default_rng(split_seed)
    per_class = np.full(k, n // k)
    per_class[rng.permutation(k)[: n % k]] += 1
    chosen = []
    for c, m in zip(classes, per_class, strict=True):
        pool = np.flatnonzero(labels == c)
        if m > len(pool):
            raise DWPError(
                f"few-shot size n={n} needs {m} examples of class {c}, but only {len(pool)} exist"
            )
        chosen.append(pool[rng.permutation(len(pool))[:m]])
    return np.sort(np.concatenate(chosen))


def few_shot(part, n: int, split_seed: int):
    """The stratified few-shot subset of an :class:`~dwp.data.ImageSet` (see
    :func:`stratified_indices`)."""
    return part.subset(stratified_indices(part.labels.numpy(), n, split_seed))
