"""A small VGG-style network of 3x3 convolutions, the building block of modern CNNs.

Two blocks of two 3x3 convs (padding 1, so a block keeps the image size), each conv followed by
LeakyReLU(0.01) (and BatchNorm before it with ``batch_norm``), each block by a 2x2 max-pool:
conv1 (C -> h1), conv2 (h1 -> h1), pool, conv3 (h1 -> h2), conv4 (h2 -> h2), pool, flatten
(h2 * (s/4)^2: 7 x 7 for 28x28 inputs), Linear -> classes.

Why this family: stacks of 3x3 convs between poolings are what VGG, ResNet and most CNNs since
are made of, and two blocks are the smallest stack with the two kinds of 3x3 layer a kernel
prior has to serve: the first conv, whose kernels look at pixels, and the deeper ones, whose
in-channel slices look at feature maps. At widths 32 / 64 a net trains on this CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["VGGNet"]


class VGGNet(nn.Module):
    """Two VGG blocks of 3x3 convs and a linear classifier.

    Args:
        hidden: output channels of the two blocks, ``(h1, h2)`` (conv1, conv2: h1; conv3,
            conv4: h2).
        in_channels: input channels.
        num_classes: outputs of the final Linear layer.
        image_size: input height and width (at least 4; 28 for MNIST-like images).
        conv: factory with ``nn.Conv2d``'s signature; called as ``conv(in, out, 3, padding=1)``.
        negative_slope: slope of the LeakyReLU.
        batch_norm: a BatchNorm2d after each conv, before the activation.
    """

    def __init__(
        self,
        hidden: tuple[int, int] = (32, 64),
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
        side = image_size // 2 // 2  # 28 -> 14 -> 7
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for VGGNet (needs >= 4)")
        widths = [(in_channels, h1), (h1, h1), (h1, h2), (h2, h2)]
        for i, (c_in, c_out) in enumerate(widths, start=1):
            setattr(self, f"conv{i}", conv(c_in, c_out, 3, padding=1))
            setattr(self, f"bn{i}", nn.BatchNorm2d(c_out) if batch_norm else nn.Identity())
        self.fc = nn.Linear(h2 * side * side, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal conv kernels and zero conv biases, like FConv's."""
        for m in (self.conv1, self.conv2, self.conv3, self.conv4):
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        conv, bn = getattr(self, f"conv{i}"), getattr(self, f"bn{i}")
        return F.leaky_relu(bn(conv(x)), self.negative_slope)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self._layer(2, self._layer(1, x)), 2)
        x = F.max_pool2d(self._layer(4, self._layer(3, x)), 2)
        return x.flatten(1)  # (B, h2 * 7 * 7) for 28x28 inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
