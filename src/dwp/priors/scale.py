"""The kernel scale of a learned prior, from the user's own data.

Why a rule is needed: LeakyReLU and max-pooling are positively homogeneous, so multiplying a conv
layer's kernels (and bias) by c and dividing the next layer's weights by c computes the same
function. The scale of the source nets' kernels is therefore a gauge, set by how long their L2
penalty had to shrink them, not by what they learned; a prior fitted to them carries that
arbitrary scale. The target net's likelihood does not care, but its training does: Adam's step,
the posterior's initial variance (log sigma^2 = -10) and the deterministic layers' init are all
in absolute units. The same letters priors at their own scale lose 20 points of accuracy.

The rule (:func:`data_scales`) fixes the gauge the way data-dependent initialisation does
(LSUV, Mishkin & Matas 2016): each prior is moved, p_c(w) = p(w / c) / c^(k*k), so that kernels
drawn from it give pre-activations of unit standard deviation on the target training images,
layer after layer in the order the forward pass reaches them (each with the layers before it
drawn and moved the same way). It uses only the prior (the source kernels) and the target
training set, and costs one forward pass per layer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn

from dwp.errors import DWPError

__all__ = ["MAX_SCALE_IMAGES", "data_scales", "scaled_priors"]

#: The rule looks at most at this many training images (the first ones).
MAX_SCALE_IMAGES = 512


@torch.no_grad()
def data_scales(
    model: nn.Module,
    priors: Mapping[str, nn.Module],
    images: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    max_images: int = MAX_SCALE_IMAGES,
    mean: bool = True,
) -> dict[str, float]:
    """The factor c per conv layer of ``priors`` (layer name -> a kernel prior with
    ``sample_kernels``) that gives unit-std pre-activations on ``images`` (see the module
    docstring). ``model`` is not changed: a copy gets the drawn kernels. Layers without a prior
    keep their weights. The kernels are drawn on CPU from ``generator``: the priors' samples
    (a Deep Weight Prior's decoder means, the DWP init's), or with ``mean=False`` their draws
    (:func:`dwp.nn.init.draw_kernels`; the ``dwp-draw`` init's)."""
    from dwp.nn.init import draw_kernels

    if not priors:
        return {}
    if len(images) == 0:
        raise DWPError("the kernel-scale rule needs at least one training image")
    net = copy.deepcopy(model).eval()
    from dwp.nn.bayes import set_mode

    set_mode(net, "mean")  # Bayesian layers compute with their means
    modules = dict(net.named_modules())
    missing = [n for n in priors if not isinstance(modules.get(n), nn.Conv2d)]
    if missing:
        raise DWPError(f"no conv layers named {', '.join(missing)} in the model")
    device = next(net.parameters()).device
    x = images[:max_images].to(device)
    drawn = {}
    for name, prior in priors.items():
        getattr(prior, "check_layer", lambda layer, name: None)(modules[name], name)
        w = modules[name].weight
        kernels = draw_kernels(prior, w.shape[0] * w.shape[1], _on_device(prior, generator), mean)
        drawn[name] = kernels.reshape(w.shape).to(device=device, dtype=w.dtype)
        w.copy_(drawn[name])
    order, inputs, hooks = _forward_order(net, list(priors), x)
    scales = {}
    for name in order:
        inputs.clear()
        net(x)  # the layers before this one are moved already
        conv = modules[name]
        # the pre-activation without the bias (the layer's own padding mode, stride, groups)
        pre = nn.Conv2d._conv_forward(conv, inputs[name], drawn[name], None)
        std = float(pre.double().std())
        if not (std > 0 and math.isfinite(std)):
            raise DWPError(
                f"{name}: kernels drawn from its prior give pre-activations of std {std} on the "
                "training images; the kernel-scale rule cannot move the prior"
            )
        scales[name] = 1.0 / std
        conv.weight.copy_(drawn[name] * scales[name])
    for hook in hooks:
        hook.remove()
    return scales


def _on_device(prior: nn.Module, generator: torch.Generator | None) -> torch.Generator | None:
    """``generator`` for a prior on CPU; for one elsewhere a generator there, seeded from it."""
    tensor = next(iter([*prior.parameters(), *prior.buffers()]), None)
    if generator is None or tensor is None or tensor.device.type == "cpu":
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(tensor.device).manual_seed(seed)


def _forward_order(net: nn.Module, names: list[str], x: torch.Tensor):
    """The layers of ``names`` in the order one forward pass reaches them, and the dict their
    inputs are written to on each later pass."""
    modules = dict(net.named_modules())
    order: list[str] = []
    inputs: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:

        def record(module, args, name=name):
            if name not in order:
                order.append(name)
            inputs[name] = args[0]

        hooks.append(modules[name].register_forward_pre_hook(record))
    net(x)
    unused = [n for n in names if n not in order]
    if unused:
        for hook in hooks:
            hook.remove()
        raise DWPError(f"the forward pass never reaches {', '.join(unused)}")
    return order, inputs, hooks


def scaled_priors(priors: Mapping[str, nn.Module], scales: Mapping[str, float]) -> dict:
    """``priors`` with each one of ``scales`` moved by its factor (``prior.scaled(c)``)."""
    return {n: p.scaled(scales[n]) if n in scales and scales[n] != 1.0 else p
            for n, p in priors.items()}  # fmt: skip
