"""``dwp source``: source networks trained on the source domain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dwp.cli._common import (
    LR,
    AddressOpt,
    ArchOpt,
    BatchSize,
    DataRoot,
    DeviceOpt,
    ExecutorOpt,
    HiddenOpt,
    JobsOpt,
    WidthScaleOpt,
    bar,
    executor,
    group,
    widths,
)
from dwp.config import Arch, ExecutorKind, SourceConfig

app = group("Source networks trained on the source domain.")
D = SourceConfig  # the defaults


@app.command("train")
def source_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the checkpoints.")],
    dataset: Annotated[str, typer.Option(help="Source dataset (see `dwp data list`).")] = D.dataset,
    nets: Annotated[int, typer.Option(min=1, help="Number of nets (distinct seeds).")] = D.nets,
    hidden: HiddenOpt = None,
    width_scale: WidthScaleOpt = None,
    arch: ArchOpt = Arch.auto,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per net.")] = D.epochs,
    batch_size: BatchSize = D.batch_size,
    lr: LR = D.lr,
    l2: Annotated[float, typer.Option(help="Weight of the sum of squares of conv params.")] = D.l2,
    seed: Annotated[int, typer.Option(help="Net i uses seed + i.")] = D.seed,
    n_train: Annotated[
        int | None, typer.Option(help="Use only the first N training images.", show_default=False)
    ] = None,
    executor_kind: ExecutorOpt = ExecutorKind.local,
    jobs: JobsOpt = 1,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Train source nets (FConv; CIFARNet for CIFAR; VGGNet with --arch vgg) with distinct
    seeds; finished nets are skipped on a re-run."""
    from dwp.device import resolve_device
    from dwp.train.source import train_source_nets

    config = SourceConfig(dataset=dataset, nets=nets, hidden=widths(hidden, width_scale),
                          arch=arch.value, epochs=epochs, batch_size=batch_size, lr=lr, l2=l2,
                          seed=seed, n_train=n_train)  # fmt: skip
    dev = resolve_device(device)
    if dev.type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its kernels
    state = {"bar": None}

    def start(i: int, total: int) -> None:
        state["bar"] = bar(1, f"net {i + 1}/{total}")

    def step(m: dict) -> None:
        b = state["bar"]
        b.total, b.n = m["steps"], m["step"]
        b.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['acc']:.3f}", refresh=False)
        b.refresh()

    def done(i: int, m: dict) -> None:
        if state["bar"] is not None:
            state["bar"].close()
        typer.echo(
            f"net {i:3d}  seed {m['seed']}  test acc {m['test_acc']:.4f}  "
            f"train loss {m['train_loss']:.4f}  {m['seconds']:.1f}s"
        )

    runner = None  # one net after another here, with a progress bar per net
    if executor_kind is ExecutorKind.ray or jobs != 1:
        runner = executor(executor_kind, jobs, address, dev)
    results = train_source_nets(config, out, dev, data_root, start, step, done, runner)
    accs = [r["test_acc"] for r in results]
    typer.echo(
        f"{len(results)} nets in {out} on {dev}; test accuracy mean {sum(accs) / len(accs):.4f}, "
        f"min {min(accs):.4f}, max {max(accs):.4f}"
    )
