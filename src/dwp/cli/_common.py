"""What the command groups share: options typed once, progress bars, the executor and width
helpers. Torch-free at import (``dwp --help`` stays fast); choices and defaults come from
:mod:`dwp.config`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dwp.config import DEFAULT_HIDDEN, Arch, ConvergenceConfig, ExecutorKind, Init, cifarnet_hidden
from dwp.errors import DWPError
from dwp.tables import markdown_table


def words(values) -> str:
    """``0 1 2`` for a default tuple in a help text."""
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def group(help: str) -> typer.Typer:
    """A command group (``dwp data``, ``dwp prior``, ...)."""
    return typer.Typer(help=help, no_args_is_help=True)


def echo_table(header, rows) -> None:
    """Print a Markdown table (:func:`dwp.tables.markdown_table`)."""
    typer.echo(markdown_table(header, rows))


DataRoot = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Directory holding dataset files (default: $DWP_DATA_ROOT, then $DATA_ROOT).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when available), cpu or cuda.")
]
HiddenOpt = Annotated[
    tuple[int, int] | None,
    typer.Option(
        help="FConv widths of the two conv layers (default: "
        f"{words(DEFAULT_HIDDEN[('fconv', 'source')])} for source nets, "
        f"{words(DEFAULT_HIDDEN[('fconv', 'target')])} for the nets trained on the target set); "
        "with --arch vgg the widths of its two blocks (default: "
        f"{words(DEFAULT_HIDDEN[('vgg', 'target')])}).",
        show_default=False,
    ),
]
WidthScaleOpt = Annotated[
    float | None,
    typer.Option(
        help="CIFARNet width scale k: conv widths 128k 256k 256k (default 1; instead of --hidden).",
        show_default=False,
    ),
]
ArchOpt = Annotated[
    Arch,
    typer.Option(
        help="Network family: auto (CIFARNet for 32x32 colour images, FConv otherwise); vgg: "
        "two blocks of two 3x3 convs (a modern CNN's layers)."
    ),
]
TestExamplesOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Score on this many test images (a class-stratified subset, the same for every "
        "run; default: all of them). Cuts the evaluation time of large test sets.",
        show_default=False,
    ),
]
ExecutorOpt = Annotated[
    ExecutorKind,
    typer.Option(
        "--executor",
        help="local: this machine (--jobs processes); ray: one Ray task per run (pip install "
        "'deep-weight-prior\\[ray]').",
    ),
]
JobsOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="With --executor local: runs in parallel, one process and one torch thread each "
        "(0: one per CPU core, 1 with --device cuda; 1: one after another in this process).",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="With --executor ray: auto (the cluster this machine is in) or HOST:PORT of a head "
        "node (default: a local Ray instance).",
        show_default=False,
    ),
]
Examples = Annotated[
    int, typer.Option(min=0, help="Training examples, stratified (0: the whole train part).")
]
Dataset = Annotated[str, typer.Option(help="Dataset (see `dwp data list`).")]
LR = Annotated[float, typer.Option(help="Adam learning rate (decays linearly to 0).")]
BatchSize = Annotated[int, typer.Option(min=1, help="Batch size.")]
# the options of the experiments that initialise ordinary nets (convergence, random features)
InitPriorDirsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--prior-dirs",
        help="Prior directories, one per conv layer (for --inits dwp; also the default "
        "kernel sets of filters).",
        show_default=False,
    ),
]
KernelDirsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--kernel-dirs", help="Kernel sets, one per conv layer, for --inits filters.",
        show_default=False,
    ),
]  # fmt: skip
InitsOpt = Annotated[
    list[Init] | None,
    typer.Option(
        "--inits", help="Initialisations to compare (default: all three).", show_default=False
    ),
]
SeedsOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--seeds", help=f"Seeds (default: {words(ConvergenceConfig.seeds)}).", show_default=False
    ),
]

#: The list options that take several values after one flag (``--prior-dirs A B``).
MULTI_VALUE = (
    "--prior-dirs", "--kernel-dirs", "--inits", "--seeds", "--methods", "--examples",
    "--splits", "--scales",
)  # fmt: skip


def widths(hidden: tuple[int, int] | None, width_scale: float | None) -> tuple[int, ...] | None:
    """The library's ``hidden`` from --hidden (FConv, VGGNet) or --width-scale (CIFARNet)."""
    if hidden is not None and width_scale is not None:
        raise DWPError("give --hidden (FConv, VGGNet widths) or --width-scale (CIFARNet), not both")
    if width_scale is not None:
        if not width_scale > 0:
            raise DWPError(f"--width-scale must be positive, got {width_scale}")
        return cifarnet_hidden(width_scale)
    return hidden


def tuple_or_none(values) -> tuple | None:
    """A list option as the config's tuple; None (the config's default) when not given."""
    return tuple(v.value if hasattr(v, "value") else v for v in values) if values else None


def given(**options) -> dict:
    """The options that were given (not None), to pass to a config over its defaults."""
    return {k: v for k, v in options.items() if v is not None}


def kernel_batch(prior_is_dwp: bool, batch: int | None, exact: bool, default: int) -> int | None:
    """The DWP's kernel batch of --dwp-kernel-batch / --exact (None: the exact mode); an error
    for a contradiction (both given, or either without the DWP prior)."""
    if exact and batch is not None:
        raise DWPError("give --exact or --dwp-kernel-batch, not both")
    if not prior_is_dwp and (exact or batch is not None):
        raise DWPError("--exact and --dwp-kernel-batch apply to the DWP prior only")
    return None if exact else (default if batch is None else batch)


def executor(kind: ExecutorKind, jobs: int, address: str | None, device):
    """The executor of --executor / --jobs / --address on ``device``."""
    from dwp.executors import make_executor

    if kind is ExecutorKind.local and address is not None:
        raise DWPError("--address goes with --executor ray")
    cuda = getattr(device, "type", str(device)) == "cuda"
    if jobs == 0:
        jobs = 1 if cuda else (os.cpu_count() or 1)
    return make_executor(kind.value, jobs, address, gpus_per_run=1 if cuda else 0)


def bar(total: int | None, desc: str, unit: str = "step"):
    """A progress bar on stderr; disabled where stderr is not a terminal (logs, CI)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5,
                leave=False, disable=None)  # fmt: skip


def run_bar(total: int, desc: str, label):
    """A bar over a sweep's runs and the ``on_run`` callback that advances it, showing
    ``label(record)`` of the last run."""
    b = bar(total, desc, unit="run")

    def on_run(record: dict) -> None:
        b.update(1)
        b.set_postfix({"last": label(record)})

    return b, on_run
