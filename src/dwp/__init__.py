"""dwp: the Deep Weight Prior (Atanov et al., ICLR 2019) as a library.

A learned prior on your own CNN in a few lines::

    import dwp
    dwp.bayesianize(model, "letters-fconv", scale_to=train.images)  # shipped 7x7 / 5x5 priors
                                               # moved to your data's scale; N(0, 1) elsewhere
    dwp.fit(model, train, test=test, epochs=100)
    pred = dwp.predict(model, test)            # the MC ensemble: pred.probs, pred.metrics

Module map (docs/contributing.md has the whole table):

- ``dwp.config``: every config dataclass, choice and preset (torch-free).
- ``dwp.data``: named datasets (catalog), file readers, rendered letters, few-shot splits,
  the shipped kernel sets and priors (``dwp.data.shipped``).
- ``dwp.nn``: networks (FConv, CIFARNet, VGGNet), Bayesian layers, ``bayesianize``, kernel inits,
  saving Bayesian models.
- ``dwp.kernels``: kernel datasets from source nets or any model.
- ``dwp.priors``: weight priors (normal, log-uniform, the DWP, the Gaussian kernel prior), kernel
  VAEs, prior directories, the data-driven kernel scale.
- ``dwp.train``: the training loops (source nets, priors, Bayesian CNNs; ``fit`` for any model).
- ``dwp.eval``: ensemble prediction and metrics.
- ``dwp.experiments``, ``dwp.reproduce``, ``dwp.report``: the paper's experiments and report.
- ``dwp.errors``: the exceptions the library raises for bad input.
- ``dwp.cli``: the ``dwp`` command; the only package that parses argv or prints.
"""

__all__ = [
    "DWPError",
    "DeepWeightPrior",
    "FitConfig",
    "GaussianKernelPrior",
    "LogUniformPrior",
    "NormalPrior",
    "Prediction",
    "__version__",
    "bayesianize",
    "describe_bayes",
    "fit",
    "load_bayesian",
    "predict",
    "save_bayesian",
    "set_mode",
    "set_prior",
    "shipped_priors",
]

# name -> module; imported on first use, so `import dwp` (and `dwp --help`) stays torch-free
_EXPORTS = {
    "DWPError": "dwp.errors",
    "DeepWeightPrior": "dwp.priors",
    "GaussianKernelPrior": "dwp.priors",
    "LogUniformPrior": "dwp.priors",
    "NormalPrior": "dwp.priors",
    "FitConfig": "dwp.train.fit",
    "fit": "dwp.train.fit",
    "Prediction": "dwp.eval",
    "predict": "dwp.eval",
    "bayesianize": "dwp.nn",
    "describe_bayes": "dwp.nn",
    "load_bayesian": "dwp.nn",
    "save_bayesian": "dwp.nn",
    "set_mode": "dwp.nn",
    "set_prior": "dwp.nn",
    "shipped_priors": "dwp.data.shipped",
}


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
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dwp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
