"""Kernel VAEs: the implicit prior p(w) = ∫ p(w | z) p(z) dz over k x k kernels (paper, Sec. 3).

Encoder r(z | w) = N(mu(w), diag var(w)) and decoder p(w | z) = N(mu(z), diag var(z)) per pixel,
variances through softplus, latent prior p(z) = N(0, I); ELU activations after every hidden conv.
The 7x7 and 5x5 architectures are the paper's exactly (DESIGN.md); the 3x3 one follows the
reference implementation's 3x3 layout with a learned variance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dwp.config import VAE_DEFAULTS
from dwp.errors import DWPError
from dwp.nn.gaussian import LOG_2PI, gaussian_log_prob, kl_std_normal, std_normal_log_prob

__all__ = ["ARCHITECTURES", "KernelVAE", "VAEConfig", "default_vae_config"]

_VAR_FLOOR = 1e-12  # only guards against softplus underflowing to exactly 0


# One line per layer: (kind, in, out, padding) with widths in units of h ("h", "2h") or "z" / 1.
# kind: "c" conv 3x3, "t" transposed conv 3x3, "p" conv 1x1.
ARCHITECTURES: dict[int, dict[str, list[tuple[str, str, str, int]]]] = {
    7: {  # 7 -> 5 -> 3 -> 1 ; 1 -> 3 -> 5 -> 7
        "encoder": [("c", "1", "h", 0), ("c", "h", "2h", 0), ("c", "2h", "2h", 0)],
        "decoder": [("t", "z", "2h", 0), ("t", "2h", "2h", 0), ("t", "2h", "h", 0)],
    },
    5: {  # 5 -> 5 -> 5 -> 3 -> 1 ; 1 -> 1 -> 3 -> 5 -> 5
        "encoder": [("c", "1", "h", 1), ("c", "h", "h", 1), ("c", "h", "2h", 0),
                    ("c", "2h", "2h", 0)],
        "decoder": [("p", "z", "2h", 0), ("t", "2h", "2h", 0), ("t", "2h", "2h", 0),
                    ("p", "2h", "h", 0)],
    },
    3: {  # 3 -> 3 -> 3 -> 1 ; 1 -> 1 -> 3 -> 3
        "encoder": [("c", "1", "h", 1), ("c", "h", "h", 1), ("c", "h", "2h", 0)],
        "decoder": [("p", "z", "2h", 0), ("t", "2h", "h", 0), ("p", "h", "h", 0)],
    },
}  # fmt: skip

#: The paper's latent and hidden sizes per kernel size.


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a kernel VAE.

    ``scale`` is a fixed kernel scale s: the networks model w / s, and the decoder's mean and
    variance are mapped back (times s and s^2), so every density is over w itself:
    log p(w) = log p_net(w / s) - k^2 log s, exactly. With s near the kernels' RMS the networks
    see unit-scale inputs whatever the layer's kernel scale, which makes training far less
    sensitive to it. s = 1 is the paper's (and the reference implementation's) VAE.
    """

    kernel_size: int
    z_dim: int
    hidden: int
    scale: float = 1.0

    def __post_init__(self):
        if self.kernel_size not in ARCHITECTURES:
            sizes = ", ".join(f"{k}x{k}" for k in sorted(ARCHITECTURES))
            raise DWPError(
                f"no kernel VAE architecture for {self.kernel_size}x{self.kernel_size} kernels; "
                f"available: {sizes}"
            )
        if self.z_dim < 1 or self.hidden < 1:
            raise DWPError(f"z_dim and hidden must be >= 1, got {self.z_dim}, {self.hidden}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise DWPError(f"kernel scale must be a positive number, got {self.scale}")

    def to_dict(self) -> dict:
        return asdict(self)


def default_vae_config(
    kernel_size: int, z_dim: int | None = None, hidden: int | None = None, scale: float = 1.0
) -> VAEConfig:
    """The paper's configuration for ``kernel_size`` (7: z 2, h 32; 5: z 4, h 64; 3: z 2, h 32),
    with ``z_dim`` / ``hidden`` overriding it when given."""
    if kernel_size not in VAE_DEFAULTS:
        VAEConfig(kernel_size, 1, 1)  # raises the error naming the available sizes
    z0, h0 = VAE_DEFAULTS[kernel_size]
    z_dim, hidden = z0 if z_dim is None else z_dim, h0 if hidden is None else hidden
    return VAEConfig(kernel_size, z_dim, hidden, scale)


def _build(layers, z_dim: int, hidden: int) -> tuple[nn.Sequential, int]:
    width = {"1": 1, "z": z_dim, "h": hidden, "2h": 2 * hidden}
    modules: list[nn.Module] = []
    for kind, cin, cout, pad in layers:
        if kind == "c":
            modules.append(nn.Conv2d(width[cin], width[cout], 3, padding=pad))
        elif kind == "t":
            modules.append(nn.ConvTranspose2d(width[cin], width[cout], 3, padding=pad))
        else:
            modules.append(nn.Conv2d(width[cin], width[cout], 1))
        modules.append(nn.ELU())
    return nn.Sequential(*modules), width[layers[-1][2]]


class _Gaussian(nn.Module):
    """A conv body followed by 1x1 heads for the mean and the softplus variance."""

    def __init__(self, body: nn.Sequential, width: int, out: int):
        super().__init__()
        self.body = body
        self.mu = nn.Conv2d(width, out, 1)
        self.var = nn.Conv2d(width, out, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), F.softplus(self.var(h)).clamp_min(_VAR_FLOOR)


class KernelVAE(nn.Module):
    """VAE over single-channel k x k kernels; inputs and outputs are (N, 1, k, k)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        arch = ARCHITECTURES[config.kernel_size]
        enc_body, enc_width = _build(arch["encoder"], config.z_dim, config.hidden)
        dec_body, dec_width = _build(arch["decoder"], config.z_dim, config.hidden)
        self.encoder = _Gaussian(enc_body, enc_width, config.z_dim)
        self.decoder = _Gaussian(dec_body, dec_width, 1)

    @property
    def kernel_size(self) -> int:
        return self.config.kernel_size

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    def _check(self, w: torch.Tensor) -> None:
        k = self.kernel_size
        if w.ndim != 4 or tuple(w.shape[1:]) != (1, k, k):
            raise DWPError(
                f"this prior is for {k}x{k} kernels shaped (N, 1, {k}, {k}); got {tuple(w.shape)}"
            )

    def encode(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of r(z | w), each (N, z_dim, 1, 1)."""
        self._check(w)
        return self.encoder(w / self.config.scale)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of p(w | z), each (N, 1, k, k); ``z`` is (N, z_dim[, 1, 1])."""
        if z.ndim == 2:
            z = z[:, :, None, None]
        mu, var = self.decoder(z)
        s = self.config.scale
        return mu * s, var * (s * s)

    def elbo(
        self, w: torch.Tensor, generator: torch.Generator | None = None, samples: int = 1
    ) -> torch.Tensor:
        """Per-kernel ELBO, ``E_r(z|w)[log p(w | z)] - KL(r(z | w) || N(0, I))``, shape (N,).

        The expectation is estimated with ``samples`` reparameterised draws of z (one, as in
        training, by default); the KL is in closed form.
        """
        mu, var = self.encode(w)
        kl = kl_std_normal(mu, var)
        ll = torch.zeros(len(w), device=w.device, dtype=w.dtype)
        for _ in range(samples):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            x_mu, x_var = self.decode(mu + var.sqrt() * eps)
            ll = ll + gaussian_log_prob(w, x_mu, x_var)
        return ll / samples - kl

    def iw_log_likelihood(
        self, w: torch.Tensor, samples: int = 1000, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Importance-weighted estimate of log p(w) per kernel with r(z | w) as proposal
        (Burda et al. 2016): ``log mean_s p(w | z_s) p(z_s) / r(z_s | w)``; shape (N,).
        A lower bound that tightens as ``samples`` grows; at 1 sample it is the ELBO."""
        mu, var = self.encode(w)
        std = var.sqrt()
        logw = []
        for _ in range(samples):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + std * eps
            x_mu, x_var = self.decode(z)
            log_rz = (-0.5 * (eps**2 + var.log() + LOG_2PI)).flatten(1).sum(1)  # log r(z | w)
            logw.append(gaussian_log_prob(w, x_mu, x_var) + std_normal_log_prob(z) - log_rz)
        return torch.logsumexp(torch.stack(logw), 0) - math.log(samples)

    @torch.no_grad()
    def latent_grid(
        self, size: int = 12, lo: float = 0.03, hi: float = 0.97, dims: tuple[int, int] = (0, 1)
    ) -> torch.Tensor:
        """Decoder means on a ``size`` x ``size`` grid of two latent coordinates (the paper's
        latent figure): ``z[dims[0]]`` and ``z[dims[1]]`` run over the standard-normal quantiles
        ``lo``..``hi``, the first along a row, the second down the rows from largest to smallest;
        any other coordinates stay at 0 (a slice through the prior's mean). Shape
        (size * size, 1, k, k)."""
        i, j = dims
        if self.z_dim < 2 or not (0 <= i < self.z_dim and 0 <= j < self.z_dim) or i == j:
            raise DWPError(
                f"a latent grid needs two distinct latent coordinates of 0..{self.z_dim - 1}, "
                f"got {dims}"
            )
        p = next(self.parameters())
        probs = torch.linspace(lo, hi, size, dtype=torch.float64)
        axis = (torch.special.ndtri(probs)).to(p.dtype)
        z2, z1 = torch.meshgrid(axis.flip(0), axis, indexing="ij")
        z = torch.zeros(size * size, self.z_dim, dtype=p.dtype)
        z[:, i], z[:, j] = z1.reshape(-1), z2.reshape(-1)
        return self.decode(z.to(p.device))[0]

    @torch.no_grad()
    def busiest_dims(self, kernels: torch.Tensor, n: int = 2) -> tuple[int, ...]:
        """The ``n`` latent coordinates whose encoder means vary most over ``kernels``: the
        ones the VAE uses most (unused ones stay near 0 with r(z | w) close to N(0, 1))."""
        mu, _ = self.encode(kernels.to(next(self.parameters()).device))
        order = mu.flatten(1).var(0).argsort(descending=True)
        return tuple(int(d) for d in order[:n])

    def sample(
        self, n: int, generator: torch.Generator | None = None, mean: bool = True
    ) -> torch.Tensor:
        """``n`` kernels from the prior, (n, 1, k, k): decoder means at z ~ N(0, I) (``mean``),
        or draws from p(w | z)."""
        p = next(self.parameters())
        z = torch.randn(n, self.z_dim, 1, 1, generator=generator, device=p.device, dtype=p.dtype)
        x_mu, x_var = self.decode(z)
        if mean:
            return x_mu
        eps = torch.randn(x_mu.shape, generator=generator, device=p.device, dtype=p.dtype)
        return x_mu + x_var.sqrt() * eps
