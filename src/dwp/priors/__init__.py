"""Kernel priors: kernel VAEs (the implicit Deep Weight Prior) and their storage."""

from dwp.priors.store import import_reference_prior, kernel_summary, load_prior, save_prior
from dwp.priors.vae import ARCHITECTURES, KernelVAE, VAEConfig, default_vae_config

__all__ = [
    "ARCHITECTURES",
    "KernelVAE",
    "VAEConfig",
    "default_vae_config",
    "import_reference_prior",
    "kernel_summary",
    "load_prior",
    "save_prior",
]
