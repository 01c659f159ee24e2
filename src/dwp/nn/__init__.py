"""Networks: the FConv family used for source nets and the MNIST Bayesian net."""

from dwp.nn.fconv import FConv, conv_layers

__all__ = ["FConv", "conv_layers"]
