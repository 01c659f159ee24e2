"""``dwp experiment``: the paper's experiments beyond the single Bayesian CNN: the
limited-data classification sweep, convergence, random feature extraction."""

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
    Examples,
    ExecutorOpt,
    HiddenOpt,
    InitPriorDirsOpt,
    InitsOpt,
    JobsOpt,
    KernelDirsOpt,
    SeedsOpt,
    TestExamplesOpt,
    WidthScaleOpt,
    echo_table,
    executor,
    given,
    group,
    kernel_batch,
    run_bar,
    tuple_or_none,
    widths,
    words,
)
from dwp.config import (
    Arch,
    ClassificationConfig,
    ConvergenceConfig,
    ConvergenceModel,
    ExecutorKind,
    FeaturesConfig,
    Method,
    PriorInit,
    PriorScale,
    Sampling,
    Shift,
    resolve_arch,
)
from dwp.tables import mean_sd

app = group("The paper's experiments beyond the Bayesian CNN.")
Target = Annotated[str, typer.Option(help="Target dataset (see `dwp data list`).")]


def _listed(values, end: str) -> str:
    return words(values) + end


@app.command("convergence")
def experiment_convergence(
    out: Annotated[Path, typer.Option("--out", "-o", help="Experiment directory.")],
    prior_dirs: InitPriorDirsOpt = None,
    kernel_dirs: KernelDirsOpt = None,
    inits: InitsOpt = None,
    seeds: SeedsOpt = None,
    dataset: Target = ConvergenceConfig.dataset,
    examples: Examples = 0,
    hidden: HiddenOpt = None,
    width_scale: WidthScaleOpt = None,
    arch: ArchOpt = Arch.auto,
    steps: Annotated[
        int, typer.Option(min=1, help="Training steps per run.")
    ] = ConvergenceConfig.steps,
    batch_size: BatchSize = ConvergenceConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate (constant).")] = (
        ConvergenceConfig.lr
    ),
    eval_every: Annotated[
        int, typer.Option(min=1, help="Steps between test evaluations.")
    ] = ConvergenceConfig.eval_every,
    model: Annotated[
        ConvergenceModel,
        typer.Option(
            help="classifier: the ordinary net, test accuracy; vae: a conv VAE whose encoder "
            "convs are FConv's (28x28 grey images), test ELBO."
        ),
    ] = ConvergenceModel.classifier,
    z_dim: Annotated[
        int, typer.Option(min=1, help="Latent size of the VAE.")
    ] = ConvergenceConfig.z_dim,
    executor_kind: ExecutorOpt = ExecutorKind.local,
    jobs: JobsOpt = 0,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Train the same ordinary net (FConv; CIFARNet for CIFAR; VGGNet with --arch vgg), or a
    conv VAE (--model vae), from Xavier, DWP-sample and source-filter kernels; write the test
    accuracy (or ELBO) against steps (curves.csv, summary.json) and convergence.png. Finished
    runs are read back; a killed experiment resumes."""
    from dwp.device import resolve_device
    from dwp.experiments import run_convergence

    config = ConvergenceConfig(
        dataset=dataset, examples=examples or None, hidden=widths(hidden, width_scale),
        arch=arch.value, steps=steps, batch_size=batch_size, lr=lr, eval_every=eval_every,
        prior_dirs=tuple(prior_dirs or ()), kernel_dirs=tuple(kernel_dirs or ()),
        model=model.value, z_dim=z_dim, **given(inits=tuple_or_none(inits),
                                                seeds=tuple_or_none(seeds)),
    )  # fmt: skip
    b, on_run = run_bar(len(config.inits) * len(config.seeds), "convergence",
                        lambda r: f"{r['init']} s{r['seed']}: {r['final']:.4f}")  # fmt: skip
    try:
        dev = resolve_device(device)
        summary = run_convergence(config, out, dev, data_root, on_run,
                                  executor(executor_kind, jobs, address, dev))  # fmt: skip
    finally:
        b.close()
    levels = list(next(iter(summary.values()))["first_step"])
    what = "final test ELBO" if config.model == "vae" else "final test acc"
    echo_table(["init", what, *(f"first step >= {lv}" for lv in levels)],
               ([init, mean_sd(s["final_mean"], s["final_std"], 4),
                 *(s["first_step"][lv] or "-" for lv in levels)]
                for init, s in summary.items()))  # fmt: skip
    typer.echo(f"figure: {out / 'convergence.png'}")


@app.command("classification")
def experiment_classification(
    out: Annotated[Path, typer.Option("--out", "-o", help="Experiment directory.")],
    prior_dirs: Annotated[
        list[Path] | None,
        typer.Option(
            "--prior-dirs",
            help="Prior directories (or shipped names), one per conv layer (for methods dwp, "
            "gaussian: a Gaussian fitted to their kernels, and l2-dwp; default for FConv "
            "targets: the shipped letters-fconv/conv1 letters-fconv/conv2).",
            show_default=False,
        ),
    ] = None,
    methods: Annotated[
        list[Method] | None,
        typer.Option(
            "--methods",
            help=f"Methods to compare (default: {_listed(ClassificationConfig.methods, ')')}.",
            show_default=False,
        ),
    ] = None,
    examples: Annotated[
        list[int] | None,
        typer.Option(
            "--examples",
            help=f"Training-set sizes (default: {_listed(ClassificationConfig.examples, ')')}.",
            show_default=False,
        ),
    ] = None,
    splits: Annotated[
        list[int] | None,
        typer.Option(
            "--splits",
            help=f"Split seeds (default: {_listed(ClassificationConfig.splits, ')')}.",
            show_default=False,
        ),
    ] = None,
    dataset: Target = ClassificationConfig.dataset,
    epochs: Annotated[
        int, typer.Option(min=1, help="Epochs per run (the paper: 10000).")
    ] = ClassificationConfig.epochs,
    hidden: HiddenOpt = None,
    width_scale: WidthScaleOpt = None,
    arch: ArchOpt = Arch.auto,
    lr: LR = ClassificationConfig.lr,
    dwp_kernel_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Kernels per layer through the DWP's VAE each step (default "
            f"{ClassificationConfig.dwp_kernel_batch}).",
            show_default=False,
        ),
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="The DWP's exact mode (every kernel every step).")
    ] = False,
    l2: Annotated[
        float, typer.Option(min=0.0, help="L2 weight of the deterministic baselines.")
    ] = ClassificationConfig.l2,
    prior_scale: Annotated[
        PriorScale,
        typer.Option(
            help="Kernel scale of the learned priors (dwp, gaussian, l2-dwp): data (unit-std "
            "pre-activations on each split's training images) or none (as fitted).",
        ),
    ] = PriorScale(ClassificationConfig.prior_scale),
    sampling: Annotated[
        Sampling,
        typer.Option(
            help="How the Bayesian nets' training steps sample: local (local "
            "reparameterization, the paper's) or weight (one weight draw per batch, about half "
            "the time a step from 200 examples on).",
        ),
    ] = Sampling(ClassificationConfig.sampling),
    dwp_init: Annotated[
        PriorInit,
        typer.Option(
            help="What the learned priors' methods (dwp, gaussian, l2-dwp) start from: dwp "
            "(a DWP's decoder means, the paper's) or dwp-draw (its draws w ~ p(w | z), as "
            "varied as its kernels where the decoder variance carries their variety: 3x3).",
        ),
    ] = PriorInit(ClassificationConfig.dwp_init),
    ensemble_size: Annotated[
        int, typer.Option(min=1, help="Nets of the ensemble method (--methods ensemble).")
    ] = ClassificationConfig.ensemble_size,
    ood: Annotated[
        list[str] | None,
        typer.Option(
            "--ood",
            help="Evaluate every run's out-of-distribution detection against this catalog "
            "dataset (e.g. letters, the priors' source domain; fashion-mnist); repeat for more.",
            show_default=False,
        ),
    ] = None,
    shift: Annotated[
        Shift | None,
        typer.Option(
            help="Evaluate every run under this shift: rotate (0..180 degrees).", show_default=False
        ),
    ] = None,
    shift_examples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Test images rotated at each angle (a seeded subset; default: all of them).",
            show_default=False,
        ),
    ] = None,
    test_examples: TestExamplesOpt = None,
    executor_kind: ExecutorOpt = ExecutorKind.local,
    jobs: JobsOpt = 0,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Sweep training-set sizes x split seeds x methods (Bayesian net with each prior, and the
    same net, deterministic, with L2); write results.csv, summary.json and accuracy.png.
    Finished runs are read back; a killed sweep resumes."""
    from dwp.config import KERNEL_PRIOR_METHODS
    from dwp.data import DATASETS
    from dwp.data.shift import ROTATIONS
    from dwp.device import resolve_device
    from dwp.experiments import run_classification

    learned = set(KERNEL_PRIOR_METHODS) & {str(m) for m in (methods or Method)}
    shape = DATASETS[dataset].shape if dataset in DATASETS else None
    if not prior_dirs and learned and resolve_arch(arch.value, *(shape or (1, 28))) == "fconv":
        prior_dirs = ["letters-fconv/conv1", "letters-fconv/conv2"]  # the shipped priors
    config = ClassificationConfig(
        dataset=dataset, epochs=epochs, hidden=widths(hidden, width_scale), arch=arch.value,
        lr=lr, prior_dirs=tuple(prior_dirs or ()), l2=l2, prior_scale=prior_scale.value,
        sampling=sampling.value, ensemble_size=ensemble_size, ood=tuple(ood or ()),
        rotations=ROTATIONS if shift is Shift.rotate else (), shift_examples=shift_examples,
        test_examples=test_examples, dwp_init=dwp_init.value,
        dwp_kernel_batch=kernel_batch(methods is None or Method.dwp in methods,
                                      dwp_kernel_batch, exact,
                                      ClassificationConfig.dwp_kernel_batch),
        **given(examples=tuple_or_none(examples), splits=tuple_or_none(splits),
                methods=tuple_or_none(methods)),
    )  # fmt: skip
    b, on_run = run_bar(len(config.tasks()), "classification",
                        lambda r: f"{r['method']} n{r['examples']} s{r['split']}: "
                        f"{r['acc']:.4f}")  # fmt: skip
    try:
        dev = resolve_device(device)
        rows = run_classification(config, out, dev, data_root, on_run,
                                  executor(executor_kind, jobs, address, dev))  # fmt: skip
    finally:
        b.close()
    echo_table(["examples", "method", "accuracy", "NLL", "splits", "paper"],
               ([r["examples"], r["method"], mean_sd(r["acc_mean"], r["acc_std"], 4),
                 f"{r['nll_mean']:.3f}", r["runs"],
                 "-" if r["paper"] is None else f"{r['paper']:.3f}"] for r in rows))  # fmt: skip
    figures = ["accuracy.png"]
    if config.ood or config.rotations:
        from dwp.eval import uncertainty_columns

        cols = uncertainty_columns(config.ood, config.rotations)
        typer.echo("")
        echo_table(["examples", "method", *cols],
                   ([r["examples"], r["method"], *(f"{r[k + '_mean']:.3f}" if k + "_mean" in r
                                                    else "-" for k in cols.values())]
                    for r in rows))  # fmt: skip
        figures += ["reliability.png"] + (["rotation.png"] if config.rotations else [])
    typer.echo(f"figures: {', '.join(str(out / f) for f in figures)}")


@app.command("features")
def experiment_features(
    out: Annotated[Path, typer.Option("--out", "-o", help="Experiment directory.")],
    prior_dirs: InitPriorDirsOpt = None,
    kernel_dirs: KernelDirsOpt = None,
    inits: InitsOpt = None,
    scales: Annotated[
        list[float] | None,
        typer.Option(
            "--scales",
            help=f"Width scales k (default: {_listed(FeaturesConfig.scales, ')')}.",
            show_default=False,
        ),
    ] = None,
    seeds: SeedsOpt = None,
    dataset: Target = FeaturesConfig.dataset,
    examples: Examples = 0,
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
    arch: ArchOpt = Arch.auto,
    epochs: Annotated[
        int, typer.Option(min=1, help="Training epochs per run.")
    ] = FeaturesConfig.epochs,
    batch_size: BatchSize = FeaturesConfig.batch_size,
    lr: LR = FeaturesConfig.lr,
    executor_kind: ExecutorOpt = ExecutorKind.local,
    jobs: JobsOpt = 0,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    data_root: DataRoot = None,
) -> None:
    """Random feature extraction: freeze the conv kernels of a net with BatchNorm at their
    initialisation (Xavier, DWP samples, source filters), train only BatchNorm and the
    classifier, at several widths; write results.csv, summary.json and features.png."""
    from dwp.device import resolve_device
    from dwp.experiments import run_features
    from dwp.experiments.features import scale_label

    config = FeaturesConfig(
        dataset=dataset, examples=examples or None, arch=arch.value, epochs=epochs,
        base_hidden=widths(base_hidden, base_width_scale), batch_size=batch_size, lr=lr,
        prior_dirs=tuple(prior_dirs or ()), kernel_dirs=tuple(kernel_dirs or ()),
        **given(scales=tuple_or_none(scales), inits=tuple_or_none(inits),
                seeds=tuple_or_none(seeds)),
    )  # fmt: skip
    total = len(config.inits) * len(config.scales) * len(config.seeds)
    b, on_run = run_bar(total, "random features",
                        lambda r: f"{r['init']} k{scale_label(r['scale'])} s{r['seed']}: "
                        f"{r['test_acc']:.4f}")  # fmt: skip
    try:
        dev = resolve_device(device)
        summary = run_features(config, out, dev, data_root, on_run,
                               executor(executor_kind, jobs, address, dev))  # fmt: skip
    finally:
        b.close()
    labels = next(iter(summary.values()))["label"]
    echo_table(["init", *(f"k = {lab}" for lab in labels)],
               ([init, *(mean_sd(m, sd, 4) for m, sd in zip(s["mean"], s["std"], strict=True))]
                for init, s in summary.items()))  # fmt: skip
    typer.echo(f"figure: {out / 'features.png'}")
