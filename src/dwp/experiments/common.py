"""What the experiments that initialise ordinary nets (convergence, random features) share: the
inits they compare, the priors / kernel sets those inits draw from, and how their runs execute."""

from __future__ import annotations

from collections.abc import Callable

from dwp.config import check_init_sources, parse_inits
from dwp.priors import DeepWeightPrior, check_per_layer, load_kernel_sets

__all__ = ["check_init_sources", "load_init_sources", "parse_inits", "run_tasks"]


def run_tasks(executor, job: Callable, tasks: list, names: list[str],
              on_done: Callable[[object, int], None], **here) -> list:  # fmt: skip
    """``job(task)`` for every task, in the tasks' order; ``on_done(outcome, finished)`` after
    each (``finished``: how many have). ``executor`` None: here, one after another, as
    ``job(task, **here)`` (what the caller has loaded already), and the first failure is the
    experiment's; else through :func:`dwp.executors.gather`, which lets the other runs finish
    before raising :class:`~dwp.executors.RunFailed`."""
    from dwp.executors import gather

    finished = 0

    def done(_: int, outcome) -> None:
        nonlocal finished
        finished += 1
        on_done(outcome, finished)

    if executor is None:
        outcomes = []
        for task in tasks:
            outcomes.append(job(task, **here))
            done(0, outcomes[-1])
        return outcomes
    outcomes, error = gather(executor, job, tasks, names, done)
    if error is not None:
        raise error
    return outcomes


def load_init_sources(inits, names: list[str], prior_dirs, kernel_dirs):
    """The priors (for ``dwp``, ``dwp-draw``) and kernel sets (for ``filters``) by conv layer
    name, each None when no init asks for it."""
    priors = kernel_sets = None
    if "dwp" in inits or "dwp-draw" in inits:
        check_per_layer(prior_dirs, names, "prior directories")
        priors = {n: DeepWeightPrior.from_dir(d) for n, d in zip(names, prior_dirs, strict=True)}
    if "filters" in inits:
        kernel_sets = load_kernel_sets(names, kernel_dirs, prior_dirs)
    return priors, kernel_sets
