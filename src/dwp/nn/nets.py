"""The network families and how a dataset picks one: ``fconv`` for 28x28 grey images (MNIST,
notMNIST, letters), ``cifarnet`` for 32x32 colour images (CIFAR).

Every consumer (source nets, Bayesian nets, the experiments) builds its network through
:func:`build_net`, so a dataset of either kind runs through the same pipeline unchanged.
Widths (``hidden``) are per conv layer: two for FConv, three for CIFARNet; ``None`` picks the
family's default for the role (``source``: the source nets', ``target``: the nets trained on
the target set: Bayesian nets, baselines, convergence).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dwp.errors import DWPError

from .cifarnet import CIFARNet, cifarnet_hidden
from .fconv import FConv

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "build_net",
    "check_hidden",
    "conv_names",
    "default_hidden",
    "describe_net",
    "resolve_arch",
    "valid_hidden",
]

ARCHS = ("fconv", "cifarnet")
ARCH_NAMES = {"fconv": "FConv", "cifarnet": "CIFARNet"}

_DEFAULT_HIDDEN = {
    ("fconv", "source"): (256, 512),
    ("fconv", "target"): (32, 128),
    ("cifarnet", "source"): cifarnet_hidden(1.0),
    ("cifarnet", "target"): cifarnet_hidden(1.0),
}
_N_HIDDEN = {"fconv": 2, "cifarnet": 3}
_CONV_NAMES = {
    ("fconv", False): ("conv1", "conv2"),
    ("fconv", True): ("conv1", "conv2"),
    ("cifarnet", False): ("conv1", "conv2", "conv3", "conv4"),
    ("cifarnet", True): ("conv1", "conv2", "conv3"),
}


def resolve_arch(arch: str, channels: int, size: int) -> str:
    """``arch`` itself, or for ``auto`` the family that fits images of ``channels`` x ``size``
    x ``size``: CIFARNet for 3-channel 32x32 images, FConv otherwise."""
    if arch == "auto":
        return "cifarnet" if (channels, size) == (3, 32) else "fconv"
    if arch not in ARCHS:
        raise DWPError(f"unknown network {arch!r}; expected auto or one of {', '.join(ARCHS)}")
    return arch


def valid_hidden(hidden: tuple[int, ...] | None) -> bool:
    """Whether ``hidden`` can be widths of some family (checked before the dataset is known)."""
    return hidden is None or (len(hidden) in (2, 3) and min(hidden) >= 1)


def conv_names(arch: str, bayes: bool = False) -> tuple[str, ...]:
    """The conv layers of ``arch`` (its Bayesian variant with ``bayes``) in order, as
    :func:`dwp.nn.conv_layers` names them: the layers that take one prior each."""
    return _CONV_NAMES[(arch, bayes)]


def default_hidden(arch: str, role: str) -> tuple[int, ...]:
    """The default widths of ``arch`` for ``role`` (``source`` or ``target``)."""
    return _DEFAULT_HIDDEN[(arch, role)]


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
    ``auto`` is read from the dataset's name (CIFAR datasets get CIFARNet)."""
    if arch == "auto":
        arch = "cifarnet" if dataset.startswith("cifar") else "fconv"
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

    ``bayes``: the family's Bayesian-net architecture (FConv is the same net; CIFARNet drops
    BatchNorm and conv4), also the deterministic L2 baseline's. ``batch_norm``: BatchNorm
    after FConv's convs (CIFARNet always has it, except in its Bayesian variant).
    """
    hidden = check_hidden(arch, hidden, "source")
    try:
        if arch == "fconv":
            return FConv(hidden, in_channels, num_classes, image_size, conv=conv,
                         batch_norm=batch_norm)  # fmt: skip
        return CIFARNet(hidden, in_channels, num_classes, image_size, conv=conv,
                        batch_norm=not bayes)  # fmt: skip
    except ValueError as exc:
        raise DWPError(str(exc)) from None
