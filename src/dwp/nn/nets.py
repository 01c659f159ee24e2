"""The network families and how a dataset picks one: ``fconv`` for 28x28 grey images (MNIST,
notMNIST, letters), ``cifarnet`` for 32x32 colour images (CIFAR); ``vgg`` (3x3 convs, any image
size from 4) only when asked for.

Every consumer (source nets, Bayesian nets, the experiments) builds its network through
:func:`build_net`, so a dataset of either kind runs through the same pipeline unchanged.
Widths (``hidden``) are per conv layer (two for FConv, three for CIFARNet) or per block (two
for VGGNet); ``None`` picks the
family's default for the role (``source``: the source nets', ``target``: the nets trained on
the target set: Bayesian nets, baselines, convergence).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dwp.config import ARCHS, DEFAULT_HIDDEN, resolve_arch, valid_hidden
from dwp.errors import DWPError

from .cifarnet import CIFARNet
from .fconv import FConv, conv_layers
from .vgg import VGGNet

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "build_net",
    "check_hidden",
    "conv_names",
    "default_hidden",
    "describe_net",
    "init_classifier",
    "l2_penalty",
    "resolve_arch",
    "valid_hidden",
]

ARCH_NAMES = {"fconv": "FConv", "cifarnet": "CIFARNet", "vgg": "VGGNet"}

_N_HIDDEN = {"fconv": 2, "cifarnet": 3, "vgg": 2}
_CONV_NAMES = {
    ("fconv", False): ("conv1", "conv2"),
    ("fconv", True): ("conv1", "conv2"),
    ("cifarnet", False): ("conv1", "conv2", "conv3", "conv4"),
    ("cifarnet", True): ("conv1", "conv2", "conv3"),
    ("vgg", False): ("conv1", "conv2", "conv3", "conv4"),
    ("vgg", True): ("conv1", "conv2", "conv3", "conv4"),
}


def conv_names(arch: str, bayes: bool = False) -> tuple[str, ...]:
    """The conv layers of ``arch`` (its Bayesian variant with ``bayes``) in order, as
    :func:`dwp.nn.conv_layers` names them: the layers that take one prior each."""
    return _CONV_NAMES[(arch, bayes)]


def default_hidden(arch: str, role: str) -> tuple[int, ...]:
    """The default widths of ``arch`` for ``role`` (``source`` or ``target``)."""
    return DEFAULT_HIDDEN[(arch, role)]


def check_hidden(arch: str, hidden: tuple[int, ...] | None, role: str) -> tuple[int, ...]:
    """``hidden``, or the default for ``arch`` and ``role`` when None; an error if the number
    of widths does not fit the family."""
    if hidden is None:
        return default_hidden(arch, role)
    hidden = tuple(int(h) for h in hidden)
    want = _N_HIDDEN[arch]
    if len(hidden) != want or min(hidden) < 1:
        raise DWPError(
            f"{arch} needs {want} positive conv widths, got {list(hidden)}"
            + (" (CIFARNet: 128k 256k 256k)" if arch == "cifarnet" else "")
        )
    return hidden


def describe_net(
    arch: str, hidden: tuple[int, ...] | None, role: str, dataset: str, extra: str = ""
) -> str:
    """A label such as ``FConv 32/128`` (``FConv{extra} 32/128``) for figure captions;
    ``auto`` resolves by the catalog's image shape of ``dataset``."""
    from dwp.data.catalog import dataset_arch

    arch = dataset_arch(dataset, arch)
    return f"{ARCH_NAMES[arch]}{extra} {'/'.join(map(str, check_hidden(arch, hidden, role)))}"


def build_net(
    arch: str,
    hidden: tuple[int, ...],
    in_channels: int,
    num_classes: int,
    image_size: int,
    *,
    bayes: bool = False,
    batch_norm: bool = False,
    conv: Callable[..., nn.Module] = nn.Conv2d,
) -> nn.Module:
    """A network of family ``arch`` with Xavier-normal kernels and zero biases.

    ``bayes``: the family's Bayesian-net architecture (FConv and VGGNet are the same net;
    CIFARNet drops BatchNorm and conv4), also the deterministic L2 baseline's. ``batch_norm``:
    BatchNorm after FConv's and VGGNet's convs (CIFARNet always has it, except in its Bayesian
    variant).
    """
    hidden = check_hidden(arch, hidden, "source")
    try:
        if arch == "fconv":
            return FConv(hidden, in_channels, num_classes, image_size, conv=conv,
                         batch_norm=batch_norm)  # fmt: skip
        if arch == "vgg":
            return VGGNet(hidden, in_channels, num_classes, image_size, conv=conv,
                          batch_norm=batch_norm)  # fmt: skip
        return CIFARNet(hidden, in_channels, num_classes, image_size, conv=conv,
                        batch_norm=not bayes)  # fmt: skip
    except ValueError as exc:
        raise DWPError(str(exc)) from None


def init_classifier(model: nn.Module) -> None:
    """Xavier-normal weights and zero biases for the classifier ``model.fc`` (the reference's
    init of the nets trained on the target set)."""
    nn.init.xavier_normal_(model.fc.weight)
    nn.init.zeros_(model.fc.bias)


def l2_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of squares of all parameters of the model's conv layers (weights and biases): the
    source nets' and the deterministic baselines' regulariser."""
    return sum(p.pow(2).sum() for m in conv_layers(model).values() for p in m.parameters())
