"""The FConv network of the paper (source nets and the MNIST Bayesian net).

conv 7x7 (C -> h1), LeakyReLU(0.01), max-pool 2, conv 5x5 (h1 -> h2), LeakyReLU, max-pool 2,
flatten (h2 * 3 * 3 for 28x28 inputs), Linear -> classes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FConv", "conv_layers"]


class FConv(nn.Module):
    """FConv with configurable widths and convolution layer kind.

    Args:
        hidden: output channels of the two conv layers, ``(h1, h2)``; the paper uses
            ``(256, 512)`` for source nets and ``(32, 128)`` for the Bayesian MNIST net.
        in_channels: input channels (1 for grey images).
        num_classes: outputs of the final Linear layer.
        image_size: input height and width (28 for MNIST / notMNIST).
        conv: factory with ``nn.Conv2d``'s signature ``(in, out, kernel_size)`` that makes the
            conv layers; ``nn.Conv2d`` for ordinary nets, a Bayesian conv for Bayesian ones.
        negative_slope: slope of the LeakyReLU.
        batch_norm: a BatchNorm2d after each conv, before the activation (the random feature
            extraction experiment trains only these and the classifier).
    """

    def __init__(
        self,
        hidden: tuple[int, int] = (32, 128),
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        conv: Callable[..., nn.Module] = nn.Conv2d,
        negative_slope: float = 0.01,
        batch_norm: bool = False,
    ):
        super().__init__()
        h1, h2 = hidden
        self.hidden = (h1, h2)
        self.negative_slope = negative_slope
        self.conv1 = conv(in_channels, h1, 7)
        self.conv2 = conv(h1, h2, 5)
        self.bn1 = nn.BatchNorm2d(h1) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(h2) if batch_norm else nn.Identity()
        side = ((image_size - 6) // 2 - 4) // 2  # 28 -> 22 -> 11 -> 7 -> 3
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for FConv (needs >= 18)")
        self.fc = nn.Linear(h2 * side * side, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal conv kernels and zero conv biases (the reference's default init)."""
        for m in (self.conv1, self.conv2):
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.leaky_relu(self.bn1(self.conv1(x)), self.negative_slope), 2)
        x = F.max_pool2d(F.leaky_relu(self.bn2(self.conv2(x)), self.negative_slope), 2)
        return x.flatten(1)  # (B, h2 * 3 * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The model's ``nn.Conv2d`` layers by qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
