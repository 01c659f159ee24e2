"""The paper's experiments: classification with limited data
(:mod:`dwp.experiments.classification`), convergence of ordinary CNNs initialised from the prior
(:mod:`dwp.experiments.convergence`) and random feature extraction
(:mod:`dwp.experiments.features`); the paper's numbers in :mod:`dwp.experiments.paper`."""

from dwp.experiments.classification import ClassificationConfig, run_classification
from dwp.experiments.convergence import ConvergenceConfig, run_convergence
from dwp.experiments.features import FeaturesConfig, run_features

__all__ = [
    "ClassificationConfig",
    "ConvergenceConfig",
    "FeaturesConfig",
    "run_classification",
    "run_convergence",
    "run_features",
]
