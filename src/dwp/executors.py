"""Where the runs of a sweep execute.

An executor has ``run(fn, items)``, which yields ``(index, outcome)`` for every item as its run
finishes, in any order: ``outcome`` is ``fn(item)``, or the exception the run ended with (a run's
failure never stops the others). ``fn`` and the items must pickle for executors that use other
processes or machines. Every run of a sweep is idempotent (it reads back its own finished result,
written atomically), so any executor may be interrupted and the sweep submitted again.

* :class:`LocalExecutor`: this machine, one run after another in this process, or ``jobs``
  worker processes;
* :class:`RayExecutor`: a Ray cluster (``pip install deep-weight-prior[ray]``), one Ray task per
  run with its CPU / GPU needs declared; a task whose worker died is retried ``max_retries``
  times.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Iterator

from dwp.errors import DWPError

__all__ = ["LocalExecutor", "RayExecutor", "RunFailed", "gather", "make_executor"]

log = logging.getLogger(__name__)


class RunFailed(DWPError):
    """Runs of a sweep failed; the others' results are kept."""


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class LocalExecutor:
    """``jobs`` worker processes on this machine, ``threads`` torch threads each (default 1, as a
    Ray task gets, so both write the same results); with 1 job the runs execute in this process,
    one after another, with its threads."""

    def __init__(self, jobs: int = 1, threads: int | None = None):
        if jobs < 1:
            raise DWPError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.threads = threads or 1  # per worker process

    def run(self, fn: Callable, items: Iterable) -> Iterator[tuple[int, object]]:
        items = list(items)
        if self.jobs == 1 or not items:
            for i, item in enumerate(items):
                try:
                    yield i, fn(item)
                except Exception as exc:  # reported with the run; the others go on
                    yield i, exc
            return
        ctx = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with concurrent.futures.ProcessPoolExecutor(
            self.jobs, mp_context=ctx, initializer=_init_worker, initargs=(self.threads,)
        ) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for fut in concurrent.futures.as_completed(futures):
                exc = fut.exception()
                yield futures[fut], (fut.result() if exc is None else exc)

    def __repr__(self) -> str:
        return f"LocalExecutor(jobs={self.jobs})"


def _call(fn, item):
    return fn(item)


class RayExecutor:
    """One Ray task per run on the cluster at ``address`` (``auto``: the one this machine is part
    of; ``HOST:PORT``: a head node; None: start a local instance), each declaring ``num_cpus`` and
    ``num_gpus``; a task whose worker process or node died is retried ``max_retries`` times, then
    reported as failed."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_retries: int = 2,
    ):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise DWPError(
                "--executor ray needs Ray: pip install 'deep-weight-prior[ray]'"
            ) from None
        if num_cpus <= 0 or num_gpus < 0 or max_retries < 0:
            raise DWPError("Ray tasks need num_cpus > 0, num_gpus >= 0 and max_retries >= 0")
        self.address = address
        self.num_cpus, self.num_gpus, self.max_retries = num_cpus, num_gpus, max_retries

    def _connect(self):
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)  # fmt: skip
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise DWPError(f"cannot reach a Ray cluster at {self.address}: {exc}") from None
        return ray

    def run(self, fn: Callable, items: Iterable) -> Iterator[tuple[int, object]]:
        ray = self._connect()
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                          max_retries=self.max_retries, retry_exceptions=False)(_call)  # fmt: skip
        fn_ref = ray.put(fn)
        refs = {task.remote(fn_ref, item): i for i, item in enumerate(items)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield refs[ref], ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the run raised: its own error
                    yield refs[ref], exc.as_instanceof_cause()
                except ray.exceptions.RayError as exc:  # worker or node died, retries spent
                    yield refs[ref], RunFailed(f"{type(exc).__name__}: {exc}".splitlines()[0])

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r})"


def make_executor(
    kind: str = "local", jobs: int = 1, address: str | None = None, gpus_per_run: float = 0
):
    """The executor for ``--executor local --jobs N`` or ``--executor ray --address A``."""
    if kind == "local":
        return LocalExecutor(jobs)
    if kind == "ray":
        return RayExecutor(address, num_gpus=gpus_per_run)
    raise DWPError(f"unknown executor {kind!r}; choose local or ray")


def gather(
    executor, fn: Callable, items: list, names: list[str], on_result: Callable | None = None
) -> tuple[list, RunFailed | None]:
    """Run ``fn`` over ``items`` with ``executor`` (None: one after another, here).

    Returns the results in the items' order (None for a failed run) and, if any run failed, a
    :class:`RunFailed` naming each with its error, for the caller to raise once it has saved
    what finished. ``on_result(index, result)`` is called as each run finishes."""
    results: list = [None] * len(items)
    failed = []
    runner = executor if executor is not None else LocalExecutor(1)
    for i, outcome in runner.run(fn, items):
        if isinstance(outcome, BaseException):
            failed.append((i, outcome))
            log.warning("run %s failed: %s", names[i], _one_line(outcome))
            log.debug("run %s failed", names[i], exc_info=outcome)
            continue
        results[i] = outcome
        if on_result is not None:
            on_result(i, outcome)
    error = None
    if failed:
        lines = "; ".join(f"{names[i]}: {_one_line(e)}" for i, e in sorted(failed, key=_first))
        error = RunFailed(
            f"{len(failed)} of {len(items)} runs failed ({lines}); the finished runs are kept, "
            "run the same command again to retry the others"
        )
    return results, error


def _first(pair):
    return pair[0]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
