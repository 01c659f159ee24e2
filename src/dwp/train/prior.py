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
from dwp.errors import DWPError
from dwp.io import append_jsonl
from dwp.kernels import kernel_norms, load_kernel_file
from dwp.priors.store import kernel_summary, save_prior
from dwp.priors.vae import KernelVAE, default_vae_config
from dwp.train.loop import adam_linear_decay, shuffled_batches

__all__ = [
    "PriorTrainConfig",
    "evaluate_prior",
    "fit_prior",
    "kernel_rms",
    "load_kernel_dir",
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
) -> list[dict]:
    """Train ``vae`` in place on kernels ``train`` (N, 1, k, k) for ``config.epochs_for(N)``
    epochs; returns one dict per epoch.

    Each record has the train ELBO per kernel (mean over the epoch's batches, as the reference
    logs it), the learning rate, and the test ELBO per kernel (one draw of z per kernel) if
    ``test`` is given. With ``config.val_fraction`` > 0 that fraction of ``train`` is held out:
    its ELBO (``val_elbo_per_kernel``, the same draws of z every epoch) is logged too, and the
    weights of the epoch where it was highest are the ones kept (``best`` marks that record).
    ``test`` never influences training.
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
    history = []
    best_val, best_state, best_record = -math.inf, None, None
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        vae.train()
        elbo_sum = torch.zeros((), device=device, dtype=torch.float64)
        for idx in shuffled_batches(n, config.batch_size, order_gen, device):
            w = train[idx]
            elbo = vae.elbo(w, gen).sum()
            opt.zero_grad(set_to_none=True)
            (-elbo).backward()
            opt.step()
            sched.step()
            elbo_sum += elbo.detach()
        record = {"epoch": epoch, "epochs": epochs, "train_elbo_per_kernel": float(elbo_sum) / n,
                  "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}  # fmt: skip
        if val is not None:
            score = evaluate_prior(vae, val, samples=4, seed=config.seed)["elbo_per_kernel"]
            record["val_elbo_per_kernel"] = score
            if score > best_val:
                best_val, best_record = score, record
                best_state = {k: v.detach().clone() for k, v in vae.state_dict().items()}
        if test is not None:
            record["test_elbo_per_kernel"] = evaluate_prior(vae, test, seed=epoch)[
                "elbo_per_kernel"
            ]
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    if best_state is not None:
        vae.load_state_dict(best_state)
        best_record["best"] = True
    vae.eval()
    return history


def fit_prior(
    kernels_dir: str | Path,
    out: str | Path,
    config: PriorTrainConfig,
    device: torch.device,
    z_dim: int | None = None,
    hidden: int | None = None,
    standardize: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[KernelVAE, dict]:
    """Fit a kernel VAE to ``kernels_dir`` (``train.npy`` and, if present, ``test.npy``) and
    write the prior directory ``out``, with one JSON line per epoch in ``out/metrics.jsonl``.

    ``z_dim`` / ``hidden`` default to the paper's for the kernel size; with ``standardize`` the
    VAE's ``scale`` is the training kernels' RMS. Returns the VAE and the metadata written to
    ``prior.json`` (whose ``metrics`` hold train and test ELBO per kernel, 10 draws of z each,
    and ``kernel_stats`` the count and statistics of the kernels it was fitted to).
    """
    kernels_dir, out = Path(kernels_dir), Path(out)
    train_k, test_k = load_kernel_dir(kernels_dir, config.min_norm)
    train = torch.from_numpy(train_k)
    test = torch.from_numpy(test_k) if test_k is not None else None
    scale = kernel_rms(train) if standardize else 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        vae = KernelVAE(default_vae_config(train_k.shape[-1], z_dim, hidden, scale))
    vae.to(device)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    log_path.unlink(missing_ok=True)

    def log_epoch(record: dict) -> None:
        append_jsonl(log_path, record)
        if on_epoch is not None:
            on_epoch(record)

    history = train_prior(vae, train, test, config, log_epoch)
    metrics = {"train": evaluate_prior(vae, train, samples=10, seed=config.seed)}
    if test is not None:
        metrics["test"] = evaluate_prior(vae, test, samples=10, seed=config.seed)
    training = {
        **asdict(config),
        "standardize": standardize,
        "best_epoch": next((r["epoch"] for r in history if r.get("best")), None),
        "epochs_run": len(history),
        "kernels": str(kernels_dir.resolve()),
        "seconds": history[-1]["seconds"],
        "device": str(device),
    }
    stats = {"train": kernel_summary(train_k),
             "test": kernel_summary(test_k) if test_k is not None else None}  # fmt: skip
    save_prior(vae, out, training=training, kernel_stats=stats, metrics=metrics)
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
