"""``dwp kernels``: kernel datasets extracted from source nets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dwp.cli._common import group
from dwp.config import KernelConfig

app = group("Kernel datasets extracted from source nets or any model.")
D = KernelConfig  # the defaults


@app.command("extract")
def kernels_extract(
    source: Annotated[
        list[Path],
        typer.Option(
            "--source",
            help="Where the nets are: a `dwp source train` directory, model files saved by "
            "torch.save (state dicts, checkpoints holding one, whole models), or folders of "
            "them. Repeatable; the last nets give the test part.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the kernel datasets.")],
    min_norm: Annotated[
        float, typer.Option(help="Drop kernels whose L2 norm is below this.")
    ] = D.min_norm,
    test_fraction: Annotated[
        float, typer.Option(help="Fraction of nets (the last ones) held out for test kernels.")
    ] = D.test_fraction,
    layers: Annotated[
        list[str] | None,
        typer.Option(
            "--layers",
            "--layer",
            help="Conv layers to extract: names or glob patterns (features.*); repeatable. "
            "Default: every conv layer.",
            show_default=False,
        ),
    ] = None,
    kernel_size: Annotated[
        int | None,
        typer.Option(min=1, help="Only the conv layers of k x k kernels.", show_default=False),
    ] = None,
    max_kernels: Annotated[
        int | None,
        typer.Option(
            help="Keep at most N kernels per layer and part (random, seeded).", show_default=False
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for --max-kernels subsampling.")] = D.seed,
    merge: Annotated[
        str | None,
        typer.Option(
            help="Write the chosen layers' kernels as one set of this name (one prior for "
            "several layers of one kernel size, e.g. every 3x3 layer of a net).",
            show_default=False,
        ),
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Unpickle whole models of your own classes (this runs code from the files: "
            "only for files you made). Models of torch.nn / dwp.nn layers need no trust.",
        ),
    ] = False,
) -> None:
    """Write every (out, in/groups) kernel slice of the nets' chosen conv layers as train.npy /
    test.npy (N, 1, k, k) per layer, dropping near-zero kernels; also stats.json."""
    from dwp.kernels import extract_kernels, load_models

    config = KernelConfig(min_norm=min_norm, test_fraction=test_fraction,
                          layers=tuple(layers) if layers else None, max_kernels=max_kernels,
                          seed=seed, kernel_size=kernel_size, merge=merge)  # fmt: skip
    nets = load_models(source, trust=trust_pickle)
    stats = extract_kernels(nets, out, config)
    typer.echo(f"{stats['nets']['train']} train nets, {stats['nets']['test']} test nets -> {out}")
    for name, st in stats["layers"].items():
        k = st["kernel_size"]
        of = f" from {', '.join(st['layers'])}" if "layers" in st else ""
        train, test = st["train"], st["test"]
        typer.echo(
            f"{name} ({k}x{k}{of}): train {train['before']} -> {train['after_pruning']}, "
            f"test {test['before']} -> {test['after_pruning']} kernels "
            f"(min norm {st['min_norm']:g}; median norm {st['norm_quantiles']['0.5']:.3g})"
        )


@app.command("preview")
def kernels_preview(
    kernels_dir: Annotated[Path, typer.Argument(help="Directory of `dwp kernels extract`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    n: Annotated[int, typer.Option(min=1, max=400, help="Kernels shown per layer.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for choosing the kernels.")] = 0,
) -> None:
    """Plot random kernels of every layer and the histogram of kernel norms with the threshold."""
    from dwp.kernels import load_kernel_file, read_kernel_stats
    from dwp.plots import kernel_preview

    stats = read_kernel_stats(kernels_dir)
    layers = {
        name: {"kernels": load_kernel_file(kernels_dir / name / "train.npy"), "stats": st}
        for name, st in stats["layers"].items()
    }
    typer.echo(f"wrote {kernel_preview(layers, out, n, seed)}")
