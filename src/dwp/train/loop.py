"""What every training loop of dwp shares: Adam with the learning rate decayed linearly to 0
over the run (the protocol of the source nets, the priors, the Bayesian nets and the
experiments' baselines), the batches of one epoch in a seeded random order, and what a run
stopped by a NaN says it left."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

__all__ = ["adam_linear_decay", "kept_note", "shuffled_batches"]


def adam_linear_decay(
    params: Iterable[torch.nn.Parameter], lr: float, total_steps: int
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam at ``lr`` and a scheduler that scales it by ``1 - step / total_steps``: call
    ``scheduler.step()`` after every ``optimizer.step()``, and the rate reaches 0 at the end."""
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / total_steps)
    return opt, sched


def shuffled_batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device | str | None = None
) -> Iterator[torch.Tensor]:
    """The index batches of one epoch over ``n`` examples: a permutation drawn with
    ``generator`` (a CPU generator) when the first batch is asked for, moved to ``device``,
    cut into batches of ``batch_size`` (the last one may be shorter)."""
    order = torch.randperm(n, generator=generator)
    if device is not None:
        order = order.to(device)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def kept_note(directory: str | Path, saved_epoch: int | None) -> str:
    """What a run stopped midway (a NaN) leaves: its checkpoint of ``saved_epoch``, or nothing."""
    if saved_epoch is None:
        return "nothing was kept"
    return f"{directory} stays resumable from its checkpoint of epoch {saved_epoch}"
