"""CIFARNet of the paper (32x32 colour images) and its Bayesian variant.

CIFARNet (widths ``(h1, h2, h3)``, the paper's ``(128k, 256k, 256k)``): conv 7x7 (C -> h1), BN,
LeakyReLU, max-pool 2, conv 5x5 (h1 -> h2), BN, LeakyReLU, conv 5x5 (h2 -> h3), BN, LeakyReLU,
conv 5x5 (h3 -> 512), BN, LeakyReLU, flatten (512), Linear 512 -> 512, BatchNorm1d, LeakyReLU,
Linear -> classes. Source nets, random feature extraction and convergence use it.

The Bayesian variant (as in the reference) drops BatchNorm and conv4: conv1, LeakyReLU, max-pool
2, conv2, LeakyReLU, conv3, LeakyReLU, flatten (h3 * 5 * 5), Linear -> 512, LeakyReLU, Linear ->
classes; its convs are the layers a prior applies to.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from dwp.config import cifarnet_hidden

__all__ = ["CIFARNet", "cifarnet_hidden"]

FC_WIDTH = 512


class CIFARNet(nn.Module):
    """CIFARNet with configurable widths and convolution layer kind.

    Args:
        hidden: output channels of conv1..conv3, ``(h1, h2, h3)``; see :func:`cifarnet_hidden`.
        in_channels: input channels (3 for CIFAR).
        num_classes: outputs of the final Linear layer.
        image_size: input height and width (32 for CIFAR).
        conv: factory with ``nn.Conv2d``'s signature ``(in, out, kernel_size)`` for the convs.
        negative_slope: slope of the LeakyReLU.
        batch_norm: the full CIFARNet (BatchNorm, conv4) when True; the Bayesian variant
            (no BatchNorm, no conv4, a wider classifier input) when False.
    """

    def __init__(
        self,
        hidden: tuple[int, int, int] = (128, 256, 256),
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        conv: Callable[..., nn.Module] = nn.Conv2d,
        negative_slope: float = 0.01,
        batch_norm: bool = True,
    ):
        super().__init__()
        h1, h2, h3 = hidden
        self.hidden = (h1, h2, h3)
        self.negative_slope = negative_slope
        self.batch_norm = batch_norm
        side = (image_size - 6) // 2 - 8  # 32 -> 26 -> 13 -> 9 -> 5
        if side < (5 if batch_norm else 1):
            need = 32 if batch_norm else 24
            raise ValueError(f"image_size {image_size} is too small for CIFARNet (needs >= {need})")
        self.conv1 = conv(in_channels, h1, 7)
        self.conv2 = conv(h1, h2, 5)
        self.conv3 = conv(h2, h3, 5)
        norm = nn.BatchNorm2d if batch_norm else (lambda _: nn.Identity())
        self.bn1, self.bn2, self.bn3 = norm(h1), norm(h2), norm(h3)
        if batch_norm:
            self.conv4 = conv(h3, FC_WIDTH, 5)
            self.bn4 = nn.BatchNorm2d(FC_WIDTH)
            flat = FC_WIDTH * (side - 4) ** 2
        else:
            flat = h3 * side * side
        self.fc1 = nn.Linear(flat, FC_WIDTH)
        self.bn_fc = nn.BatchNorm1d(FC_WIDTH) if batch_norm else nn.Identity()
        self.fc = nn.Linear(FC_WIDTH, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal conv and linear weights, zero biases."""
        for m in self.modules():
            if type(m) in (nn.Conv2d, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self._act(self.bn1(self.conv1(x))), 2)
        x = self._act(self.bn2(self.conv2(x)))
        x = self._act(self.bn3(self.conv3(x)))
        if self.batch_norm:
            x = self._act(self.bn4(self.conv4(x)))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self._act(self.bn_fc(self.fc1(self.features(x)))))
