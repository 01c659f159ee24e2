"""Priors over the weights of Bayesian layers, each giving KL(q || p) for a layer.

* :class:`NormalPrior`: N(0, std^2) per weight; closed-form KL.
* :class:`LogUniformPrior`: the log-uniform prior of sparse variational dropout, with the
  approximation of Kingma et al. (2015) / Molchanov et al. (2017) for the posterior
  N(mu, alpha mu^2): ``KL ~= sum(-0.5 log alpha - c1 alpha - c2 alpha^2 - c3 alpha^3)``.
* :class:`DeepWeightPrior`: the implicit prior ``p(w) = int p(w | z) p(z) dz`` of a kernel VAE
  over every (out, in) kernel slice of a conv layer, with the auxiliary bound of the paper
  (Atanov et al. 2019, eq. 7-8):

      KL(q(W) || p(W)) <= sum over kernels of
          E_q(w) [ log q(w) - E_r(z|w) log p(w | z) + KL(r(z | w) || p(z)) ],

  where r is the VAE's encoder. The entropy part is closed form; the rest is estimated with
  ``samples`` reparameterised draws of w and of z per kernel.

  With ``kernel_batch=B`` (the fast mode) only B kernels of a layer go through the VAE each step
  (a block of a random permutation, cycled), with the exact mode's estimate and gradient. Every
  other kernel uses a second-order model of its estimate around the point (mu0, var0) it was
  last computed at, ``v0 + g_mu.(mu - mu0) + g_var.(var - var0) - 0.5 sum (mu - mu0)^2 / x_var``,
  where x_var is the decoder's variance there: the curvature of log p(w | z) in w, the stiff
  direction that a plain stale gradient would overshoot. Every kernel is at most
  ``ceil(M/B) - 1`` steps old, and the VAE's cost falls by M/B.

  With ``estimator="subsample"`` the B kernels are drawn afresh each step and their sum is
  scaled by M/B: an unbiased estimate of the exact bound (and of its gradient) at the same cost,
  with no memory of the other kernels, each of which feels the prior in a B/M share of the steps
  (M/B times as hard).

Priors are modules: ``.to(device)`` moves them, ``state_dict`` saves them (with the fast mode's
cache); each returns its KL as a tensor and never calls ``backward`` or ``item``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import torch
from torch import nn

from dwp.errors import DWPError
from dwp.nn.gaussian import gaussian_entropy, gaussian_log_prob, kl_std_normal

__all__ = [
    "PRIOR_TYPES",
    "DeepWeightPrior",
    "LogUniformPrior",
    "NormalPrior",
    "WeightPrior",
    "kernel_view",
    "prior_from_spec",
    "register_prior",
]

_CACHE = (
    "cache_value",
    "cache_mu",
    "cache_var",
    "cache_grad_mu",
    "cache_grad_var",
    "cache_precision",
    "cache_order",
)  # the fast mode's buffers


class WeightPrior(nn.Module):
    """Base class: ``kl(layer)`` and ``check_layer(layer, name)``.

    ``posterior`` names the posterior family the prior is meant for (``bayesianize`` uses it
    as the default)."""

    posterior: str = "gaussian"

    def check_layer(self, layer: nn.Module, name: str = "layer") -> None:
        """Raise :class:`DWPError` if this prior cannot be the prior of ``layer``."""

    def kl(self, layer: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def for_layer(self) -> WeightPrior:
        """The instance a new layer gets: ``self`` for a stateless prior; a prior with per-layer
        state returns a copy that shares only what is frozen (``bayesianize`` calls this, so one
        instance given for several layers never shares a layer's state)."""
        return self

    def describe(self) -> str:
        """One line naming the prior (the tables of ``bayesianize`` and ``dwp bnn train``)."""
        return type(self).__name__

    def spec(self) -> dict:
        """What rebuilds this prior (:func:`prior_from_spec`): a JSON-able dict. A saved model
        holds it instead of the prior's weights (:func:`dwp.nn.save_bayesian`)."""
        raise DWPError(
            f"{type(self).__name__} cannot be referenced from a saved model: give it a "
            "spec() (and register it with dwp.priors.register_prior)"
        )


class NormalPrior(WeightPrior):
    """N(0, std^2) for every weight: ``KL = sum 0.5 (var/s^2 + mu^2/s^2 - 1 - log(var/s^2))``."""

    def __init__(self, std: float = 1.0):
        super().__init__()
        if not std > 0:
            raise DWPError(f"the normal prior's std must be positive, got {std}")
        self.std = float(std)

    def kl(self, layer: nn.Module) -> torch.Tensor:
        mu, var, log_var = layer.posterior()
        s2 = self.std**2
        return 0.5 * (var / s2 + mu * mu / s2 - 1.0 - log_var + math.log(s2)).sum()

    def extra_repr(self) -> str:
        return f"std={self.std:g}"

    def describe(self) -> str:
        return f"normal N(0, {self.std:g}^2)"

    def spec(self) -> dict:
        return {"type": "normal", "std": self.std}


# Kingma, Salimans & Welling (2015), eq. 13 (as used by the paper's reference implementation).
_C1, _C2, _C3 = 1.16145124, -1.50204118, 0.58629921


class LogUniformPrior(WeightPrior):
    """The log-uniform prior p(|w|) ~ 1/|w| for the posterior N(mu, alpha mu^2), alpha < 1.

    ``KL ~= sum(-0.5 log alpha - c1 alpha - c2 alpha^2 - c3 alpha^3)`` (up to a constant),
    c1 = 1.16145124, c2 = -1.50204118, c3 = 0.58629921. Needs a log-uniform layer
    (:class:`~dwp.nn.LogUniformConv2d`), whose ``log_alpha()`` it reads.
    """

    posterior = "log-uniform"

    def check_layer(self, layer: nn.Module, name: str = "layer") -> None:
        if hasattr(layer, "posterior") and not hasattr(layer, "log_alpha"):  # a Bayesian layer
            raise DWPError(
                f"the log-uniform prior needs a log-uniform posterior N(mu, alpha mu^2); {name} "
                f"is a {type(layer).__name__} (use bayesianize(..., posterior='log-uniform'))"
            )

    def kl(self, layer: nn.Module) -> torch.Tensor:
        if not hasattr(layer, "log_alpha"):
            raise DWPError(
                "the log-uniform prior needs a log-uniform posterior N(mu, alpha mu^2); got a "
                f"{type(layer).__name__} (use bayesianize(..., posterior='log-uniform'))"
            )
        log_alpha = layer.log_alpha()
        alpha = log_alpha.exp()
        return (-0.5 * log_alpha - alpha * (_C1 + alpha * (_C2 + alpha * _C3))).sum()

    def describe(self) -> str:
        return "log-uniform"

    def spec(self) -> dict:
        return {"type": "log-uniform"}


def kernel_view(weight: torch.Tensor) -> torch.Tensor:
    """Every (out, in) kernel slice of a conv weight as a batch: (out*in, 1, kh, kw)."""
    return weight.reshape(-1, 1, *weight.shape[-2:])  # (out*in, 1, k, k)


class DeepWeightPrior(WeightPrior):
    """The Deep Weight Prior of a conv layer: a kernel VAE's implicit distribution over kernels.

    Args:
        vae: a kernel VAE (:class:`~dwp.priors.KernelVAE`, or any module with ``kernel_size``,
            ``encode(w) -> (mu, var)``, ``decode(z) -> (mu, var)``, and ``encoder`` /
            ``decoder`` submodules). Its decoder p(w | z) is the prior and is always frozen.
        samples: draws of w ~ q and z ~ r(z | w) per kernel and step (the paper's 1).
        train_encoder: also fit the encoder r(z | w) (it only tightens the bound); frozen by
            default, as in the paper's experiments.
        kernel_batch: kernels through the VAE per call (the others follow a second-order model
            of their last estimate; see the module docstring); None: all of them, the paper's
            exact mode.
            Needs a frozen encoder, and one prior per layer (the cache belongs to one layer).
        estimator: what stands in for the kernels left out of a step with ``kernel_batch``:
            ``cache`` (their second-order model; the default) or ``subsample`` (none: the B
            fresh kernels' sum times M/B, unbiased). See the module docstring.
    """

    def __init__(
        self, vae: nn.Module, samples: int = 1, train_encoder: bool = False,
        kernel_batch: int | None = None, estimator: str = "cache",
    ):  # fmt: skip
        super().__init__()
        if estimator not in ("cache", "subsample"):
            raise DWPError(f"estimator must be cache or subsample, got {estimator!r}")
        if samples < 1:
            raise DWPError(f"samples must be >= 1, got {samples}")
        if kernel_batch is not None and kernel_batch < 1:
            raise DWPError(f"kernel_batch must be >= 1 or None, got {kernel_batch}")
        if kernel_batch is not None and train_encoder:
            raise DWPError("kernel_batch needs a frozen encoder (train_encoder=False)")
        self.vae = vae
        self.samples = int(samples)
        self.train_encoder = bool(train_encoder)
        self.kernel_batch = None if kernel_batch is None else int(kernel_batch)
        self.estimator = estimator
        # The kernel-batch cache (empty until the first call; saved with the state_dict).
        for name in _CACHE:
            self.register_buffer(name, torch.zeros(0), persistent=True)
        self.register_buffer("cache_pos", torch.zeros((), dtype=torch.long))
        self.generator: torch.Generator | None = None  # noise source (None: global RNG)
        # the prior's name or directory (for messages and saved models), set by from_dir
        self.source: str | None = None
        # the factor c this prior was moved by from its source (scaled): p_c(w) = p(w/c)/c^(k*k)
        self.scale_factor = 1.0
        self._sha256: str | None = None
        self._loading_prefix = ""
        for p in vae.parameters():
            p.requires_grad_(False)
        if train_encoder:
            for p in vae.encoder.parameters():
                p.requires_grad_(True)
        self._register_state_dict_hook(_drop_frozen_vae)
        self.register_load_state_dict_post_hook(_allow_missing_vae)

    @classmethod
    def from_dir(
        cls, path: str | Path, samples: int = 1, train_encoder: bool = False,
        map_location: str | torch.device | None = None, kernel_batch: int | None = None,
        estimator: str = "cache",
    ) -> DeepWeightPrior:  # fmt: skip
        """Load the prior of a prior directory (``dwp prior train`` or ``dwp prior import``)."""
        from dwp.data.shipped import resolve_prior_dir, source_name
        from dwp.priors.store import load_prior

        vae, _ = load_prior(path, map_location=map_location)
        prior = cls(vae, samples=samples, train_encoder=train_encoder, kernel_batch=kernel_batch,
                    estimator=estimator)  # fmt: skip
        prior.source = source_name(resolve_prior_dir(path))
        return prior

    @classmethod
    def pretrained(cls, name: str, **kwargs) -> DeepWeightPrior:
        """A prior shipped with dwp, by name (``dwp prior list``: ``letters-fconv/conv1`` is the
        7x7 prior, ``letters-fconv/conv2`` the 5x5 one); ``kwargs`` as :meth:`from_dir`'s."""
        from dwp.data.shipped import shipped_priors

        if name not in shipped_priors():
            raise DWPError(
                f"no shipped prior {name!r}; shipped: {', '.join(shipped_priors()) or 'none'} "
                "(DeepWeightPrior.from_dir loads a directory)"
            )
        return cls.from_dir(name, **kwargs)

    def for_layer(self) -> DeepWeightPrior:
        """A prior for one more layer: the same (frozen) VAE, settings and source, its own
        kernel-batch cache."""
        twin = type(self)(self.vae, samples=self.samples, train_encoder=self.train_encoder,
                          kernel_batch=self.kernel_batch, estimator=self.estimator)  # fmt: skip
        twin.source, twin._sha256, twin.generator = self.source, self._sha256, self.generator
        twin.scale_factor = self.scale_factor
        return twin.to(self.cache_pos.device)

    def scaled(self, factor: float) -> DeepWeightPrior:
        """The same prior over kernels scaled by ``factor``: ``p_c(w) = p(w / c) / c^(k*k)``,
        exactly (a copy of the VAE whose ``scale`` is multiplied by c; this one is untouched).
        Kernel-scale rules (:func:`dwp.priors.data_scales`) move priors with it."""
        if not (factor > 0 and math.isfinite(factor)):
            raise DWPError(f"the scale factor must be positive and finite, got {factor}")
        vae = copy.deepcopy(self.vae)
        vae.config = dataclasses.replace(vae.config, scale=vae.config.scale * factor)
        twin = type(self)(vae, samples=self.samples, train_encoder=self.train_encoder,
                          kernel_batch=self.kernel_batch, estimator=self.estimator)  # fmt: skip
        twin.source, twin.generator = self.source, self.generator
        twin.scale_factor = self.scale_factor * factor
        return twin.to(self.cache_pos.device)

    @property
    def sha256(self) -> str:
        """Content hash of the prior itself: the decoder's weights (as float64, so a copy at
        another precision or on another device hashes the same) and the VAE's config (kernel
        size, latent size, scale), not the encoder, which only tightens the bound."""
        if self._sha256 is None:
            self._sha256 = _decoder_hash(self.vae)
        return self._sha256

    def describe(self) -> str:
        k = self.kernel_size
        name = self.source or "in-memory VAE"
        fast = f", kernel batch {self.kernel_batch}" if self.kernel_batch else ""
        fast += ", subsampled" if self.kernel_batch and self.estimator == "subsample" else ""
        moved = f", scaled x{self.scale_factor:.4g}" if self.scale_factor != 1.0 else ""
        return f"deep weight prior {name} ({k}x{k}, z {self.vae.z_dim}{moved}{fast})"

    def spec(self) -> dict:
        if self.source is None:
            raise DWPError(
                "this deep weight prior was built from an in-memory VAE, which a saved model "
                "cannot reference: save it with dwp.priors.save_prior and use "
                "DeepWeightPrior.from_dir"
            )
        return {"type": "dwp", "source": self.source, "sha256": self.sha256,
                "samples": self.samples, "train_encoder": self.train_encoder,
                "kernel_batch": self.kernel_batch, "scale": self.scale_factor,
                "estimator": self.estimator}  # fmt: skip

    def get_extra_state(self) -> dict:
        return {"source": self.source, "sha256": self.sha256}

    def set_extra_state(self, state) -> None:  # checked in _load_from_state_dict
        pass

    @property
    def kernel_size(self) -> int:
        return int(self.vae.kernel_size)

    def check_layer(self, layer: nn.Module, name: str = "layer") -> None:
        shape = tuple(layer.weight.shape)
        k = self.kernel_size
        if len(shape) != 4 or shape[-2:] != (k, k):
            got = f"{shape[-2]}x{shape[-1]} kernels" if len(shape) == 4 else f"weight {shape}"
            where = self.source
            raise DWPError(
                f"this deep weight prior{f' ({where})' if where else ''} is for {k}x{k} "
                f"kernels, but {name} has {got}"
            )

    def kl(self, layer: nn.Module) -> torch.Tensor:
        """The auxiliary upper bound on KL(q || p) of the layer (a scalar tensor; see the module
        docstring), estimated with ``samples`` draws."""
        self.check_layer(layer)
        mu, var, log_var = layer.posterior()
        return -gaussian_entropy(log_var) - self.expected_log_prior(mu, var)

    def expected_log_prior(self, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """Estimate of the lower bound ``E_q(w)[E_r log p(w|z) - KL(r(z|w) || p(z))]`` on
        ``E_q log p(w)``, summed over kernels; ``mu``, ``var`` shaped like a conv weight."""
        mu_k, var_k = kernel_view(mu), kernel_view(var)  # (M, 1, k, k)
        batch = self.kernel_batch
        if batch is None or batch >= len(mu_k) or not torch.is_grad_enabled():
            return self._kernel_elbo(mu_k, var_k).sum()
        if self.estimator == "subsample":
            m = len(mu_k)
            idx = torch.randperm(m, generator=self.generator, device=mu_k.device)[:batch]
            return self._kernel_elbo(mu_k[idx], var_k[idx]).sum() * (m / batch)
        return self._cached_elbo(mu_k, var_k, batch)

    def _kernel_elbo(
        self, mu_k: torch.Tensor, var_k: torch.Tensor, curvature: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Per-kernel estimate (M,) of E_q(w)[ELBO(w)], averaged over ``samples`` draws; with
        ``curvature``, also the mean of 1 / x_var (M, 1, k, k), the decoder's precision."""
        s, dev, dt = self.samples, mu_k.device, mu_k.dtype
        eps = torch.randn((s, *mu_k.shape), generator=self.generator, device=dev, dtype=dt)
        w = (mu_k + var_k.sqrt() * eps).reshape(-1, *mu_k.shape[1:])  # (s*M, 1, k, k)
        z_mu, z_var = self.vae.encode(w)
        eps_z = torch.randn(z_mu.shape, generator=self.generator, device=dev, dtype=dt)
        z = z_mu + z_var.sqrt() * eps_z
        x_mu, x_var = self.vae.decode(z)
        elbo = gaussian_log_prob(w, x_mu, x_var) - kl_std_normal(z_mu, z_var)  # (s*M,)
        elbo = elbo.reshape(s, -1).mean(0)
        if not curvature:
            return elbo
        precision = (1.0 / x_var.detach()).expand_as(w).reshape(s, *mu_k.shape).mean(0)
        return elbo, precision

    def _cached_elbo(self, mu_k: torch.Tensor, var_k: torch.Tensor, batch: int) -> torch.Tensor:
        """The fast mode (see the module docstring): ``batch`` kernels recomputed, the others
        from their second-order model around the point they were last computed at."""
        m, dev = len(mu_k), mu_k.device
        if self.cache_value.numel() != m:
            if self.cache_value.numel():
                raise DWPError(
                    f"this deep weight prior's kernel cache holds {self.cache_value.numel()} "
                    f"kernels, not {m}: use one DeepWeightPrior per layer with kernel_batch"
                )
            self.cache_value = torch.zeros(m, device=dev, dtype=mu_k.dtype)
            for name in ("cache_mu", "cache_var", "cache_grad_mu", "cache_grad_var",
                         "cache_precision"):  # fmt: skip
                setattr(self, name, torch.zeros_like(mu_k.detach()))
            idx = None  # the first call fills the whole cache (and equals the exact mode)
        else:
            pos = int(self.cache_pos)
            idx = self.cache_order[pos : pos + batch]
            pos += batch
            if pos >= m:
                self.cache_order = torch.randperm(m, generator=self.generator, device=dev)
                pos = 0
            self.cache_pos.fill_(pos)
        fresh = slice(None) if idx is None else idx
        mu_b = mu_k.detach()[fresh].requires_grad_(True)
        var_b = var_k.detach()[fresh].requires_grad_(True)
        elbo, precision = self._kernel_elbo(mu_b, var_b, curvature=True)
        g_mu, g_var = torch.autograd.grad(elbo.sum(), (mu_b, var_b))
        if idx is None:
            self.cache_order = torch.randperm(m, generator=self.generator, device=dev)
            self.cache_pos.zero_()
        with torch.no_grad():
            for name, new in (("cache_value", elbo), ("cache_mu", mu_b), ("cache_var", var_b),
                              ("cache_grad_mu", g_mu), ("cache_grad_var", g_var),
                              ("cache_precision", precision)):  # fmt: skip
                getattr(self, name)[fresh] = new
        d_mu, d_var = mu_k - self.cache_mu, var_k - self.cache_var
        model = (self.cache_grad_mu * d_mu).sum() + (self.cache_grad_var * d_var).sum()
        model = model - 0.5 * (self.cache_precision * d_mu * d_mu).sum()
        return self.cache_value.sum() + model

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._loading_prefix = prefix
        saved = state_dict.get(prefix + "_extra_state")
        if isinstance(saved, dict) and saved.get("sha256") not in (None, self.sha256):
            layer = prefix.removesuffix(".prior.").removesuffix(".") or "the layer"
            raise DWPError(
                f"{layer}: the saved model was trained under the prior {saved.get('source')} "
                f"(sha256 {str(saved['sha256'])[:12]}), but this one ({self.source or 'in-memory'}"
                f") is sha256 {self.sha256[:12]}: the prior changed since the model was saved"
            )
        # The cache's size is the layer's kernel count, unknown until the first call.
        for name in _CACHE:
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=self.cache_pos.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def clear_cache(self) -> None:
        """Forget the kernel-batch cache (the next call fills it again, as the first did)."""
        for name in _CACHE:
            setattr(self, name, torch.zeros(0, device=self.cache_pos.device))
        self.cache_pos.zero_()

    @torch.no_grad()
    def sample_kernels(
        self, n: int, generator: torch.Generator | None = None, mean: bool = True
    ) -> torch.Tensor:
        """``n`` kernels (n, 1, k, k): decoder means at z ~ N(0, I) (the paper's DWP init), or
        with ``mean=False`` draws w ~ p(w | z) (the prior's own samples)."""
        return self.vae.sample(n, generator=generator, mean=mean)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, samples={self.samples}, " \
               f"train_encoder={self.train_encoder}, kernel_batch={self.kernel_batch}, " \
               f"estimator={self.estimator}"  # fmt: skip


def _decoder_hash(vae: nn.Module) -> str:
    digest = hashlib.sha256()
    config = getattr(vae, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    for key, value in sorted(vae.state_dict().items()):
        if key.startswith("decoder."):
            digest.update(key.encode())
            digest.update(value.detach().cpu().double().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _frozen_key(prior: DeepWeightPrior, key: str) -> bool:
    return key.startswith("vae.") and not (prior.train_encoder and key.startswith("vae.encoder."))


def _drop_frozen_vae(module, state_dict, prefix, local_metadata):
    # a model's state holds the prior's reference (its _extra_state), not the frozen VAE
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if _frozen_key(module, key[len(prefix) :]):
            del state_dict[key]
    return state_dict


def _allow_missing_vae(module, incompatible_keys):
    # the frozen VAE comes from the prior directory; a checkpoint need not hold it (nor the
    # kernel-batch cache, which a saved model leaves out; nor the reference older ones lacked)
    prefix = module._loading_prefix
    keep = []
    for key in incompatible_keys.missing_keys:
        rest = key[len(prefix) :] if key.startswith(prefix) else None
        if rest is None or not (rest.startswith(("vae.", "cache_")) or rest == "_extra_state"):
            keep.append(key)
    incompatible_keys.missing_keys[:] = keep


#: Prior types a saved model can name (``spec()["type"]``) -> a builder ``spec -> prior``.
PRIOR_TYPES: dict = {}


def register_prior(type_name: str, build) -> None:
    """Let saved models reference a prior class of your own: ``build(spec) -> prior`` rebuilds
    an instance from what its ``spec()`` returned (whose ``"type"`` is ``type_name``)."""
    PRIOR_TYPES[type_name] = build


def _build_dwp(spec: dict) -> DeepWeightPrior:
    prior = DeepWeightPrior.from_dir(spec["source"], samples=spec.get("samples", 1),
                                     train_encoder=spec.get("train_encoder", False),
                                     kernel_batch=spec.get("kernel_batch"),
                                     estimator=spec.get("estimator", "cache"))  # fmt: skip
    return rebuilt_as_saved(prior, spec)


def rebuilt_as_saved(prior: WeightPrior, spec: dict) -> WeightPrior:
    """A learned prior loaded from ``spec["source"]``, moved by the spec's ``scale`` and checked
    against its ``sha256``: a saved model's prior as it was when the model was saved."""
    if spec.get("scale", 1.0) != 1.0:
        prior = prior.scaled(float(spec["scale"]))
    want = spec.get("sha256")
    if want is not None and want != prior.sha256:
        raise DWPError(
            f"the prior {spec['source']} changed since the model was saved (sha256 {want[:12]} "
            f"then, {prior.sha256[:12]} now); restore that prior or retrain the model"
        )
    return prior


register_prior("normal", lambda spec: NormalPrior(spec.get("std", 1.0)))
register_prior("log-uniform", lambda spec: LogUniformPrior())
register_prior("dwp", _build_dwp)


def prior_from_spec(spec: dict) -> WeightPrior:
    """The prior a ``spec()`` dict describes (its ``"type"`` one of :data:`PRIOR_TYPES`)."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in PRIOR_TYPES:
        raise DWPError(
            f"unknown prior type {kind!r} in a saved model; known: {', '.join(PRIOR_TYPES)} "
            "(dwp.priors.register_prior adds one)"
        )
    return PRIOR_TYPES[kind](spec)
