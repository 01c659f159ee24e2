"""Diagonal-Gaussian densities, the one copy the layers, the kernel VAEs and the priors use.

Every function sums over all dimensions but the first (one value per row: per kernel, per
image), except :func:`gaussian_entropy`, which sums over everything (one layer's weights).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "LOG_2PI",
    "gaussian_entropy",
    "gaussian_log_prob",
    "kl_std_normal",
    "std_normal_log_prob",
]

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(x | mu, var) per row: shape (N,) for inputs (N, ...)."""
    return (-0.5 * ((x - mu) ** 2 / var + var.log() + LOG_2PI)).flatten(1).sum(1)


def std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z | 0, I) per row: shape (N,)."""
    return (-0.5 * (z**2 + LOG_2PI)).flatten(1).sum(1)


def kl_std_normal(
    mu: torch.Tensor, var: torch.Tensor, log_var: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(N(mu, var) || N(0, I)) per row, in closed form: ``0.5 (var + mu^2 - 1 - log var)``;
    ``log_var`` where the caller has it exactly (otherwise ``var.log()``).

    The terms are built in this order on purpose: where ``var`` also feeds other terms, the
    order in which autograd sums its gradients follows the order the terms were made in, and a
    change there changes trained weights in the last bits (and runs after them)."""
    return 0.5 * (var + mu**2 - 1.0 - (var.log() if log_var is None else log_var)).flatten(1).sum(1)


def gaussian_entropy(log_var: torch.Tensor) -> torch.Tensor:
    """Entropy of a factorised Gaussian with log-variances ``log_var``, summed over every
    element: ``0.5 sum(log var + log 2 pi + 1)``, a scalar tensor."""
    return 0.5 * (log_var + LOG_2PI + 1.0).sum()
