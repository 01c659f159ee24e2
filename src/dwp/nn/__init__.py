"""Networks and layers: the FConv family, Bayesian layers, ``bayesianize`` and kernel inits."""

from dwp.nn.bayes import (
    BayesConv2d,
    BayesLayer,
    BayesLinear,
    LogUniformConv2d,
    LogUniformLinear,
    Mode,
    Posterior,
    bayes_layers,
    bayes_mode,
    bayesianize,
    kl_divergence,
    set_mode,
    set_noise_generator,
)
from dwp.nn.fconv import FConv, conv_layers
from dwp.nn.init import Init, init_conv_kernels, random_kernels

__all__ = [
    "BayesConv2d",
    "BayesLayer",
    "BayesLinear",
    "FConv",
    "Init",
    "LogUniformConv2d",
    "LogUniformLinear",
    "Mode",
    "Posterior",
    "bayes_layers",
    "bayes_mode",
    "bayesianize",
    "conv_layers",
    "init_conv_kernels",
    "kl_divergence",
    "random_kernels",
    "set_mode",
    "set_noise_generator",
]
