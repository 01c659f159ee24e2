"""Training any Bayesian model by variational inference: the negative ELBO, written once.

``loss = N/B * (summed cross-entropy of the batch) + KL``: the first term estimates the sum over
the N training examples, KL is :func:`dwp.nn.kl_divergence` (the sum over the Bayesian layers of
KL(q || prior); for the deep weight prior its auxiliary upper bound), with weight 1 and no
annealing. Adam, the learning rate decayed linearly to 0 over the run; batch 256 (the whole set
when N <= 256).

A run directory (optional) holds ``config.json``, ``metrics.jsonl`` (one line per evaluation),
``checkpoint.pt`` (model, optimiser, scheduler and RNG states; the final model at the end) and,
once finished, ``result.json`` — the layout of ``dwp bnn train``, so ``dwp bnn summary`` tables
it. Re-running a finished run returns its result; a killed run resumes from its last checkpoint
and ends exactly as an uninterrupted one. With a deep weight prior in its fast mode (a kernel
batch), ``kl`` is the value the optimiser saw and each evaluation also records ``kl_exact``,
every kernel through the VAE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from dwp.config import positive, require, seed_ok
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
from dwp.nn.bayes import bayes_layers, describe_bayes, kl_divergence, set_noise_generator
from dwp.train.loop import adam_linear_decay, kept_note, shuffled_batches

if TYPE_CHECKING:
    from dwp.data import ImageSet

    Data = ImageSet | tuple[torch.Tensor, torch.Tensor]

__all__ = ["FitConfig", "elbo_loss", "fit"]

CONFIG, METRICS, CHECKPOINT, RESULT = "config.json", "metrics.jsonl", "checkpoint.pt", "result.json"
FIT_FORMAT_VERSION = 1
_REMEDY = "delete it to start the run over"


@dataclass
class FitConfig:
    """How :func:`fit` trains. ``eval_every`` None: 10 evaluations per run (with a test set).
    ``init``: ``keep`` (the posterior means as they are) or ``dwp`` (the kernels of every layer
    under a deep weight prior start at samples of it, the paper's DWP init: decoder means;
    drawn with ``seed``) or ``dwp-draw`` (at draws w ~ p(w | z) of it). ``dataset`` and
    ``split_seed`` only label the run in ``dwp bnn summary``."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    eval_every: int | None = None
    ens_samples: int = 10
    init: str = "keep"
    dataset: str = "custom"
    split_seed: int | None = None

    def __post_init__(self):
        require(
            "fit config",
            self,
            epochs=isinstance(self.epochs, int) and self.epochs >= 1,
            batch_size=isinstance(self.batch_size, int) and self.batch_size >= 1,
            lr=positive(self.lr),
            seed=seed_ok(self.seed),
            eval_every=self.eval_every is None or self.eval_every >= 1,
            ens_samples=self.ens_samples >= 1,
            init=self.init in ("keep", "dwp", "dwp-draw"),
        )

    @property
    def epochs_between_evals(self) -> int:
        return self.eval_every or max(1, self.epochs // 10)


def elbo_loss(
    model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The negative ELBO of one batch and its two terms: ``(loss, data_term, kl)``, with
    ``data_term = n / B * summed cross-entropy`` (an unbiased estimate of the sum over the ``n``
    training examples) and ``kl = kl_divergence(model)``."""
    data = _data_term(logits, labels, n)
    kl = kl_divergence(model)
    return data + kl, data, kl


def _data_term(logits: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum") * (n / len(y))


def _as_pair(data, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(data, "images") and hasattr(data, "labels"):
        x, y = data.images, data.labels
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
    else:
        raise DWPError(f"{what}: expected an ImageSet or a pair (images, labels)")
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise DWPError(f"{what}: images and labels must be tensors")
    if len(x) != len(y) or len(x) == 0:
        raise DWPError(f"{what}: {len(x)} images and {len(y)} labels (need as many, at least 1)")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise DWPError(f"{what}: labels must be integer class indices, got {y.dtype}")
    if not torch.isfinite(x).all():
        raise DWPError(f"{what}: the images contain NaN or inf")
    return x, y.long()


def _has_fast_dwp(model: nn.Module) -> bool:
    return any(getattr(m.prior, "kernel_batch", None) for m in bayes_layers(model).values())


def _dwp_init(model: nn.Module, seed: int, init: str = "dwp") -> None:
    from dwp.nn.init import init_conv_kernels

    layers = {n: m for n, m in bayes_layers(model).items()
              if hasattr(m.prior, "sample_kernels") and isinstance(m, nn.Conv2d)}  # fmt: skip
    if not layers:
        raise DWPError(f"init {init!r} needs a layer under a deep weight prior; the model has none")
    gen = torch.Generator().manual_seed(seed)
    init_conv_kernels(layers, init, priors={n: m.prior for n, m in layers.items()},
                      generator=gen)  # fmt: skip


def run_settings(model: nn.Module, config: FitConfig, n: int) -> dict:
    """What ``config.json`` of a :func:`fit` run records: the fit config, the examples, and
    which layer has which posterior and prior (the columns of ``dwp bnn summary``: dataset,
    prior, init, examples, epochs, split_seed)."""
    rows = describe_bayes(model)
    kinds = sorted({r["prior"].split(" (")[0] for r in rows if r["posterior"] != "deterministic"})
    batches = sorted({getattr(m.prior, "kernel_batch", None) or 0
                      for m in bayes_layers(model).values()})  # fmt: skip
    return {"format": "dwp-fit", "format_version": FIT_FORMAT_VERSION, **asdict(config),
            "examples": n, "prior": " + ".join(kinds) or "none",
            "dwp_kernel_batch": max(batches) if batches and max(batches) else None,
            "layers": rows}  # fmt: skip


def fit(
    model: nn.Module,
    train: Data,
    *,
    test: Data | None = None,
    config: FitConfig | None = None,
    out: str | Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_eval: Callable[[dict], None] | None = None,
    **options,
) -> dict:
    """Train the Bayesian ``model`` (:func:`dwp.nn.bayesianize`) on ``train`` by maximising the
    ELBO; returns the result (the last evaluation's figures, or the training figures without a
    test set).

    Args:
        model: any model with Bayesian layers; it trains on its own device.
        train: an :class:`~dwp.data.ImageSet` or a pair ``(images, labels)`` of tensors (the
            whole training set; batches are drawn from it).
        test: the same forms, or None; evaluated every ``eval_every`` epochs and at the end with
            the ``ens_samples``-sample ensemble (:func:`dwp.eval.evaluate_bnn`).
        config: a :class:`FitConfig`; ``options`` (``epochs=...``, ``lr=...``) override its
            fields.
        out: a run directory (config, metrics, checkpoints, result), or None to keep nothing.
            A finished run is read back (its final weights loaded into ``model``), a killed one
            resumes; a directory of another run (model, priors or config) is refused.
        on_epoch: receives ``{"epoch", "epochs", "loss", "data_term", "kl", "train_acc"}`` after
            every epoch; ``on_eval`` each evaluation record.

    Raises :class:`DWPError` if the loss becomes NaN or infinite (naming the step).
    """
    base = asdict(config) if config is not None else {}
    try:
        config = FitConfig(**{**base, **options})
    except TypeError as exc:
        raise DWPError(f"fit: {exc}") from None
    if not bayes_layers(model):
        raise DWPError("the model has no Bayesian layers: make some with dwp.nn.bayesianize")
    x, y = _as_pair(train, "train")
    test_xy = _as_pair(test, "test") if test is not None else None
    settings = run_settings(model, config, len(x))
    if out is None:
        if config.init != "keep":
            _dwp_init(model, config.seed, config.init)
        return train_loop(model, x, y, test_xy, config, None, settings)
    out = Path(out)
    check_same_config(out, settings)
    done = read_result(out)
    if done is not None:
        _load_final(model, out)
        return done
    with cleanup_on_failure(out, keep=[CHECKPOINT]), run_lock(out):
        done = read_result(out)
        if done is not None:
            _load_final(model, out)
            return done
        if config.init != "keep" and not (out / CHECKPOINT).is_file():
            _dwp_init(model, config.seed, config.init)
        return train_loop(model, x, y, test_xy, config, out, settings, on_epoch=on_epoch,
                          on_eval=on_eval, checkpoint_extra={"bayes": _plan(model)})  # fmt: skip


def _plan(model: nn.Module) -> dict | None:
    """The checkpoint's reference to the priors (``dwp.nn.load_bayesian`` reads a run with it);
    None for priors that cannot be referenced (in-memory VAEs): the run still resumes."""
    from dwp.nn.saving import bayes_plan

    try:
        return bayes_plan(model)
    except DWPError:
        return None


def read_result(out: Path) -> dict | None:
    """The ``result.json`` of a finished run directory (None if it has not finished); a result
    holding NaN or inf is refused."""
    path = out / RESULT
    if not path.is_file():
        return None
    result = read_json(path)
    check_finite(result, f"{path} is not a valid result (delete it to re-run the run)")
    return result


def _load_final(model: nn.Module, out: Path) -> None:
    ckpt = load_checkpoint(out / CHECKPOINT, _REMEDY)
    with restoring(out / CHECKPOINT, _REMEDY):
        model.load_state_dict(ckpt["model"])


def train_loop(
    model: nn.Module,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    config,
    out: Path | None,
    settings: dict,
    *,
    checkpoint_extra: dict | None = None,
    result_extra: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_eval: Callable[[dict], None] | None = None,
) -> dict:
    """The training loop of :func:`fit` and :func:`dwp.train.bnn.train_bnn`: ``config`` needs
    ``epochs``, ``batch_size``, ``lr``, ``seed``, ``ens_samples`` and ``epochs_between_evals``;
    ``out`` (or None) the run directory, whose ``config.json`` gets ``settings``."""
    device = next(model.parameters()).device
    x_all, y_all = x_all.to(device), y_all.to(device)
    n = len(x_all)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * config.epochs
    opt, sched = adam_linear_decay(params, config.lr, total)
    data_gen = torch.Generator().manual_seed(config.seed + 1)
    noise_gen = torch.Generator(device).manual_seed(config.seed + 2)
    fast = _has_fast_dwp(model)

    start_epoch, wall = 0, 0.0
    ckpt_path = out / CHECKPOINT if out is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, _REMEDY)
        with restoring(ckpt_path, _REMEDY):
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            data_gen.set_state(ckpt["data_rng"])
            noise_gen.set_state(ckpt["noise_rng"])
            start_epoch, wall = int(ckpt["epoch"]), float(ckpt["wall_s"])
    if out is not None:
        _truncate_metrics(out / METRICS, start_epoch)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG, settings)
    saved_epoch = start_epoch if ckpt_path is not None and ckpt_path.is_file() else None
    where = out if out is not None else "the model"

    every = config.epochs_between_evals
    set_noise_generator(model, noise_gen)
    model.train()
    t0 = time.perf_counter()
    record = None
    for epoch in range(start_epoch + 1, config.epochs + 1):
        sums = torch.zeros(4, device=device)  # data term, kl, correct, batches
        for b, idx in enumerate(shuffled_batches(n, batch, data_gen, device)):
            xb, yb = x_all[idx], y_all[idx]
            logits = model(xb)
            loss, data, kl = elbo_loss(model, logits, yb, n)
            if not torch.isfinite(loss):
                step = (epoch - 1) * steps_per_epoch + b + 1
                d, k = float(data.detach()), float(kl.detach())
                raise NonFiniteError(
                    f"the loss became {d + k} at step {step} (epoch {epoch}; data term {d:.4g}, "
                    f"KL {k:.4g}); {kept_note(where, saved_epoch)}; try a lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                correct = (logits.argmax(1) == yb).sum()
                sums += torch.stack([data.detach(), kl.detach(), correct.to(sums.dtype),
                                     torch.ones((), device=device)])  # fmt: skip
        data_m, kl_m, correct, batches = sums.tolist()
        figures = {"epoch": epoch, "epochs": config.epochs, "data_term": data_m / batches,
                   "kl": kl_m / batches, "train_acc": correct / n}  # fmt: skip
        figures["loss"] = figures["data_term"] + figures["kl"]
        if on_epoch is not None:
            on_epoch(figures)
        if epoch % every == 0 or epoch == config.epochs:
            test_figures = {}
            if test is not None:
                eval_gen = torch.Generator(device).manual_seed(config.seed * 1_000_003 + epoch)
                set_noise_generator(model, eval_gen)
                test_figures = evaluate_bnn(model, test[0], test[1], config.ens_samples)
            if fast:
                with torch.no_grad():  # every kernel through the VAE: the exact mode's estimate
                    test_figures["kl_exact"] = float(kl_divergence(model))
            set_noise_generator(model, noise_gen)
            model.train()
            elapsed = wall + time.perf_counter() - t0
            record = {**figures, "step": epoch * steps_per_epoch,
                      "lr": sched.get_last_lr()[0], **test_figures,
                      "seconds": elapsed}  # fmt: skip
            del record["epochs"]
            try:  # a last step can turn the weights to NaN after a finite loss
                check_finite(record, f"the evaluation after epoch {epoch} (step "
                             f"{record['step']}) gave")  # fmt: skip
            except NonFiniteError as exc:
                raise NonFiniteError(
                    f"{exc}; {kept_note(where, saved_epoch)}; try a lower --lr"
                ) from None
            if out is not None:
                append_jsonl(out / METRICS, record)
                ckpt = {"format_version": FIT_FORMAT_VERSION, "epoch": epoch, "wall_s": elapsed,
                        "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "data_rng": data_gen.get_state(),
                        "noise_rng": noise_gen.get_state(),
                        **(checkpoint_extra or {})}  # fmt: skip
                with atomic_path(ckpt_path) as tmp:
                    torch.save(ckpt, tmp)
                saved_epoch = epoch
            if on_eval is not None:
                on_eval(record)
    if record is None:  # resumed from the final checkpoint, killed before result.json
        record = _last_metrics(out / METRICS, config.epochs)
    result = {key: record[key] for key in ("ens_acc", "sample_acc", "det_acc", "nll", "ece")
              if key in record}  # fmt: skip
    result.update({
        "wall_s": record["seconds"],
        "epochs": config.epochs,
        "steps": total,
        "examples": n,
        "test_examples": len(test[0]) if test is not None else 0,
        "train_acc": record["train_acc"],
        "kl": record["kl"],
        # the fast mode's kl is its model's value; None where a resumed run's record predates
        # kl_exact
        "kl_exact": record.get("kl_exact", None if fast else record["kl"]),
        "data_term": record["data_term"],
        **(result_extra or {}),
        "device": str(device),
    })  # fmt: skip
    check_finite(result, "the result")  # every number was checked on the way: a bug otherwise
    if out is not None:
        write_json(out / RESULT, result)
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
