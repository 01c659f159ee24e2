"""Sweeps on Ray (`--executor ray`): the same result files as the local executor, a worker
killed mid-sweep, failures reported with the others' results kept, and a cluster reached by
address. Every test here has `ray` in its name (`pytest -k ray`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dwp.cli import main
from dwp.executors import LocalExecutor, RayExecutor, RunFailed
from dwp.experiments import ClassificationConfig, run_classification

ray = pytest.importorskip("ray")

_TIMING = {"wall_s", "seconds", "wall_s_mean"}


@pytest.fixture
def ray_local():
    """A local Ray instance with 2 CPUs for one test."""
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _tiny_sweep(tiny):
    return ClassificationConfig(dataset="mnist", examples=(10,), splits=(0, 1), epochs=2,
                                hidden=(4, 8), methods=("normal", "l2-xavier", "dwp"),
                                prior_dirs=tuple(tiny["priors"]))  # fmt: skip


def _result_files(root: Path) -> dict[str, object]:
    """Every result file of a sweep (run JSON, result.json, metrics.jsonl) without timings."""
    out = {}
    for path in sorted((root / "runs").rglob("*")):
        if path.suffix == ".json":
            out[str(path.relative_to(root))] = _strip(json.loads(path.read_text()))
        elif path.suffix == ".jsonl":
            lines = [_strip(json.loads(x)) for x in path.read_text().splitlines()]
            out[str(path.relative_to(root))] = lines
    return out


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in _TIMING}


def test_ray_sweep_gives_the_local_result_files(tiny_priors, tmp_path, ray_local):
    cfg = _tiny_sweep(tiny_priors)
    data = tiny_priors["data"]
    local = run_classification(cfg, tmp_path / "local", data_root=data,
                               executor=LocalExecutor(jobs=2))  # fmt: skip
    seen = []
    on_ray = run_classification(cfg, tmp_path / "ray", data_root=data, executor=RayExecutor(),
                                on_run=seen.append)  # fmt: skip
    assert sorted(r["index"] for r in seen) == list(range(1, 7))
    files = _result_files(tmp_path / "local")
    assert len(files) == 2 + 4 * 3  # 2 L2 run files; 4 Bayesian runs x config, result, metrics
    assert files == _result_files(tmp_path / "ray")
    assert [_strip(r) for r in local] == [_strip(r) for r in on_ray]
    # re-submitting a finished sweep runs nothing again
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "runs").rglob("*.json")}
    run_classification(cfg, tmp_path / "ray", data_root=data, executor=RayExecutor())
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "runs").rglob("*.json")}
    assert before == after


def _make_task(folder: Path, crash: set[int], always: set[int]):
    """A run that writes its result file atomically; items in ``crash`` kill their worker
    process on the first attempt, items in ``always`` on every attempt."""

    def task(item: int) -> int:
        done = folder / f"result-{item}.json"
        if done.exists():  # idempotent, as every run of a sweep
            return json.loads(done.read_text())["value"]
        attempt = folder / f"attempt-{item}-{len(list(folder.glob(f'attempt-{item}-*')))}"
        attempt.write_text(str(os.getpid()))
        if item in always or (item in crash and attempt.name.endswith("-0")):
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-sweep
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({"value": item * item}))
        tmp.replace(done)
        return item * item

    return task


def test_ray_worker_killed_mid_sweep_is_retried(tmp_path, ray_local):
    task = _make_task(tmp_path, crash={2, 5}, always=set())
    outcomes = dict(RayExecutor(max_retries=2).run(task, range(8)))
    assert outcomes == {i: i * i for i in range(8)}
    # every run's result is present exactly once; the killed ones ran twice
    assert sorted(p.name for p in tmp_path.glob("result-*.json")) == [
        f"result-{i}.json" for i in range(8)
    ]
    assert not list(tmp_path.glob("*.tmp"))
    attempts = {i: len(list(tmp_path.glob(f"attempt-{i}-*"))) for i in range(8)}
    assert attempts == {i: 2 if i in (2, 5) else 1 for i in range(8)}


def test_ray_run_that_keeps_dying_is_reported(tmp_path, ray_local):
    task = _make_task(tmp_path, crash=set(), always={3})
    outcomes = dict(RayExecutor(max_retries=1).run(task, range(5)))
    assert isinstance(outcomes.pop(3), RunFailed)
    assert outcomes == {i: i * i for i in (0, 1, 2, 4)}  # the others are kept
    assert len(list(tmp_path.glob("attempt-3-*"))) == 2  # the first try and one retry


def test_failed_runs_are_named_and_the_rest_kept_ray_and_local(
    tiny_priors, tmp_path, ray_local, monkeypatch
):
    # the sweep refuses a broken prior before any run; here it must fail inside the runs
    monkeypatch.setattr("dwp.experiments.classification._check_priors_fit", lambda *a: None)
    broken = tmp_path / "broken-prior"
    broken.mkdir()
    (broken / "prior.json").write_text("{}")
    (broken / "weights.pt").write_text("not torch")
    cfg = ClassificationConfig(dataset="mnist", examples=(10,), splits=(0, 1), epochs=2,
                               hidden=(4, 8), methods=("normal", "dwp"),
                               prior_dirs=(str(broken), tiny_priors["priors"][1]))  # fmt: skip
    for name, executor in (("local", LocalExecutor()), ("ray", RayExecutor())):
        with pytest.raises(RunFailed) as err:
            run_classification(cfg, tmp_path / name, data_root=tiny_priors["data"],
                               executor=executor)  # fmt: skip
        msg = str(err.value)
        assert msg.startswith("2 of 4 runs failed (dwp-n10-s0: ") and "dwp-n10-s1: " in msg
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert [(r["method"], r["runs"]) for r in summary["rows"]] == [("normal", 2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_cluster_by_address_through_the_cli(tiny_priors, tmp_path, capsys):
    ray.shutdown()
    ray_cli = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env, timeout=120)  # fmt: skip
    try:
        out = tmp_path / "cls"
        args = ["experiment", "classification", "--out", str(out), "--dataset", "mnist",
                "--data-root", tiny_priors["data"], "--hidden", "4", "8", "--examples", "10",
                "--splits", "0", "1", "--epochs", "2", "--methods", "normal", "l2-xavier",
                "--executor", "ray", "--address", f"127.0.0.1:{port}",
                "--device", "cpu"]  # fmt: skip
        assert main(args) == 0
        assert "| 10 | normal |" in capsys.readouterr().out
        assert len(list((out / "runs").glob("l2-xavier-n10-s*.json"))) == 2
        assert len(list((out / "runs").glob("normal-n10-s*/result.json"))) == 2
    finally:
        ray.shutdown()
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_ray_errors(capsys):
    assert main(["experiment", "classification", "--out", "x", "--methods", "normal",
                 "--address", "127.0.0.1:1"]) == 2  # fmt: skip
    assert "--address goes with --executor ray" in capsys.readouterr().err


def test_ray_source_nets_match_local_processes(tiny_priors, tmp_path, capsys, ray_local):
    import torch

    base = ["source", "train", "--dataset", "mnist", "--data-root", tiny_priors["data"],
            "--nets", "3", "--hidden", "4", "8", "--epochs", "1", "--device", "cpu"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "local"), "--jobs", "2"]) == 0
    assert main([*base, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert capsys.readouterr().out.count("3 nets in") == 2
    for i in range(3):
        a, b = (torch.load(tmp_path / d / f"net-{i:03d}.pt", weights_only=False)
                for d in ("local", "ray"))  # fmt: skip
        assert a["seed"] == b["seed"] == i
        for k, v in a["state_dict"].items():
            assert torch.equal(v, b["state_dict"][k]), (i, k)
        assert _strip(a["metrics"]) == _strip(b["metrics"])
    lines = (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["net"] for x in lines) == [0, 1, 2]  # once each
