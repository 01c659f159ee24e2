"""Priors: weight priors for Bayesian layers (standard normal, log-uniform, the Deep Weight
Prior), the kernel VAEs behind the DWP, and their storage."""

from dwp.priors.store import (
    check_per_layer,
    import_reference_prior,
    kernel_summary,
    load_kernel_sets,
    load_prior,
    rescale_prior,
    sample_diversity,
    save_prior,
)
from dwp.priors.vae import ARCHITECTURES, KernelVAE, VAEConfig, default_vae_config
from dwp.priors.weight import (
    DeepWeightPrior,
    LogUniformPrior,
    NormalPrior,
    WeightPrior,
    kernel_view,
)

__all__ = [
    "ARCHITECTURES",
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
    "rescale_prior",
    "sample_diversity",
    "save_prior",
]
