"""Networks and layers: the FConv, CIFARNet and VGGNet families, Bayesian layers,
``bayesianize`` and kernel inits."""

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
    describe_bayes,
    kl_divergence,
    set_mode,
    set_noise_generator,
    set_prior,
)
from dwp.nn.cifarnet import CIFARNet, cifarnet_hidden
from dwp.nn.convvae import ConvVAE
from dwp.nn.ensemble import DeepEnsemble
from dwp.nn.fconv import FConv, conv_layers
from dwp.nn.init import Init, init_conv_kernels, random_kernels
from dwp.nn.nets import (
    ARCH_NAMES,
    ARCHS,
    build_net,
    check_hidden,
    conv_names,
    default_hidden,
    describe_net,
    init_classifier,
    l2_penalty,
    resolve_arch,
    valid_hidden,
)
from dwp.nn.saving import bayes_plan, load_bayesian, save_bayesian
from dwp.nn.vgg import VGGNet

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "BayesConv2d",
    "BayesLayer",
    "BayesLinear",
    "CIFARNet",
    "ConvVAE",
    "DeepEnsemble",
    "FConv",
    "Init",
    "LogUniformConv2d",
    "LogUniformLinear",
    "Mode",
    "Posterior",
    "VGGNet",
    "bayes_layers",
    "bayes_mode",
    "bayes_plan",
    "bayesianize",
    "build_net",
    "check_hidden",
    "cifarnet_hidden",
    "conv_layers",
    "conv_names",
    "default_hidden",
    "describe_bayes",
    "describe_net",
    "init_classifier",
    "init_conv_kernels",
    "kl_divergence",
    "l2_penalty",
    "load_bayesian",
    "random_kernels",
    "resolve_arch",
    "save_bayesian",
    "set_mode",
    "set_noise_generator",
    "set_prior",
    "valid_hidden",
]
