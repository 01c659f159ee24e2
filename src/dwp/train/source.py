"""Source networks: ordinary nets (FConv; CIFARNet for CIFAR; VGGNet with ``arch="vgg"``)
trained on the source domain, whose kernels become the training data of the prior.

Protocol (DESIGN.md): batch 256, Adam lr 1e-3 decayed linearly to 0 over the run, loss = mean
cross-entropy + ``l2`` * (sum of squares of all conv parameters). The L2 term drives most kernels
to almost zero; the survivors are the kernel dataset.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from dwp.config import SourceConfig
from dwp.data import ImageSet, load_dataset
from dwp.errors import DWPError, one_line
from dwp.eval import evaluate_accuracy
from dwp.io import (
    append_jsonl,
    atomic_path,
    check_finite,
    check_finite_state,
    cleanup_on_failure,
    jsonable,
    load_torch,
    read_json,
    write_json,
)
from dwp.nn import build_net, check_hidden, l2_penalty, resolve_arch
from dwp.train.loop import adam_linear_decay, shuffled_batches

__all__ = [
    "SOURCE_FORMAT_VERSION",
    "SourceConfig",
    "load_source_net",
    "train_one_source_net",
    "train_source_net",
    "train_source_nets",
]

log = logging.getLogger(__name__)

SOURCE_FORMAT_VERSION = 1


def train_source_net(
    model: nn.Module,
    train: ImageSet,
    test: ImageSet,
    config: SourceConfig,
    generator: torch.Generator,
    on_step: Callable[[dict], None] | None = None,
    log_every: int = 10,
) -> dict:
    """Train one net in place; returns final metrics (train loss, test accuracy, seconds).

    ``generator`` (on the CPU) orders the batches. The data are moved to the model's device once.
    ``on_step`` receives ``{"step", "steps", "loss", "acc"}`` (running means over the epoch)
    every ``log_every`` steps.
    """
    device = next(model.parameters()).device
    x_all, y_all = train.images.to(device), train.labels.to(device)
    n = len(train)
    steps_per_epoch = (n + config.batch_size - 1) // config.batch_size
    total = steps_per_epoch * config.epochs
    opt, sched = adam_linear_decay(model.parameters(), config.lr, total)
    model.train()
    t0 = time.perf_counter()
    step = 0
    for _ in range(config.epochs):
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for b, idx in enumerate(shuffled_batches(n, config.batch_size, generator, device)):
            x, y = x_all[idx], y_all[idx]
            logits = model(x)
            ce = F.cross_entropy(logits, y)
            loss = ce + config.l2 * l2_penalty(model) if config.l2 else ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == y).sum()
            if on_step is not None and (step % log_every == 0 or step == total):
                seen = min(n, (b + 1) * config.batch_size)  # examples seen this epoch
                on_step({"step": step, "steps": total, "loss": float(loss_sum) / seen,
                         "acc": float(correct) / seen})  # fmt: skip
    seconds = time.perf_counter() - t0
    return {
        "train_loss": float(loss_sum) / n,  # mean over the last epoch
        "train_acc": float(correct) / n,
        "test_acc": evaluate_accuracy(model, test),
        "seconds": seconds,
        "steps": total,
    }


def _net_path(out: Path, index: int) -> Path:
    return out / f"net-{index:03d}.pt"


def load_source_net(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Load a source-net checkpoint; returns the model and the checkpoint's metadata."""
    path = Path(path)
    ckpt = load_torch(path, "source-net checkpoint", map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != SOURCE_FORMAT_VERSION:
        raise DWPError(
            f"{path}: not a dwp source-net checkpoint of format version {SOURCE_FORMAT_VERSION}"
        )
    check_finite_state(ckpt.get("state_dict"), path)
    try:
        cfg = ckpt["model"]
        model = build_net(cfg.get("kind", "fconv"), tuple(cfg["hidden"]), cfg["in_channels"],
                          cfg["num_classes"], cfg["image_size"])  # fmt: skip
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, AttributeError) as exc:
        raise DWPError(f"{path}: a damaged source-net checkpoint ({one_line(exc, 160)})") from None
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta


def train_source_nets(
    config: SourceConfig,
    out: str | Path,
    device: torch.device,
    data_root: str | Path | None = None,
    on_net_start: Callable[[int, int], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_net_done: Callable[[int, dict], None] | None = None,
    executor=None,
) -> list[dict]:
    """Train ``config.nets`` nets into ``out`` (one ``net-XXX.pt`` each), skipping finished ones.

    Each checkpoint holds the weights, the model and training config, the seed, and the final
    metrics (test accuracy among them); it is written atomically, so an interrupted run leaves no
    half-written file and a re-run resumes with the first missing net. Returns the metrics of all
    nets (finished earlier or now), also appended as JSON lines to ``out/metrics.jsonl``.

    ``executor`` (see :mod:`dwp.executors`): train the missing nets as independent runs there
    (``on_net_start`` and ``on_step`` are then not called); a net that fails does not stop the
    others, and :class:`~dwp.executors.RunFailed` names it once all have ended.
    """
    out = Path(out)
    config_path = out / "config.json"
    cfg_dict = dataclasses.asdict(config)
    if config_path.exists():
        old = read_json(config_path)
        if not isinstance(old, dict):
            raise DWPError(f"{config_path}: not a source config; delete it to start over")
        differs = {k for k in cfg_dict if k != "nets" and old.get(k) != jsonable(cfg_dict[k])}
        if differs:
            raise DWPError(
                f"{out} holds source nets trained with another config (differs in "
                f"{', '.join(sorted(differs))}); choose a new --out directory"
            )
    missing = [i for i in range(config.nets) if not _net_path(out, i).exists()]
    ds = load_dataset(config.dataset, data_root) if missing else None  # fails here, once
    with cleanup_on_failure(out, keep=[_net_path(out, i).name for i in range(config.nets)]):
        write_json(config_path, cfg_dict)
        return _train_missing(config, out, device, data_root, missing, ds, on_net_start, on_step,
                              on_net_done, executor)  # fmt: skip


def _train_missing(config, out, device, data_root, missing, ds, on_net_start, on_step,
                   on_net_done, executor) -> list[dict]:  # fmt: skip
    fresh: dict[int, dict] = {}

    def done(i: int, metrics: dict) -> None:
        fresh[i] = metrics
        append_jsonl(out / "metrics.jsonl", metrics)
        log.debug("net %d: %s", i, metrics)
        if on_net_done is not None:
            on_net_done(i, metrics)

    if executor is None:
        for i in missing:
            if on_net_start is not None:
                on_net_start(i, config.nets)
            done(i, train_one_source_net(config, out, i, device, data_root, on_step, dataset=ds))
    else:
        from dwp.executors import gather

        job = partial(train_one_source_net, config, out, device=str(device), data_root=data_root)
        names = [_net_path(out, i).name for i in missing]
        _, error = gather(executor, job, missing, names, lambda k, m: done(missing[k], m))
        if error is not None:
            raise error
    return [fresh[i] if i in fresh else load_source_net(_net_path(out, i))[1]["metrics"]
            for i in range(config.nets)]  # fmt: skip


def train_one_source_net(
    config: SourceConfig,
    out: str | Path,
    index: int,
    device: torch.device | str = "cpu",
    data_root: str | Path | None = None,
    on_step: Callable[[dict], None] | None = None,
    dataset=None,
) -> dict:
    """Train net ``index`` of a source directory (seed ``config.seed + index``) and write its
    checkpoint atomically; returns its metrics. A net already on disk is read back, not
    retrained, so the call is idempotent. ``dataset``: the loaded source dataset (default:
    load ``config.dataset`` here)."""
    out = Path(out)
    path = _net_path(out, index)
    if path.exists():
        return load_source_net(path)[1]["metrics"]
    device = torch.device(device)
    ds = dataset if dataset is not None else load_dataset(config.dataset, data_root)
    train = (
        ds.train
        if config.n_train is None
        else ds.train.subset(range(min(config.n_train, len(ds.train))))
    )
    in_channels, image_size = ds.train.images.shape[1], ds.train.images.shape[-1]
    arch = resolve_arch(config.arch, in_channels, image_size)
    hidden = check_hidden(arch, config.hidden, "source")
    seed = config.seed + index
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_net(arch, hidden, in_channels, ds.num_classes, image_size)
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    metrics = train_source_net(model, train, ds.test, config, gen, on_step)
    metrics = {"net": index, "seed": seed, **metrics}
    check_finite(metrics, f"source net {index} diverged")
    ckpt = {
        "format_version": SOURCE_FORMAT_VERSION,
        "model": {"kind": arch, "hidden": list(hidden), "in_channels": in_channels,
                  "num_classes": ds.num_classes, "image_size": image_size},
        "config": dataclasses.asdict(config),
        "dataset": {"name": ds.name, "source": ds.source},
        "seed": seed,
        "metrics": metrics,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return metrics


def list_source_nets(source: str | Path) -> list[Path]:
    """The checkpoints of a source directory, in net order; an error if there are none."""
    source = Path(source)
    if not source.is_dir():
        raise DWPError(f"source directory {source} does not exist")
    nets = sorted(source.glob("net-*.pt"))
    if not nets:
        raise DWPError(f"no source nets (net-XXX.pt) in {source}; run `dwp source train` first")
    return nets
