"""dwp: the Deep Weight Prior (Atanov et al., ICLR 2019) as a library.

Module map (docs/contributing.md has the whole table):

- ``dwp.config``: every config dataclass, choice and preset (torch-free).
- ``dwp.data``: named datasets (catalog), file readers, rendered letters, few-shot splits.
- ``dwp.nn``: networks (FConv, CIFARNet), Bayesian layers, ``bayesianize``, kernel inits.
- ``dwp.kernels``: kernel datasets from source nets.
- ``dwp.priors``: weight priors (normal, log-uniform, the DWP), kernel VAEs, prior directories.
- ``dwp.train``: the training loops (source nets, priors, Bayesian CNNs).
- ``dwp.eval``: ensemble prediction and metrics.
- ``dwp.experiments``, ``dwp.reproduce``, ``dwp.report``: the paper's experiments and report.
- ``dwp.errors``: the exceptions the library raises for bad input.
- ``dwp.cli``: the ``dwp`` command; the only package that parses argv or prints.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deep-weight-prior")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
