"""dwp: the Deep Weight Prior (Atanov et al., ICLR 2019) as a library.

Module map (see DEVELOPING.md for more):

- ``dwp.data``: named datasets (catalog), file readers, rendered letters, few-shot splits.
- ``dwp.nn``: networks (FConv).
- ``dwp.train``: source nets, kernel VAE priors (training loops and ``fit_prior``).
- ``dwp.kernels``: kernel datasets from source nets.
- ``dwp.priors``: kernel VAEs, prior directories, reference import.
- ``dwp.errors``: the exceptions the library raises for bad input.
- ``dwp.cli``: the ``dwp`` command; the only module that parses argv or prints.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deep-weight-prior")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
