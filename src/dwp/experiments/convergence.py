"""Convergence with DWP initialisation (as in the paper): the same ordinary net (FConv;
CIFARNet with BatchNorm for CIFAR) trained from conv kernels initialised ``xavier``, ``dwp``
(samples of the prior) and ``filters`` (random kernels of the source nets); test accuracy
against training steps, over seeds. ``model="vae"`` is the paper's VAE-on-MNIST variant: a
convolutional VAE (:class:`dwp.nn.ConvVAE`) whose encoder convs are FConv's, initialised the
same three ways; the test ELBO (nats per image) against training steps.

Every (init, seed) run is written to ``OUT/runs/INIT-sSEED.json`` as it finishes, so a killed
experiment resumes where it stopped and a finished one is read back. ``OUT/curves.csv`` holds
every evaluation, ``OUT/summary.json`` the mean and standard deviation per init and step (and
the first step at which the mean reaches a few accuracy levels), ``OUT/convergence.png`` the
figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from dwp.config import ConvergenceConfig, ConvergenceModel
from dwp.data import few_shot, load_dataset
from dwp.errors import DWPError
from dwp.eval import evaluate_accuracy
from dwp.io import (
    check_finite,
    check_same_config,
    cleanup_on_failure,
    read_json,
    write_csv,
    write_json,
)
from dwp.nn import (
    ConvVAE,
    build_net,
    check_hidden,
    conv_layers,
    conv_names,
    describe_net,
    init_classifier,
    init_conv_kernels,
    resolve_arch,
)

from .common import load_init_sources, run_tasks

__all__ = ["LEVELS", "MODELS", "ConvergenceConfig", "run_convergence", "summarise"]

LEVELS = (0.8, 0.9, 0.95)  # accuracy levels whose first step the summary reports
MODELS = tuple(m.value for m in ConvergenceModel)


@torch.no_grad()
def _test_elbo(model: nn.Module, test, batch_size: int = 1000) -> float:
    """Mean one-sample ELBO per test image, with the same noise at every evaluation."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(0)
    total = sum(float(model.elbo(test.images[i : i + batch_size].to(device), gen).sum())
                for i in range(0, len(test), batch_size))  # fmt: skip
    return total / len(test)


def _train_one(model: nn.Module, train, test, config: ConvergenceConfig, seed: int) -> dict:
    device = next(model.parameters()).device
    x_all, y_all = train.images.to(device), train.labels.to(device)
    n, batch = len(train), min(config.batch_size, len(train))
    gen = torch.Generator().manual_seed(seed + 1)
    noise = torch.Generator(device=device).manual_seed(seed + 2)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    vae, metric = config.model == "vae", config.metric
    evaluate = _test_elbo if vae else evaluate_accuracy
    record = {"step": [0], metric: [evaluate(model, test)], "train_loss": [None]}
    order, pos = torch.randperm(n, generator=gen), 0
    t0 = time.perf_counter()
    for step in range(1, config.steps + 1):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch].to(device)
        pos += batch
        if vae:
            loss = -model.elbo(x_all[idx], noise).mean()
        else:
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % config.eval_every == 0 or step == config.steps:
            record["step"].append(step)
            record[metric].append(evaluate(model, test))
            record["train_loss"].append(float(loss.detach()))
    record["seconds"] = time.perf_counter() - t0
    return record


def _arch(config: ConvergenceConfig, channels: int, size: int) -> str:
    """The network family for images of ``channels`` x ``size`` x ``size``; an error if the VAE
    is asked for images other than 28x28 grey ones."""
    arch = resolve_arch(config.arch, channels, size)
    if config.model == "vae" and (arch != "fconv" or (channels, size) != (1, 28)):
        raise DWPError(f"the VAE convergence model takes 28x28 grey images, not {channels}x{size}"
                       f"x{size} ({config.dataset})")  # fmt: skip
    return arch


def _build(config, init, seed, channels, classes, size, priors, kernel_sets, device):
    arch = _arch(config, channels, size)
    hidden = check_hidden(arch, config.hidden, "target")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if config.model == "vae":
            model = ConvVAE(hidden, config.z_dim)  # xavier weights, zero biases
        else:
            model = build_net(arch, hidden, channels, classes, size)  # xavier, zero biases
            init_classifier(model)
    gen = torch.Generator().manual_seed(seed)
    init_conv_kernels(conv_layers(model), init, priors=priors, kernel_sets=kernel_sets,
                      generator=gen)  # fmt: skip
    return model.to(device)


def summarise(
    runs: list[dict], levels: tuple[float, ...] | None = None, metric: str = "test_acc"
) -> dict:
    """Per init: the evaluation steps, mean and standard deviation of the test metric over
    seeds, and the first step at which the mean reaches each level (None if never). Default
    levels: :data:`LEVELS` for accuracy; for the ELBO, Xavier's final mean (steps to match it)."""
    by_init: dict[str, list[dict]] = {}
    for r in runs:
        by_init.setdefault(r["init"], []).append(r)
    if levels is None and metric == "test_acc":
        levels = LEVELS
    elif levels is None:
        xavier = by_init.get("xavier")
        levels = (statistics.fmean(r[metric][-1] for r in xavier),) if xavier else ()
    out = {}
    for init, rs in by_init.items():
        steps = rs[0]["step"]
        accs = list(zip(*(r[metric] for r in rs), strict=True))
        mean = [statistics.fmean(a) for a in accs]
        std = [statistics.stdev(a) if len(a) > 1 else 0.0 for a in accs]
        first = {f"{lv:.4g}": next((s for s, m in zip(steps, mean, strict=True) if m >= lv), None)
                 for lv in levels}  # fmt: skip
        out[init] = {"seeds": [r["seed"] for r in rs], "step": steps, "mean": mean, "std": std,
                     "final_mean": mean[-1], "final_std": std[-1], "first_step": first}  # fmt: skip
    return out


def run_convergence(
    config: ConvergenceConfig,
    out: str | Path,
    device: torch.device | str = "cpu",
    data_root=None,
    on_run: Callable[[dict], None] | None = None,
    executor=None,
) -> dict:
    """Run (or resume, or read back) the experiment in ``out``; returns the summary dict.

    ``on_run`` receives ``{"init", "seed", "index", "total", "final", "cached"}`` after each
    (init, seed) run (``final``: the last test accuracy or ELBO; ``index``: how many have
    finished). ``executor``: where the runs execute (see :mod:`dwp.executors`); None runs them
    one after another in this process, and the first failure stops the experiment."""
    with cleanup_on_failure(out, keep=["runs"]):  # a failure before any run: nothing left
        return _run_convergence(config, out, device, data_root, on_run, executor)


def _inputs(config: ConvergenceConfig, data_root):
    """The training and test images, their shape and classes, and the init sources."""
    ds = load_dataset(config.dataset, data_root)
    train = few_shot(ds.train, config.examples, 0) if config.examples else ds.train
    channels, size = int(train.images.shape[1]), int(train.images.shape[-1])
    names = list(conv_names(_arch(config, channels, size)))  # the VAE's encoder: FConv's
    priors, kernel_sets = load_init_sources(config.inits, names, config.prior_dirs,
                                            config.kernel_dirs)  # fmt: skip
    return ds, train, channels, size, priors, kernel_sets


def convergence_run(config: ConvergenceConfig, task: tuple[str, int], *, out: str | Path,
                    device="cpu", data_root=None, inputs=None) -> tuple[dict, bool]:  # fmt: skip
    """Run (or read back) the experiment's run ``task`` = (init, seed), written to
    ``out/runs/INIT-sSEED.json``; returns it and whether it was read back. ``inputs``: what
    :func:`_inputs` gives, when the caller has loaded it already."""
    init, seed = task
    path = Path(out) / "runs" / f"{init}-s{seed}.json"
    if path.is_file():
        return read_json(path), True
    inputs = _inputs(config, data_root) if inputs is None else inputs
    ds, train, channels, size, priors, kernel_sets = inputs
    model = _build(config, init, seed, channels, ds.num_classes, size, priors, kernel_sets,
                   torch.device(device))  # fmt: skip
    run = {"init": init, "seed": seed, **_train_one(model, train, ds.test, config, seed)}
    check_finite(run, f"{path.stem}: training gave")
    write_json(path, run)
    return run, False


def _run_convergence(config, out, device, data_root, on_run, executor):
    from functools import partial

    out = Path(out)
    check_same_config(out, config.to_dict(), "an experiment")
    inputs = _inputs(config, data_root)
    ds, train, channels, size, priors, kernel_sets = inputs
    for init in config.inits:  # priors or kernel sets that do not fit the net fail here, first
        _build(config, init, config.seeds[0], channels, ds.num_classes, size, priors, kernel_sets,
               "cpu")  # fmt: skip
    write_json(out / "config.json", config.to_dict())
    tasks = [(a, s) for a in config.inits for s in config.seeds]
    job = partial(convergence_run, config, out=out, device=str(device), data_root=data_root)

    def on_done(outcome: tuple[dict, bool], finished: int) -> None:
        if on_run is not None:
            run, cached = outcome
            on_run({"init": run["init"], "seed": run["seed"], "index": finished,
                    "total": len(tasks), "final": run[config.metric][-1],
                    "cached": cached})  # fmt: skip

    outcomes = run_tasks(executor, job, tasks, [f"{a}-s{s}" for a, s in tasks], on_done,
                         inputs=inputs)  # fmt: skip
    runs = [run for run, _ in outcomes]
    rows = (
        [r["init"], r["seed"], s, f"{a:.6f}", "" if lo is None else f"{lo:.6f}"]
        for r in runs
        for s, a, lo in zip(r["step"], r[config.metric], r["train_loss"], strict=True)
    )
    write_csv(out / "curves.csv", ["init", "seed", "step", config.metric, "train_loss"], rows)
    summary = summarise(runs, metric=config.metric)
    write_json(out / "summary.json", summary)
    from dwp.plots import convergence_curves

    n_train = len(train)
    net = describe_net(config.arch, config.hidden, "target", config.dataset)
    if config.model == "vae":
        net = f"conv VAE (encoder {net}, z {config.z_dim})"
    what = "ELBO per image" if config.model == "vae" else "accuracy"
    convergence_curves(
        summary, out / "convergence.png",
        caption=f"{net} on {config.dataset} ({n_train} training images, batch "
        f"{min(config.batch_size, n_train)}, Adam lr {config.lr:g}); mean ± sd over seeds "
        f"{', '.join(map(str, config.seeds))}; test {what} on {len(ds.test)} images",
        metric=config.metric,
    )  # fmt: skip
    return summary
