"""Bayesian CNN training on a small target set: the paper's main experiment.

The network is FConv (widths 32 / 128 for MNIST) whose two conv layers are Bayesian (factorised
Gaussian posterior, local reparameterization), or for 32x32 colour images the Bayesian CIFARNet
variant with three Bayesian convs; the Linear layers are deterministic.

Objective (the negative ELBO; DESIGN.md): ``loss = N/B * (summed cross-entropy of the batch) +
KL``, where the first term estimates the sum over the N training examples and KL is the sum over
the Bayesian layers of KL(q || prior) (for the deep weight prior, its auxiliary upper bound),
with weight 1 and no annealing. Adam, lr decayed linearly to 0 over the run; batch 256 (the
whole set when N <= 256).

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per evaluation),
``checkpoint.pt`` (model, optimiser, RNG states; the final model at the end) and, once
finished, ``result.json``. With the DWP's fast mode (a kernel batch), ``kl`` is the value the
optimiser saw (fresh kernels plus the cached model of the others) and each evaluation also
records ``kl_exact``, the exact mode's estimate with every kernel through the VAE, so a lagging
model shows. Re-running a finished run returns its result; a killed run resumes
from its last checkpoint and ends exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from dwp.config import BNN_FORMAT_VERSION, BNNConfig, Init, PriorKind, PriorScale
from dwp.data import few_shot, load_dataset
from dwp.errors import DWPError
from dwp.io import (
    check_same_config,
    cleanup_on_failure,
    load_checkpoint,
    read_json,
    restoring,
    run_lock,
    write_json,
)
from dwp.nn import (
    bayesianize,
    build_net,
    check_hidden,
    conv_layers,
    init_classifier,
    init_conv_kernels,
    resolve_arch,
)
from dwp.priors import (
    DeepWeightPrior,
    GaussianKernelPrior,
    LogUniformPrior,
    NormalPrior,
    check_per_layer,
    data_scales,
    load_kernel_sets,
    scaled_priors,
)
from dwp.train.fit import _plan, read_result, train_loop

__all__ = [
    "BNN_FORMAT_VERSION",
    "BNNConfig",
    "PriorKind",
    "bnn_prior_scales",
    "build_bnn",
    "evaluate_run",
    "finished_result",
    "load_bnn",
    "load_factory",
    "train_bnn",
]

_CONFIG, _METRICS, _CHECKPOINT, _RESULT = (
    "config.json",
    "metrics.jsonl",
    "checkpoint.pt",
    "result.json",
)


def build_bnn(
    config: BNNConfig,
    in_channels: int,
    num_classes: int,
    image_size: int,
    device: torch.device | str = "cpu",
    scales: dict[str, float] | None = None,
) -> nn.Module:
    """The Bayesian net (FConv or CIFARNet variant) of ``config``, initialised
    (deterministically from ``config.seed``) and with its priors attached, on ``device``.

    ``scales``: the factor each learned prior is moved by (:func:`bnn_prior_scales`, which
    ``train_bnn`` runs on the training images and records); None or a missing layer: 1."""
    device = torch.device(device)
    if config.model is not None:
        return _build_user_bnn(config, in_channels, num_classes, image_size, device, scales)
    gen = torch.Generator().manual_seed(config.seed)
    model, names = _bare_net(config, in_channels, num_classes, image_size, device)
    kernel_priors = scaled_priors(_kernel_priors(config, names, device), scales or {})
    if config.prior in (PriorKind.dwp, PriorKind.gaussian):
        priors = kernel_priors
    elif config.prior is PriorKind.log_uniform:
        priors = LogUniformPrior()  # asks for the log-uniform posterior
    else:
        priors = NormalPrior(config.normal_std)
    layers = bayesianize(model, priors, log_sigma2_init=config.log_sigma2_init,
                         mode=_MODES[config.sampling])  # fmt: skip
    kernel_sets = None
    if config.init is Init.filters:
        kernel_sets = load_kernel_sets(names, config.kernel_dirs, config.prior_dirs)
    init_conv_kernels(layers, config.init, priors=kernel_priors, kernel_sets=kernel_sets,
                      generator=gen)  # fmt: skip
    return model


def _bare_net(config, in_channels, num_classes, image_size, device):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        arch = resolve_arch(config.arch, in_channels, image_size)
        model = build_net(arch, check_hidden(arch, config.hidden, "target"), in_channels,
                          num_classes, image_size, bayes=True)  # fmt: skip
        init_classifier(model)
    model.to(device)
    names = list(conv_layers(model))
    if config.prior_dirs:
        check_per_layer(config.prior_dirs, names, "prior directories")
    return model, names


def _kernel_priors(config: BNNConfig, names: list[str], device) -> dict:
    """The learned prior of each conv layer, as fitted: the run's prior (dwp, gaussian), or
    for another prior with the dwp init the deep weight priors the init samples."""
    if not config.uses_kernel_priors:
        return {}
    if config.prior is PriorKind.gaussian:
        return {n: GaussianKernelPrior.from_dir(d, map_location=device)
                for n, d in zip(names, config.prior_dirs, strict=True)}  # fmt: skip
    kw = {"samples": config.dwp_samples, "train_encoder": config.train_encoder,
          "map_location": device, "kernel_batch": config.dwp_kernel_batch,
          "estimator": config.dwp_estimator}  # fmt: skip
    return {n: DeepWeightPrior.from_dir(d, **kw)
            for n, d in zip(names, config.prior_dirs, strict=True)}  # fmt: skip


def bnn_prior_scales(
    config: BNNConfig,
    images: torch.Tensor,
    num_classes: int,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """The factor each learned prior of the run is moved by: for ``prior_scale='data'`` the
    kernel-scale rule (:func:`dwp.priors.data_scales`) on the training ``images``, with kernels
    drawn from ``config.seed``; empty (no move) otherwise."""
    if config.prior_scale is not PriorScale.data or not config.uses_kernel_priors:
        return {}
    device = torch.device(device)
    channels, size = int(images.shape[1]), int(images.shape[-1])
    if config.model is not None:
        model = _user_model(config, channels, num_classes, size, device)
        priors = _user_kernel_priors(config, model, device)
    else:
        model, names = _bare_net(config, channels, num_classes, size, device)
        priors = _kernel_priors(config, names, device)
    gen = torch.Generator().manual_seed(config.seed + 1)
    # the rule sizes the samples the run starts from: decoder means, or draws for dwp-draw
    return data_scales(model, priors, images, generator=gen, mean=config.init is not Init.dwp_draw)


def load_factory(spec: str):
    """The callable ``module.path:name`` (or ``path/to/file.py:name``) names."""
    import importlib
    import importlib.util
    import inspect

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise DWPError(f"--model {spec!r}: expected package.module:factory or file.py:factory")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise DWPError(f"--model {spec!r}: {path} does not exist")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DWPError(f"--model {spec!r}: cannot import {module_name} ({exc})") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]  # fmt: skip
        raise DWPError(
            f"--model {spec!r}: {module_name} has no callable {attr!r} (it defines "
            f"{', '.join(names) or 'none'})"
        )
    if inspect.isclass(factory) and not issubclass(factory, nn.Module):
        raise DWPError(f"--model {spec!r}: {attr} is a class but not an nn.Module")
    return factory


def _call_factory(factory, spec: str, **available) -> nn.Module:
    """``factory`` called with those of ``in_channels``, ``num_classes``, ``image_size`` it
    takes (by name)."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in available.items() if takes_all or k in params}
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise DWPError(f"--model {spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _user_model(config, in_channels, num_classes, image_size, device) -> nn.Module:
    factory = load_factory(config.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _call_factory(factory, config.model, in_channels=in_channels,
                              num_classes=num_classes, image_size=image_size)  # fmt: skip
    return model.to(device)


def _user_kernel_priors(config, model, device) -> dict:
    """The learned prior of each conv of a user's model that one fits (the first of
    ``prior_dirs``' priors with its kernel size)."""
    if not config.uses_kernel_priors or config.prior not in (PriorKind.dwp, PriorKind.gaussian):
        return {}
    from dwp.data.shipped import resolve_prior_set

    if config.prior is PriorKind.gaussian:
        offered = [GaussianKernelPrior.from_dir(d, map_location=device)
                   for p in config.prior_dirs for d in resolve_prior_set(p)]  # fmt: skip
    else:
        kw = {"samples": config.dwp_samples, "train_encoder": config.train_encoder,
              "map_location": device, "kernel_batch": config.dwp_kernel_batch,
          "estimator": config.dwp_estimator}  # fmt: skip
        offered = [DeepWeightPrior.from_dir(d, **kw) for p in config.prior_dirs
                   for d in resolve_prior_set(p)]  # fmt: skip
    chosen = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            for prior in offered:
                if tuple(module.weight.shape[-2:]) == (prior.kernel_size,) * 2:
                    chosen[name] = prior.for_layer()
                    break
    return chosen


def _build_user_bnn(config, in_channels, num_classes, image_size, device, scales=None):
    """A user's model (``config.model``), with the priors of ``config`` on its convs: under
    ``dwp`` / ``gaussian`` the priors of ``prior_dirs`` on the convs of their kernel size
    (moved by ``scales``) and N(0, normal_std^2) on the others."""
    model = _user_model(config, in_channels, num_classes, image_size, device)
    fallback = NormalPrior(config.normal_std)
    if config.prior in (PriorKind.dwp, PriorKind.gaussian):
        chosen = scaled_priors(_user_kernel_priors(config, model, device), scales or {})
        if not chosen:
            raise DWPError(
                f"none of the priors {', '.join(config.prior_dirs)} fits a conv of --model "
                f"{config.model} (no conv of their kernel size)"
            )
        spec = lambda name, module: chosen.get(name)  # noqa: E731
    elif config.prior is PriorKind.log_uniform:
        spec = fallback = LogUniformPrior()
    else:
        spec = fallback
    bayesianize(model, spec, fallback=fallback, log_sigma2_init=config.log_sigma2_init,
                mode=_MODES[config.sampling])  # fmt: skip
    if config.init.uses_prior:
        from dwp.train.fit import _dwp_init

        _dwp_init(model, config.seed, config.init.value)
    return model


def load_bnn(run: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, BNNConfig]:
    """The model of a run directory (its last checkpoint) and the run's config."""
    run = Path(run)
    if not ((run / _CONFIG).is_file() and (run / _CHECKPOINT).is_file()):
        raise DWPError(f"{run} is not a Bayesian CNN run (needs {_CONFIG} and {_CHECKPOINT})")
    config = _stored_config(run / _CONFIG)
    ckpt = load_checkpoint(run / _CHECKPOINT, _REMEDY)
    with restoring(run / _CHECKPOINT, _REMEDY):
        ds = ckpt["data_shape"]
        shape = (int(ds["channels"]), int(ds["classes"]), int(ds["size"]))
        scales = {str(k): float(v) for k, v in (ckpt.get("prior_scales") or {}).items()}
    model = build_bnn(config, *shape, device, scales)
    with restoring(run / _CHECKPOINT, _REMEDY):
        model.load_state_dict(ckpt["model"])
    return model, config


#: What :func:`evaluate_run` writes into a run directory.
UNCERTAINTY = "uncertainty.json"


def evaluate_run(
    run: str | Path,
    ood: Sequence[str] = (),
    rotations: Sequence[float] = (),
    samples: int | None = None,
    seed: int = 0,
    bins: int = 15,
    device: torch.device | str = "cpu",
    data_root=None,
    ood_examples: int | None = None,
    shift_examples: int | None = None,
) -> dict:
    """The uncertainty evaluation (:func:`dwp.eval.evaluate_uncertainty`) of the finished run
    ``run`` on its dataset's test part: calibration, out-of-distribution detection against the
    catalog datasets ``ood`` (``ood_examples`` of their test images drawn by ``seed``;
    default: as many as the test part has) and the test images (all, or ``shift_examples`` of
    them drawn by ``seed``) rotated by each of ``rotations`` degrees.
    ``samples``: weight draws (default: the run's ``ens_samples``). Written to
    ``run/uncertainty.json`` (atomically) with the run's name, prior and settings; returned."""
    from dwp.data.shift import ood_images
    from dwp.eval import evaluate_uncertainty

    run = Path(run)
    if read_result(run) is None:
        raise DWPError(f"{run} is not a finished Bayesian CNN run (no {_RESULT}); train it first")
    model, config = load_bnn(run, device)
    ds = load_dataset(config.dataset, data_root, test_examples=config.test_examples)
    shape = tuple(int(v) for v in ds.test.images.shape[1:])
    n = len(ds.test) if ood_examples is None else ood_examples
    sets = {name: ood_images(name, shape, n, data_root, seed) for name in dict.fromkeys(ood)}
    res = evaluate_uncertainty(model, ds.test, ood=sets, rotations=tuple(rotations),
                               samples=samples or config.ens_samples, seed=seed,
                               bins=bins, shift_examples=shift_examples)  # fmt: skip
    res = {"run": str(run), "dataset": config.dataset, "prior": config.prior.value,
           "examples": config.examples, "split_seed": config.split_seed, **res}  # fmt: skip
    write_json(run / UNCERTAINTY, res)
    return res


def _stored_config(path: Path) -> BNNConfig:
    stored = read_json(path)
    if isinstance(stored, dict):
        stored = {**LEGACY_CONFIG, **stored}
    try:
        return BNNConfig(**stored)
    except (TypeError, ValueError) as exc:  # not a BNNConfig's fields
        raise DWPError(f"{path}: not a Bayesian CNN run's config ({exc})") from None


_REMEDY = "delete it to start the run over"
#: What a run config written before a key existed did: no kernel-scale rule, the cache.
LEGACY_CONFIG = {
    "prior_scale": "none",
    "dwp_estimator": "cache",
    "sampling": "local",
    "test_examples": None,
}
#: The Bayesian layers' training mode for each ``BNNConfig.sampling``.
_MODES = {"local": "sample", "weight": "weight"}


def finished_result(out: str | Path, config: BNNConfig) -> dict | None:
    """The result of the finished run ``out`` (None if it has not finished); an error if the
    directory holds a run of another config, finished or not."""
    out = Path(out)
    check_same_config(out, config.to_dict(), legacy=LEGACY_CONFIG)
    return read_result(out)


def train_bnn(
    config: BNNConfig,
    out: str | Path,
    device: torch.device | str = "cpu",
    data_root=None,
    on_epoch: Callable[[dict], None] | None = None,
    on_eval: Callable[[dict], None] | None = None,
    on_model: Callable[[nn.Module], None] | None = None,
) -> dict:
    """Train (or resume, or just read back) the run ``out``; returns ``result.json``'s dict.

    ``on_model`` receives the model once it is built (``dwp bnn train`` prints which layer has
    which prior from it).

    ``on_epoch`` receives ``{"epoch", "epochs", "loss", "data_term", "kl", "train_acc"}`` after
    every epoch; ``on_eval`` each evaluation record as written to ``metrics.jsonl``.
    Raises :class:`DWPError` if the loss becomes NaN or infinite (naming the step).
    """
    out = Path(out)
    device = torch.device(device)
    done = finished_result(out, config)
    if done is not None:
        return done
    # a run that fails before its first checkpoint leaves nothing behind
    with cleanup_on_failure(out, keep=[_CHECKPOINT]), run_lock(out):  # one process per run
        done = finished_result(out, config)  # another process may have finished it meanwhile
        if done is not None:
            return done
        return _train(config, out, device, data_root, on_epoch, on_eval, on_model)


def _train(config, out, device, data_root, on_epoch, on_eval, on_model=None) -> dict:
    ds = load_dataset(config.dataset, data_root, test_examples=config.test_examples)
    train = few_shot(ds.train, config.examples, config.split_seed) if config.examples else ds.train
    channels, size = int(train.images.shape[1]), int(train.images.shape[-1])
    scales = bnn_prior_scales(config, train.images, ds.num_classes, device)
    model = build_bnn(config, channels, ds.num_classes, size, device, scales)
    if on_model is not None:
        on_model(model)
    data_shape = {"channels": channels, "classes": ds.num_classes, "size": size}
    return train_loop(
        model, train.images, train.labels, (ds.test.images, ds.test.labels), config, out,
        config.to_dict(), on_epoch=on_epoch, on_eval=on_eval,
        checkpoint_extra={"format_version": BNN_FORMAT_VERSION, "data_shape": data_shape,
                          "config": config.to_dict(), "bayes": _plan(model),
                          "prior_scales": scales},
        result_extra={"prior": config.prior.value, "init": config.init.value,
                      "split_seed": config.split_seed, "prior_scales": scales},
    )  # fmt: skip
