"""Fitting a kernel VAE to a kernel dataset (the prior of one layer).

Protocol (DESIGN.md): Adam, lr 1e-3 decayed linearly to 0 over the run, batch 128, 300 epochs,
loss = -ELBO summed over the batch with one sample of z per kernel.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dwp.config import PriorTrainConfig
from dwp.data.shipped import resolve_kernel_layer, source_name
from dwp.errors import DWPError, NonFiniteError
from dwp.io import (
    append_jsonl,
    atomic_path,
    check_finite,
    cleanup_on_failure,
    load_checkpoint,
    restoring,
    run_lock,
    truncate_jsonl,
    write_json,
)
from dwp.kernels import kernel_norms, load_kernel_file
from dwp.priors.store import claim_prior_dir, kernel_summary, load_prior, save_prior
from dwp.priors.vae import KernelVAE, default_vae_config
from dwp.train.loop import adam_linear_decay, kept_note, shuffled_batches

__all__ = [
    "PriorTrainConfig",
    "evaluate_prior",
    "evaluate_prior_dir",
    "fit_prior",
    "kernel_rms",
    "load_kernel_dir",
    "prior_settings",
    "split_validation",
    "train_prior",
]


def kernel_rms(kernels: torch.Tensor) -> float:
    """Root mean square of all kernel values: the scale ``dwp prior train`` standardises by."""
    return float(kernels.double().pow(2).mean().sqrt())


@torch.no_grad()
def evaluate_prior(
    vae: KernelVAE,
    kernels: torch.Tensor,
    samples: int = 1,
    iw_samples: int = 0,
    seed: int = 0,
    chunk: int = 4096,
) -> dict:
    """Mean per-kernel ELBO (``samples`` draws of z per kernel) and, if ``iw_samples`` > 0, the
    mean importance-weighted log-likelihood, in nats per kernel. Runs on the VAE's device."""
    device = next(vae.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = vae.training
    vae.eval()
    elbo_sum, iw_sum = 0.0, 0.0
    for start in range(0, len(kernels), chunk):
        w = kernels[start : start + chunk].to(device)
        elbo_sum += float(vae.elbo(w, gen, samples).double().sum())
        if iw_samples:
            iw_sum += float(vae.iw_log_likelihood(w, iw_samples, gen).double().sum())
    vae.train(was_training)
    out = {"elbo_per_kernel": elbo_sum / len(kernels), "n_kernels": len(kernels),
           "elbo_samples": samples}  # fmt: skip
    if iw_samples:
        out["iw_log_likelihood_per_kernel"] = iw_sum / len(kernels)
        out["iw_samples"] = iw_samples
    return out


def evaluate_prior_dir(
    prior: str | Path,
    kernels: str | Path,
    samples: int = 10,
    iw_samples: int = 200,
    seed: int = 0,
    map_location: str | torch.device | None = None,
    n_samples: int = 2048,
) -> dict:
    """What ``dwp prior eval`` prints: how well the prior in directory (or shipped name)
    ``prior`` scores the kernel file ``kernels`` (N, 1, k, k) ``.npy`` -- or the ``test.npy``
    of a kernel layer directory or shipped layer (``letters-vgg/all3x3``) --, and how its
    samples compare with them.

    For a kernel VAE: ``elbo_per_kernel`` (``samples`` draws of z per kernel), with
    ``iw_samples`` > 0 ``iw_log_likelihood_per_kernel``, ``zero_kernel_elbo``, and
    ``gaussian_reference``: a full-covariance Gaussian fitted to the VAE's training kernels
    (when on disk) scored on the same kernels and at zero (exact log-densities) -- a VAE that
    does no better than it has learned no more than the kernels' covariance, and its zero
    kernel gap is what a density peaked at zero gives (k*k / 2 nats for a Gaussian). For a
    Gaussian prior: ``log_lik_per_kernel`` and ``zero_kernel_log_lik``. For both:
    ``diversity`` (:func:`dwp.kernels.kernel_diversity`) of the kernels, of ``n_samples``
    samples (decoder means, the DWP init's) and draws (w ~ p(w | z), the prior's own; a
    Gaussian's samples are draws), and ``small_kernels`` (:func:`dwp.kernels.small_kernel_mass`
    of the draws). In nats; drawn with ``seed``."""
    from dwp.data.shipped import is_shipped_name, resolve_kernel_layer, resolve_prior_dir
    from dwp.kernels import kernel_diversity, small_kernel_mass
    from dwp.priors.gaussian import GAUSSIAN_FORMAT, GaussianKernelPrior
    from dwp.priors.store import read_prior_meta

    path = resolve_prior_dir(prior)
    # a directory missing its files: load_prior names every one of them
    gaussian = (path / "prior.json").is_file() and (
        read_prior_meta(path).get("format") == GAUSSIAN_FORMAT
    )
    model = (GaussianKernelPrior.from_dir(path, map_location) if gaussian
             else load_prior(path, map_location=map_location)[0])  # fmt: skip
    k = model.kernel_size
    if Path(kernels).is_dir() or is_shipped_name(kernels):  # a layer: its held-out kernels
        kernels = resolve_kernel_layer(kernels) / "test.npy"
    w = torch.from_numpy(load_kernel_file(kernels, k))
    zero = torch.zeros(1, 1, k, k)
    gen = torch.Generator().manual_seed(seed)
    if gaussian:
        result = {"family": "gaussian", "n_kernels": len(w),
                  "log_lik_per_kernel": float(model.log_prob(w).double().mean()),
                  "zero_kernel_log_lik": float(model.log_prob(zero)[0])}  # fmt: skip
        means = draws = model.sample_kernels(n_samples, gen).cpu().numpy()
    else:
        result = {"family": "vae", **evaluate_prior(model, w, samples, iw_samples, seed)}
        result["zero_kernel_elbo"] = zero_kernel_elbo(model, samples=samples, seed=seed)
        device = next(model.parameters()).device
        with torch.no_grad():
            g = torch.Generator(device=device)
            means = model.sample(n_samples, g.manual_seed(seed)).cpu().numpy()
            draws = model.sample(n_samples, g.manual_seed(seed), mean=False).cpu().numpy()
        try:
            ref = GaussianKernelPrior.from_dir(path)
        except DWPError:  # an imported prior records no training kernels
            result["gaussian_reference"] = None
        else:
            result["gaussian_reference"] = {
                "log_lik_per_kernel": float(ref.log_prob(w).double().mean()),
                "zero_kernel_log_lik": float(ref.log_prob(zero)[0]),
            }
    result["diversity"] = {"kernels": kernel_diversity(w.numpy(), seed=seed),
                           "samples": kernel_diversity(means, seed=seed),
                           "draws": kernel_diversity(draws, seed=seed)}  # fmt: skip
    result["small_kernels"] = small_kernel_mass(w.numpy(), draws)
    result.update({"kernel_size": k, "prior": str(prior), "kernels": str(kernels)})
    return result


@torch.no_grad()
def zero_kernel_elbo(vae: KernelVAE, samples: int = 1, seed: int = 0, draws: int = 256) -> float:
    """The ELBO of the all-zero kernel (mean over ``draws`` copies, ``samples`` draws of z
    each), in nats. Far above the kernels' ``elbo_per_kernel``, it says the prior's density
    peaks at zero: under such a prior the mode-seeking KL of a mean-field Bayesian layer shrinks
    the layer's kernels towards zero (``PriorTrainConfig.min_norm`` keeps small kernels out of
    training)."""
    p = next(vae.parameters())
    gen = torch.Generator(device=p.device).manual_seed(seed)
    was_training = vae.training
    vae.eval()
    zero = torch.zeros(draws, 1, vae.kernel_size, vae.kernel_size, device=p.device, dtype=p.dtype)
    value = float(vae.elbo(zero, gen, samples).double().mean())
    vae.train(was_training)
    return value


def split_validation(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) of a seeded random split of ``n`` kernels; no validation part
    when ``fraction`` is 0 or fewer than 20 kernels would remain for it."""
    n_val = round(fraction * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    if n_val < 20 or n - n_val < 1:
        return torch.arange(n), torch.arange(0)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def train_prior(
    vae: KernelVAE,
    train: torch.Tensor,
    test: torch.Tensor | None,
    config: PriorTrainConfig,
    on_epoch: Callable[[dict], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 30.0,
) -> list[dict]:
    """Train ``vae`` in place on kernels ``train`` (N, 1, k, k) for ``config.epochs_for(N)``
    epochs; returns one dict per epoch.

    Each record has the train ELBO per kernel (mean over the epoch's batches, as the reference
    logs it), the learning rate, and the test ELBO per kernel (one draw of z per kernel) if
    ``test`` is given. With ``config.val_fraction`` > 0 that fraction of ``train`` is held out:
    its ELBO (``val_elbo_per_kernel``, the same draws of z every epoch) is logged too, and the
    weights of the epoch where it was highest are the ones kept (``best`` marks that record).
    ``test`` never influences training.

    ``checkpoint``: a file where the whole training state is saved after an epoch once
    ``checkpoint_seconds`` have passed since the last save (and after the last epoch); a
    training started with an existing one resumes from it and ends exactly as an uninterrupted
    one. A NaN or infinite ELBO stops training with :class:`~dwp.errors.NonFiniteError` naming
    the step, before the epoch is saved.
    """
    device = next(vae.parameters()).device
    fit_idx, val_idx = split_validation(len(train), config.val_fraction, config.seed)
    val = train[val_idx].to(device) if len(val_idx) else None
    train = train[fit_idx].to(device)
    n = len(train)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    order_gen = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = (n + config.batch_size - 1) // config.batch_size
    epochs = config.epochs_for(n)
    total = steps_per_epoch * epochs
    opt, sched = adam_linear_decay(vae.parameters(), config.lr, total)
    history: list[dict] = []
    best_val, best_state, best_epoch = -math.inf, None, None
    wall, saved_epoch = 0.0, None  # saved_epoch: that of the last good checkpoint
    if checkpoint is not None and Path(checkpoint).is_file():
        state = _load_state(Path(checkpoint), vae, opt, sched, gen, order_gen)
        history, wall, saved_epoch = state["history"], state["wall_s"], state["epoch"]
        best_val, best_state, best_epoch = (
            state["best_val"],
            state["best_state"],
            state["best_epoch"],
        )
    where = Path(checkpoint).parent if checkpoint is not None else None
    t0 = time.perf_counter() - wall
    saved_at = time.perf_counter()
    for epoch in range(len(history) + 1, epochs + 1):
        vae.train()
        elbos = torch.zeros(steps_per_epoch, device=device, dtype=torch.float64)
        for b, idx in enumerate(shuffled_batches(n, config.batch_size, order_gen, device)):
            w = train[idx]
            elbo = vae.elbo(w, gen).sum()
            opt.zero_grad(set_to_none=True)
            (-elbo).backward()
            opt.step()
            sched.step()
            elbos[b] = elbo.detach()
        bad = (~torch.isfinite(elbos)).nonzero()  # one sync per epoch, not per step
        if len(bad):
            step = (epoch - 1) * steps_per_epoch + int(bad[0]) + 1
            raise NonFiniteError(
                f"the kernel VAE's ELBO became {float(elbos[bad[0]])} at step {step} (epoch "
                f"{epoch}); {kept_note(where, saved_epoch)}; try a lower --lr"
            )
        record = {"epoch": epoch, "epochs": epochs,
                  "train_elbo_per_kernel": float(elbos.sum()) / n,
                  "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}  # fmt: skip
        if val is not None:
            score = evaluate_prior(vae, val, samples=4, seed=config.seed)["elbo_per_kernel"]
            record["val_elbo_per_kernel"] = score
            if score > best_val:
                best_val, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in vae.state_dict().items()}
        if test is not None:
            record["test_elbo_per_kernel"] = evaluate_prior(vae, test, seed=epoch)[
                "elbo_per_kernel"
            ]
        try:
            check_finite(
                record, f"the kernel VAE's epoch {epoch} (step {epoch * steps_per_epoch}) gave"
            )
        except NonFiniteError as exc:
            raise NonFiniteError(
                f"{exc}; {kept_note(where, saved_epoch)}; try a lower --lr"
            ) from None
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        now = time.perf_counter()
        if checkpoint is not None and (now - saved_at >= checkpoint_seconds or epoch == epochs):
            state = {"epoch": epoch, "wall_s": now - t0, "history": history,
                     "vae": vae.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "z_rng": gen.get_state(),
                     "order_rng": order_gen.get_state(), "best_val": best_val,
                     "best_state": best_state, "best_epoch": best_epoch}  # fmt: skip
            with atomic_path(checkpoint) as tmp:
                torch.save(state, tmp)
            saved_at, saved_epoch = now, epoch
    if best_state is not None:
        vae.load_state_dict(best_state)
        history[best_epoch - 1]["best"] = True
    vae.eval()
    return history


def _load_state(path: Path, vae, opt, sched, gen, order_gen) -> dict:
    state = load_checkpoint(path, _REMEDY)
    with restoring(path, _REMEDY):
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["z_rng"])
        order_gen.set_state(state["order_rng"])
        if len(state["history"]) != state["epoch"]:
            raise ValueError("history and epoch disagree")
    return state


_CHECKPOINT = "checkpoint.pt"
_REMEDY = "delete it to start the training over"
#: Seconds between checkpoints of :func:`fit_prior` (at most one per epoch; the last epoch
#: always): small enough to lose little to a kill, large enough to cost nothing.
CHECKPOINT_SECONDS = 30.0


def prior_settings(
    kernels_dir: str | Path,
    config: PriorTrainConfig,
    z_dim: int | None = None,
    hidden: int | None = None,
    standardize: bool = True,
) -> dict:
    """What a prior directory's ``config.json`` records of the training that made it (the
    kernels by shipped name or absolute path): two priors of equal settings are the same
    prior, as training is deterministic for a seed on one device type."""
    return {"kernels": source_name(resolve_kernel_layer(kernels_dir)), **asdict(config),
            "z_dim": z_dim, "hidden": hidden, "standardize": standardize}  # fmt: skip


def fit_prior(
    kernels_dir: str | Path,
    out: str | Path,
    config: PriorTrainConfig,
    device: torch.device,
    z_dim: int | None = None,
    hidden: int | None = None,
    standardize: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    checkpoint_seconds: float | None = None,
) -> tuple[KernelVAE, dict]:
    """Fit a kernel VAE to ``kernels_dir`` (a layer directory or the name of a shipped one,
    ``letters-fconv/conv1``; ``train.npy`` and, if present, ``test.npy``) and
    write the prior directory ``out``, with one JSON line per epoch in ``out/metrics.jsonl``.

    ``z_dim`` / ``hidden`` default to the paper's for the kernel size; with ``standardize`` the
    VAE's ``scale`` is the training kernels' RMS. Returns the VAE and the metadata written to
    ``prior.json`` (whose ``metrics`` hold train and test ELBO per kernel, 10 draws of z each,
    and ``kernel_stats`` the count and statistics of the kernels it was fitted to).

    Like a Bayesian CNN run, ``out`` holds one training: its ``config.json`` is checked, so a
    directory of another config (or one that is not empty and holds no such config) is refused;
    a finished prior is loaded, not re-trained; a killed training resumes from
    ``checkpoint.pt`` (saved at most every ``checkpoint_seconds``, default
    :data:`CHECKPOINT_SECONDS`) and ends exactly as an uninterrupted one. ``prior.json`` is
    written last: until then the directory is not a loadable prior.
    """
    kernels_dir, out = resolve_kernel_layer(kernels_dir), Path(out)
    settings = prior_settings(kernels_dir, config, z_dim, hidden, standardize)
    claim_prior_dir(out, settings)
    if (out / "prior.json").is_file():
        vae, meta = load_prior(out, map_location=device)
        return vae, {k: meta[k] for k in ("vae", "training", "metrics", "kernel_stats")}
    train_k, test_k = load_kernel_dir(kernels_dir, config.min_norm)
    with cleanup_on_failure(out, keep=[_CHECKPOINT]), run_lock(out):
        return _fit(kernels_dir, out, settings, train_k, test_k, config, device, z_dim, hidden,
                    standardize, on_epoch, checkpoint_seconds)  # fmt: skip


def _fit(kernels_dir, out, settings, train_k, test_k, config, device, z_dim, hidden, standardize,
         on_epoch, checkpoint_seconds):  # fmt: skip
    train = torch.from_numpy(train_k)
    test = torch.from_numpy(test_k) if test_k is not None else None
    scale = kernel_rms(train) if standardize else 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        vae = KernelVAE(default_vae_config(train_k.shape[-1], z_dim, hidden, scale))
    vae.to(device)
    write_json(out / "config.json", settings)
    log_path, ckpt = out / "metrics.jsonl", out / _CHECKPOINT
    truncated = False

    def log_epoch(record: dict) -> None:
        nonlocal truncated
        if not truncated:  # the first epoch after the checkpoint: drop the log's later lines
            first = record["epoch"]
            truncate_jsonl(
                log_path, lambda r: isinstance(r.get("epoch"), int) and r["epoch"] < first
            )
            truncated = True
        append_jsonl(log_path, record)
        if on_epoch is not None:
            on_epoch(record)

    every = CHECKPOINT_SECONDS if checkpoint_seconds is None else checkpoint_seconds
    history = train_prior(vae, train, test, config, log_epoch, ckpt, every)
    metrics = {"train": evaluate_prior(vae, train, samples=10, seed=config.seed)}
    if test is not None:
        metrics["test"] = evaluate_prior(vae, test, samples=10, seed=config.seed)
    check_finite(metrics, "the trained prior's ELBO")
    training = {
        **asdict(config),
        "standardize": standardize,
        "best_epoch": next((r["epoch"] for r in history if r.get("best")), None),
        "epochs_run": len(history),
        "kernels": source_name(kernels_dir),
        "seconds": history[-1]["seconds"],
        "device": str(device),
    }
    stats = {"train": kernel_summary(train_k),
             "test": kernel_summary(test_k) if test_k is not None else None}  # fmt: skip
    save_prior(vae, out, training=training, kernel_stats=stats, metrics=metrics)
    ckpt.unlink(missing_ok=True)  # the prior is complete: its weights are in weights.pt
    return vae, {"vae": vae.config.to_dict(), "training": training, "metrics": metrics,
                 "kernel_stats": stats}  # fmt: skip


def load_kernel_dir(
    kernels_dir: Path, min_norm: float = 0.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """``train.npy`` (required) and ``test.npy`` (optional, same kernel size) of a layer
    directory written by ``dwp kernels extract``, without the kernels whose L2 norm is below
    ``min_norm``."""
    train_path, test_path = kernels_dir / "train.npy", kernels_dir / "test.npy"
    if not train_path.is_file():
        raise DWPError(
            f"{train_path} not found: --kernels takes a layer directory holding train.npy "
            "(and test.npy), such as OUT/conv1 of `dwp kernels extract`"
        )
    train = load_kernel_file(train_path)
    test = load_kernel_file(test_path, train.shape[-1]) if test_path.is_file() else None
    if min_norm > 0:
        train = train[kernel_norms(train) >= min_norm]
        if len(train) < 2:
            raise DWPError(
                f"{train_path}: fewer than 2 kernels have an L2 norm of at least {min_norm:g}; "
                "lower --min-norm"
            )
        if test is not None:
            test = test[kernel_norms(test) >= min_norm]
            test = test if len(test) else None
    return train, test
