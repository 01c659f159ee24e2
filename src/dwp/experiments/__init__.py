"""The paper's experiments beyond the Bayesian CNN: convergence of ordinary CNNs initialised
from the prior (:mod:`dwp.experiments.convergence`)."""

from dwp.experiments.convergence import ConvergenceConfig, run_convergence

__all__ = ["ConvergenceConfig", "run_convergence"]
