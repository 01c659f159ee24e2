"""What the experiments that initialise ordinary nets (convergence, random features) share: the
inits they compare and the priors / kernel sets those inits draw from."""

from __future__ import annotations

from collections.abc import Iterable

from dwp.errors import DWPError
from dwp.nn import Init
from dwp.priors import DeepWeightPrior, check_per_layer, load_kernel_sets

__all__ = ["check_init_sources", "load_init_sources", "parse_inits"]


def parse_inits(inits: Iterable[str]) -> tuple[str, ...]:
    """Init names as :class:`~dwp.nn.Init` values; a one-line error for an unknown one."""
    try:
        return tuple(Init(i).value for i in inits)
    except ValueError as exc:
        raise DWPError(str(exc)) from None


def check_init_sources(inits, prior_dirs, kernel_dirs) -> None:
    """``dwp`` needs priors; ``filters`` needs kernel sets (or priors, whose training kernels
    serve)."""
    if "dwp" in inits and not prior_dirs:
        raise DWPError("init dwp needs --prior-dirs (one prior directory per conv layer)")
    if "filters" in inits and not (kernel_dirs or prior_dirs):
        raise DWPError("init filters needs --kernel-dirs (or --prior-dirs of trained priors)")


def load_init_sources(inits, names: list[str], prior_dirs, kernel_dirs):
    """The priors (for ``dwp``) and kernel sets (for ``filters``) by conv layer name, each None
    when no init asks for it."""
    priors = kernel_sets = None
    if "dwp" in inits:
        check_per_layer(prior_dirs, names, "prior directories")
        priors = {n: DeepWeightPrior.from_dir(d) for n, d in zip(names, prior_dirs, strict=True)}
    if "filters" in inits:
        kernel_sets = load_kernel_sets(names, kernel_dirs, prior_dirs)
    return priors, kernel_sets
