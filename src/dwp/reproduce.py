"""``dwp reproduce``: the whole pipeline of the paper in one call, each stage cached.

data -> source nets -> kernel sets -> one prior per conv layer -> the experiments
(classification with limited data, convergence of a classifier and of a VAE, random feature
extraction) -> ``report.md``.

Layout of the output directory::

    DIR/config.json         the preset and options (a re-run with others is refused)
    DIR/preset.json         the preset alone (`dwp reproduce --preset-file DIR/preset.json`)
    DIR/stages.json         per stage: done, wall seconds (the report's timing table)
    DIR/source/ kernels/ priors/conv1/ priors/conv2/ ...   (one prior per conv layer, or one
                            prior for all of them: kernel_args.merge, priors/all3x3/)
    DIR/classification/ convergence/ vae-convergence/ features/   (results and figures)
    DIR/report.md, DIR/figures/

A finished stage is skipped on a re-run; a killed one resumes (source nets, kernel sets and
priors are written atomically; the experiments keep one file per finished run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from dwp.config import PRESETS, Preset, PriorTrainConfig, load_preset, stage_configs
from dwp.errors import DWPError
from dwp.io import check_same_config, jsonable, read_json, write_json

__all__ = ["PRESETS", "STAGES", "Preset", "load_preset", "reproduce"]

STAGES = ("source", "kernels", "priors", "classification", "convergence", "vae-convergence",
          "features", "report")  # fmt: skip


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
    refit_priors: bool = False,
) -> Path:
    """Run (or resume) every stage of ``preset`` into ``out``; returns the report's path.

    ``kernels_dir``: use these kernel sets (a ``dwp kernels extract`` directory with one
    directory per conv layer of the target dataset's network family) instead of training
    source nets. ``executor``: runs the source nets and the runs of the classification,
    convergence and random-feature experiments (see :mod:`dwp.executors`). ``refit_priors``:
    fit the priors even where the preset names shipped ones (``preset.priors``) that were
    fitted with its settings. ``on_event`` receives ``{"stage", "index", "total", "event":
    "start" | "skip" | "done" | "progress", ...}``; progress events carry the stage's own
    callback record under ``"record"``.
    """
    from dwp.experiments import run_classification, run_convergence, run_features
    from dwp.kernels import extract_kernels, resolve_kernel_sets
    from dwp.priors import rescale_prior
    from dwp.report import build_report
    from dwp.train.prior import fit_prior, prior_settings
    from dwp.train.source import list_source_nets, load_source_net, train_source_nets

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise DWPError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    out = Path(out)
    device = torch.device(device)
    kernel_cfg = stage_configs(preset)["kernels"]  # every stage's arguments, checked
    chosen_layers = kernel_cfg.layers
    if kernels_dir is None and preset.kernels is not None:
        kernels_dir = preset.kernels
    kernels_dir = resolve_kernel_sets(kernels_dir) if kernels_dir is not None else None
    _check_datasets(
        [preset.target_dataset] + ([] if kernels_dir is not None else [preset.source_dataset]),
        data_root,
    )
    # one prior per conv layer of the family's ordinary net (the Bayesian variant takes the
    # first), or with kernel_args.merge one prior, fitted to all their kernels, for every layer
    layers, bnn_layers, arch = _layers(preset, data_root)
    prior_layers = (kernel_cfg.merge,) if kernel_cfg.merge else layers
    if kernels_dir is not None:
        missing = [
            f"{la}/train.npy" for la in prior_layers
            if not (kernels_dir / la / "train.npy").is_file()
        ]  # fmt: skip
        if missing:
            raise DWPError(f"--kernels {kernels_dir} lacks {', '.join(missing)}")
    if chosen_layers is not None and not set(layers) <= set(chosen_layers):
        raise DWPError(
            f"preset {preset.name}: kernel_args.layers must include every conv layer that gets a "
            f"prior ({', '.join(layers)}), got {', '.join(chosen_layers)}"
        )
    unknown = sorted(set(preset.prior_args) - set(prior_layers))
    if unknown:
        has = (f"merges its conv layers into the kernel set {kernel_cfg.merge}" if kernel_cfg.merge
               else f"has the conv layers {', '.join(layers)}")  # fmt: skip
        raise DWPError(
            f"preset {preset.name}: prior_args names {', '.join(unknown)}, but the {arch} net of "
            f"{preset.target_dataset} {has}"
        )
    shipped = None if refit_priors else preset.priors
    settings = {"preset": jsonable(preset.to_dict()),
                "kernels_dir": str(kernels_dir) if kernels_dir else None,
                "shipped_priors": shipped}  # fmt: skip
    check_same_config(out, settings, "a reproduction")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", settings)
    write_json(out / "preset.json", settings["preset"])  # `--preset-file` resumes from it
    kdir = kernels_dir or out / "kernels"
    # the priors as fitted initialise ordinary nets (convergence, random features); the Bayesian
    # nets use them moved to ``median_norm`` where the preset asks for it
    fitted_dirs = {la: out / "priors" / la for la in prior_layers}

    def group(layer: str) -> str:  # the prior a conv layer takes
        return kernel_cfg.merge or layer

    prior_dirs = tuple(str(fitted_dirs[group(la)]) for la in layers)
    bnn_prior_dirs = tuple(
        str(out / "priors" / f"{group(la)}-rescaled")
        if preset.prior_args.get(group(la), {}).get("median_norm")
        else str(fitted_dirs[group(la)]) for la in bnn_layers
    )  # fmt: skip
    configs = stage_configs(preset, prior_dirs, bnn_prior_dirs)
    no_args = (PriorTrainConfig(), {"z_dim": None, "hidden": None}, None)
    emit = on_event or (lambda e: None)

    def progress(stage):
        return lambda record: emit({"stage": stage, "event": "progress", "record": record})

    def source():
        if kernels_dir is not None:
            return {"skipped": f"kernel sets given: {kernels_dir}"}
        cfg = configs["source"]
        done = lambda i, m: progress("source")({"net": i, "nets": cfg.nets, **m})  # noqa: E731
        res = train_source_nets(cfg, out / "source", device, data_root, on_net_done=done,
                                executor=executor)  # fmt: skip
        return {"nets": len(res), "mean_test_acc": sum(r["test_acc"] for r in res) / len(res)}

    def kernels():
        if kernels_dir is not None:
            return {"skipped": f"kernel sets given: {kernels_dir}"}
        nets = [load_source_net(p)[0] for p in list_source_nets(out / "source")]
        stats = extract_kernels(nets, out / "kernels", configs["kernels"])
        return {la: stats["layers"][la]["train"]["written"] for la in prior_layers}

    def priors():
        info = {}
        for layer, d in fitted_dirs.items():
            cfg, vae_shape, median_norm = configs["priors"].get(layer, no_args)
            if shipped is not None:  # the preset's prior as shipped: copied, not refitted
                name = copy_shipped_prior(
                    f"{shipped}/{layer}", d, prior_settings(kdir / layer, cfg, **vae_shape)
                )
                info[layer] = {"shipped": name}
            # a finished prior is loaded, a killed one resumes from its checkpoint
            _, meta = fit_prior(kdir / layer, d, cfg, device, **vae_shape,
                                on_epoch=progress("priors"))  # fmt: skip
            metrics = meta["metrics"]
            info.setdefault(layer, {})["test_elbo"] = metrics.get("test", metrics["train"])[
                "elbo_per_kernel"
            ]
            if median_norm:
                bnn_d = out / "priors" / f"{layer}-rescaled"
                _, rescaled = rescale_prior(d, bnn_d, median_norm=median_norm)
                info.setdefault(layer, {})["rescaled_by"] = rescaled["rescaled"]["factor"]
        return info

    def classification():
        run_classification(configs["classification"], out / "classification", device, data_root,
                           progress("classification"), executor)  # fmt: skip
        return {}

    def convergence():
        run_convergence(configs["convergence"], out / "convergence", device, data_root,
                        progress("convergence"), executor)  # fmt: skip
        return {}

    def vae_convergence():
        if arch != "fconv":
            return {"skipped": f"the VAE variant takes 28x28 grey images ({arch} target)"}
        run_convergence(configs["vae-convergence"], out / "vae-convergence", device, data_root,
                        progress("vae-convergence"), executor)  # fmt: skip
        return {}

    def features():
        run_features(configs["features"], out / "features", device, data_root,
                     progress("features"), executor)  # fmt: skip
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


def copy_shipped_prior(name: str, out: str | Path, settings: dict) -> str:
    """Copy the shipped prior ``name`` into ``out`` (a prior directory like the one fitting
    would write), after checking that it was fitted with ``settings``; returns its name."""
    import shutil
    import tempfile

    from dwp.data.shipped import SHIPPED_PRIORS, shipped_priors
    from dwp.io import first_difference, read_json

    if name not in shipped_priors():
        raise DWPError(
            f"the preset names the shipped prior {name}, which this installation lacks "
            f"(shipped: {', '.join(shipped_priors()) or 'none'}); use --refit-priors"
        )
    src, out = SHIPPED_PRIORS / name, Path(out)
    stored = read_json(src / "config.json")
    k = first_difference(stored, settings)
    if k is not None:
        raise DWPError(
            f"the shipped prior {name} was fitted with {k} {stored.get(k)!r}, the preset asks "
            f"for {settings.get(k)!r}; use --refit-priors to fit it"
        )
    if (out / "prior.json").is_file():
        return name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for f in ("config.json", "metrics.jsonl", "weights.pt", "prior.json"):
            if (src / f).is_file():
                shutil.copy2(src / f, tmp / f)
        if out.exists():  # an empty or partial directory of an earlier attempt
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return name


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
    from dwp.data.catalog import FASHION_INSTALL

    status = {s.name: s for s in dataset_status(data_root)}
    unknown = [n for n in names if n not in status]
    if unknown:
        raise DWPError(f"unknown datasets {unknown}; see `dwp data list`")
    missing = [n for n in dict.fromkeys(names) if not status[n].available]
    if missing:
        hint = f" (Fashion-MNIST: {FASHION_INSTALL})" if "fashion-mnist" in missing else ""
        raise DWPError(
            f"the preset needs {' and '.join(missing)}, not found here; see `dwp data list`, and "
            f"point --data-root (or DWP_DATA_ROOT) at the files{hint}"
        )
