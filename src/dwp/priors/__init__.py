"""Priors: weight priors for Bayesian layers (standard normal, log-uniform, the Deep Weight
Prior), the kernel VAEs behind the DWP, and their storage."""

from dwp.priors.store import (
    check_per_layer,
    import_reference_prior,
    kernel_summary,
    load_kernel_sets,
    load_prior,
    prior_card,
    rescale_prior,
    sample_diversity,
    save_prior,
)
from dwp.priors.vae import ARCHITECTURES, KernelVAE, VAEConfig, default_vae_config
from dwp.priors.weight import (
    PRIOR_TYPES,
    DeepWeightPrior,
    LogUniformPrior,
    NormalPrior,
    WeightPrior,
    kernel_view,
    prior_from_spec,
    register_prior,
)

__all__ = [
    "ARCHITECTURES",
    "PRIOR_TYPES",
    "DeepWeightPrior",
    "KernelVAE",
    "LogUniformPrior",
    "NormalPrior",
    "VAEConfig",
    "WeightPrior",
    "check_per_layer",
    "default_vae_config",
    "import_reference_prior",
    "kernel_summary",
    "kernel_view",
    "load_kernel_sets",
    "load_prior",
    "prior_card",
    "prior_from_spec",
    "register_prior",
    "rescale_prior",
    "sample_diversity",
    "save_prior",
]
