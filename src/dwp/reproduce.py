"""``dwp reproduce``: the whole pipeline of the paper in one call, each stage cached.

data -> source nets -> kernel sets -> one prior per conv layer -> the experiments
(classification with limited data, convergence of a classifier and of a VAE, random feature
extraction) -> ``report.md``.

Layout of the output directory::

    DIR/config.json         the preset and options (a re-run with others is refused)
    DIR/stages.json         per stage: done, wall seconds (the report's timing table)
    DIR/source/ kernels/ priors/conv1/ priors/conv2/ ...   (one prior per conv layer)
    DIR/classification/ convergence/ vae-convergence/ features/   (results and figures)
    DIR/report.md, DIR/figures/

A finished stage is skipped on a re-run; a killed one resumes (source nets, kernel sets and
priors are written atomically; the experiments keep one file per finished run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from dwp.errors import DWPError
from dwp.io import check_same_config, read_json, write_json

__all__ = ["PRESETS", "STAGES", "Preset", "load_preset", "reproduce"]

STAGES = ("source", "kernels", "priors", "classification", "convergence", "vae-convergence",
          "features", "report")  # fmt: skip


@dataclass
class Preset:
    """Everything a reproduction runs. The ``*_args`` dicts are keyword arguments of the stage's
    config class (:class:`~dwp.train.source.SourceConfig`, :class:`~dwp.kernels.KernelConfig`,
    :class:`~dwp.train.prior.PriorTrainConfig` per layer, and the experiments' configs; their
    dataset and prior directories are filled in here). ``kernels``: a kernel-set directory or
    the name of a shipped set (``dwp.kernels.shipped_kernel_sets``); the source and kernel
    stages are then skipped."""

    name: str
    description: str
    source_dataset: str
    target_dataset: str
    kernels: str | None = None  # kernel sets to use instead of training source nets
    source_args: dict = field(default_factory=dict)
    kernel_args: dict = field(default_factory=dict)
    # layer -> PriorTrainConfig kwargs, optionally "z_dim" / "hidden" of the VAE (default: the
    # paper's for the kernel size) and "median_norm": the Bayesian nets then use the fitted prior
    # moved to kernels of that median norm (see dwp.priors.rescale_prior)
    prior_args: dict = field(default_factory=dict)
    classification_args: dict = field(default_factory=dict)
    convergence_args: dict = field(default_factory=dict)
    features_args: dict = field(default_factory=dict)
    # the VAE variant of convergence (ConvergenceConfig with model="vae"); 28x28 targets only
    vae_convergence_args: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        name="quick",
        description="embedded data: priors fitted to the shipped kernels of 13 paper-protocol "
        "source nets on letters rendered from 1331 fonts (trained on a GPU: a CPU needs 2 "
        "minutes per epoch of them), moved to the reference's kernel scale for the Bayesian "
        "nets; 5000 MNIST digits as the target, 3 splits at 50 examples, short runs; about 13 "
        "minutes on 2 CPU cores",
        source_dataset="letters",
        target_dataset="mnist5k",
        kernels="letters-fconv",
        # Wider latents than the paper's 2 / 4: the Bayesian nets' kernels drift towards what the
        # VAE reconstructs, so a VAE whose samples are as varied as its kernels matters (README,
        # "What we learned"). 5x5 with z 16: test ELBO 94.7 against 93.2 for z 8, sample effective
        # rank 9.0 against 6.5 (kernels: 14.0), and 2.7 points more at 1000 epochs on two splits.
        # min_norm: without the small kernels (a third of 7x7, two fifths of 5x5) the prior's
        # density no longer peaks so high at the zero kernel, where the mode-seeking KL pulled
        # every kernel (exact mode, split 0, 300 epochs: 0.803 against 0.742).
        prior_args={
            "conv1": {"epochs": 300, "median_norm": 1.35, "z_dim": 8, "min_norm": 0.2},
            "conv2": {"epochs": 10, "median_norm": 0.17, "z_dim": 16, "min_norm": 0.03},
        },
        classification_args={"examples": (50,), "splits": (0, 1, 2), "epochs": 500},
        convergence_args={"seeds": (0, 1, 2), "steps": 200},
        features_args={"scales": (1 / 32, 1 / 16, 1 / 8), "seeds": (0, 1, 2), "epochs": 10},
        vae_convergence_args={"seeds": (0, 1, 2), "steps": 100, "batch_size": 128},
    ),
    "paper": Preset(
        name="paper",
        description="the paper's protocol: 100 source nets 256/512 on notMNIST, 100 epochs; "
        "MNIST with 50..1000 examples, 10 splits, 10000 epochs (a GPU or a long night)",
        source_dataset="notmnist",
        target_dataset="mnist",
        source_args={"nets": 100, "hidden": (256, 512), "epochs": 100},
        kernel_args={},
        prior_args={"conv1": {"epochs": 300}, "conv2": {"epochs": 300}},
        classification_args={"epochs": 10000},
        convergence_args={"seeds": (0, 1, 2, 3, 4), "steps": 300},
        features_args={"seeds": (0, 1, 2), "epochs": 10},
        vae_convergence_args={"seeds": (0, 1, 2, 3, 4), "steps": 1000},
    ),
    "paper-cifar": Preset(
        name="paper-cifar",
        description="the paper's CIFAR experiments: CIFARNet (k = 1) source nets on CIFAR-100, "
        "one prior per conv layer; CIFAR-10 with 50 / 200 / 500 examples, 10 splits (the "
        "Bayesian CIFARNet variant, 1000 epochs: our choice, the paper does not say), random "
        "features at k = 1/8 .. 1, convergence; needs the CIFAR pickles and a GPU",
        source_dataset="cifar100",
        target_dataset="cifar10",
        source_args={"nets": 10, "epochs": 100},
        prior_args={f"conv{i}": {"epochs": 300} for i in range(1, 5)},
        classification_args={"examples": (50, 200, 500), "epochs": 1000},
        convergence_args={"seeds": (0, 1, 2, 3, 4), "steps": 500},
        features_args={"scales": (1 / 8, 1 / 4, 1 / 2, 1.0), "seeds": (0, 1, 2), "epochs": 10},
    ),
}


def load_preset(path: str | Path) -> Preset:
    """A custom preset from a JSON file holding :class:`Preset`'s fields."""
    d = read_json(path)
    names = {f.name for f in fields(Preset)}
    if not isinstance(d, dict) or not {"name", "source_dataset", "target_dataset"} <= set(d):
        raise DWPError(f"{path}: a preset needs at least name, source_dataset, target_dataset")
    unknown = sorted(set(d) - names)
    if unknown:
        raise DWPError(f"{path}: unknown preset fields {unknown}; known: {sorted(names)}")
    return Preset(**{"description": f"custom preset from {path}", **d})


def _stage_log(out: Path) -> dict:
    path = out / "stages.json"
    return read_json(path) if path.is_file() else {}


def _mark(out: Path, stage: str, seconds: float, **info) -> None:
    log = _stage_log(out)
    log[stage] = {"done": True, "seconds": seconds, **info}
    write_json(out / "stages.json", log)


def reproduce(
    preset: Preset | str,
    out: str | Path,
    device: torch.device | str = "cpu",
    data_root=None,
    kernels_dir: str | Path | None = None,
    executor=None,
    on_event: Callable[[dict], None] | None = None,
) -> Path:
    """Run (or resume) every stage of ``preset`` into ``out``; returns the report's path.

    ``kernels_dir``: use these kernel sets (a ``dwp kernels extract`` directory with one
    directory per conv layer of the target dataset's network family) instead of training
    source nets. ``executor``: runs the source nets and the classification sweep's runs (see
    :mod:`dwp.executors`). ``on_event`` receives ``{"stage", "index", "total", "event": "start" |
    "skip" | "done" | "progress", ...}``; progress events carry the stage's own callback record
    under ``"record"``.
    """
    from dwp.experiments import (
        ClassificationConfig,
        ConvergenceConfig,
        FeaturesConfig,
        run_classification,
        run_convergence,
        run_features,
    )
    from dwp.kernels import KernelConfig, extract_kernels, resolve_kernel_sets
    from dwp.priors import rescale_prior
    from dwp.report import build_report
    from dwp.train.prior import PriorTrainConfig, fit_prior
    from dwp.train.source import SourceConfig, list_source_nets, load_source_net, train_source_nets

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise DWPError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    out = Path(out)
    device = torch.device(device)
    if kernels_dir is None and preset.kernels is not None:
        kernels_dir = preset.kernels
    kernels_dir = resolve_kernel_sets(kernels_dir) if kernels_dir is not None else None
    _check_datasets(
        [preset.target_dataset] + ([] if kernels_dir is not None else [preset.source_dataset]),
        data_root,
    )
    # one prior per conv layer of the family's ordinary net; the Bayesian variant takes the first
    layers, bnn_layers, arch = _layers(preset, data_root)
    if kernels_dir is not None:
        missing = [
            f"{la}/train.npy" for la in layers if not (kernels_dir / la / "train.npy").is_file()
        ]
        if missing:
            raise DWPError(f"--kernels {kernels_dir} lacks {', '.join(missing)}")
    settings = {"preset": _jsonable(preset.to_dict()),
                "kernels_dir": str(kernels_dir) if kernels_dir else None}  # fmt: skip
    check_same_config(out, settings, "a reproduction")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", settings)
    kdir = kernels_dir or out / "kernels"
    # the priors as fitted initialise ordinary nets (convergence, random features); the Bayesian
    # nets use them moved to ``median_norm`` where the preset asks for it
    prior_dirs = tuple(str(out / "priors" / la) for la in layers)
    bnn_prior_dirs = tuple(
        str(out / "priors" / f"{la}-rescaled") if preset.prior_args.get(la, {}).get("median_norm")
        else str(out / "priors" / la) for la in bnn_layers
    )  # fmt: skip
    emit = on_event or (lambda e: None)

    def progress(stage):
        return lambda record: emit({"stage": stage, "event": "progress", "record": record})

    def source():
        if kernels_dir is not None:
            return {"skipped": f"kernel sets given: {kernels_dir}"}
        cfg = SourceConfig(dataset=preset.source_dataset, **preset.source_args)
        done = lambda i, m: progress("source")({"net": i, "nets": cfg.nets, **m})  # noqa: E731
        res = train_source_nets(cfg, out / "source", device, data_root, on_net_done=done,
                                executor=executor)  # fmt: skip
        return {"nets": len(res), "mean_test_acc": sum(r["test_acc"] for r in res) / len(res)}

    def kernels():
        if kernels_dir is not None:
            return {"skipped": f"kernel sets given: {kernels_dir}"}
        nets = [load_source_net(p)[0] for p in list_source_nets(out / "source")]
        stats = extract_kernels(nets, out / "kernels", KernelConfig(**preset.kernel_args))
        return {la: stats["layers"][la]["train"]["written"] for la in layers}

    def priors():
        info = {}
        for layer, d in zip(layers, prior_dirs, strict=True):
            args = dict(preset.prior_args.get(layer, {}))
            median_norm = args.pop("median_norm", None)
            vae_shape = {"z_dim": args.pop("z_dim", None), "hidden": args.pop("hidden", None)}
            if not (Path(d) / "prior.json").is_file() or not (Path(d) / "weights.pt").is_file():
                cfg = PriorTrainConfig(**args)
                _, meta = fit_prior(kdir / layer, d, cfg, device, **vae_shape,
                                    on_epoch=progress("priors"))  # fmt: skip
                metrics = meta["metrics"]
                info[layer] = {
                    "test_elbo": metrics.get("test", metrics["train"])["elbo_per_kernel"]
                }
            if median_norm:
                bnn_d = out / "priors" / f"{layer}-rescaled"
                _, rescaled = rescale_prior(d, bnn_d, median_norm=median_norm)
                info.setdefault(layer, {})["rescaled_by"] = rescaled["rescaled"]["factor"]
        return info

    def classification():
        cfg = ClassificationConfig(dataset=preset.target_dataset, prior_dirs=bnn_prior_dirs,
                                   **preset.classification_args)  # fmt: skip
        run_classification(cfg, out / "classification", device, data_root,
                           progress("classification"), executor)  # fmt: skip
        return {}

    def convergence():
        cfg = ConvergenceConfig(dataset=preset.target_dataset, prior_dirs=prior_dirs,
                                **preset.convergence_args)  # fmt: skip
        run_convergence(cfg, out / "convergence", device, data_root, progress("convergence"))
        return {}

    def vae_convergence():
        if arch != "fconv":
            return {"skipped": f"the VAE variant takes 28x28 grey images ({arch} target)"}
        cfg = ConvergenceConfig(dataset=preset.target_dataset, prior_dirs=prior_dirs,
                                model="vae", **preset.vae_convergence_args)  # fmt: skip
        run_convergence(cfg, out / "vae-convergence", device, data_root,
                        progress("vae-convergence"))  # fmt: skip
        return {}

    def features():
        cfg = FeaturesConfig(dataset=preset.target_dataset, prior_dirs=prior_dirs,
                             **preset.features_args)  # fmt: skip
        run_features(cfg, out / "features", device, data_root, progress("features"))
        return {}

    def report():
        build_report(out)
        return {}

    steps = {"source": source, "kernels": kernels, "priors": priors,
             "classification": classification, "convergence": convergence,
             "vae-convergence": vae_convergence, "features": features,
             "report": report}  # fmt: skip
    for index, stage in enumerate(STAGES, start=1):
        base = {"stage": stage, "index": index, "total": len(STAGES)}
        if stage != "report" and _stage_log(out).get(stage, {}).get("done"):
            emit({**base, "event": "skip"})
            continue
        emit({**base, "event": "start"})
        t0 = time.perf_counter()
        info = steps[stage]()
        seconds = time.perf_counter() - t0
        if stage != "report":
            _mark(out, stage, seconds, **info)
        emit({**base, "event": "done", "seconds": seconds, **info})
    return out / "report.md"


def _layers(preset: Preset, data_root) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """The conv layers of the target dataset's network family: of its ordinary net (source nets,
    convergence, random features) and of its Bayesian variant (classification); the family."""
    from dwp.data import load_dataset
    from dwp.nn import conv_names, resolve_arch

    images = load_dataset(preset.target_dataset, data_root).train.images
    arch = resolve_arch(preset.classification_args.get("arch", "auto"), images.shape[1],
                        images.shape[-1])  # fmt: skip
    return conv_names(arch), conv_names(arch, bayes=True), arch


def _check_datasets(names: list[str], data_root) -> None:
    """Fail before the first stage, not hours into the run, when a dataset is missing."""
    from dwp.data import dataset_status

    status = {s.name: s for s in dataset_status(data_root)}
    unknown = [n for n in names if n not in status]
    if unknown:
        raise DWPError(f"unknown datasets {unknown}; see `dwp data list`")
    missing = [n for n in dict.fromkeys(names) if not status[n].available]
    if missing:
        raise DWPError(
            f"the preset needs {' and '.join(missing)}, not found here; see `dwp data list`, and "
            "point --data-root (or DWP_DATA_ROOT) at the files"
        )


def _jsonable(value):
    """Tuples to lists, recursively (what a JSON round trip gives)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
