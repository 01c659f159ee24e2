"""Priors: weight priors for Bayesian layers (standard normal, log-uniform, the Deep Weight
Prior, the Gaussian kernel prior), the kernel VAEs behind the DWP, their storage, and the
data-driven kernel scale."""

from dwp.priors.gaussian import GaussianKernelPrior, fit_gaussian, fit_gaussian_prior
from dwp.priors.scale import data_scales, scaled_priors
from dwp.priors.store import (
    check_per_layer,
    import_reference_prior,
    kernel_summary,
    load_kernel_prior,
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
    "GaussianKernelPrior",
    "KernelVAE",
    "LogUniformPrior",
    "NormalPrior",
    "VAEConfig",
    "WeightPrior",
    "check_per_layer",
    "data_scales",
    "default_vae_config",
    "fit_gaussian",
    "fit_gaussian_prior",
    "import_reference_prior",
    "kernel_summary",
    "kernel_view",
    "load_kernel_prior",
    "load_kernel_sets",
    "load_prior",
    "prior_card",
    "prior_from_spec",
    "register_prior",
    "rescale_prior",
    "sample_diversity",
    "save_prior",
    "scaled_priors",
]
