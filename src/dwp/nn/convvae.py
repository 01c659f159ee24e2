"""A convolutional VAE on 28x28 grey images whose encoder convs are FConv's (7x7, then 5x5), so
the MNIST kernel priors initialise them: the paper's VAE-on-MNIST convergence experiment.

Encoder: conv 7x7 (1 -> h1), LeakyReLU, max-pool 2, conv 5x5 (h1 -> h2), LeakyReLU, max-pool 2,
flatten (h2 * 3 * 3), Linear -> mean and log-variance of z. Decoder (h1 channels throughout, to
stay cheap): Linear z -> h1 * 7 * 7, LeakyReLU, transposed conv 5x5 (h1 -> h1; 7 -> 11),
LeakyReLU, nearest upsampling x2 (22), transposed conv 7x7 (h1 -> 1; 22 -> 28): Bernoulli logits
per pixel. Standard normal p(z).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dwp.nn.gaussian import kl_std_normal

__all__ = ["ConvVAE"]


class ConvVAE(nn.Module):
    """Args: ``hidden``: the encoder's conv widths ``(h1, h2)`` (the decoder uses h1);
    ``z_dim``: latent size; ``negative_slope``: of the LeakyReLUs. Inputs are (B, 1, 28, 28)
    in [0, 1]."""

    def __init__(self, hidden: tuple[int, int] = (32, 128), z_dim: int = 16,
                 negative_slope: float = 0.01):  # fmt: skip
        super().__init__()
        h1, h2 = hidden
        self.hidden, self.z_dim, self.negative_slope = (h1, h2), z_dim, negative_slope
        self.conv1 = nn.Conv2d(1, h1, 7)
        self.conv2 = nn.Conv2d(h1, h2, 5)
        self.enc = nn.Linear(h2 * 3 * 3, 2 * z_dim)
        self.dec = nn.Linear(z_dim, h1 * 7 * 7)
        self.deconv2 = nn.ConvTranspose2d(h1, h1, 5)
        self.deconv1 = nn.ConvTranspose2d(h1, 1, 7)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x), each (B, z_dim)."""
        h = F.max_pool2d(self._act(self.conv1(x)), 2)
        h = F.max_pool2d(self._act(self.conv2(h)), 2)
        mu, logvar = self.enc(h.flatten(1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of p(x | z), (B, 1, 28, 28)."""
        h = self._act(self.dec(z)).view(len(z), self.hidden[0], 7, 7)
        h = F.interpolate(self._act(self.deconv2(h)), scale_factor=2, mode="nearest")
        return self.deconv1(h)

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-sample ELBO per image, (B,), in nats: E_q log p(x|z) - KL(q(z|x) || N(0, I)).
        Grey levels in [0, 1] are the Bernoulli targets. ``generator`` draws the noise."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * (0.5 * logvar).exp()
        logits = self.decode(z)
        rec = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = kl_std_normal(mu, logvar.exp(), logvar)
        return rec - kl
