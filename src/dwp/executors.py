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
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator

from dwp.errors import DWPError, one_line

__all__ = ["LocalExecutor", "RayExecutor", "RunFailed", "gather", "make_executor"]

log = logging.getLogger(__name__)


class RunFailed(DWPError):
    """Runs of a sweep failed; the others' results are kept."""


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # Ctrl-C reaches the whole process group; the parent alone handles it and then ends the
    # workers with SIGTERM, which a worker turns into SystemExit so that an interrupted run
    # cleans up as after Ctrl-C (and an idle worker exits without a traceback)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _in_worker(fn, item):
    try:
        return fn(item)
    except SystemExit as exc:  # SIGTERM from _stop: the run has cleaned up; the pool is gone
        os._exit(exc.code if isinstance(exc.code, int) else 1)


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
        pool = concurrent.futures.ProcessPoolExecutor(
            self.jobs, mp_context=ctx, initializer=_init_worker, initargs=(self.threads,)
        )
        try:
            futures = {pool.submit(_in_worker, fn, item): i for i, item in enumerate(items)}
            for fut in concurrent.futures.as_completed(futures):
                exc = fut.exception()
                yield futures[fut], (fut.result() if exc is None else exc)
        except BaseException:  # Ctrl-C, or the caller stopped: do not wait for the other runs
            _stop(pool)
            raise
        pool.shutdown()

    def __repr__(self) -> str:
        return f"LocalExecutor(jobs={self.jobs})"


def _stop(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Cancel the runs not started and end the running ones now: a run killed midway resumes
    from its last checkpoint, so waiting for hours of runs after a Ctrl-C buys nothing."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + 1  # idle workers take the shutdown and exit
    for proc in processes:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for end in ("terminate", "kill"):  # SIGTERM: the run cleans up and ends; then SIGKILL
        alive = [p for p in processes if p.is_alive()]
        for proc in alive:
            getattr(proc, end)()
        deadline = time.monotonic() + 5
        for proc in alive:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))


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
            log.warning("run %s failed: %s", names[i], one_line(outcome))
            log.debug("run %s failed", names[i], exc_info=outcome)
            continue
        results[i] = outcome
        if on_result is not None:
            on_result(i, outcome)
    error = None
    if failed:
        lines = "; ".join(f"{names[i]}: {one_line(e)}" for i, e in sorted(failed, key=_first))
        error = RunFailed(
            f"{len(failed)} of {len(items)} runs failed ({lines}); the finished runs are kept, "
            "run the same command again to retry the others"
        )
    return results, error


def _first(pair):
    return pair[0]
