"""Saving and loading Bayesian models: the posterior and a reference to each prior.

A saved Bayesian model (``save_bayesian``) holds, per Bayesian layer, its posterior family and
the spec of its prior (``prior.spec()``: for a deep weight prior its name or directory and the
sha256 of its decoder; for the normal prior its std), and the model's state dict without the
priors' frozen VAEs and kernel caches. ``load_bayesian`` turns a fresh instance of the model's
class into the saved Bayesian model: it converts the layers, rebuilds each prior from its
reference (refusing one whose content changed) and loads the state.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from dwp.errors import DWPError
from dwp.nn.bayes import (
    BayesLayer,
    Posterior,
    _bayes_layer,
    _candidates,
    _set_submodule,
    bayes_layers,
)

__all__ = ["MODEL_FORMAT", "bayes_plan", "load_bayesian", "save_bayesian"]

MODEL_FORMAT = "dwp-bayesian-model"
_VERSION = 1
_RUN_CHECKPOINT = "checkpoint.pt"


def bayes_plan(model: nn.Module) -> dict:
    """Per Bayesian layer of ``model``: ``kind`` (conv or linear), ``posterior``, ``mode`` and
    ``prior`` (its spec). Raises :class:`DWPError` for a prior that cannot be referenced."""
    plan = {}
    for name, layer in bayes_layers(model).items():
        if layer.prior is None:
            raise DWPError(f"{name} has no prior; give it one with dwp.nn.set_prior")
        spec_of = getattr(layer.prior, "spec", None)
        if spec_of is None:
            raise DWPError(
                f"the prior of {name} ({type(layer.prior).__name__}) has no spec(); subclass "
                "dwp.priors.WeightPrior and register it with dwp.priors.register_prior"
            )
        plan[name] = {
            "kind": "conv" if isinstance(layer, nn.Conv2d) else "linear",
            "posterior": "log-uniform" if hasattr(layer, "log_alpha") else "gaussian",
            "mode": str(layer.mode),
            "prior": spec_of(),
        }
    return plan


def _clean_state(model: nn.Module) -> dict:
    """The state dict without what the priors rebuild: kernel caches (the frozen VAEs are never
    in it)."""
    caches = [f"{n}.prior." for n, m in bayes_layers(model).items() if m.prior is not None]
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
            for k, v in model.state_dict().items()
            if not any(k.startswith(p + "cache_") for p in caches)}  # fmt: skip


def save_bayesian(model: nn.Module, path: str | Path) -> Path:
    """Write the Bayesian ``model`` to ``path`` (atomically): its posterior and a reference to
    each prior, not the priors' weights. :func:`load_bayesian` reads it back."""
    from dwp import __version__
    from dwp.io import atomic_path

    plan = bayes_plan(model)
    if not plan:
        raise DWPError("the model has no Bayesian layers; save an ordinary model with torch.save")
    payload = {"format": MODEL_FORMAT, "format_version": _VERSION, "dwp_version": __version__,
               "layers": plan, "state_dict": _clean_state(model)}  # fmt: skip
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_bayesian(
    model: nn.Module, path: str | Path, map_location: str | torch.device | None = None
) -> nn.Module:
    """Make ``model`` (a fresh instance of the class the Bayesian model was built from, ordinary
    or already Bayesian) the model saved at ``path``: a file of :func:`save_bayesian`, or a run
    directory of :func:`dwp.train.fit` / ``dwp bnn train --model``. Returns ``model``.

    Each prior is rebuilt from its reference; a deep weight prior whose content changed since
    (its sha256) is refused, as is a file of another model (naming the layers that differ).
    """
    from dwp.io import load_torch
    from dwp.priors import prior_from_spec

    path = Path(path)
    if path.is_dir():
        path = path / _RUN_CHECKPOINT
    saved = load_torch(path, "saved Bayesian model", map_location=map_location or "cpu")
    if isinstance(saved, dict) and "bayes" in saved and "model" in saved:  # a run's checkpoint
        if saved["bayes"] is None:
            raise DWPError(f"{path}: the run's priors cannot be referenced (an in-memory prior)")
        saved = {"format": MODEL_FORMAT, "format_version": _VERSION, "layers": saved["bayes"],
                 "state_dict": saved["model"]}  # fmt: skip
    if not (isinstance(saved, dict) and saved.get("format") == MODEL_FORMAT):
        raise DWPError(
            f"{path}: not a saved Bayesian model (dwp.nn.save_bayesian) nor a run checkpoint of "
            "dwp.train.fit"
        )
    if saved.get("format_version") != _VERSION:
        raise DWPError(
            f"{path}: saved model format version {saved.get('format_version')!r}; this dwp "
            f"reads version {_VERSION}"
        )
    plan = saved["layers"]
    found = _candidates(model, linear=True)
    missing = [n for n in plan if n not in found]
    if missing:
        raise DWPError(
            f"{path} has the Bayesian layers {', '.join(missing)}, which this "
            f"{type(model).__name__} lacks (its conv and linear layers: "
            f"{', '.join(found) or 'none'}); pass an instance of the class it was saved from"
        )
    device = next(model.parameters()).device
    priors: dict[str, nn.Module] = {}
    for name, entry in plan.items():
        key = json.dumps(entry["prior"], sort_keys=True)
        if key not in priors:
            priors[key] = prior_from_spec(entry["prior"])
        prior = priors[key]
        module = found[name]
        kind = Posterior(entry["posterior"])
        if not isinstance(module, BayesLayer):
            module = _bayes_layer(module, kind, entry.get("mode", "sample"), -10.0, -2.0)
            _set_submodule(model, name, module)
        elif (kind is Posterior.log_uniform) != hasattr(module, "log_alpha"):
            raise DWPError(f"{name}: saved with a {kind.value} posterior, but the model's differs")
        module.prior = (prior.for_layer() if hasattr(prior, "for_layer") else prior).to(device)
    extra = [n for n, m in bayes_layers(model).items() if n not in plan]
    if extra:
        raise DWPError(
            f"the model has Bayesian layers {', '.join(extra)} that {path} does not (saved: "
            f"{', '.join(plan)}); pass a fresh instance of the model's class"
        )
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise DWPError(f"{path}: does not fit this {type(model).__name__} ({detail})") from None
    return model
