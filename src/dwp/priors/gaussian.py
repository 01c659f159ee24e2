"""The Gaussian kernel prior: the control that asks whether the DWP needs its VAE.

One multivariate normal N(m, S) over the k*k values of every (out, in) kernel slice of a conv
layer, with a full (k*k) x (k*k) covariance, fitted by maximum likelihood to the same source
kernels as the kernel VAE (the correlated weight priors of Fortuin et al., ICLR 2022, in
empirical-Bayes form). Against the factorised Gaussian posterior q(w) = N(mu, diag v) of a kernel
its KL is closed form:

    KL(q || p) = 0.5 [ tr(P diag v) + (mu - m)^T P (mu - m) - d + log det S - sum log v ],

with P = S^-1 and d = k*k; no sampling, no bound. Its samples (``sample_kernels``) initialise
nets as the DWP's do.

A prior directory of this family holds ``prior.json`` (format ``dwp-kernel-gaussian``),
``weights.pt`` (``mean`` (d,), ``cov`` (d, d)) and ``config.json`` (what fitted it), like a
kernel VAE's: :func:`fit_gaussian_prior` writes one (``dwp prior train --family gaussian``),
:meth:`GaussianKernelPrior.from_dir` reads it, or fits one in memory to the training kernels a
kernel VAE's directory records (the control of that very prior).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dwp.errors import DWPError
from dwp.nn.gaussian import LOG_2PI
from dwp.priors.weight import WeightPrior, kernel_view, rebuilt_as_saved, register_prior

__all__ = [
    "GAUSSIAN_FORMAT",
    "GaussianKernelPrior",
    "fit_gaussian",
    "fit_gaussian_prior",
    "gaussian_settings",
]

GAUSSIAN_FORMAT = "dwp-kernel-gaussian"
GAUSSIAN_FORMAT_VERSION = 1
#: Added to the covariance's diagonal, relative to its mean variance, so that a covariance
#: estimated from few kernels (or from kernels with a constant pixel) is positive definite.
JITTER = 1e-6


def fit_gaussian(kernels: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum-likelihood mean (d,) and covariance (d, d) of kernels (N, 1, k, k), in float64,
    with :data:`JITTER` times the mean variance added to the diagonal."""
    x = torch.as_tensor(np.asarray(kernels)).double().flatten(1)
    if len(x) < 2:
        raise DWPError(f"a Gaussian kernel prior needs at least 2 kernels, got {len(x)}")
    if not torch.isfinite(x).all():
        raise DWPError("the kernels hold NaN or infinite values")
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / len(x)
    cov = cov + JITTER * float(cov.diagonal().mean().clamp_min(1e-30)) * torch.eye(
        x.shape[1], dtype=x.dtype
    )
    return mean, cov


class GaussianKernelPrior(WeightPrior):
    """N(m, S) over every k x k kernel slice of a conv layer (full covariance; closed-form KL).

    Args:
        mean: (k*k,) or (k, k).
        cov: (k*k, k*k), symmetric positive definite.
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        super().__init__()
        mean = torch.as_tensor(mean).double().flatten()
        cov = torch.as_tensor(cov).double()
        d = len(mean)
        k = math.isqrt(d)
        if k * k != d or cov.shape != (d, d):
            raise DWPError(
                f"a Gaussian kernel prior needs a mean of k*k values and a (k*k, k*k) covariance, "
                f"got {tuple(mean.shape)} and {tuple(cov.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
            raise DWPError("the Gaussian kernel prior's mean or covariance holds NaN or inf")
        chol, info = torch.linalg.cholesky_ex(0.5 * (cov + cov.T))
        if int(info) != 0:
            raise DWPError("the Gaussian kernel prior's covariance is not positive definite")
        precision = torch.cholesky_inverse(chol)
        # float64 (a covariance of small kernels is ill-conditioned); not persistent: a model's
        # state holds the prior's reference (spec), not its weights
        for name, value in (("mean", mean), ("cov", cov), ("chol", chol),
                            ("precision", precision)):  # fmt: skip
            self.register_buffer(name, value, persistent=False)
        self.logdet = float(2 * chol.diagonal().log().sum())
        self.kernel_size = k
        self.source: str | None = None  # the directory or shipped name it came from
        self.scale_factor = 1.0  # the factor it was moved by from its source (scaled)
        self.fitted_to_vae_kernels = False  # from_dir of a kernel VAE's directory
        self._sha256: str | None = None

    @classmethod
    def from_dir(
        cls, path: str | Path, map_location: str | torch.device | None = None
    ) -> GaussianKernelPrior:
        """The prior of a Gaussian prior directory; or, for a kernel VAE's directory, the
        Gaussian fitted to the training kernels that VAE was fitted to (scaled like it)."""
        from dwp.data.shipped import resolve_prior_dir, source_name
        from dwp.priors.store import read_prior_meta

        path = resolve_prior_dir(path)
        meta = read_prior_meta(path)
        if meta.get("format") == GAUSSIAN_FORMAT:
            state = _load_weights(path, meta)
            prior = cls(state["mean"], state["cov"])
        else:
            from dwp.priors.store import training_kernels

            kernels = training_kernels(path)
            if kernels is None:
                raise DWPError(
                    f"{path} holds no Gaussian prior and records no training kernels to fit one "
                    "to (an imported prior?); fit one with `dwp prior train --family gaussian`"
                )
            prior = cls(*fit_gaussian(kernels))
            prior.fitted_to_vae_kernels = True
        prior.source = source_name(path)
        return prior.to(map_location) if map_location is not None else prior

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256(b"gaussian")
            for t in (self.mean, self.cov):
                digest.update(t.detach().cpu().double().contiguous().numpy().tobytes())
            self._sha256 = digest.hexdigest()
        return self._sha256

    def check_layer(self, layer: nn.Module, name: str = "layer") -> None:
        shape = tuple(layer.weight.shape)
        k = self.kernel_size
        if len(shape) != 4 or shape[-2:] != (k, k):
            got = f"{shape[-2]}x{shape[-1]} kernels" if len(shape) == 4 else f"weight {shape}"
            where = f" ({self.source})" if self.source else ""
            raise DWPError(f"this Gaussian kernel prior{where} is for {k}x{k} kernels, but "
                           f"{name} has {got}")  # fmt: skip

    def kl(self, layer: nn.Module) -> torch.Tensor:
        """KL(q || p) of the layer, summed over its kernels, in closed form."""
        self.check_layer(layer)
        mu, var, log_var = layer.posterior()
        return self.kl_kernels(kernel_view(mu).flatten(1), kernel_view(var).flatten(1),
                               kernel_view(log_var).flatten(1)).sum()  # fmt: skip

    def kl_kernels(
        self, mu: torch.Tensor, var: torch.Tensor, log_var: torch.Tensor | None = None
    ) -> torch.Tensor:
        """KL(N(mu, diag var) || N(m, S)) per row of (M, d) tensors: shape (M,), computed in
        the prior's precision (float64) and returned in ``mu``'s dtype."""
        log_var = var.log() if log_var is None else log_var
        p = self.precision
        diff = mu.to(p.dtype) - self.mean
        quad = ((diff @ p) * diff).sum(1)
        trace = var.to(p.dtype) @ p.diagonal()
        d = diff.shape[1]
        kl = 0.5 * (trace + quad - d + self.logdet - log_var.to(p.dtype).sum(1))
        return kl.to(mu.dtype)

    def log_prob(self, kernels: torch.Tensor) -> torch.Tensor:
        """log N(w | m, S) of kernels (N, 1, k, k) or (N, d): shape (N,)."""
        diff = kernels.reshape(len(kernels), -1).to(self.mean) - self.mean
        quad = ((diff @ self.precision) * diff).sum(1)
        return (-0.5 * (quad + self.logdet + diff.shape[1] * LOG_2PI)).to(kernels.dtype)

    @torch.no_grad()
    def sample_kernels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` kernels (n, 1, k, k) drawn from N(m, S)."""
        eps = torch.randn(n, len(self.mean), generator=generator, device=self.mean.device,
                          dtype=self.mean.dtype)  # fmt: skip
        k = self.kernel_size
        return (self.mean + eps @ self.chol.T).reshape(n, 1, k, k).float()

    def scaled(self, factor: float) -> GaussianKernelPrior:
        """The same prior over kernels scaled by ``factor``: N(c m, c^2 S)."""
        if not (factor > 0 and math.isfinite(factor)):
            raise DWPError(f"the scale factor must be positive and finite, got {factor}")
        twin = type(self)(self.mean.double() * factor, self.cov.double() * factor**2)
        twin.source, twin.scale_factor = self.source, self.scale_factor * factor
        twin.fitted_to_vae_kernels = self.fitted_to_vae_kernels
        return twin.to(self.mean.device)

    def describe(self) -> str:
        k = self.kernel_size
        moved = f", scaled x{self.scale_factor:.4g}" if self.scale_factor != 1.0 else ""
        name = self.source or "in memory"
        if self.fitted_to_vae_kernels:
            name = f"fitted to the kernels of {name}"
        return f"Gaussian kernel prior {name} ({k}x{k}, full covariance{moved})"

    def spec(self) -> dict:
        if self.source is None:  # small enough to travel inline
            return {"type": "gaussian", "mean": self.mean.double().tolist(),
                    "cov": self.cov.double().tolist()}  # fmt: skip
        return {"type": "gaussian", "source": self.source, "sha256": self.sha256,
                "scale": self.scale_factor}  # fmt: skip

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, source={self.source}"


def _build(spec: dict) -> GaussianKernelPrior:
    if "source" not in spec:
        return GaussianKernelPrior(torch.tensor(spec["mean"]), torch.tensor(spec["cov"]))
    return rebuilt_as_saved(GaussianKernelPrior.from_dir(spec["source"]), spec)


register_prior("gaussian", _build)


def _load_weights(path: Path, meta: dict) -> dict:
    from dwp.io import load_torch

    if meta.get("format_version") != GAUSSIAN_FORMAT_VERSION:
        raise DWPError(
            f"{path}: Gaussian prior of version {meta.get('format_version')!r}; this dwp reads "
            f"version {GAUSSIAN_FORMAT_VERSION}"
        )
    weights = path / "weights.pt"
    if not weights.is_file():
        raise DWPError(f"prior directory {path} is incomplete: missing weights.pt")
    state = load_torch(weights, "Gaussian prior (mean, cov)")
    if not (isinstance(state, dict) and {"mean", "cov"} <= set(state)):
        raise DWPError(f"{weights}: expected a dict with 'mean' and 'cov'")
    return state


def gaussian_settings(kernels_dir: str | Path, min_norm: float = 0.0) -> dict:
    """What a Gaussian prior directory's ``config.json`` records of the fit that made it."""
    from dwp.data.shipped import resolve_kernel_layer, source_name

    return {"family": "gaussian", "kernels": source_name(resolve_kernel_layer(kernels_dir)),
            "min_norm": float(min_norm)}  # fmt: skip


def fit_gaussian_prior(
    kernels_dir: str | Path, out: str | Path, min_norm: float = 0.0
) -> tuple[GaussianKernelPrior, dict]:
    """Fit a Gaussian kernel prior to ``kernels_dir`` (a layer directory or a shipped layer
    name; ``train.npy``, ``test.npy`` if present), leaving out kernels of norm below
    ``min_norm``, and write the prior directory ``out``. Returns the prior and the metadata of
    ``prior.json``, whose ``metrics`` hold the exact mean log-likelihood per kernel of the train
    and test kernels (comparable with a kernel VAE's ELBO on the same kernels: a VAE whose
    test ELBO is not above this Gaussian's log-likelihood has not earned its network)."""
    from dwp.data.shipped import resolve_kernel_layer, source_name
    from dwp.io import atomic_path, write_json
    from dwp.priors.store import claim_prior_dir, kernel_summary
    from dwp.train.prior import load_kernel_dir

    kernels_dir, out = resolve_kernel_layer(kernels_dir), Path(out)
    settings = gaussian_settings(kernels_dir, min_norm)
    claim_prior_dir(out, settings)
    train_k, test_k = load_kernel_dir(kernels_dir, min_norm)
    prior = GaussianKernelPrior(*fit_gaussian(train_k))
    metrics = {}
    for part, k in (("train", train_k), ("test", test_k)):
        if k is not None:
            ll = prior.log_prob(torch.from_numpy(k)).double()
            metrics[part] = {"log_lik_per_kernel": float(ll.mean()), "n_kernels": len(k)}
    zero = torch.zeros(1, prior.kernel_size**2)
    meta = {
        "format": GAUSSIAN_FORMAT,
        "format_version": GAUSSIAN_FORMAT_VERSION,
        "gaussian": {"kernel_size": prior.kernel_size, "jitter": JITTER},
        "training": {
            "family": "gaussian",
            "kernels": source_name(kernels_dir),
            "min_norm": float(min_norm),
        },
        "kernel_stats": {
            "train": kernel_summary(train_k),
            "test": kernel_summary(test_k) if test_k is not None else None,
        },
        "metrics": metrics,
        "zero_kernel_log_lik": float(prior.log_prob(zero)[0]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "prior.json").unlink(missing_ok=True)
    write_json(out / "config.json", settings)
    with atomic_path(out / "weights.pt") as tmp:
        torch.save({"mean": prior.mean.double().cpu(), "cov": prior.cov.double().cpu()}, tmp)
    write_json(out / "prior.json", meta)  # last: until then the directory is no prior
    prior.source = source_name(out)
    return prior, meta
