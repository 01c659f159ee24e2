"""``dwp reproduce`` and ``dwp report``: the whole pipeline in one call, and its report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dwp.cli._common import AddressOpt, DataRoot, DeviceOpt, ExecutorOpt, JobsOpt, bar, executor
from dwp.config import ExecutorKind, PresetName

#: Environment variable naming the root of run outputs (the reference scripts' log root).
RUNS_ENV = "DWP_PATH"


def default_out() -> Path:
    """Where `dwp reproduce` writes without --out: $DWP_PATH/reproduce when DWP_PATH is set,
    else results/reproduce."""
    root = os.environ.get(RUNS_ENV)
    return Path(root).expanduser() / "reproduce" if root else Path("results/reproduce")


def reproduce_cmd(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help=f"Output directory (default: ${RUNS_ENV}/reproduce when {RUNS_ENV} is set, "
            "else results/reproduce).",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        PresetName,
        typer.Option(
            help="quick: embedded data, ~13 min on 2 CPU cores; modern: the shipped 3x3 prior "
            "on a VGG-style net, Fashion-MNIST as the target (apt-get install "
            "dataset-fashion-mnist); paper: the full protocol (needs the MNIST and notMNIST "
            "files; a GPU); paper-cifar: CIFAR-100 -> CIFAR-10 (needs the CIFAR pickles; a GPU)."
        ),
    ] = PresetName.quick,
    preset_file: Annotated[
        Path | None,
        typer.Option(
            "--preset-file",
            help="A custom preset: JSON with the fields of `dwp.config.Preset` (overrides "
            '--preset); with "base": NAME, only what differs from the built-in preset NAME '
            "(its *_args objects merged key by key).",
            show_default=False,
        ),
    ] = None,
    kernels: Annotated[
        Path | None,
        typer.Option(
            "--kernels",
            help="Use these kernel sets instead of training source nets: a `dwp kernels "
            "extract` directory with conv1 and conv2, or a shipped set's name (letters-fconv).",
            show_default=False,
        ),
    ] = None,
    refit_priors: Annotated[
        bool,
        typer.Option(
            "--refit-priors",
            help="Fit the priors even where the preset uses shipped ones (quick: letters-fconv, "
            "fitted with the preset's settings; `dwp prior list`).",
        ),
    ] = False,
    executor_kind: ExecutorOpt = ExecutorKind.local,
    jobs: JobsOpt = 0,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Reproduce the paper: source nets -> kernel sets -> priors -> classification,
    convergence and random-feature experiments -> OUT/report.md with figures. Finished stages
    are skipped on a re-run; a killed run resumes."""
    import time

    from dwp.config import PRESETS, load_preset
    from dwp.device import resolve_device
    from dwp.reproduce import reproduce

    t0 = time.perf_counter()
    out = default_out() if out is None else out
    chosen = load_preset(preset_file) if preset_file else PRESETS[preset.value]
    typer.echo(f"preset {chosen.name}: {chosen.description}")
    state = {"bar": None}

    def on_event(e: dict) -> None:
        if e["event"] == "progress":
            if state["bar"] is not None:
                state["bar"].update(1)
            return
        head = f"[{e['index']}/{e['total']}] {e['stage']}"
        if e["event"] == "skip":
            typer.echo(f"{head}: done earlier, skipped")
        elif e["event"] == "start":
            typer.echo(f"{head} ...")
            state["bar"] = bar(None, e["stage"], unit="item")
        else:
            if state["bar"] is not None:
                state["bar"].close()
                state["bar"] = None
            typer.echo(f"{head}: {e['seconds']:.0f} s")

    try:
        dev = resolve_device(device)
        path = reproduce(chosen, out, dev, data_root, kernels,
                         executor(executor_kind, jobs, address, dev), on_event,
                         refit_priors=refit_priors)  # fmt: skip
    finally:
        if state["bar"] is not None:
            state["bar"].close()
    typer.echo(f"report: {path}  ({time.perf_counter() - t0:.0f} s)")


def report_cmd(
    out: Annotated[Path, typer.Argument(help="A `dwp reproduce` output directory.")],
) -> None:
    """Rebuild OUT/report.md (and its prior figures) from the results on disk."""
    from dwp.report import build_report

    typer.echo(f"wrote {build_report(out)}")
