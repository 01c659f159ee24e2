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

__all__ = ["__version__"]


def __getattr__(name: str):
    # ``__version__`` is read from the installed metadata on first use: importlib.metadata costs
    # ~25 ms, a tenth of `dwp --help`, which never needs it
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("deep-weight-prior")
        except PackageNotFoundError:  # running from a source tree that is not installed
            value = "0.0.0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'dwp' has no attribute {name!r}")
