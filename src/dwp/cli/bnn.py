"""``dwp bnn``: Bayesian CNNs on small target sets; tables of finished runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from dwp.cli._common import (
    LR,
    ArchOpt,
    DataRoot,
    DeviceOpt,
    Examples,
    HiddenOpt,
    TestExamplesOpt,
    WidthScaleOpt,
    bar,
    group,
    kernel_batch,
    widths,
)
from dwp.config import (
    Arch,
    BNNConfig,
    Init,
    KernelEstimator,
    PriorKind,
    PriorScale,
    Sampling,
    Shift,
)
from dwp.errors import DWPError

app = group("Bayesian CNNs on small target sets.")
D = BNNConfig  # the defaults


@app.command("train")
def bnn_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")],
    dataset: Annotated[str, typer.Option(help="Target dataset (see `dwp data list`).")] = D.dataset,
    examples: Examples = D.examples,
    split_seed: Annotated[int, typer.Option(help="Seed of the few-shot subset.")] = D.split_seed,
    prior: Annotated[PriorKind, typer.Option(help="Prior over the conv kernels.")] = D.prior,
    prior_dirs: Annotated[
        list[Path] | None,
        typer.Option(
            "--prior-dirs",
            help="Prior directories (or shipped names), one per conv layer in order (conv1 7x7, "
            "conv2 5x5); for --prior dwp / gaussian and --init dwp (--prior gaussian also takes "
            "kernel-VAE priors: it fits a Gaussian to their kernels). Give the option once with "
            "several values.",
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
    init: Annotated[Init, typer.Option(help="Initial posterior means.")] = D.init,
    prior_scale: Annotated[
        PriorScale,
        typer.Option(
            help="Kernel scale of the learned priors: data (moved so that their kernels give "
            "unit-std pre-activations on the training images) or none (as fitted).",
        ),
    ] = D.prior_scale,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (the paper: 10000).")] = D.epochs,
    hidden: HiddenOpt = None,
    width_scale: WidthScaleOpt = None,
    arch: ArchOpt = Arch.auto,
    test_examples: TestExamplesOpt = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Batch size (capped at N).")
    ] = D.batch_size,
    lr: LR = D.lr,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and noise.")] = D.seed,
    eval_every: Annotated[
        int | None,
        typer.Option(
            min=1, help="Epochs between evaluations (default: 10 per run).", show_default=False
        ),
    ] = None,
    ens_samples: Annotated[
        int, typer.Option(min=1, help="MC samples of the test ensemble.")
    ] = D.ens_samples,
    dwp_samples: Annotated[
        int, typer.Option(min=1, help="Draws of w and z per kernel in the DWP bound.")
    ] = D.dwp_samples,
    dwp_kernel_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"--prior dwp: kernels per layer through the VAE each step (default "
            f"{D.dwp_kernel_batch}); the others follow a second-order model of their last "
            "estimate (see --exact).",
            show_default=False,
        ),
    ] = None,
    dwp_estimator: Annotated[
        KernelEstimator,
        typer.Option(
            help="--prior dwp with a kernel batch: what stands in for the kernels left out of a "
            "step: cache (a second-order model of their last estimate) or subsample (nothing: "
            "the batch's sum times M/B, unbiased).",
        ),
    ] = KernelEstimator(D.dwp_estimator),
    sampling: Annotated[
        Sampling,
        typer.Option(
            help="How a training step samples the Bayesian layers: local (local "
            "reparameterization, the paper's) or weight (one weight draw per batch: one conv "
            "per layer instead of two).",
        ),
    ] = Sampling(D.sampling),
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help="--prior dwp: every kernel through the VAE every step (the paper's protocol; "
            "~10x slower) instead of --dwp-kernel-batch.",
        ),
    ] = False,
    train_encoder: Annotated[
        bool,
        typer.Option(
            "--train-encoder/--frozen-encoder",
            help="--prior dwp --exact: fit the DWP encoder r(z|w) jointly (tightens the bound).",
        ),
    ] = D.train_encoder,
    log_sigma2_init: Annotated[
        float, typer.Option(help="Initial log-variance of the Gaussian posteriors (paper: -10).")
    ] = D.log_sigma2_init,
    normal_std: Annotated[
        float | None,
        typer.Option(
            help=f"--prior normal: its standard deviation (default {D.normal_std:g}; > 0).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Your own architecture instead of FConv / CIFARNet: package.module:factory or "
            "file.py:factory, called with those of in_channels, num_classes, image_size it "
            "takes. Under --prior dwp its convs get the priors of --prior-dirs (default the "
            "shipped letters-fconv: 7x7 and 5x5) by kernel size, N(0, --normal-std^2) the rest.",
            show_default=False,
        ),
    ] = None,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Train a Bayesian CNN (FConv; CIFARNet for CIFAR; VGGNet with --arch vgg; or --model) on
    a few-shot subset; write config.json, metrics.jsonl, checkpoint.pt and result.json to the
    run directory. A finished run is not re-run; a killed one resumes from its last
    checkpoint."""
    import os
    import sys

    from dwp.device import resolve_device
    from dwp.train.bnn import finished_result, train_bnn

    if model is not None and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # --model mymodels:net finds ./mymodels.py
    dwp = prior is PriorKind.dwp
    if normal_std is not None and prior is not PriorKind.normal:
        raise DWPError("--normal-std applies to --prior normal only")
    if train_encoder and not dwp:
        raise DWPError("--train-encoder applies to --prior dwp only")
    config = BNNConfig(
        dataset=dataset, examples=examples or None, split_seed=split_seed, prior=prior,
        prior_dirs=tuple(prior_dirs or ()), kernel_dirs=tuple(kernel_dirs or ()), init=init,
        hidden=widths(hidden, width_scale), arch=arch.value, epochs=epochs,
        batch_size=batch_size, lr=lr, seed=seed, eval_every=eval_every, ens_samples=ens_samples,
        dwp_samples=dwp_samples, train_encoder=train_encoder, log_sigma2_init=log_sigma2_init,
        dwp_kernel_batch=kernel_batch(dwp, dwp_kernel_batch, exact, D.dwp_kernel_batch),
        normal_std=D.normal_std if normal_std is None else normal_std, model=model,
        prior_scale=prior_scale, dwp_estimator=dwp_estimator.value, sampling=sampling.value,
        test_examples=test_examples,
    )  # fmt: skip
    dev = resolve_device(device)
    if finished_result(out, config) is not None:  # after the config check: same run
        typer.echo(f"{out} is finished; not re-running", err=True)
    b = bar(epochs, f"bnn {prior.value}", unit="epoch")
    last = {}

    def on_epoch(m: dict) -> None:
        b.n = m["epoch"]
        post = {
            "loss": f"{m['loss']:.4g}",
            "kl": f"{m['kl']:.4g}",
            "train": f"{m['train_acc']:.3f}",
        }
        if last:
            post["test"] = f"{last['ens_acc']:.4f}"
        b.set_postfix(post, refresh=False)
        b.refresh()

    def on_eval(rec: dict) -> None:
        last.update(rec)
        exact = f" (exact {rec['kl_exact']:.4g})" if "kl_exact" in rec else ""
        logging.getLogger("dwp").info(
            "epoch %d: ens acc %.4f (1 sample %.4f, means %.4f), nll %.4f, kl %.4g%s",
            rec["epoch"], rec["ens_acc"], rec["sample_acc"], rec["det_acc"], rec["nll"], rec["kl"],
            exact,
        )  # fmt: skip

    def on_model(net) -> None:
        from dwp.cli._common import echo_table
        from dwp.nn import describe_bayes

        keys = ("layer", "shape", "posterior", "prior")
        echo_table(list(keys), [[r[k] for k in keys] for r in describe_bayes(net)])

    try:
        r = train_bnn(config, out, dev, data_root, on_epoch, on_eval, on_model)
    finally:
        b.close()
    typer.echo(
        f"{out}: prior {r['prior']}, init {r['init']}, {r['examples']} examples "
        f"(split {r['split_seed']}), {r['epochs']} epochs: ensemble acc {r['ens_acc']:.4f}, "
        f"1-sample {r['sample_acc']:.4f}, means {r['det_acc']:.4f}, NLL {r['nll']:.4f}, "
        f"ECE {r['ece']:.4f}; {r['wall_s']:.0f}s"
    )


@app.command("eval")
def bnn_eval(
    run: Annotated[Path, typer.Argument(help="A finished `dwp bnn train` run directory.")],
    ood: Annotated[
        list[str] | None,
        typer.Option(
            "--ood",
            help="Out-of-distribution set: a catalog dataset of the target's image shape (e.g. "
            "letters: the priors' source domain; fashion-mnist when present); repeat for more.",
            show_default=False,
        ),
    ] = None,
    shift: Annotated[
        Shift | None,
        typer.Option(
            help="Dataset shift: rotate (the test images at 0..180 degrees).", show_default=False
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Weight draws per input (default: the run's ens_samples).",
            show_default=False,
        ),
    ] = None,
    ood_examples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Images per out-of-distribution set, drawn by --seed (default: as many as the "
            "test part has).",
            show_default=False,
        ),
    ] = None,
    shift_examples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Test images rotated at each angle, drawn by --seed (default: all of them).",
            show_default=False,
        ),
    ] = None,
    bins: Annotated[int, typer.Option(min=1, help="Equal-width (and equal-mass) ECE bins.")] = 15,
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of the weight draws and of the image subsets.")
    ] = 0,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Calibration, out-of-distribution detection and dataset shift of a finished run: accuracy,
    NLL, Brier, ECE and adaptive ECE on its test set; AUROC / AUPR / FPR at 95% TPR of three
    scores (1 - max probability, predictive entropy, mutual information) against each --ood set;
    the metrics at each rotation angle. Writes RUN/uncertainty.json, RUN/reliability.png and
    (with --shift rotate) RUN/rotation.png."""
    from dwp.cli._common import echo_table
    from dwp.data.shift import ROTATIONS
    from dwp.device import resolve_device
    from dwp.eval import OOD_SCORES
    from dwp.plots import reliability_diagram, rotation_curves
    from dwp.train.bnn import evaluate_run

    angles = ROTATIONS if shift is Shift.rotate else ()
    r = evaluate_run(run, ood or (), angles, samples, seed, bins, resolve_device(device),
                     data_root, ood_examples, shift_examples)  # fmt: skip
    t = r["test"]
    what = f"{r['prior']} prior, {r['examples']} examples, split {r['split_seed']}"
    echo_table(["set", "acc", "NLL", "Brier", f"ECE ({bins} bins)", "adaptive ECE"],
               [[f"{r['dataset']} test", f"{t['acc']:.4f}", f"{t['nll']:.4f}",
                 f"{t['brier']:.4f}", f"{t['ece']:.4f}", f"{t['adaptive_ece']:.4f}"]])  # fmt: skip
    if r["ood"]:
        typer.echo("")
        echo_table(["out-of-distribution set", "score", "AUROC", "AUPR", "FPR95"],
                   ([name, score, f"{d[score]['auroc']:.4f}", f"{d[score]['aupr']:.4f}",
                     f"{d[score]['fpr95']:.4f}"]
                    for name, d in r["ood"].items() for score in OOD_SCORES))  # fmt: skip
    caption = f"{run}: {what}; {r['samples']} weight draws; {r['dataset']} test set"
    reliability_diagram({r["prior"]: t["reliability"]}, run / "reliability.png", caption, bins)
    if r["rotation"]:
        typer.echo("")
        echo_table(["rotation (degrees)", "acc", "NLL", "ECE"],
                   ([f"{x['degrees']:.0f}", f"{x['acc']:.4f}", f"{x['nll']:.4f}",
                     f"{x['ece']:.4f}"] for x in r["rotation"]))  # fmt: skip
        rotation_curves({r["prior"]: r["rotation"]}, run / "rotation.png", caption)
    typer.echo(f"wrote {run / 'uncertainty.json'} and the figures beside it")


@app.command("summary")
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
    from dwp.io import write_json
    from dwp.results import bnn_summary as summarise
    from dwp.results import find_bnn_runs, markdown_table

    found = find_bnn_runs(runs)
    if not found:
        raise DWPError(f"no finished runs (result.json) under {', '.join(map(str, runs))}")
    rows = summarise(found)
    typer.echo(markdown_table(rows))
    if json_out is not None:
        write_json(json_out, rows)
