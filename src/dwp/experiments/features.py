"""Random feature extraction (as in the paper): the conv kernels of an FConv with BatchNorm (a
CIFARNet for CIFAR) stay frozen at their initialisation (``xavier``, ``dwp`` samples or random
source kernels, ``filters``) and only the BatchNorm parameters and the classifier train; test
accuracy against the width scale k (widths ``round(k * base)``), over seeds.

Every (init, scale, seed) run is written to ``OUT/runs/INIT-kSCALE-sSEED.json`` as it finishes
(a killed experiment resumes, a finished one is read back); ``OUT/results.csv`` holds one row
per run, ``OUT/summary.json`` the mean and standard deviation per init and scale with the
paper's numbers where it has them, ``OUT/features.png`` the figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from dwp.config import FeaturesConfig
from dwp.data import few_shot, load_dataset
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
    ARCH_NAMES,
    build_net,
    check_hidden,
    conv_layers,
    conv_names,
    init_classifier,
    init_conv_kernels,
    resolve_arch,
)
from dwp.train.loop import adam_linear_decay, shuffled_batches

from .common import load_init_sources, run_tasks
from .paper import FEATURES, family

__all__ = ["FeaturesConfig", "run_features", "scale_label", "widths"]


def scale_label(k: float) -> str:
    """``1/16`` for 0.0625, ``1`` for 1.0."""
    return str(Fraction(k).limit_denominator(64))


def widths(base: tuple[int, ...], k: float) -> tuple[int, ...]:
    return tuple(max(1, round(h * k)) for h in base)


def frozen_features_model(
    hidden: tuple[int, ...], init: str, seed: int, channels: int, classes: int, size: int,
    priors=None, kernel_sets=None, arch: str = "fconv",
) -> nn.Module:  # fmt: skip
    """FConv with BatchNorm (or CIFARNet) whose conv kernels are set by ``init`` and frozen
    (conv biases stay 0: the BatchNorm shifts); only the BatchNorm parameters and the
    classifiers train."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_net(arch, hidden, channels, classes, size, batch_norm=True)
        init_classifier(model)
    convs = conv_layers(model)
    init_conv_kernels(convs, init, priors=priors, kernel_sets=kernel_sets,
                      generator=torch.Generator().manual_seed(seed))  # fmt: skip
    for conv in convs.values():
        conv.requires_grad_(False)
    return model


def _train(model: nn.Module, train, test, config: FeaturesConfig, seed: int, device) -> dict:
    model.to(device)
    x_all, y_all = train.images.to(device), train.labels.to(device)
    n, batch = len(train), min(config.batch_size, len(train))
    per_epoch = -(-n // batch)
    total = per_epoch * config.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = adam_linear_decay(params, config.lr, total)
    gen = torch.Generator().manual_seed(seed + 1)
    t0 = time.perf_counter()
    model.train()
    for _ in range(config.epochs):
        for idx in shuffled_batches(n, batch, gen, device):
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return {"test_acc": evaluate_accuracy(model, test), "train_loss": float(loss.detach()),
            "trained_params": sum(p.numel() for p in params),
            "seconds": time.perf_counter() - t0}  # fmt: skip


def run_features(
    config: FeaturesConfig,
    out: str | Path,
    device: torch.device | str = "cpu",
    data_root=None,
    on_run: Callable[[dict], None] | None = None,
    executor=None,
) -> dict:
    """Run (or resume, or read back) the experiment in ``out``; returns the summary dict.

    ``on_run`` receives ``{"init", "scale", "seed", "index", "total", "test_acc", "cached"}``
    after each run (``index``: how many have finished). ``executor``: where the runs execute
    (see :mod:`dwp.executors`); None runs them one after another in this process, and the
    first failure stops the experiment."""
    with cleanup_on_failure(out, keep=["runs"]):  # a failure before any run: nothing left
        return _run_features(config, out, device, data_root, on_run, executor)


def _inputs(config: FeaturesConfig, data_root):
    """The dataset, the training images, their shape, the family, its base widths and the
    init sources."""
    ds = load_dataset(config.dataset, data_root)
    train = few_shot(ds.train, config.examples, 0) if config.examples else ds.train
    channels, size = int(train.images.shape[1]), int(train.images.shape[-1])
    arch = resolve_arch(config.arch, channels, size)
    base = check_hidden(arch, config.base_hidden, "source")
    priors, kernel_sets = load_init_sources(config.inits, list(conv_names(arch)),
                                            config.prior_dirs, config.kernel_dirs)  # fmt: skip
    return ds, train, channels, size, arch, base, priors, kernel_sets


def features_run(config: FeaturesConfig, task: tuple[str, float, int], *, out: str | Path,
                 device="cpu", data_root=None, inputs=None) -> tuple[dict, bool]:  # fmt: skip
    """Run (or read back) the experiment's run ``task`` = (init, scale, seed), written to
    ``out/runs/INIT-kSCALE-sSEED.json``; returns it and whether it was read back.
    ``inputs``: what :func:`_inputs` gives, when the caller has loaded it already."""
    init, k, seed = task
    path = Path(out) / "runs" / f"{init}-k{k:g}-s{seed}.json"
    if path.is_file():
        return read_json(path), True
    inputs = _inputs(config, data_root) if inputs is None else inputs
    ds, train, channels, size, arch, base, priors, kernel_sets = inputs
    hidden = widths(base, k)
    model = frozen_features_model(hidden, init, seed, channels, ds.num_classes, size, priors,
                                  kernel_sets, arch)  # fmt: skip
    run = {"init": init, "scale": k, "seed": seed, "hidden": list(hidden),
           **_train(model, train, ds.test, config, seed, torch.device(device))}  # fmt: skip
    check_finite(run, f"{path.stem}: training gave")
    write_json(path, run)
    return run, False


def _run_features(config, out, device, data_root, on_run, executor):
    from functools import partial

    out = Path(out)
    check_same_config(out, config.to_dict(), "an experiment")
    inputs = _inputs(config, data_root)
    ds, train, channels, size, arch, base, priors, kernel_sets = inputs
    for init in config.inits:  # priors or kernel sets that do not fit the net fail here, first
        frozen_features_model(widths(base, config.scales[0]), init, config.seeds[0], channels,
                              ds.num_classes, size, priors, kernel_sets, arch)  # fmt: skip
    write_json(out / "config.json", config.to_dict())
    tasks = [(i, k, s) for k in config.scales for i in config.inits for s in config.seeds]
    job = partial(features_run, config, out=out, device=str(device), data_root=data_root)

    def on_done(outcome: tuple[dict, bool], finished: int) -> None:
        if on_run is not None:
            run, cached = outcome
            on_run({"init": run["init"], "scale": run["scale"], "seed": run["seed"],
                    "index": finished, "total": len(tasks), "test_acc": run["test_acc"],
                    "cached": cached})  # fmt: skip

    names = [f"{i}-k{k:g}-s{s}" for i, k, s in tasks]
    outcomes = run_tasks(executor, job, tasks, names, on_done, inputs=inputs)
    rows = [run for run, _ in outcomes]
    write_csv(out / "results.csv", ["init", "scale", "hidden", "seed", "test_acc", "seconds"],
              ([r["init"], f"{r['scale']:g}", "/".join(map(str, r["hidden"])), r["seed"],
                f"{r['test_acc']:.6f}", f"{r['seconds']:.2f}"] for r in rows))  # fmt: skip
    summary = summarise_features(rows, config.dataset)
    write_json(out / "summary.json", summary)
    from dwp.plots import features_vs_scale

    n_train = len(train)
    features_vs_scale(
        summary, out / "features.png",
        caption=f"{ARCH_NAMES[arch]} with BatchNorm on {config.dataset} ({n_train} training "
        f"images), widths k x {'/'.join(map(str, base))}, frozen conv kernels; "
        f"{config.epochs} epochs of BatchNorm + classifier; mean ± sd over seeds "
        f"{', '.join(map(str, config.seeds))}; markers: the paper",
    )  # fmt: skip
    return summary


def summarise_features(rows: list[dict], dataset: str) -> dict:
    """Per init: scales, mean and sd of test accuracy over seeds, and the paper's number per
    scale (None where it has none)."""
    paper = FEATURES.get(family(dataset) or "", {})
    by_init: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        by_init.setdefault(r["init"], {}).setdefault(r["scale"], []).append(r["test_acc"])
    out = {}
    for init, per_scale in by_init.items():
        scales = sorted(per_scale)
        accs = [per_scale[k] for k in scales]
        out[init] = {
            "scale": scales,
            "label": [scale_label(k) for k in scales],
            "mean": [statistics.fmean(a) for a in accs],
            "std": [statistics.stdev(a) if len(a) > 1 else 0.0 for a in accs],
            "runs": [len(a) for a in accs],
            "paper": [_paper_at(paper, k, init) for k in scales],
        }
    return out


def _paper_at(paper: dict, k: float, init: str) -> float | None:
    for scale, values in paper.items():
        if abs(scale - k) < 1e-9:
            return values.get(init)
    return None
