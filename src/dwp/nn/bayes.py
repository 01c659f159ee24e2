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
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from dwp.errors import DWPError
from dwp.nn.gaussian import gaussian_entropy

__all__ = [
    "BayesConv2d",
    "BayesLayer",
    "BayesLinear",
    "Converted",
    "LogUniformConv2d",
    "LogUniformLinear",
    "Mode",
    "Posterior",
    "bayes_layers",
    "bayes_mode",
    "bayesianize",
    "describe_bayes",
    "kl_divergence",
    "set_mode",
    "set_noise_generator",
    "set_prior",
]

_STD_FLOOR = 1e-16  # added to variances under the square root, so gradients stay finite


class Mode(StrEnum):
    """How a Bayesian layer computes its output."""

    sample = "sample"
    """Sample the pre-activations from q (local reparameterization)."""
    mean = "mean"
    """Use the posterior means: the deterministic network."""
    weight = "weight"
    """One draw of the weights per forward pass, shared by the whole batch: a network drawn
    from q, at the cost of the deterministic one (one conv per layer against local
    reparameterization's two). The ensembles of ``evaluate_bnn`` and ``predict`` use it."""


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
        if self.mode is Mode.weight:
            return self._weight_forward(x, self.sample_weight(self.generator))
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

    def _weight_forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, weight, self.bias)


class _LinearMixin:
    def _mean_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def _var_forward(self, x_sq: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return F.linear(x_sq, var)

    def _weight_forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, self.bias)


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
_LINEAR_CLASS = {Posterior.gaussian: BayesLinear, Posterior.log_uniform: LogUniformLinear}


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


PriorSpec = (
    str | Path | nn.Module | Mapping[str, "PriorSpec"] | Sequence["PriorSpec"]
    | Callable[[str, nn.Module], "PriorSpec"] | None
)  # fmt: skip
"""What ``bayesianize`` and ``set_prior`` take as a prior (see :func:`bayesianize`)."""

_BASIC = ("normal", "log-uniform")


class _Resolver:
    """Turns prior specs into prior instances, loading each named prior once per call."""

    def __init__(self):
        self._loaded: dict[str, list[nn.Module]] = {}

    def named(self, name: str) -> list[nn.Module]:
        from dwp.priors import LogUniformPrior, NormalPrior, load_kernel_prior

        if name not in self._loaded:
            if name == "normal":
                self._loaded[name] = [NormalPrior()]
            elif name == "log-uniform":
                self._loaded[name] = [LogUniformPrior()]
            else:
                from dwp.data.shipped import resolve_prior_set

                self._loaded[name] = [load_kernel_prior(d) for d in resolve_prior_set(name)]
        return self._loaded[name]

    def candidates(self, spec, name: str, module: nn.Module) -> list[nn.Module]:
        """The priors a spec offers for one layer, in order of preference."""
        if spec is None:
            return []
        if isinstance(spec, str | Path):
            return self.named(str(spec))
        if isinstance(spec, nn.Module):
            return [spec]
        if isinstance(spec, Mapping):
            raise DWPError("a mapping of priors cannot be nested in another spec")
        if isinstance(spec, Sequence):
            return [p for item in spec for p in self.candidates(item, name, module)]
        if callable(spec):
            return self.candidates(spec(name, module), name, module)
        raise DWPError(
            f"cannot use a {type(spec).__name__} as the prior of {name}: give a prior name or "
            "directory, a prior instance, a list, a mapping from layer names or a callable"
        )


def _fits(prior: nn.Module, module: nn.Module, name: str) -> str | None:
    """None if ``prior`` can be the prior of ``module``, else why not."""
    if not callable(getattr(prior, "kl", None)):
        raise DWPError(
            f"a {type(prior).__name__} given as the prior of {name} is not a prior (no "
            "kl(layer)); subclass dwp.priors.WeightPrior"
        )
    try:
        getattr(prior, "check_layer", lambda layer, name: None)(module, name)
    except DWPError as exc:
        return str(exc)
    return None


def _choose(resolver: _Resolver, spec, name: str, module: nn.Module, explicit: bool):
    """The first candidate of ``spec`` that fits the layer (None if there is none and the layer
    was not named explicitly; an error naming the layer if it was)."""
    offered = resolver.candidates(spec, name, module)
    why = []
    for p in offered:
        problem = _fits(p, module, name)
        if problem is None:
            return p
        why.append(problem)
    if offered and explicit:
        raise DWPError(why[0] if len(why) == 1 else f"no prior given for {name} fits it: {why[0]}")
    return None


def _layer_shape(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size
        g = f", groups {module.groups}" if module.groups > 1 else ""
        return f"conv {module.in_channels}->{module.out_channels} {k[0]}x{k[1]}{g}"
    if isinstance(module, nn.Linear):
        return f"linear {module.in_features}->{module.out_features}"
    return type(module).__name__


def _candidates(model: nn.Module, linear: bool) -> dict[str, nn.Module]:
    """The model's convs (and linears) by name, not looking inside Bayesian layers (whose
    priors hold VAEs of their own)."""
    kinds = (nn.Conv2d, nn.Linear) if linear else (nn.Conv2d,)
    found = {}

    def walk(module: nn.Module, prefix: str) -> None:
        if isinstance(module, kinds):
            found[prefix] = module
        if isinstance(module, BayesLayer):
            return
        for child_name, child in module.named_children():
            walk(child, f"{prefix}.{child_name}" if prefix else child_name)

    walk(model, "")
    return found


def _chosen(found: dict[str, nn.Module], layers, what: str) -> tuple[list[str], set[str]]:
    """The chosen layer names and which of them were named explicitly."""
    if layers is None:
        return list(found), set()
    if callable(layers):
        return [n for n, m in found.items() if layers(n, m)], set()
    names = [layers] if isinstance(layers, str) else list(layers)
    missing = [n for n in names if n not in found]
    if missing:
        raise DWPError(
            f"no {what} named {', '.join(map(repr, missing))} in the model; its {what}s: "
            f"{', '.join(found) or 'none'}"
        )
    return names, set(names)


def bayesianize(
    model: nn.Module,
    prior: PriorSpec = "normal",
    *,
    fallback: PriorSpec = "normal",
    layers: Callable[[str, nn.Module], bool] | Sequence[str] | None = None,
    linear: PriorSpec = None,
    posterior: Posterior | str | None = None,
    mode: Mode | str = Mode.sample,
    log_sigma2_init: float = -10.0,
    alpha_logit_init: float = -2.0,
    scale_to: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Converted:
    """Replace the chosen ``nn.Conv2d`` (and, with ``linear``, ``nn.Linear``) layers of
    ``model`` by Bayesian ones, in place, each with its prior; returns the new layers by name
    (a :class:`Converted`: ``print()`` it to see which layer got which posterior and prior).

    Args:
        model: any model; its layers are found by ``isinstance``.
        prior: the convs' prior. A name: ``"normal"`` (N(0, 1)), ``"log-uniform"``, a shipped
            prior (``"letters-fconv/conv1"``), a shipped prior set (``"letters-fconv"``: its
            priors, each on the convs of its kernel size), or a prior directory (kernel VAE or
            Gaussian; or a folder of them). A prior instance (:mod:`dwp.priors`). A list of any
            of these: each conv takes the first that fits it. A mapping from layer name to any
            of these. A callable ``(name, layer) -> any of these or None``.
        fallback: the prior of chosen convs that ``prior`` has nothing for (a deep weight prior
            fits only its kernel size): same forms; default N(0, 1). ``None`` leaves those convs
            as they are (deterministic).
        layers: which layers to consider: qualified names (``model.named_modules()``'s) or a
            predicate ``(name, layer) -> bool``; default all. A named layer that no prior fits
            is an error, not a fallback.
        linear: the prior of the ``nn.Linear`` layers (same forms); None (default): they stay
            deterministic.
        posterior: ``gaussian`` or ``log-uniform``; default: what each prior asks for
            (``prior.posterior``), else ``gaussian``.
        mode: the new layers' forward mode (``sample`` or ``mean``; ``model.eval()`` does not
            change it, see :func:`set_mode`).
        log_sigma2_init: the Gaussian posteriors' initial log-variance (the paper's -10).
        alpha_logit_init: the log-uniform posteriors' initial logit of alpha.
        scale_to: training images (a batch of the model's inputs): move each learned kernel
            prior (deep weight, Gaussian) so that its kernels give unit-std pre-activations on
            them (:func:`dwp.priors.data_scales`, the kernel-scale rule ``dwp bnn train``
            applies by default; a prior's scale from other nets is arbitrary). None: priors as
            fitted. ``generator``: the rule's kernel draws.

    Every chosen layer gets its own prior state (``prior.for_layer()``): one deep weight prior
    given for several layers shares its frozen VAE between them, never a layer's kernel cache.
    The new layers keep the old ones' weights (as posterior means), biases, device and dtype.
    :func:`describe_bayes` (``dwp.nn.describe_bayes(model)``) lists which layer got which prior.
    A model that is Bayesian already is refused: :func:`set_prior` changes its priors.
    """
    found = _candidates(model, linear is not None)
    already = [n for n, m in found.items() if isinstance(m, BayesLayer)]
    chosen, explicit = _chosen(found, layers, "conv or linear layer" if linear else "conv")
    again = [n for n in chosen if n in already]
    if again:
        raise DWPError(
            f"layers {', '.join(again)} are Bayesian already: change their priors with "
            "dwp.nn.set_prior(model, prior), or choose the ordinary layers with layers="
        )
    resolver, plan = _Resolver(), []
    if isinstance(prior, Mapping):
        unknown = [n for n in prior if n not in found]
        if unknown:
            raise DWPError(
                f"priors given for unknown layers {', '.join(map(repr, unknown))}; the model's "
                f"convs: {', '.join(n for n, m in found.items() if isinstance(m, nn.Conv2d))}"
            )
        chosen += [n for n in prior if n not in chosen]
    used = set()
    for name in chosen:  # every layer is checked before the model changes
        module = found[name]
        is_conv = isinstance(module, nn.Conv2d)
        if isinstance(prior, Mapping):
            spec, named = (prior.get(name), name in prior) if is_conv else (linear, False)
        else:
            spec, named = (prior, name in explicit) if is_conv else (linear, False)
        p = _choose(resolver, spec, name, module, named)
        if p is not None:
            used.add(id(p))
        elif is_conv:
            p = _choose(resolver, fallback, name, module, name in explicit)
            if p is None and fallback is not None and name in explicit:
                raise DWPError(f"neither the prior nor the fallback fits {name}")
        if p is None:
            continue  # left deterministic
        kind = Posterior(posterior or getattr(p, "posterior", None) or Posterior.gaussian)
        if kind is not Posterior.log_uniform and getattr(p, "posterior", None) == "log-uniform":
            raise DWPError(f"the prior of {name} needs posterior='log-uniform'")
        plan.append((name, module, p, kind))
    _check_used(resolver, prior, used, {n: found[n] for n in chosen})
    if scale_to is not None:
        plan = _moved_to(model, plan, scale_to, generator)
    new = Converted()
    for name, module, p, kind in plan:
        layer = _bayes_layer(module, kind, mode, log_sigma2_init, alpha_logit_init)
        if hasattr(p, "for_layer"):
            p = p.for_layer()
        layer.prior = p.to(module.weight.device)
        _set_submodule(model, name, layer)
        new[name] = layer
    return new


def _moved_to(model, plan, images, generator):
    """``plan`` with each learned kernel prior moved by the kernel-scale rule on ``images``."""
    from dwp.priors import data_scales

    learned = {name: p for name, _, p, _ in plan if hasattr(p, "scaled")}
    scales = data_scales(model, learned, images, generator=generator)
    return [(name, module, p.scaled(scales[name]) if name in scales else p, kind)
            for name, module, p, kind in plan]  # fmt: skip


def _check_used(resolver: _Resolver, spec, used: set, found: dict) -> None:
    """A deep weight prior given for every conv that fits none of them is a mistake, not a
    fallback to say nothing about."""
    if isinstance(spec, Mapping) or spec is None or (callable(spec) and not isinstance(
            spec, nn.Module)):  # fmt: skip
        return
    offered = resolver.candidates(spec, "", nn.Identity()) if not isinstance(spec, nn.Module) \
        else [spec]  # fmt: skip
    if offered and not any(id(p) in used for p in offered):
        convs = [f"{n} ({_layer_shape(m)})" for n, m in found.items() if isinstance(m, nn.Conv2d)]
        what = ", ".join(getattr(p, "describe", lambda p=p: type(p).__name__)() for p in offered)
        raise DWPError(f"{what} fits none of the chosen convs: {', '.join(convs) or 'none'}")


def _bayes_layer(module, kind, mode, log_sigma2_init, alpha_logit_init) -> BayesLayer:
    opts = ({"log_sigma2_init": log_sigma2_init} if kind is Posterior.gaussian
            else {"alpha_logit_init": alpha_logit_init})  # fmt: skip
    common = {"device": module.weight.device, "dtype": module.weight.dtype, "mode": mode, **opts}
    if isinstance(module, nn.Conv2d):
        layer = _CONV_CLASS[kind](
            module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
            padding=module.padding, dilation=module.dilation, groups=module.groups,
            bias=module.bias is not None, padding_mode=module.padding_mode, **common,
        )  # fmt: skip
    else:
        layer = _LINEAR_CLASS[kind](module.in_features, module.out_features,
                                    bias=module.bias is not None, **common)  # fmt: skip
    with torch.no_grad():
        layer.weight.copy_(module.weight)
        if module.bias is not None:
            layer.bias.copy_(module.bias)
    return layer


def set_prior(
    model: nn.Module,
    prior: PriorSpec,
    *,
    layers: Callable[[str, nn.Module], bool] | Sequence[str] | None = None,
) -> Converted:
    """Give the Bayesian layers of ``model`` new priors (same forms as :func:`bayesianize`'s
    ``prior``); layers that ``prior`` has nothing for keep theirs, unless named in ``layers``
    (then it is an error). Returns the layers whose prior changed."""
    found = bayes_layers(model)
    if not found:
        raise DWPError("the model has no Bayesian layers; make some with dwp.nn.bayesianize")
    chosen, explicit = _chosen(found, layers, "Bayesian layer")
    if isinstance(prior, Mapping):
        unknown = [n for n in prior if n not in found]
        if unknown:
            raise DWPError(
                f"priors given for {', '.join(map(repr, unknown))}, which are not Bayesian "
                f"layers of the model; its Bayesian layers: {', '.join(found)}"
            )
        chosen = [n for n in chosen if n in prior]
    resolver, plan = _Resolver(), []
    for name in chosen:
        spec = prior.get(name) if isinstance(prior, Mapping) else prior
        named = name in explicit or isinstance(prior, Mapping)
        p = _choose(resolver, spec, name, found[name], named)
        if p is not None:
            plan.append((name, p))
    changed = Converted()
    for name, p in plan:
        layer = found[name]
        layer.prior = (p.for_layer() if hasattr(p, "for_layer") else p).to(layer.weight.device)
        changed[name] = layer
    return changed


def _row(name: str, m: nn.Module) -> dict:
    if isinstance(m, BayesLayer):
        kind = "log-uniform" if hasattr(m, "log_alpha") else "gaussian"
        p = m.prior
        what = "none" if p is None else getattr(p, "describe", lambda p=p: type(p).__name__)()
    else:
        kind, what = "deterministic", "-"
    return {"layer": name or "(model)", "shape": _layer_shape(m), "posterior": kind, "prior": what}


def describe_bayes(model: nn.Module) -> list[dict]:
    """One row per conv and linear layer of ``model``: ``layer`` (its name), ``shape``,
    ``posterior`` (``gaussian``, ``log-uniform`` or ``deterministic``) and ``prior`` (one line)."""
    return [_row(name, m) for name, m in _candidates(model, linear=True).items()]


class Converted(dict):
    """What :func:`bayesianize` and :func:`set_prior` return: the layers by name, and which
    posterior and prior each got (``rows()``; ``str()`` is one line per layer)."""

    def rows(self) -> list[dict]:
        return [_row(name, m) for name, m in self.items()]

    def __str__(self) -> str:
        return "\n".join(f"{r['layer']}: {r['shape']}, {r['posterior']} posterior, prior "
                         f"{r['prior']}" for r in self.rows())  # fmt: skip


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
