"""Bayesian layers: fully factorised Gaussian posteriors over the weights, and ``bayesianize``.

Every Bayesian layer subclasses the ordinary layer it replaces, with the same constructor
arguments and then keyword-only options, so it drops into any model (``nn.Sequential``
included) and ``isinstance(layer, nn.Conv2d)`` still holds. ``weight`` is the posterior mean and
``bias`` stays an ordinary (deterministic) parameter.

Forward pass (mode ``sample``) by local reparameterization (Kingma, Salimans & Welling 2015):
for ``q(W) = prod N(mu, sigma^2)`` the pre-activation of a conv layer is Gaussian with mean
``conv(x, mu) + b`` and variance ``conv(x^2, sigma^2)``, and is sampled directly (one draw per
output unit), which costs two convolutions and gives lower-variance gradients than sampling the
weights. Mode ``mean`` uses the posterior means (the deterministic net).

Two posterior families:

* ``Gaussian``: ``sigma^2 = exp(log_sigma2)``, ``log_sigma2`` a free parameter (initialised to -10
  as in the paper); :class:`BayesConv2d`, :class:`BayesLinear`.
* ``LogUniform``: ``sigma^2 = alpha * mu^2`` with ``alpha = sigmoid(alpha_logit) < 1`` (sparse
  variational dropout, Molchanov et al. 2017, with alpha truncated at 1 as in the paper);
  :class:`LogUniformConv2d`, :class:`LogUniformLinear`.

A layer's prior (``layer.prior``, a module from :mod:`dwp.priors`) gives ``layer.kl()``;
:func:`kl_divergence` sums it over a model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum

import torch
from torch import nn
from torch.nn import functional as F

from dwp.errors import DWPError
from dwp.nn.gaussian import gaussian_entropy

__all__ = [
    "BayesConv2d",
    "BayesLayer",
    "BayesLinear",
    "LogUniformConv2d",
    "LogUniformLinear",
    "Mode",
    "Posterior",
    "bayes_layers",
    "bayes_mode",
    "bayesianize",
    "kl_divergence",
    "set_mode",
    "set_noise_generator",
]

_STD_FLOOR = 1e-16  # added to variances under the square root, so gradients stay finite


class Mode(StrEnum):
    """How a Bayesian layer computes its output."""

    sample = "sample"
    """Sample the pre-activations from q (local reparameterization)."""
    mean = "mean"
    """Use the posterior means: the deterministic network."""


class Posterior(StrEnum):
    """The family of the factorised Gaussian posterior."""

    gaussian = "gaussian"
    """N(mu, sigma^2) with a free log sigma^2 per weight."""
    log_uniform = "log-uniform"
    """N(mu, alpha mu^2), alpha = sigmoid(a) < 1 per weight (for the log-uniform prior)."""


class BayesLayer(nn.Module):
    """Mixin of the Bayesian layers: posterior parameters, mode, prior and noise source.

    Subclasses provide ``_mean_forward(x)``, ``_var_forward(x_sq, var)`` and
    ``posterior() -> (mu, var, log_var)``.
    """

    mode: Mode
    prior: nn.Module | None
    generator: torch.Generator | None

    def _init_bayes(self, mode: Mode | str, prior: nn.Module | None) -> None:
        self.mode = Mode(mode)
        self.prior = prior
        self.generator = None  # noise source of the sample mode (None: torch's global RNG)

    def posterior(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and log-variance of q over ``weight``, each shaped like ``weight``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is Mode.mean:
            return self._mean_forward(x)
        _, var, _ = self.posterior()
        mean = self._mean_forward(x)
        std = (self._var_forward(x * x, var) + _STD_FLOOR).sqrt()
        eps = torch.randn(mean.shape, generator=self.generator, device=mean.device,
                          dtype=mean.dtype)  # fmt: skip
        return mean + std * eps

    def sample_weight(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of the weights from q (reparameterised)."""
        mu, var, _ = self.posterior()
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + var.sqrt() * eps

    def entropy(self) -> torch.Tensor:
        """Entropy of q (summed over the weights), a scalar tensor."""
        _, _, log_var = self.posterior()
        return gaussian_entropy(log_var)

    def kl(self) -> torch.Tensor:
        """KL(q || prior) of this layer (or the prior's estimate of it), a scalar tensor."""
        if self.prior is None:
            raise DWPError(
                f"{type(self).__name__} has no prior; set one with bayesianize(prior=...)"
            )
        return self.prior.kl(self)


class _GaussianMixin(BayesLayer):
    """Posterior N(weight, exp(log_sigma2)); the layer's own arguments, then keyword-only
    ``log_sigma2_init``, ``mode`` and ``prior``."""

    def __init__(self, *args, log_sigma2_init: float = -10.0, mode: Mode | str = Mode.sample,
                 prior: nn.Module | None = None, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)  # the ordinary layer's constructor
        self.log_sigma2_init = log_sigma2_init
        self.log_sigma2 = nn.Parameter(torch.full_like(self.weight, log_sigma2_init))
        self._init_bayes(mode, prior)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "log_sigma2"):  # not yet there while the base constructor runs
            with torch.no_grad():
                self.log_sigma2.fill_(self.log_sigma2_init)

    def posterior(self):
        return self.weight, self.log_sigma2.exp(), self.log_sigma2


class _LogUniformMixin(BayesLayer):
    """Posterior N(weight, alpha weight^2), alpha = sigmoid(alpha_logit); the layer's own
    arguments, then keyword-only ``alpha_logit_init``, ``mode`` and ``prior``."""

    def __init__(self, *args, alpha_logit_init: float = -2.0, mode: Mode | str = Mode.sample,
                 prior: nn.Module | None = None, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.alpha_logit_init = alpha_logit_init
        self.alpha_logit = nn.Parameter(torch.full_like(self.weight, alpha_logit_init))
        self._init_bayes(mode, prior)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "alpha_logit"):
            with torch.no_grad():
                self.alpha_logit.fill_(self.alpha_logit_init)

    def log_alpha(self) -> torch.Tensor:
        """log alpha = log sigmoid(a), computed stably."""
        return F.logsigmoid(self.alpha_logit)

    def posterior(self):
        mu = self.weight
        mu2 = mu * mu
        var = self.alpha_logit.sigmoid() * mu2
        return mu, var, self.log_alpha() + (mu2 + 1e-30).log()


class _ConvMixin:
    def _mean_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight, self.bias)

    def _var_forward(self, x_sq: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x_sq, var, None)


class _LinearMixin:
    def _mean_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def _var_forward(self, x_sq: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return F.linear(x_sq, var)


class BayesConv2d(_ConvMixin, _GaussianMixin, nn.Conv2d):
    """``nn.Conv2d`` with a factorised Gaussian posterior N(weight, exp(log_sigma2)).

    ``BayesConv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    groups=1, bias=True, padding_mode='zeros', device=None, dtype=None, *,
    log_sigma2_init=-10.0, mode='sample', prior=None)``: ``nn.Conv2d``'s arguments, then the
    initial log-variance (the paper's -10), the mode and the prior.
    """


class LogUniformConv2d(_ConvMixin, _LogUniformMixin, nn.Conv2d):
    """``nn.Conv2d`` with the posterior N(weight, alpha weight^2), alpha = sigmoid(alpha_logit).

    ``nn.Conv2d``'s arguments, then keyword-only ``alpha_logit_init`` (-2, the paper's: alpha
    0.12), ``mode`` and ``prior``.
    """


class BayesLinear(_LinearMixin, _GaussianMixin, nn.Linear):
    """``nn.Linear`` with a factorised Gaussian posterior N(weight, exp(log_sigma2));
    ``nn.Linear``'s arguments, then keyword-only ``log_sigma2_init``, ``mode``, ``prior``."""


class LogUniformLinear(_LinearMixin, _LogUniformMixin, nn.Linear):
    """``nn.Linear`` with the posterior N(weight, alpha weight^2), alpha = sigmoid(alpha_logit);
    ``nn.Linear``'s arguments, then keyword-only ``alpha_logit_init``, ``mode``, ``prior``."""


_CONV_CLASS = {Posterior.gaussian: BayesConv2d, Posterior.log_uniform: LogUniformConv2d}


def bayes_layers(model: nn.Module) -> dict[str, BayesLayer]:
    """The model's Bayesian layers by qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BayesLayer)}


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """Sum of ``layer.kl()`` over the model's Bayesian layers (a scalar tensor; 0 if none).

    The training objective of :mod:`dwp.train.bnn` is ``N/B * (summed batch cross-entropy) +
    kl_divergence(model)``: the data term estimates the sum over the N training examples and
    the KL enters once, with weight 1."""
    layers = list(bayes_layers(model).values())
    if not layers:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return torch.stack([m.kl() for m in layers]).sum()


def set_mode(model: nn.Module, mode: Mode | str) -> None:
    """Set every Bayesian layer of ``model`` to ``sample`` or ``mean``."""
    mode = Mode(mode)
    for m in bayes_layers(model).values():
        m.mode = mode


@contextlib.contextmanager
def bayes_mode(model: nn.Module, mode: Mode | str) -> Iterator[None]:
    """Temporarily set every Bayesian layer to ``mode``, restoring each one's mode after."""
    layers = bayes_layers(model).values()
    before = [m.mode for m in layers]
    set_mode(model, mode)
    try:
        yield
    finally:
        for m, b in zip(layers, before, strict=True):
            m.mode = b


def set_noise_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every Bayesian layer and every prior with a ``generator`` attribute draw its noise
    from ``generator`` (None: torch's global RNG)."""
    for m in model.modules():
        if isinstance(m, BayesLayer) or hasattr(m, "generator"):
            m.generator = generator


PriorSpec = nn.Module | Mapping[str, nn.Module] | Callable[[str, nn.Conv2d], nn.Module] | None


def bayesianize(
    model: nn.Module,
    prior: PriorSpec = None,
    *,
    layers: Callable[[str, nn.Conv2d], bool] | list[str] | None = None,
    posterior: Posterior | str | None = None,
    mode: Mode | str = Mode.sample,
    log_sigma2_init: float = -10.0,
    alpha_logit_init: float = -2.0,
) -> dict[str, BayesLayer]:
    """Replace the chosen ``nn.Conv2d`` layers of ``model`` by Bayesian ones, in place.

    Args:
        model: any model; its ``nn.Conv2d`` modules are found by ``isinstance`` (layers that are
            already Bayesian are left alone).
        prior: one prior for every chosen layer, a mapping from layer name to prior, or a
            callable ``(name, conv) -> prior``. Each prior checks that it fits its layer (a
            :class:`~dwp.priors.DeepWeightPrior` refuses another kernel size).
        layers: which convs to convert: a list of qualified names or a predicate
            ``(name, conv) -> bool``; default all.
        posterior: ``gaussian`` or ``log-uniform``; default: what the prior asks for
            (``prior.posterior`` if it has one), else ``gaussian``.
        mode: the new layers' forward mode (``sample`` or ``mean``).
        log_sigma2_init: the Gaussian posteriors' initial log-variance.
        alpha_logit_init: the log-uniform posteriors' initial logit of alpha.

    The new layers keep the old ones' weights (as posterior means), biases, device and dtype.
    Returns the new layers by name.
    """
    convs = {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not isinstance(m, BayesLayer)
    }
    if layers is None:
        chosen = list(convs)
    elif callable(layers):
        chosen = [n for n, m in convs.items() if layers(n, m)]
    else:
        missing = [n for n in layers if n not in convs]
        if missing:
            raise DWPError(
                f"no nn.Conv2d named {', '.join(missing)} in the model; convs: {', '.join(convs)}"
            )
        chosen = list(layers)
    if isinstance(prior, Mapping):
        unknown = set(prior) - set(chosen)
        if unknown:
            raise DWPError(f"priors given for unknown layers: {', '.join(sorted(unknown))}")
    plan = []
    for name in chosen:  # check every layer before changing the model
        conv = convs[name]
        if isinstance(prior, Mapping):
            p = prior.get(name)
        elif isinstance(prior, nn.Module) or prior is None:
            p = prior
        else:
            p = prior(name, conv)
        kind = Posterior(posterior or getattr(p, "posterior", None) or Posterior.gaussian)
        if p is not None:
            p.check_layer(conv, name)
            if kind is not Posterior.log_uniform and getattr(p, "posterior", None) == "log-uniform":
                raise DWPError(f"the prior of {name} needs posterior='log-uniform'")
        plan.append((name, conv, p, kind))
    new = {}
    for name, conv, p, kind in plan:
        opts = ({"log_sigma2_init": log_sigma2_init} if kind is Posterior.gaussian
                else {"alpha_logit_init": alpha_logit_init})  # fmt: skip
        layer = _CONV_CLASS[kind](
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            mode=mode,
            **opts,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        if p is not None:
            layer.prior = p.to(conv.weight.device)
        _set_submodule(model, name, layer)
        new[name] = layer
    return new


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
