"""What a run promises when it is killed, interrupted or diverges: it is finished and valid, or
resumable (and then ends exactly as an uninterrupted run), or refused with one line.

The kills are real: a child process runs the command through ``dwp.cli.main`` and SIGKILLs
itself right after a chosen append to a metrics log (before the checkpoint of that epoch), so
no cleanup code runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from dwp.cli import main
from dwp.errors import DWPError, NonFiniteError
from dwp.io import append_jsonl, check_finite, read_jsonl, write_json
from dwp.priors import load_prior, save_prior
from dwp.train.bnn import BNNConfig, finished_result

from conftest import tiny_preset


def _killed(argv: list[str], module: str, kill_at: int, cwd: Path) -> int:
    """Run ``dwp ARGV`` in a child that SIGKILLs itself after the ``kill_at``-th append to a
    metrics log by ``module``; returns the child's exit status (-9 when the kill came)."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import dwp.train.prior
        import {module} as target
        from dwp.cli import main

        dwp.train.prior.CHECKPOINT_SECONDS = 0.0  # a checkpoint after every epoch
        real, calls = target.append_jsonl, [0]

        def append(path, record):
            real(path, record)
            calls[0] += 1
            if calls[0] == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)

        target.append_jsonl = append
        sys.exit(main({argv!r}))
        """
    )
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True).returncode


def _without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "wall_s")} for r in records]


def _prior_argv(kernels: Path, out: Path) -> list[str]:
    return ["prior", "train", "--kernels", str(kernels), "--out", str(out), "--epochs", "6",
            "--device", "cpu"]  # fmt: skip


def test_killed_prior_training_resumes_to_the_same_prior(tiny_priors, tmp_path, monkeypatch):
    import dwp.train.prior as tp

    monkeypatch.setattr(tp, "CHECKPOINT_SECONDS", 0.0)
    kernels = Path(tiny_priors["root"]) / "kernels" / "conv2"
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_prior_argv(kernels, full)) == 0
    assert _killed(_prior_argv(kernels, part), "dwp.train.prior", 3, tmp_path) == -signal.SIGKILL
    # killed after epoch 3's log line, before its checkpoint: not a prior yet, resumable
    assert torch.load(part / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert len(read_jsonl(part / "metrics.jsonl")) == 3
    with pytest.raises(DWPError, match=r"incomplete: missing prior\.json, weights\.pt"):
        load_prior(part)
    assert main(_prior_argv(kernels, part)) == 0  # the lock of the dead process is taken over
    assert not (part / "checkpoint.pt").exists() and not (part / ".lock").exists()
    assert _without_time(read_jsonl(part / "metrics.jsonl")) == _without_time(
        read_jsonl(full / "metrics.jsonl")
    )
    (a, meta_a), (b, meta_b) = load_prior(full), load_prior(part)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    assert meta_a["metrics"] == meta_b["metrics"]


def test_prior_killed_before_its_first_checkpoint_starts_over(tiny_priors, tmp_path):
    kernels = Path(tiny_priors["root"]) / "kernels" / "conv1"
    full, part = tmp_path / "full", tmp_path / "part"
    argv = [*_prior_argv(kernels, part), "--epochs", "3"]
    assert _killed(argv, "dwp.train.prior", 1, tmp_path) == -signal.SIGKILL
    assert not (part / "checkpoint.pt").exists()  # killed before epoch 1's checkpoint
    assert main(argv) == 0
    assert main([*_prior_argv(kernels, full), "--epochs", "3"]) == 0
    assert len(read_jsonl(part / "metrics.jsonl")) == 3  # epoch 1's old line was dropped
    assert load_prior(part)[1]["metrics"] == load_prior(full)[1]["metrics"]


def test_a_prior_write_killed_midway_is_not_a_prior(tiny_priors, tmp_path, monkeypatch):
    """Overwriting a prior and dying between weights.pt and prior.json leaves an incomplete
    directory, never new weights beside the old metadata."""
    prior = tmp_path / "prior"
    shutil.copytree(tiny_priors["priors"][0], prior)
    vae, meta = load_prior(prior)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dwp.priors.store.write_json", dies)  # after weights.pt, before prior.json
    with pytest.raises(KeyboardInterrupt):
        save_prior(vae, prior, training=meta["training"])
    with pytest.raises(DWPError, match=r"incomplete: missing prior\.json"):
        load_prior(prior)


def test_killed_reproduction_resumes_to_the_same_results(tiny_priors, tmp_path):
    preset = tiny_preset(tmp_path)
    full, part = tmp_path / "full", tmp_path / "part"

    def argv(out):
        return ["reproduce", "--preset-file", str(preset), "--out", str(out), "--data-root",
                tiny_priors["data"], "--device", "cpu", "--jobs", "1"]  # fmt: skip

    assert main(argv(full)) == 0
    # the 3rd evaluation of a Bayesian CNN: the classification stage's second run, mid-run
    assert _killed(argv(part), "dwp.train.fit", 3, tmp_path) == -signal.SIGKILL
    stages = json.loads((part / "stages.json").read_text())
    assert list(stages) == ["source", "kernels", "priors"]
    assert main(argv(part)) == 0
    runs = sorted(p.relative_to(full) for p in (full / "classification").rglob("metrics.jsonl"))
    assert runs == sorted(p.relative_to(part) for p in (part / "classification").rglob("*.jsonl"))
    for rel in runs:
        assert _without_time(read_jsonl(part / rel)) == _without_time(read_jsonl(full / rel)), rel
    for name in ("classification/summary.json", "features/summary.json"):
        a, b = (json.loads((d / name).read_text()) for d in (full, part))
        assert _strip(a) == _strip(b), name


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if "wall" not in k and "second" not in k}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- torn files
def test_a_torn_last_metrics_line_is_dropped_on_resume(tiny_priors, tmp_path):
    """A kill mid-append tears the last line of metrics.jsonl; the resumed run drops it and
    ends with the uninterrupted run's records."""
    args = ["bnn", "train", "--dataset", "mnist", "--data-root", tiny_priors["data"],
            "--examples", "20", "--hidden", "4", "8", "--epochs", "4", "--eval-every", "2",
            "--ens-samples", "2", "--device", "cpu"]  # fmt: skip
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*args, "--out", str(full)]) == 0
    assert _killed([*args, "--out", str(part)], "dwp.train.fit", 2, tmp_path) == -signal.SIGKILL
    log = part / "metrics.jsonl"
    log.write_text(log.read_text().splitlines()[0] + "\n" + '{"epoch": 4, "ens_a')  # torn
    assert main([*args, "--out", str(part)]) == 0
    assert _without_time(read_jsonl(log)) == _without_time(read_jsonl(full / "metrics.jsonl"))


def test_read_jsonl_tells_a_torn_tail_from_damage(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a"')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]  # torn by a kill: dropped
    path.write_text('{"a": 1}\n{"a"\n{"a": 3}\n')
    with pytest.raises(DWPError, match="line 2 is not a JSON record"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DWPError, match="line 2 is not a JSON record"):
        read_jsonl(path)


# --------------------------------------------------------------------------- NaN and strict JSON
def test_json_written_by_dwp_is_strict(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "r.json", {"nll": math.nan})
    with pytest.raises(ValueError):
        append_jsonl(tmp_path / "m.jsonl", {"kl": math.inf})
    assert not (tmp_path / "r.json").exists()  # nothing half-written
    assert not (tmp_path / "m.jsonl").exists() or (tmp_path / "m.jsonl").read_text() == ""


def test_check_finite_names_every_bad_number():
    check_finite({"a": 1.0, "b": [2.0, {"c": 3}], "d": None, "e": "nan"}, "ok")
    with pytest.raises(NonFiniteError, match=r"run: b\[1\].c = nan, f = -inf"):
        check_finite({"a": 1.0, "b": [2.0, {"c": math.nan}], "f": -math.inf}, "run")


def test_a_result_with_nan_is_not_finished(tmp_path):
    """result.json of an older dwp may hold NaN: it is not a finished run."""
    config = BNNConfig(dataset="mnist", examples=20)
    write_json(tmp_path / "config.json", config.to_dict())
    (tmp_path / "result.json").write_text('{"ens_acc": 0.1, "nll": NaN}')
    with pytest.raises(DWPError, match=r"result.json is not a valid result .*: nll = nan"):
        finished_result(tmp_path, config)


# --------------------------------------------------------------------------- Ctrl-C and bugs
def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys, tmp_path):
    import dwp.train.bnn

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dwp.train.bnn, "train_bnn", interrupted)
    assert main(["bnn", "train", "--out", str(tmp_path / "r"), "--dataset", "mnist"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: interrupted; runs resume")


def _sigint_default() -> None:
    """In the child before exec: Ctrl-C's default action, even where the suite runs in a
    background job (whose children inherit SIGINT ignored, so Python would install no
    KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    """The child's stderr once it exits; killed (its group too) if it outlives ``timeout``."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:  # its own session: its workers too
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        return proc.communicate()[1] + f"\n(still running after {timeout} s: killed)"


def test_sigint_of_a_running_command(tiny_priors, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dwp.cli", "bnn", "train", "--out", str(out), "--dataset",
         "mnist", "--data-root", tiny_priors["data"], "--examples", "20", "--hidden", "4", "8",
         "--epochs", "100000", "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # in the training loop
    proc.send_signal(signal.SIGINT)
    err = _finish(proc, 60)
    assert proc.returncode == 130, err
    assert "error: interrupted" in err and "Traceback" not in err
    assert not (out / ".lock").exists()


def test_a_bug_shows_its_traceback_and_how_to_report_it(monkeypatch, capsys):
    import dwp.data

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(dwp.data, "dataset_status", broken)
    assert main(["data", "list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert err.strip().splitlines()[-1].startswith("error: this is a bug in dwp")


def test_interrupting_a_parallel_sweep_ends_its_workers_at_once():
    """Ctrl-C (here: the caller stops after the first result) must not wait for the runs still
    going in the worker processes, nor start the queued ones."""
    from dwp.executors import LocalExecutor

    runs = LocalExecutor(2).run(time.sleep, [0.1, 60, 60, 60])
    t0 = time.monotonic()
    assert next(runs) == (0, None)
    runs.close()  # what a KeyboardInterrupt in the caller's loop does to the generator
    assert time.monotonic() - t0 < 30


def test_ctrl_c_of_a_parallel_sweep_ends_at_once_with_one_line(tiny_priors, tmp_path):
    """Ctrl-C signals the whole process group: the parent says one line and ends its workers
    (which clean up their interrupted runs) instead of waiting for them, and the queued runs
    never start."""
    out = tmp_path / "cls"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dwp.cli", "experiment", "classification", "--out", str(out),
         "--dataset", "mnist", "--data-root", tiny_priors["data"], "--examples", "10",
         "--splits", "0", "1", "--epochs", "100000", "--hidden", "4", "8", "--methods",
         "normal", "log-uniform", "--jobs", "2", "--device", "cpu"],  # 4 runs: 2 queued
        stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_sigint_default,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while len(list(out.glob("runs/*/config.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # both runs training
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.monotonic()
    err = _finish(proc, 60)
    assert proc.returncode == 130 and time.monotonic() - t0 < 20, err
    assert err.strip().splitlines() == [
        "error: interrupted; runs resume from their last checkpoint when the same command is "
        "given again"
    ]
    assert not list(out.glob("runs/*/.lock"))  # the workers' runs cleaned up after themselves


def test_sigterm_to_a_parallel_sweep_ends_its_workers(tiny_priors, tmp_path):
    """`kill PID` of the command alone (not its process group) ends it as Ctrl-C does: one
    line, and no worker process left training on."""
    out = tmp_path / "cls"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dwp.cli", "experiment", "classification", "--out", str(out),
         "--dataset", "mnist", "--data-root", tiny_priors["data"], "--examples", "10",
         "--splits", "0", "1", "--epochs", "100000", "--hidden", "4", "8", "--methods",
         "normal", "--jobs", "2", "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while len(list(out.glob("runs/*/config.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.terminate()  # SIGTERM to the parent only
    err = _finish(proc, 60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    time.sleep(1)
    left = subprocess.run(["pgrep", "-a", "-s", str(proc.pid)], capture_output=True, text=True)
    alive = [line for line in left.stdout.splitlines() if "<defunct>" not in line]
    assert alive == [], "worker processes outlived the command"
    assert not list(out.glob("runs/*/.lock"))
