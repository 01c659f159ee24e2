"""The ``dwp`` command. Thin: it parses arguments, calls the library and reports.

User errors (:class:`dwp.errors.DWPError`) are printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

import dwp
from dwp.errors import DWPError

app = typer.Typer(
    help="The Deep Weight Prior: learned kernel priors for Bayesian CNNs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Datasets: what is available here, previews, and rendered letters as notMNIST files.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

DataRoot = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Directory holding dataset files (default: $DWP_DATA_ROOT, then $DATA_ROOT).",
        show_default=False,
    ),
]


HiddenOpt = Annotated[
    tuple[int, int] | None,
    typer.Option(
        help="FConv widths of the two conv layers (default: 256 512 for source nets, 32 128 "
        "for the nets trained on the target set).",
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


class ArchChoice(StrEnum):
    """A network family (``dwp.nn.ARCHS``, or auto)."""

    auto = "auto"
    fconv = "fconv"
    cifarnet = "cifarnet"


ArchOpt = Annotated[
    ArchChoice,
    typer.Option(help="Network family: auto (CIFARNet for 32x32 colour images, FConv otherwise)."),
]


def _widths(hidden: tuple[int, int] | None, width_scale: float | None) -> tuple[int, ...] | None:
    """The library's ``hidden`` from --hidden (FConv) or --width-scale (CIFARNet)."""
    if hidden is not None and width_scale is not None:
        raise DWPError("give --hidden (FConv widths) or --width-scale (CIFARNet), not both")
    if width_scale is not None:
        from dwp.nn import cifarnet_hidden

        if not width_scale > 0:
            raise DWPError(f"--width-scale must be positive, got {width_scale}")
        return cifarnet_hidden(width_scale)
    return hidden


class Part(StrEnum):
    """Which part of a dataset."""

    train = "train"
    test = "test"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dwp {dwp.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


@data_app.command("list")
def data_list(data_root: DataRoot = None) -> None:
    """List the datasets of the catalog, whether each is available here, and where from."""
    from dwp.data import dataset_status

    rows = dataset_status(data_root)
    width = max(len(r.name) for r in rows)
    for r in rows:
        mark = "yes" if r.available else "no "
        typer.echo(f"{r.name:<{width}}  {mark}  {r.where}")
        typer.echo(f"{'':<{width}}       {r.description}")


@data_app.command("preview")
def data_preview(
    name: Annotated[str, typer.Argument(help="Dataset name (see `dwp data list`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    part: Annotated[Part, typer.Option(help="Which part to show.")] = Part.train,
    per_class: Annotated[int, typer.Option(min=1, max=50, help="Images per class row.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed for choosing the images.")] = 0,
    data_root: DataRoot = None,
) -> None:
    """Write a grid of examples, one row per class."""
    from dwp.data import load_dataset
    from dwp.plots import class_grid

    ds = load_dataset(name, data_root)
    images = ds.train if part is Part.train else ds.test
    if ds.num_classes > 20:
        typer.echo(f"{name} has {ds.num_classes} classes; showing the first 20", err=True)
        keep = images.labels < 20
        images = images.subset(keep.nonzero().squeeze(1))
    classes = ds.classes[:20]
    title = f"{name} ({part.value}, {len(images)} images)"
    path = class_grid(images.images, images.labels, classes, out, per_class, seed, title)
    typer.echo(f"wrote {path}  ({name}: {len(ds.train)} train / {len(ds.test)} test; {ds.source})")
    if ds.info.get("fonts"):
        typer.echo(f"fonts: {len(ds.info['fonts'])}")
    if ds.info.get("skipped_unreadable"):
        typer.echo(f"skipped {ds.info['skipped_unreadable']} unreadable images")


@data_app.command("render-letters")
def data_render_letters(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory; the files go to OUT/notMNIST/.")
    ],
    train: Annotated[int, typer.Option(min=10, help="Number of training letters.")] = 100000,
    test: Annotated[int, typer.Option(min=10, help="Number of test letters.")] = 10000,
    seed: Annotated[int, typer.Option(help="Seed of the rendering (fonts, jitter, order).")] = 0,
    font_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--font-dir",
            help="Search only these font directories (repeatable; default: matplotlib's fonts, "
            "the system's and $DWP_FONT_DIRS).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Render notMNIST-style letters from every usable font here and write them as notMNIST
    IDX files, readable anywhere as `--dataset notmnist --data-root OUT`."""
    from dwp.data import cache_dir, export_letters, find_fonts

    fonts = find_fonts(font_dir) if font_dir else find_fonts()
    typer.echo(f"rendering {train} + {test} letters from {len(fonts)} fonts ...", err=True)
    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for b in bars.values():
                b.close()
            unit = "font" if stage.endswith("fonts") else "letter"
            bars[stage] = _bar(total, stage, unit)
        bars[stage].update(done - bars[stage].n)

    try:
        info = export_letters(out, train, test, seed, fonts=fonts, cache=cache_dir(),
                              progress=progress)  # fmt: skip
    finally:
        for b in bars.values():
            b.close()
    typer.echo(
        f"wrote {info['folder']}  ({info['n_train']} train / {info['n_test']} test letters, "
        f"{info['fonts']} fonts); read them with --dataset notmnist --data-root {out}"
    )


source_app = typer.Typer(help="Source networks trained on the source domain.", no_args_is_help=True)
kernels_app = typer.Typer(help="Kernel datasets extracted from source nets.", no_args_is_help=True)
prior_app = typer.Typer(
    help="Kernel VAE priors: train, evaluate, sample, import.", no_args_is_help=True
)
app.add_typer(source_app, name="source")
app.add_typer(kernels_app, name="kernels")
app.add_typer(prior_app, name="prior")

DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when available), cpu or cuda.")
]


class ExecutorChoice(StrEnum):
    """Where a sweep's runs execute."""

    local = "local"
    ray = "ray"


ExecutorOpt = Annotated[
    ExecutorChoice,
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


def _executor(kind: ExecutorChoice, jobs: int, address: str | None, device):
    from dwp.executors import make_executor

    if kind is ExecutorChoice.local and address is not None:
        raise DWPError("--address goes with --executor ray")
    cuda = getattr(device, "type", str(device)) == "cuda"
    if jobs == 0:
        jobs = 1 if cuda else (os.cpu_count() or 1)
    return make_executor(kind.value, jobs, address, gpus_per_run=1 if cuda else 0)


def _bar(total: int | None, desc: str, unit: str = "step"):
    """A progress bar on stderr; disabled where stderr is not a terminal (logs, CI)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5,
                leave=False, disable=None)  # fmt: skip


@source_app.command("train")
def source_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the checkpoints.")],
    dataset: Annotated[str, typer.Option(help="Source dataset (see `dwp data list`).")] = "letters",
    nets: Annotated[int, typer.Option(min=1, help="Number of nets (distinct seeds).")] = 100,
    hidden: HiddenOpt = None,
    width_scale: WidthScaleOpt = None,
    arch: ArchOpt = ArchChoice.auto,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per net.")] = 100,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate (decays linearly to 0).")] = 1e-3,
    l2: Annotated[float, typer.Option(help="Weight of the sum of squares of conv params.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Net i uses seed + i.")] = 0,
    n_train: Annotated[
        int | None, typer.Option(help="Use only the first N training images.", show_default=False)
    ] = None,
    executor: ExecutorOpt = ExecutorChoice.local,
    jobs: JobsOpt = 1,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Train source nets (FConv; CIFARNet for CIFAR) with distinct seeds; finished nets are
    skipped on a re-run."""
    from dwp.device import resolve_device
    from dwp.train.source import SourceConfig, train_source_nets

    config = SourceConfig(
        dataset=dataset,
        nets=nets,
        hidden=_widths(hidden, width_scale),
        arch=arch.value,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        l2=l2,
        seed=seed,
        n_train=n_train,
    )
    dev = resolve_device(device)
    if dev.type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its kernels
    state = {"bar": None}

    def start(i: int, total: int) -> None:
        state["bar"] = _bar(1, f"net {i + 1}/{total}")

    def step(m: dict) -> None:
        bar = state["bar"]
        bar.total = m["steps"]
        bar.n = m["step"]
        bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['acc']:.3f}", refresh=False)
        bar.refresh()

    def done(i: int, m: dict) -> None:
        if state["bar"] is not None:
            state["bar"].close()
        typer.echo(
            f"net {i:3d}  seed {m['seed']}  test acc {m['test_acc']:.4f}  "
            f"train loss {m['train_loss']:.4f}  {m['seconds']:.1f}s"
        )

    runner = None  # one net after another here, with a progress bar per net
    if executor is ExecutorChoice.ray or jobs != 1:
        runner = _executor(executor, jobs, address, dev)
    results = train_source_nets(config, out, dev, data_root, start, step, done, runner)
    accs = [r["test_acc"] for r in results]
    typer.echo(
        f"{len(results)} nets in {out} on {dev}; test accuracy mean {sum(accs) / len(accs):.4f}, "
        f"min {min(accs):.4f}, max {max(accs):.4f}"
    )


@kernels_app.command("extract")
def kernels_extract(
    source: Annotated[Path, typer.Option("--source", help="Directory of `dwp source train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the kernel datasets.")],
    min_norm: Annotated[
        float, typer.Option(help="Drop kernels whose L2 norm is below this.")
    ] = 1e-2,
    test_fraction: Annotated[
        float, typer.Option(help="Fraction of nets (the last ones) held out for test kernels.")
    ] = 0.2,
    layers: Annotated[
        list[str] | None, typer.Option("--layer", help="Conv layer to extract (repeatable).")
    ] = None,
    max_kernels: Annotated[
        int | None,
        typer.Option(
            help="Keep at most N kernels per layer and part (random, seeded).", show_default=False
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for --max-kernels subsampling.")] = 0,
) -> None:
    """Write every (out, in) kernel slice of the source nets' conv layers as train.npy /
    test.npy (N, 1, k, k) per layer, dropping near-zero kernels; also stats.json."""
    from dwp.kernels import KernelConfig, extract_kernels
    from dwp.train.source import list_source_nets, load_source_net

    config = KernelConfig(
        min_norm=min_norm,
        test_fraction=test_fraction,
        layers=tuple(layers) if layers else None,
        max_kernels=max_kernels,
        seed=seed,
    )
    nets = [load_source_net(p)[0] for p in list_source_nets(source)]
    stats = extract_kernels(nets, out, config)
    typer.echo(f"{stats['nets']['train']} train nets, {stats['nets']['test']} test nets -> {out}")
    for name, st in stats["layers"].items():
        k = st["kernel_size"]
        typer.echo(
            f"{name} ({k}x{k}): train {st['train']['before']} -> {st['train']['after_pruning']}, "
            f"test {st['test']['before']} -> {st['test']['after_pruning']} kernels "
            f"(min norm {st['min_norm']:g}; median norm {st['norm_quantiles']['0.5']:.3g})"
        )


@kernels_app.command("preview")
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


@prior_app.command("train")
def prior_train(
    kernels: Annotated[
        Path, typer.Option("--kernels", help="Layer directory with train.npy, test.npy.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Prior directory to write.")],
    z_dim: Annotated[
        int | None,
        typer.Option(
            help="Latent size (default: 2 for 7x7, 4 for 5x5, 2 for 3x3).", show_default=False
        ),
    ] = None,
    hidden: Annotated[
        int | None,
        typer.Option(
            help="Hidden width h (default: 32 for 7x7, 64 for 5x5, 32 for 3x3).", show_default=False
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (the paper's 300).")] = 300,
    standardize: Annotated[
        bool,
        typer.Option(
            "--standardize/--no-standardize",
            help="Networks see kernels divided by their RMS; densities stay over the raw "
            "kernels (exact). --no-standardize is the paper's VAE.",
        ),
    ] = True,
    min_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="Run more epochs than --epochs where these would take fewer optimisation "
            "steps (small kernel sets); 0: exactly --epochs.",
        ),
    ] = 0,
    val_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of training kernels held out to keep the best epoch's weights (0: the "
            "last epoch's, all kernels used for training).",
        ),
    ] = 0.0,
    min_norm: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Leave out train and test kernels whose L2 norm is below this (0: none). Many "
            "small kernels make the prior's density peak at zero, and Bayesian layers under "
            "it shrink their kernels (`dwp prior eval` shows zero_kernel_elbo).",
        ),
    ] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate (decays linearly to 0).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, batches and z draws.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Fit a kernel VAE (the layer's prior) to a kernel dataset; log train / test ELBO per
    kernel every epoch (metrics.jsonl in the prior directory)."""
    from dwp.device import resolve_device
    from dwp.train.prior import PriorTrainConfig, fit_prior

    cfg = PriorTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                           min_steps=min_steps, val_fraction=val_fraction,
                           min_norm=min_norm)  # fmt: skip
    dev = resolve_device(device)
    bar = _bar(None, f"prior {kernels.name}", unit="epoch")

    def on_epoch(rec: dict) -> None:
        post = {"train": f"{rec['train_elbo_per_kernel']:.2f}"}
        if "test_elbo_per_kernel" in rec:
            post["test"] = f"{rec['test_elbo_per_kernel']:.2f}"
        bar.total = rec["epochs"]
        bar.set_postfix(post, refresh=False)
        bar.update(1)

    vae, info = fit_prior(kernels, out, cfg, dev, z_dim, hidden, standardize, on_epoch)
    bar.close()
    c, m, t = vae.config, info["metrics"], info["training"]
    msg = f"prior {c.kernel_size}x{c.kernel_size} (z {c.z_dim}, h {c.hidden}, scale {c.scale:.4g})"
    msg += f" -> {out}: train ELBO {m['train']['elbo_per_kernel']:.2f}"
    if "test" in m:
        msg += f", test ELBO {m['test']['elbo_per_kernel']:.2f}"
    msg += f" nats/kernel; {t['epochs_run']} epochs in {t['seconds']:.0f}s"
    if t["min_norm"]:
        kept = info["kernel_stats"]["train"]["count"]
        msg += f"; {kept} training kernels of norm >= {t['min_norm']:g}"
    if t["best_epoch"] is not None:
        msg += f" (weights of epoch {t['best_epoch']}, best on held-out kernels)"
    typer.echo(msg)


@prior_app.command("eval")
def prior_eval(
    prior: Annotated[Path, typer.Option("--prior", help="Prior directory.")],
    kernels: Annotated[Path, typer.Option("--kernels", help="Kernel file (N, 1, k, k) .npy.")],
    samples: Annotated[int, typer.Option(min=1, help="Draws of z per kernel for the ELBO.")] = 10,
    iw_samples: Annotated[
        int, typer.Option(min=0, help="Importance samples for log p(w) (0: skip).")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the z draws.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Print JSON with the ELBO per kernel (elbo_per_kernel) and an importance-weighted
    log-likelihood per kernel (iw_log_likelihood_per_kernel), in nats; the ELBO of the zero
    kernel (zero_kernel_elbo: far above elbo_per_kernel, the prior's density peaks at zero and
    Bayesian layers under it shrink their kernels); and the shape diversity (effective rank,
    mean |cos|) of the kernels and of 2048 prior samples (decoder means)."""
    import json

    import torch

    from dwp.device import resolve_device
    from dwp.kernels import kernel_diversity, load_kernel_file
    from dwp.priors import load_prior, sample_diversity
    from dwp.train.prior import evaluate_prior, zero_kernel_elbo

    dev = resolve_device(device)
    vae, _ = load_prior(prior, map_location=dev)
    w = torch.from_numpy(load_kernel_file(kernels, vae.kernel_size))
    result = evaluate_prior(vae, w, samples=samples, iw_samples=iw_samples, seed=seed)
    result["zero_kernel_elbo"] = zero_kernel_elbo(vae, samples=samples, seed=seed)
    result["diversity"] = {"kernels": kernel_diversity(w.numpy(), seed=seed),
                           "samples": sample_diversity(vae, seed=seed)}  # fmt: skip
    result.update({"kernel_size": vae.kernel_size, "prior": str(prior), "kernels": str(kernels)})
    typer.echo(json.dumps(result, indent=2))


@prior_app.command("sample")
def prior_sample(
    prior: Annotated[Path, typer.Option("--prior", help="Prior directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    kernels: Annotated[
        Path | None,
        typer.Option(
            help="Real kernels (.npy) to show beside the samples (default: the "
            "prior's training kernels, if still there).",
            show_default=False,
        ),
    ] = None,
    n: Annotated[int, typer.Option(min=1, max=400, help="Kernels per panel.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = 0,
    latent_out: Annotated[
        Path | None,
        typer.Option(
            help="Latent-grid figure (for z_dim > 2 a 2-D slice; default: OUT with _latent).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Draw kernels from the prior (decoder means at z ~ N(0, I), and full draws from p(w | z))
    beside real kernels, and the kernels decoded on a grid of z (a 2-D slice for z_dim > 2)."""
    from dwp.report import prior_figures

    for path in prior_figures(prior, out, kernels, n, seed, latent_out):
        typer.echo(f"wrote {path}")


@prior_app.command("import")
def prior_import(
    reference_dir: Annotated[
        Path, typer.Argument(help="Reference checkpoint: params.yaml + vae_params.torch.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Prior directory to write.")],
) -> None:
    """Convert a prior trained with the reference implementation into a dwp prior directory."""
    from dwp.priors import import_reference_prior

    vae, _ = import_reference_prior(reference_dir, out)
    k = vae.kernel_size
    typer.echo(f"imported {k}x{k} prior (z {vae.z_dim}, h {vae.config.hidden}) -> {out}")


@prior_app.command("rescale")
def prior_rescale(
    prior: Annotated[Path, typer.Argument(help="Prior directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Prior directory to write.")],
    median_norm: Annotated[
        float | None,
        typer.Option(help="Median L2 norm the training kernels should have.", show_default=False),
    ] = None,
    factor: Annotated[
        float | None,
        typer.Option(help="Scale factor c (instead of --median-norm).", show_default=False),
    ] = None,
) -> None:
    """Copy a prior to kernels scaled by c: p_c(w) = p(w / c) / c^(k*k), exactly. The scale of
    source kernels is a gauge (LeakyReLU and max-pool are positively homogeneous), so this
    moves a prior to the scale a target net is trained at."""
    from dwp.priors import rescale_prior

    if (median_norm is None) == (factor is None):
        raise DWPError("give exactly one of --median-norm and --factor")
    vae, info = rescale_prior(prior, out, factor=factor, median_norm=median_norm)
    k = vae.kernel_size
    typer.echo(
        f"{k}x{k} prior over its training kernels scaled by {info['rescaled']['factor']:.6g}"
        f" -> {out} (VAE scale {vae.config.scale:.6g})"
    )


bnn_app = typer.Typer(help="Bayesian CNNs on small target sets.", no_args_is_help=True)
app.add_typer(bnn_app, name="bnn")


class PriorChoice(StrEnum):
    """Prior over the conv kernels."""

    normal = "normal"
    log_uniform = "log-uniform"
    dwp = "dwp"


class InitChoice(StrEnum):
    """Initialisation of the conv kernels' posterior means."""

    xavier = "xavier"
    dwp = "dwp"
    filters = "filters"


@bnn_app.command("train")
def bnn_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")],
    dataset: Annotated[str, typer.Option(help="Target dataset (see `dwp data list`).")] = "mnist5k",
    examples: Annotated[
        int, typer.Option(min=0, help="Training examples, stratified (0: the whole train part).")
    ] = 50,
    split_seed: Annotated[int, typer.Option(help="Seed of the few-shot subset.")] = 0,
    prior: Annotated[PriorChoice, typer.Option(help="Prior over the conv kernels.")] = (
        PriorChoice.normal
    ),
    prior_dirs: Annotated[
        list[Path] | None,
        typer.Option(
            "--prior-dirs",
            help="Prior directories, one per conv layer in order (conv1 7x7, conv2 5x5); for "
            "--prior dwp and --init dwp. Give the option once with several values.",
            show_default=False,
        ),
    ] = None,
    kernel_dirs: Annotated[
        list[Path] | None,
        typer.Option(
            "--kernel-dirs",
            help="Kernel sets (layer directories or .npy), one per conv layer, for --init "
            "filters (default: the kernels the priors were trained on).",
            show_default=False,
        ),
    ] = None,
    init: Annotated[InitChoice, typer.Option(help="Initial posterior means.")] = InitChoice.xavier,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (the paper: 10000).")] = 1000,
    hidden: HiddenOpt = None,
    width_scale: WidthScaleOpt = None,
    arch: ArchOpt = ArchChoice.auto,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size (capped at N).")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate (decays linearly to 0).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and noise.")] = 0,
    eval_every: Annotated[
        int | None,
        typer.Option(
            min=1, help="Epochs between evaluations (default: 10 per run).", show_default=False
        ),
    ] = None,
    ens_samples: Annotated[int, typer.Option(min=1, help="MC samples of the test ensemble.")] = 10,
    dwp_samples: Annotated[
        int, typer.Option(min=1, help="Draws of w and z per kernel in the DWP bound.")
    ] = 1,
    dwp_kernel_batch: Annotated[
        int,
        typer.Option(
            min=1,
            help="Kernels per layer through the DWP's VAE each step; the others follow a "
            "second-order model of their last estimate (see --exact).",
        ),
    ] = 256,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help="Every kernel through the DWP's VAE every step (the paper's protocol; ~10x "
            "slower) instead of --dwp-kernel-batch.",
        ),
    ] = False,
    train_encoder: Annotated[
        bool,
        typer.Option(
            "--train-encoder/--frozen-encoder",
            help="Fit the DWP encoder r(z|w) jointly (tightens the bound).",
        ),
    ] = False,
    log_sigma2_init: Annotated[
        float, typer.Option(help="Initial log-variance of the Gaussian posteriors (paper: -10).")
    ] = -10.0,
    normal_std: Annotated[
        float,
        typer.Option(help="Standard deviation of --prior normal (paper: 1; must be > 0)."),
    ] = 1.0,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Train a Bayesian CNN (FConv; CIFARNet for CIFAR) on a few-shot subset; write
    config.json, metrics.jsonl, checkpoint.pt and result.json to the run directory. A finished
    run is not re-run; a killed one resumes from its last checkpoint."""
    from dwp.device import resolve_device
    from dwp.train.bnn import BNNConfig, train_bnn

    config = BNNConfig(
        dataset=dataset,
        examples=examples or None,
        split_seed=split_seed,
        prior=prior.value,
        prior_dirs=tuple(prior_dirs or ()),
        kernel_dirs=tuple(kernel_dirs or ()),
        init=init.value,
        hidden=_widths(hidden, width_scale),
        arch=arch.value,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        eval_every=eval_every,
        ens_samples=ens_samples,
        dwp_samples=dwp_samples,
        dwp_kernel_batch=None if exact else dwp_kernel_batch,
        train_encoder=train_encoder,
        log_sigma2_init=log_sigma2_init,
        normal_std=normal_std,
    )
    dev = resolve_device(device)
    if (out / "result.json").is_file():
        typer.echo(f"{out} is finished; not re-running", err=True)
    bar = _bar(epochs, f"bnn {prior.value}", unit="epoch")
    last = {}

    def on_epoch(m: dict) -> None:
        bar.n = m["epoch"]
        post = {
            "loss": f"{m['loss']:.4g}",
            "kl": f"{m['kl']:.4g}",
            "train": f"{m['train_acc']:.3f}",
        }
        if last:
            post["test"] = f"{last['ens_acc']:.4f}"
        bar.set_postfix(post, refresh=False)
        bar.refresh()

    def on_eval(rec: dict) -> None:
        last.update(rec)
        exact = f" (exact {rec['kl_exact']:.4g})" if "kl_exact" in rec else ""
        logging.getLogger("dwp").info(
            "epoch %d: ens acc %.4f (1 sample %.4f, means %.4f), nll %.4f, kl %.4g%s",
            rec["epoch"], rec["ens_acc"], rec["sample_acc"], rec["det_acc"], rec["nll"], rec["kl"],
            exact,
        )  # fmt: skip

    try:
        r = train_bnn(config, out, dev, data_root, on_epoch, on_eval)
    finally:
        bar.close()
    typer.echo(
        f"{out}: prior {r['prior']}, init {r['init']}, {r['examples']} examples "
        f"(split {r['split_seed']}), {r['epochs']} epochs: ensemble acc {r['ens_acc']:.4f}, "
        f"1-sample {r['sample_acc']:.4f}, means {r['det_acc']:.4f}, NLL {r['nll']:.4f}, "
        f"ECE {r['ece']:.4f}; {r['wall_s']:.0f}s"
    )


@bnn_app.command("summary")
def bnn_summary(
    runs: Annotated[
        list[Path], typer.Argument(help="Run directories, or folders to search for finished runs.")
    ],
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the rows as JSON here.", show_default=False),
    ] = None,
) -> None:
    """Table of finished `bnn train` runs: ensemble accuracy / NLL per split seed and the means,
    one row per prior, init, examples and epochs."""
    from dwp.io import atomic_path
    from dwp.results import bnn_summary as summarise
    from dwp.results import find_bnn_runs, markdown_table

    found = find_bnn_runs(runs)
    if not found:
        raise DWPError(f"no finished runs (result.json) under {', '.join(map(str, runs))}")
    rows = summarise(found)
    typer.echo(markdown_table(rows))
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(rows, indent=2) + "\n")


experiment_app = typer.Typer(help="The paper's experiments beyond the Bayesian CNN.",
                              no_args_is_help=True)  # fmt: skip
app.add_typer(experiment_app, name="experiment")


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
        "--kernel-dirs",
        help="Kernel sets, one per conv layer, for --inits filters.",
        show_default=False,
    ),
]
InitsOpt = Annotated[
    list[InitChoice] | None,
    typer.Option(
        "--inits", help="Initialisations to compare (default: all three).", show_default=False
    ),
]


class ConvergenceModel(StrEnum):
    """What the convergence experiment trains."""

    classifier = "classifier"
    vae = "vae"


@experiment_app.command("convergence")
def experiment_convergence(
    out: Annotated[Path, typer.Option("--out", "-o", help="Experiment directory.")],
    prior_dirs: InitPriorDirsOpt = None,
    kernel_dirs: KernelDirsOpt = None,
    inits: InitsOpt = None,
    seeds: Annotated[
        list[int] | None,
        typer.Option("--seeds", help="Seeds per init (default: 0 1 2).", show_default=False),
    ] = None,
    dataset: Annotated[str, typer.Option(help="Target dataset (see `dwp data list`).")] = "mnist5k",
    examples: Annotated[
        int, typer.Option(min=0, help="Training examples, stratified (0: the whole train part).")
    ] = 0,
    hidden: HiddenOpt = None,
    width_scale: WidthScaleOpt = None,
    arch: ArchOpt = ArchChoice.auto,
    steps: Annotated[int, typer.Option(min=1, help="Training steps per run.")] = 300,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate (constant).")] = 1e-3,
    eval_every: Annotated[int, typer.Option(min=1, help="Steps between test evaluations.")] = 10,
    model: Annotated[
        ConvergenceModel,
        typer.Option(
            help="classifier: the ordinary net, test accuracy; vae: a conv VAE whose encoder "
            "convs are FConv's (28x28 grey images), test ELBO."
        ),
    ] = ConvergenceModel.classifier,
    z_dim: Annotated[int, typer.Option(min=1, help="Latent size of the VAE.")] = 16,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Train the same ordinary net (FConv; CIFARNet for CIFAR), or a conv VAE (--model vae),
    from Xavier, DWP-sample and source-filter kernels; write the test accuracy (or ELBO)
    against steps (curves.csv, summary.json) and convergence.png. Finished runs are read back;
    a killed experiment resumes."""
    from dwp.device import resolve_device
    from dwp.experiments import ConvergenceConfig, run_convergence

    config = ConvergenceConfig(
        dataset=dataset,
        examples=examples or None,
        hidden=_widths(hidden, width_scale),
        arch=arch.value,
        inits=tuple(i.value for i in inits) if inits else ("xavier", "dwp", "filters"),
        seeds=tuple(seeds) if seeds else (0, 1, 2),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        eval_every=eval_every,
        prior_dirs=tuple(prior_dirs or ()),
        kernel_dirs=tuple(kernel_dirs or ()),
        model=model.value,
        z_dim=z_dim,
    )
    bar = _bar(len(config.inits) * len(config.seeds), "convergence", unit="run")

    def on_run(r: dict) -> None:
        bar.update(1)
        bar.set_postfix({"last": f"{r['init']} s{r['seed']}: {r['final']:.4f}"})

    try:
        summary = run_convergence(config, out, resolve_device(device), data_root, on_run)
    finally:
        bar.close()
    levels = list(next(iter(summary.values()))["first_step"])
    what = "final test ELBO" if config.model == "vae" else "final test acc"
    typer.echo(f"| init | {what} | {' | '.join(f'first step >= {lv}' for lv in levels)} |")
    typer.echo("|---|---|" + "---|" * len(levels))
    for init, s in summary.items():
        firsts = " | ".join(str(s["first_step"][lv] or "-") for lv in levels)
        typer.echo(f"| {init} | {s['final_mean']:.4f} ± {s['final_std']:.4f} | {firsts} |")
    typer.echo(f"figure: {out / 'convergence.png'}")


class MethodChoice(StrEnum):
    """A method of the classification sweep."""

    dwp = "dwp"
    log_uniform = "log-uniform"
    normal = "normal"
    l2_xavier = "l2-xavier"
    l2_dwp = "l2-dwp"


@experiment_app.command("classification")
def experiment_classification(
    out: Annotated[Path, typer.Option("--out", "-o", help="Experiment directory.")],
    prior_dirs: Annotated[
        list[Path] | None,
        typer.Option(
            "--prior-dirs",
            help="Prior directories, one per conv layer (for methods dwp and l2-dwp).",
            show_default=False,
        ),
    ] = None,
    methods: Annotated[
        list[MethodChoice] | None,
        typer.Option(
            "--methods",
            help="Methods to compare (default: dwp log-uniform normal l2-xavier l2-dwp).",
            show_default=False,
        ),
    ] = None,
    examples: Annotated[
        list[int] | None,
        typer.Option(
            "--examples",
            help="Training-set sizes (default: 50 100 200 500 1000).",
            show_default=False,
        ),
    ] = None,
    splits: Annotated[
        list[int] | None,
        typer.Option("--splits", help="Split seeds (default: 0..9).", show_default=False),
    ] = None,
    dataset: Annotated[str, typer.Option(help="Target dataset (see `dwp data list`).")] = "mnist5k",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per run (the paper: 10000).")] = 1000,
    hidden: HiddenOpt = None,
    width_scale: WidthScaleOpt = None,
    arch: ArchOpt = ArchChoice.auto,
    lr: Annotated[float, typer.Option(help="Adam learning rate (decays linearly to 0).")] = 1e-3,
    dwp_kernel_batch: Annotated[
        int, typer.Option(min=1, help="Kernels per layer through the DWP's VAE each step.")
    ] = 256,
    exact: Annotated[
        bool, typer.Option("--exact", help="The DWP's exact mode (every kernel every step).")
    ] = False,
    l2: Annotated[
        float, typer.Option(min=0.0, help="L2 weight of the deterministic baselines.")
    ] = 1e-3,
    executor: ExecutorOpt = ExecutorChoice.local,
    jobs: JobsOpt = 0,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Sweep training-set sizes x split seeds x methods (Bayesian net with each prior, and the
    same net, deterministic, with L2); write results.csv, summary.json and accuracy.png.
    Finished runs are read back; a killed sweep resumes."""
    from dwp.device import resolve_device
    from dwp.experiments import ClassificationConfig, run_classification
    from dwp.experiments.classification import BAYES_METHODS, L2_METHODS

    config = ClassificationConfig(
        dataset=dataset,
        examples=tuple(examples) if examples else (50, 100, 200, 500, 1000),
        splits=tuple(splits) if splits else tuple(range(10)),
        methods=tuple(m.value for m in methods) if methods else BAYES_METHODS + L2_METHODS,
        epochs=epochs,
        hidden=_widths(hidden, width_scale),
        arch=arch.value,
        lr=lr,
        prior_dirs=tuple(prior_dirs or ()),
        dwp_kernel_batch=None if exact else dwp_kernel_batch,
        l2=l2,
    )
    bar = _bar(len(config.tasks()), "classification", unit="run")

    def on_run(r: dict) -> None:
        bar.update(1)
        bar.set_postfix({"last": f"{r['method']} n{r['examples']} s{r['split']}: {r['acc']:.4f}"})

    try:
        dev = resolve_device(device)
        rows = run_classification(config, out, dev, data_root, on_run,
                                  _executor(executor, jobs, address, dev))  # fmt: skip
    finally:
        bar.close()
    typer.echo("| examples | method | accuracy | NLL | splits | paper |")
    typer.echo("|---|---|---|---|---|---|")
    for r in rows:
        paper = "-" if r["paper"] is None else f"{r['paper']:.3f}"
        typer.echo(f"| {r['examples']} | {r['method']} | {r['acc_mean']:.4f} ± {r['acc_std']:.4f} "
                   f"| {r['nll_mean']:.3f} | {r['runs']} | {paper} |")  # fmt: skip
    typer.echo(f"figure: {out / 'accuracy.png'}")


@experiment_app.command("features")
def experiment_features(
    out: Annotated[Path, typer.Option("--out", "-o", help="Experiment directory.")],
    prior_dirs: InitPriorDirsOpt = None,
    kernel_dirs: KernelDirsOpt = None,
    inits: InitsOpt = None,
    scales: Annotated[
        list[float] | None,
        typer.Option(
            "--scales",
            help="Width scales k (default: 0.0625 0.125 0.25 0.5 1).",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        list[int] | None,
        typer.Option(
            "--seeds", help="Seeds per init and scale (default: 0 1 2).", show_default=False
        ),
    ] = None,
    dataset: Annotated[str, typer.Option(help="Target dataset (see `dwp data list`).")] = "mnist5k",
    examples: Annotated[
        int, typer.Option(min=0, help="Training examples, stratified (0: the whole train part).")
    ] = 0,
    base_hidden: Annotated[
        tuple[int, int] | None,
        typer.Option(
            help="FConv widths at scale 1 (default: the source nets', 256 512).",
            show_default=False,
        ),
    ] = None,
    base_width_scale: Annotated[
        float | None,
        typer.Option(
            help="CIFARNet width scale at scale 1 (default 1; instead of --base-hidden).",
            show_default=False,
        ),
    ] = None,
    arch: ArchOpt = ArchChoice.auto,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs per run.")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate (decays linearly to 0).")] = 1e-2,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Random feature extraction: freeze the conv kernels of a net with BatchNorm at their
    initialisation (Xavier, DWP samples, source filters), train only BatchNorm and the
    classifier, at several widths; write results.csv, summary.json and features.png."""
    from dwp.device import resolve_device
    from dwp.experiments import FeaturesConfig, run_features
    from dwp.experiments.features import scale_label

    config = FeaturesConfig(
        dataset=dataset,
        examples=examples or None,
        base_hidden=_widths(base_hidden, base_width_scale),
        arch=arch.value,
        scales=tuple(scales) if scales else (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0),
        inits=tuple(i.value for i in inits) if inits else ("xavier", "dwp", "filters"),
        seeds=tuple(seeds) if seeds else (0, 1, 2),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        prior_dirs=tuple(prior_dirs or ()),
        kernel_dirs=tuple(kernel_dirs or ()),
    )
    total = len(config.inits) * len(config.scales) * len(config.seeds)
    bar = _bar(total, "random features", unit="run")

    def on_run(r: dict) -> None:
        bar.update(1)
        bar.set_postfix({"last": f"{r['init']} k{scale_label(r['scale'])} s{r['seed']}: "
                                 f"{r['test_acc']:.4f}"})  # fmt: skip

    try:
        summary = run_features(config, out, resolve_device(device), data_root, on_run)
    finally:
        bar.close()
    labels = next(iter(summary.values()))["label"]
    typer.echo("| init | " + " | ".join(f"k = {lab}" for lab in labels) + " |")
    typer.echo("|---|" + "---|" * len(labels))
    for init, s in summary.items():
        cells = " | ".join(f"{m:.4f} ± {sd:.4f}" for m, sd in zip(s["mean"], s["std"], strict=True))
        typer.echo(f"| {init} | {cells} |")
    typer.echo(f"figure: {out / 'features.png'}")


class PresetChoice(StrEnum):
    """A preset of `dwp reproduce`."""

    quick = "quick"
    paper = "paper"
    paper_cifar = "paper-cifar"


@app.command("reproduce")
def reproduce_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path(
        "results/reproduce"
    ),
    preset: Annotated[
        PresetChoice,
        typer.Option(
            help="quick: embedded data, ~13 min on 2 CPU cores; paper: the full "
            "protocol (needs the MNIST and notMNIST files; a GPU); paper-cifar: CIFAR-100 -> "
            "CIFAR-10 (needs the CIFAR pickles; a GPU)."
        ),
    ] = PresetChoice.quick,
    preset_file: Annotated[
        Path | None,
        typer.Option(
            "--preset-file",
            help="A custom preset: JSON with the fields of `dwp.reproduce.Preset` (overrides "
            "--preset).",
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
    executor: ExecutorOpt = ExecutorChoice.local,
    jobs: JobsOpt = 0,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Reproduce the paper: source nets -> kernel sets -> priors -> classification,
    convergence and random-feature experiments -> OUT/report.md with figures. Finished stages
    are skipped on a re-run; a killed run resumes."""
    import time

    from dwp.device import resolve_device
    from dwp.reproduce import PRESETS, load_preset, reproduce

    t0 = time.perf_counter()
    chosen = load_preset(preset_file) if preset_file else PRESETS[preset.value]
    typer.echo(f"preset {chosen.name}: {chosen.description}")
    bar = None

    def on_event(e: dict) -> None:
        nonlocal bar
        if e["event"] == "progress":
            if bar is not None:
                bar.update(1)
            return
        head = f"[{e['index']}/{e['total']}] {e['stage']}"
        if e["event"] == "skip":
            typer.echo(f"{head}: done earlier, skipped")
        elif e["event"] == "start":
            typer.echo(f"{head} ...")
            bar = _bar(None, e["stage"], unit="item")
        else:
            if bar is not None:
                bar.close()
                bar = None
            typer.echo(f"{head}: {e['seconds']:.0f} s")

    try:
        dev = resolve_device(device)
        path = reproduce(chosen, out, dev, data_root, kernels,
                         _executor(executor, jobs, address, dev), on_event)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    typer.echo(f"report: {path}  ({time.perf_counter() - t0:.0f} s)")


@app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Argument(help="A `dwp reproduce` output directory.")],
) -> None:
    """Rebuild OUT/report.md (and its prior figures) from the results on disk."""
    from dwp.report import build_report

    typer.echo(f"wrote {build_report(out)}")


_MULTI_VALUE = (
    "--prior-dirs", "--kernel-dirs", "--inits", "--seeds", "--methods", "--examples",
    "--splits", "--scales",
)  # fmt: skip


def _expand_multi_value(argv: list[str]) -> list[str]:
    """Let list options take several values after one flag (``--prior-dirs A B``), as well as
    the repeated form (``--prior-dirs A --prior-dirs B``) that click understands."""
    out, current, taken = [], None, 0
    for tok in argv:
        if tok in _MULTI_VALUE:
            if current is not None and not taken:
                out.append(current)  # a flag without values: let click report it
            current, taken = tok, 0
            continue
        if current is not None:
            if tok.startswith("-"):
                if not taken:
                    out.append(current)
                current = None
            else:
                out += [current, tok]
                taken += 1
                continue
        out.append(tok)
    if current is not None and not taken:
        out.append(current)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dwp`` console script; returns the exit status."""
    argv = _expand_multi_value(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=argv, prog_name="dwp")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except DWPError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


def run() -> None:  # console-script wrapper: exit with main's status
    sys.exit(main())


if __name__ == "__main__":
    run()
