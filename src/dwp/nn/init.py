"""Initialisation of conv kernels (ordinary weights or posterior means), as in the paper:

* ``xavier``: Xavier-normal (Glorot & Bengio 2010), the baseline;
* ``kaiming``: Kaiming-normal (He et al. 2015) for LeakyReLU(0.01), modern CNNs' default;
* ``dwp``: samples of a learned kernel prior: for a Deep Weight Prior the decoder means at
  z ~ N(0, I) (the paper's), for a Gaussian kernel prior draws of it;
* ``dwp-draw``: draws of a learned kernel prior, for a Deep Weight Prior w ~ p(w | z) at
  z ~ N(0, I) (its decoder variance included);
* ``filters``: kernels drawn at random from a kernel set of the source nets.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from dwp.config import Init
from dwp.errors import DWPError

__all__ = ["KAIMING_SLOPE", "Init", "draw_kernels", "init_conv_kernels", "random_kernels"]

#: The negative slope of the nets' LeakyReLU, which sets the Kaiming init's gain.
KAIMING_SLOPE = 0.01


def random_kernels(
    kernels: np.ndarray | torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` kernels drawn at random from a kernel set (N, 1, k, k); without replacement when
    the set is large enough, else with replacement."""
    kernels = torch.as_tensor(kernels)
    if len(kernels) == 0:
        raise DWPError("the kernel set is empty")
    if n <= len(kernels):
        idx = torch.randperm(len(kernels), generator=generator)[:n]
    else:
        idx = torch.randint(len(kernels), (n,), generator=generator)
    return kernels[idx]


def draw_kernels(
    prior: nn.Module, n: int, generator: torch.Generator | None = None, mean: bool = True
) -> torch.Tensor:
    """``n`` kernels of a learned kernel prior: its ``sample_kernels(n, generator)`` (a Deep
    Weight Prior's decoder means), or with ``mean=False`` its draws (``sample_kernels(...,
    mean=False)``; a prior whose samples are draws already, as a Gaussian's, is asked as is)."""
    if mean or not _has_mean_option(prior):
        return prior.sample_kernels(n, generator)
    return prior.sample_kernels(n, generator, mean=False)


def _has_mean_option(prior: nn.Module) -> bool:
    try:
        return "mean" in inspect.signature(prior.sample_kernels).parameters
    except (TypeError, ValueError):
        return False


def init_conv_kernels(
    convs: Mapping[str, nn.Conv2d],
    init: Init | str,
    *,
    priors: Mapping[str, nn.Module] | None = None,
    kernel_sets: Mapping[str, np.ndarray | torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Set the kernels (``weight``; for Bayesian layers the posterior means) of ``convs``.

    Args:
        convs: conv layers by name.
        init: ``xavier``, ``kaiming``, ``dwp``, ``dwp-draw`` or ``filters``.
        priors: for ``dwp`` and ``dwp-draw``, a kernel prior with ``sample_kernels`` per layer name
            (:class:`~dwp.priors.DeepWeightPrior`, :class:`~dwp.priors.GaussianKernelPrior`).
        kernel_sets: for ``filters``, a kernel array (N, 1, k, k) per layer name.
        generator: the random source (CPU generator).

    Biases are left alone.
    """
    init = Init(init)
    for name, conv in convs.items():
        w = conv.weight
        n = w.shape[0] * w.shape[1]
        k = tuple(w.shape[-2:])
        if init is Init.xavier:
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            new = torch.randn(w.shape, generator=generator) * std
        elif init is Init.kaiming:  # fan_in mode, the gain of LeakyReLU(KAIMING_SLOPE)
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(w)
            std = (2.0 / (1 + KAIMING_SLOPE**2) / fan_in) ** 0.5
            new = torch.randn(w.shape, generator=generator) * std
        elif init.uses_prior:
            prior = (priors or {}).get(name)
            if prior is None or not hasattr(prior, "sample_kernels"):
                raise DWPError(f"--init {init.value} needs a learned kernel prior for {name}")
            prior.check_layer(conv, name)
            gen = generator
            dev = next(iter([*prior.parameters(), *prior.buffers()])).device
            if dev.type != "cpu":
                gen = torch.Generator(dev).manual_seed(
                    int(torch.randint(2**62, (1,), generator=generator))
                )
            new = draw_kernels(prior, n, gen, mean=init is Init.dwp).cpu()
        else:
            kernels = (kernel_sets or {}).get(name)
            if kernels is None:
                raise DWPError(f"--init filters needs a kernel set for {name}")
            kernels = torch.as_tensor(kernels)
            if tuple(kernels.shape[-2:]) != k:
                raise DWPError(
                    f"the kernel set for {name} holds {kernels.shape[-2]}x{kernels.shape[-1]} "
                    f"kernels, but {name} has {k[0]}x{k[1]} kernels"
                )
            new = random_kernels(kernels, n, generator)
        with torch.no_grad():
            w.copy_(new.reshape(w.shape).to(device=w.device, dtype=w.dtype))
