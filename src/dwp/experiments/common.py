"""What the experiments that initialise ordinary nets (convergence, random features) share: the
inits they compare and the priors / kernel sets those inits draw from."""

from __future__ import annotations

from dwp.config import check_init_sources, parse_inits
from dwp.priors import DeepWeightPrior, check_per_layer, load_kernel_sets

__all__ = ["check_init_sources", "load_init_sources", "parse_inits"]


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
