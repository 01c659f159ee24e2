"""``dwp prior``: kernel VAE priors: train, evaluate, sample, import, rescale."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from dwp.cli._common import LR, DeviceOpt, bar, group
from dwp.config import VAE_DEFAULTS, PriorTrainConfig
from dwp.errors import DWPError

app = group("Kernel VAE priors: list the shipped ones; train, evaluate, sample, import, rescale.")
D = PriorTrainConfig  # the defaults


class PriorFamily(StrEnum):
    """The family of a kernel prior."""

    vae = "vae"
    gaussian = "gaussian"


def _per_size(index: int) -> str:
    return ", ".join(f"{v[index]} for {k}x{k}" for k, v in VAE_DEFAULTS.items())


@app.command("list")
def prior_list(
    priors: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Prior directories to list too (default: the shipped ones only).",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the rows as JSON here.", show_default=False),
    ] = None,
) -> None:
    """The priors shipped with dwp (and any given): name (what --prior-dirs, bayesianize and
    DeepWeightPrior.pretrained take), kernel size, latent size, the kernels it was fitted to, test
    ELBO and the zero kernel's ELBO (nats/kernel; for a Gaussian prior, z "Gaussian", its exact
    log-likelihoods), and the effective rank of its samples (decoder means, the DWP init's; and
    draws w ~ p(w | z), the prior's own) beside its training kernels'."""
    from dwp.cli._common import echo_table
    from dwp.data.shipped import shipped_priors
    from dwp.io import write_json
    from dwp.priors import prior_card

    names = [*shipped_priors(), *map(str, priors or [])]
    if not names:
        raise DWPError("no priors shipped with this installation, and none given")
    cards = [prior_card(n) for n in names]

    def num(v, fmt=".1f"):
        return "-" if v is None else format(v, fmt)

    rows = [[c["name"], f"{c['kernel_size']}x{c['kernel_size']}",
             "Gaussian" if c["z_dim"] is None else c["z_dim"], c["source"] or "-",
             num(c["kernels"], "d"), num(c["test_elbo"]), num(c["zero_kernel_elbo"]),
             f"{num(c['rank_samples'])} / {num(c['rank_draws'])} / {num(c['rank_kernels'])}"]
            for c in cards]  # fmt: skip
    echo_table(["name", "kernel", "z", "fitted to", "kernels", "test ELBO", "zero-kernel ELBO",
                "eff. rank means / draws / kernels"], rows)  # fmt: skip
    if json_out is not None:
        write_json(json_out, cards)


@app.command("train")
def prior_train(
    kernels: Annotated[
        Path,
        typer.Option(
            "--kernels",
            help="Layer directory with train.npy, test.npy, or a shipped one "
            "(letters-fconv/conv1).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Prior directory to write.")],
    family: Annotated[
        PriorFamily,
        typer.Option(
            help="vae: a kernel VAE (the deep weight prior); gaussian: one Gaussian with a full "
            "k*k x k*k covariance, fitted in closed form (the control; --min-norm applies, the "
            "training options do not).",
        ),
    ] = PriorFamily.vae,
    z_dim: Annotated[
        int | None,
        typer.Option(min=1, help=f"Latent size (default: {_per_size(0)}).", show_default=False),
    ] = None,
    hidden: Annotated[
        int | None,
        typer.Option(min=1, help=f"Hidden width h (default: {_per_size(1)}).", show_default=False),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (the paper's 300).")] = D.epochs,
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
    ] = D.min_steps,
    val_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of training kernels held out to keep the best epoch's weights (0: the "
            "last epoch's, all kernels used for training).",
        ),
    ] = D.val_fraction,
    min_norm: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Leave out train and test kernels whose L2 norm is below this (0: none). Many "
            "small kernels make the prior's density peak at zero, and Bayesian layers under "
            "it shrink their kernels (`dwp prior eval` shows zero_kernel_elbo).",
        ),
    ] = D.min_norm,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = D.batch_size,
    lr: LR = D.lr,
    seed: Annotated[
        int, typer.Option(help="Seed of initialisation, batches and z draws.")
    ] = D.seed,
    device: DeviceOpt = "auto",
) -> None:
    """Fit a kernel VAE (the layer's prior) to a kernel dataset; log train / test ELBO per
    kernel every epoch (metrics.jsonl in the prior directory). --family gaussian fits the
    Gaussian kernel prior instead."""
    from dwp.device import resolve_device
    from dwp.train.prior import fit_prior

    if family is PriorFamily.gaussian:
        from dwp.priors import fit_gaussian_prior

        prior, meta = fit_gaussian_prior(kernels, out, min_norm)
        k, m = prior.kernel_size, meta["metrics"]
        msg = f"Gaussian prior {k}x{k} -> {out}: train log-likelihood "
        msg += f"{m['train']['log_lik_per_kernel']:.2f}"
        if "test" in m:
            msg += f", test {m['test']['log_lik_per_kernel']:.2f}"
        msg += f" nats/kernel ({m['train']['n_kernels']} training kernels)"
        typer.echo(msg)
        return

    cfg = PriorTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                           min_steps=min_steps, val_fraction=val_fraction,
                           min_norm=min_norm)  # fmt: skip
    dev = resolve_device(device)
    b = bar(None, f"prior {kernels.name}", unit="epoch")
    epochs_run = []

    def on_epoch(rec: dict) -> None:
        epochs_run.append(rec["epoch"])
        post = {"train": f"{rec['train_elbo_per_kernel']:.2f}"}
        if "test_elbo_per_kernel" in rec:
            post["test"] = f"{rec['test_elbo_per_kernel']:.2f}"
        b.total = rec["epochs"]
        b.set_postfix(post, refresh=False)
        b.update(1)

    try:
        vae, info = fit_prior(kernels, out, cfg, dev, z_dim, hidden, standardize, on_epoch)
    finally:
        b.close()
    if not epochs_run:
        typer.echo(f"{out} holds this prior already; not re-training", err=True)
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


@app.command("eval")
def prior_eval(
    prior: Annotated[
        Path, typer.Option("--prior", help="Prior directory or shipped name (`dwp prior list`).")
    ],
    kernels: Annotated[
        Path,
        typer.Option(
            "--kernels",
            help="Kernel file (N, 1, k, k) .npy, or a kernel layer directory / shipped layer "
            "(its test.npy).",
        ),
    ],
    samples: Annotated[int, typer.Option(min=1, help="Draws of z per kernel for the ELBO.")] = 10,
    iw_samples: Annotated[
        int, typer.Option(min=0, help="Importance samples for log p(w) (0: skip).")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the z draws.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Print JSON: how the prior scores the kernels and how its samples compare with them. A
    kernel VAE: the ELBO per kernel (elbo_per_kernel), an importance-weighted log-likelihood per
    kernel (iw_log_likelihood_per_kernel), in nats; the ELBO of the zero kernel
    (zero_kernel_elbo: above elbo_per_kernel, the prior's density peaks at zero); the same
    scores of a full-covariance Gaussian fitted to the VAE's training kernels
    (gaussian_reference). A Gaussian prior: its exact log-likelihoods. Both: the shape
    diversity (effective rank, mean |cos|) of the kernels, of 2048 samples (decoder means, the
    DWP init's) and of 2048 draws (w ~ p(w | z)), and how much of the draws' mass lies below
    the kernels' 5% norm quantile (small_kernels)."""
    import json

    from dwp.device import resolve_device
    from dwp.train.prior import evaluate_prior_dir

    result = evaluate_prior_dir(prior, kernels, samples=samples, iw_samples=iw_samples,
                                seed=seed, map_location=resolve_device(device))  # fmt: skip
    typer.echo(json.dumps(result, indent=2))


@app.command("sample")
def prior_sample(
    prior: Annotated[
        Path, typer.Option("--prior", help="Prior directory or shipped name (`dwp prior list`).")
    ],
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


@app.command("import")
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


@app.command("rescale")
def prior_rescale(
    prior: Annotated[Path, typer.Argument(help="Prior directory or shipped name.")],
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
