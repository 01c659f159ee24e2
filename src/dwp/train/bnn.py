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

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from dwp.config import BNN_FORMAT_VERSION, BNNConfig, Init, PriorKind
from dwp.data import few_shot, load_dataset
from dwp.errors import DWPError, NonFiniteError
from dwp.eval import evaluate_bnn
from dwp.io import (
    append_jsonl,
    atomic_path,
    check_finite,
    check_same_config,
    cleanup_on_failure,
    load_checkpoint,
    read_json,
    read_jsonl,
    restoring,
    run_lock,
    truncate_jsonl,
    write_json,
)
from dwp.nn import (
    bayesianize,
    build_net,
    check_hidden,
    conv_layers,
    init_classifier,
    init_conv_kernels,
    kl_divergence,
    resolve_arch,
    set_noise_generator,
)
from dwp.priors import (
    DeepWeightPrior,
    LogUniformPrior,
    NormalPrior,
    check_per_layer,
    load_kernel_sets,
)
from dwp.train.loop import adam_linear_decay, kept_note, shuffled_batches

__all__ = [
    "BNN_FORMAT_VERSION",
    "BNNConfig",
    "PriorKind",
    "build_bnn",
    "finished_result",
    "load_bnn",
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
) -> nn.Module:
    """The Bayesian net (FConv or CIFARNet variant) of ``config``, initialised
    (deterministically from ``config.seed``) and with its priors attached, on ``device``."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(config.seed)
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
    dwp_priors = {}
    if config.prior is PriorKind.dwp or config.init is Init.dwp:
        kw = {"samples": config.dwp_samples, "train_encoder": config.train_encoder,
              "map_location": device, "kernel_batch": config.dwp_kernel_batch}  # fmt: skip
        dwp_priors = {
            n: DeepWeightPrior.from_dir(d, **kw)
            for n, d in zip(names, config.prior_dirs, strict=True)
        }
    if config.prior is PriorKind.dwp:
        priors = dwp_priors
    elif config.prior is PriorKind.log_uniform:
        priors = LogUniformPrior()  # asks for the log-uniform posterior
    else:
        priors = NormalPrior(config.normal_std)
    layers = bayesianize(model, priors, log_sigma2_init=config.log_sigma2_init)
    kernel_sets = None
    if config.init is Init.filters:
        kernel_sets = load_kernel_sets(names, config.kernel_dirs, config.prior_dirs)
    init_conv_kernels(layers, config.init, priors=dwp_priors, kernel_sets=kernel_sets,
                      generator=gen)  # fmt: skip
    return model


def _data_term(logits: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """N/B * summed cross-entropy of the batch: an unbiased estimate of the dataset's sum."""
    return F.cross_entropy(logits, y, reduction="sum") * (n / len(y))


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
    model = build_bnn(config, *shape, device)
    with restoring(run / _CHECKPOINT, _REMEDY):
        model.load_state_dict(ckpt["model"])
    return model, config


def _stored_config(path: Path) -> BNNConfig:
    stored = read_json(path)
    try:
        return BNNConfig(**stored)
    except (TypeError, ValueError) as exc:  # not a BNNConfig's fields
        raise DWPError(f"{path}: not a Bayesian CNN run's config ({exc})") from None


_REMEDY = "delete it to start the run over"


def finished_result(out: str | Path, config: BNNConfig) -> dict | None:
    """The result of the finished run ``out`` (None if it has not finished); an error if the
    directory holds a run of another config, finished or not."""
    out = Path(out)
    check_same_config(out, config.to_dict())
    path = out / _RESULT
    if not path.is_file():
        return None
    result = read_json(path)
    check_finite(result, f"{path} is not a valid result (delete it to re-run the run)")
    return result


def train_bnn(
    config: BNNConfig,
    out: str | Path,
    device: torch.device | str = "cpu",
    data_root=None,
    on_epoch: Callable[[dict], None] | None = None,
    on_eval: Callable[[dict], None] | None = None,
) -> dict:
    """Train (or resume, or just read back) the run ``out``; returns ``result.json``'s dict.

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
        return _train(config, out, device, data_root, on_epoch, on_eval)


def _train(config, out, device, data_root, on_epoch, on_eval) -> dict:
    result_path = out / _RESULT
    ds = load_dataset(config.dataset, data_root)
    train = few_shot(ds.train, config.examples, config.split_seed) if config.examples else ds.train
    x_all, y_all = train.images.to(device), train.labels.to(device)
    n = len(train)
    channels, size = int(train.images.shape[1]), int(train.images.shape[-1])
    model = build_bnn(config, channels, ds.num_classes, size, device)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * config.epochs
    opt, sched = adam_linear_decay(params, config.lr, total)
    data_gen = torch.Generator().manual_seed(config.seed + 1)
    noise_gen = torch.Generator(device).manual_seed(config.seed + 2)

    start_epoch, wall = 0, 0.0
    ckpt_path = out / _CHECKPOINT
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, _REMEDY)
        with restoring(ckpt_path, _REMEDY):
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            data_gen.set_state(ckpt["data_rng"])
            noise_gen.set_state(ckpt["noise_rng"])
            start_epoch, wall = int(ckpt["epoch"]), float(ckpt["wall_s"])
    _truncate_metrics(out / _METRICS, start_epoch)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / _CONFIG, config.to_dict())

    saved_epoch = start_epoch if ckpt_path.is_file() else None  # the last good checkpoint

    data_shape = {"channels": channels, "classes": ds.num_classes, "size": size}
    every = config.epochs_between_evals
    set_noise_generator(model, noise_gen)
    model.train()
    t0 = time.perf_counter()
    record = None
    for epoch in range(start_epoch + 1, config.epochs + 1):
        sums = torch.zeros(4, device=device)  # data term, kl, correct, batches
        for b, idx in enumerate(shuffled_batches(n, batch, data_gen, device)):
            x, y = x_all[idx], y_all[idx]
            logits = model(x)
            data = _data_term(logits, y, n)
            kl = kl_divergence(model)
            loss = data + kl
            if not torch.isfinite(loss):
                step = (epoch - 1) * steps_per_epoch + b + 1
                d, k = float(data.detach()), float(kl.detach())
                raise NonFiniteError(
                    f"the loss became {d + k} at step {step} (epoch {epoch}; data term {d:.4g}, "
                    f"KL {k:.4g}); {kept_note(out, saved_epoch)}; try a lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                correct = (logits.argmax(1) == y).sum()
                sums += torch.stack([data.detach(), kl.detach(), correct.to(sums.dtype),
                                     torch.ones((), device=device)])  # fmt: skip
        data_m, kl_m, correct, batches = sums.tolist()
        figures = {"epoch": epoch, "epochs": config.epochs, "data_term": data_m / batches,
                   "kl": kl_m / batches, "train_acc": correct / n}  # fmt: skip
        figures["loss"] = figures["data_term"] + figures["kl"]
        if on_epoch is not None:
            on_epoch(figures)
        if epoch % every == 0 or epoch == config.epochs:
            eval_gen = torch.Generator(device).manual_seed(config.seed * 1_000_003 + epoch)
            set_noise_generator(model, eval_gen)
            test = evaluate_bnn(model, ds.test.images, ds.test.labels, config.ens_samples)
            if config.dwp_kernel_batch is not None:
                with torch.no_grad():  # every kernel through the VAE: the exact mode's estimate
                    test["kl_exact"] = float(kl_divergence(model))
            set_noise_generator(model, noise_gen)
            model.train()
            elapsed = wall + time.perf_counter() - t0
            record = {**figures, "step": epoch * steps_per_epoch,
                      "lr": sched.get_last_lr()[0], **test, "seconds": elapsed}  # fmt: skip
            del record["epochs"]
            try:  # a last step can turn the weights to NaN after a finite loss
                check_finite(record, f"the evaluation after epoch {epoch} (step "
                             f"{record['step']}) gave")  # fmt: skip
            except NonFiniteError as exc:
                raise NonFiniteError(
                    f"{exc}; {kept_note(out, saved_epoch)}; try a lower --lr"
                ) from None
            append_jsonl(out / _METRICS, record)
            ckpt = {"format_version": BNN_FORMAT_VERSION, "epoch": epoch, "wall_s": elapsed,
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "data_rng": data_gen.get_state(),
                    "noise_rng": noise_gen.get_state(), "data_shape": data_shape,
                    "config": config.to_dict()}  # fmt: skip
            with atomic_path(ckpt_path) as tmp:
                torch.save(ckpt, tmp)
            saved_epoch = epoch
            if on_eval is not None:
                on_eval(record)
    if record is None:  # resumed from the final checkpoint, killed before result.json
        record = _last_metrics(out / _METRICS, config.epochs)
    result = {
        "ens_acc": record["ens_acc"],
        "sample_acc": record["sample_acc"],
        "det_acc": record["det_acc"],
        "nll": record["nll"],
        "ece": record["ece"],
        "wall_s": record["seconds"],
        "epochs": config.epochs,
        "steps": total,
        "examples": n,
        "test_examples": len(ds.test),
        "train_acc": record["train_acc"],
        "kl": record["kl"],
        # the fast mode's kl is its model's value; None where a resumed run's record predates
        # kl_exact
        "kl_exact": record.get("kl_exact", None if config.dwp_kernel_batch else record["kl"]),
        "data_term": record["data_term"],
        "prior": config.prior.value,
        "init": config.init.value,
        "split_seed": config.split_seed,
        "device": str(device),
    }
    check_finite(result, "the result")  # every number was checked on the way: a bug otherwise
    write_json(result_path, result)
    return result


def _epoch(path: Path, record: dict) -> int:
    epoch = record.get("epoch")
    if not isinstance(epoch, int):
        raise DWPError(f"{path}: a record without an epoch number; delete the run to start over")
    return epoch


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (and a line torn by a
    kill)."""
    truncate_jsonl(path, lambda r: _epoch(path, r) <= epoch)


def _last_metrics(path: Path, epoch: int) -> dict:
    records = read_jsonl(path) if path.is_file() else []
    if not records or _epoch(path, records[-1]) != epoch:
        raise DWPError(
            f"{path} lacks the record of the final epoch {epoch}; delete the run to start over"
        )
    return records[-1]
