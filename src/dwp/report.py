"""``report.md`` of a reproduction directory, built only from the results on disk (so
``dwp report DIR`` rebuilds it at any time): stage timings, the kernel sets and priors, and one
section per experiment with its table (the paper's numbers beside ours, and the difference) and
figure."""

from __future__ import annotations

import contextlib
import datetime as _dt
from pathlib import Path

import torch

import dwp
from dwp.config import PRESETS
from dwp.errors import DWPError
from dwp.experiments.paper import family
from dwp.io import atomic_path, jsonable, read_json
from dwp.tables import markdown_table, mean_sd

__all__ = ["build_report", "prior_figures"]


def prior_figures(
    prior_dir: str | Path,
    out: str | Path,
    real_kernels: str | Path | None = None,
    n: int = 64,
    seed: int = 0,
    latent_out: str | Path | None = None,
) -> list[Path]:
    """Kernels of the prior (decoder means at z ~ N(0, I) and full draws from p(w | z)) beside
    real kernels (default: the prior's training kernels, when still on disk) in ``out``; and the
    kernels decoded on a grid of z (``latent_out``, default ``out`` with ``_latent``): the whole
    latent space for z_dim 2, else the slice through 0 along the two coordinates the real kernels
    use most. Returns the figures written."""
    from dwp.kernels import load_kernel_file
    from dwp.plots import latent_grid, pick_kernels, prior_samples
    from dwp.priors import load_prior
    from dwp.priors.store import training_kernels

    vae, _ = load_prior(prior_dir)
    out = Path(out)
    real = None
    if real_kernels is not None:
        real = pick_kernels(load_kernel_file(real_kernels, vae.kernel_size), n, seed)
    else:  # the kernels the prior was fitted to (as it saw them), when still on disk
        fitted = training_kernels(prior_dir)
        real = pick_kernels(fitted, n, seed) if fitted is not None else None
    with torch.no_grad():
        means = vae.sample(n, torch.Generator().manual_seed(seed)).numpy()
        draws = vae.sample(n, torch.Generator().manual_seed(seed), mean=False).numpy()
    k = vae.kernel_size
    title = f"{k}x{k} prior (z {vae.z_dim}, h {vae.config.hidden})"
    written = [prior_samples(real, means, draws, out, title)]
    g = 12
    path = Path(latent_out) if latent_out else out.with_name(out.stem + "_latent.png")
    if vae.z_dim == 2:
        title = f"{k}x{k} prior: decoder means on a grid of z (normal quantiles 3%..97%)"
        written.append(latent_grid(vae.latent_grid(g).numpy(), g, path, title))
    elif vae.z_dim > 2:
        dims = (0, 1) if real is None else vae.busiest_dims(torch.from_numpy(real))
        title = (f"{k}x{k} prior: decoder means on a grid of (z{dims[0] + 1}, z{dims[1] + 1}), "
                 f"the other {vae.z_dim - 2} coordinates 0 (normal quantiles 3%..97%)")  # fmt: skip
        written.append(latent_grid(vae.latent_grid(g, dims=dims).numpy(), g, path, title))
    return written


def _fmt(x, digits=3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _signed(x) -> str:
    return "-" if x is None else f"{x:+.3f}"


def _load(path: Path):
    return read_json(path) if path.is_file() else None


def _stages_section(out: Path) -> list[str]:
    log = _load(out / "stages.json") or {}
    if not log:
        return []
    rows, total = [], 0.0
    for stage, info in log.items():
        total += info.get("seconds", 0.0)
        notes = ", ".join(f"{k} {_brief(v)}" for k, v in info.items()
                          if k not in ("done", "seconds"))  # fmt: skip
        rows.append([stage, f"{info.get('seconds', 0):.0f} s", notes])
    rows.append(["total", f"{total:.0f} s", ""])
    return ["## Stages", "", markdown_table(["stage", "wall time", "notes"], rows), ""]


def _brief(v) -> str:
    """A stage's note value: floats to 4 significant digits, dicts inline."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_brief(x)}" for k, x in v.items()) + "}"
    return str(v)


def _priors_section(out: Path, figures: Path, preset: str) -> list[str]:
    from dwp.priors import load_prior, sample_diversity

    rows, figs = [], []
    data_factors = _data_factors(out)
    layers = sorted(
        (p.name for p in (out / "priors").glob("*")
         if (p / "prior.json").is_file() and not p.name.endswith("-rescaled")),
        key=lambda name: (len(name), name),
    )  # fmt: skip
    for layer in layers:
        d = out / "priors" / layer
        if not (d / "prior.json").is_file():
            continue
        meta = read_json(d / "prior.json")
        vae, stats = meta["vae"], meta.get("kernel_stats", {})
        m = meta.get("metrics", {})
        train_n = (stats.get("train") or {}).get("count")
        median = ((stats.get("train") or {}).get("norm_quantiles") or {}).get("0.5")
        moved = out / "priors" / f"{layer}-rescaled" / "prior.json"
        factor = read_json(moved).get("rescaled", {}).get("factor") if moved.is_file() else None
        by_rule = data_factors.get(layer)
        kernel_rank = ((stats.get("train") or {}).get("diversity") or {}).get("effective_rank")
        sample_rank = sample_diversity(load_prior(d)[0])["effective_rank"]
        rows.append([
            layer, f"{vae['kernel_size']}x{vae['kernel_size']}", vae["z_dim"], train_n,
            _fmt(median), _fmt((m.get("train") or {}).get("elbo_per_kernel"), 1),
            _fmt((m.get("test") or {}).get("elbo_per_kernel"), 1),
            f"{_fmt(kernel_rank, 1)} / {_fmt(sample_rank, 1)}",
            f"x {factor:.3g}" if factor is not None else "-" if by_rule is None
            else f"x {by_rule[0]:.3g}-{by_rule[1]:.3g} (data)",
        ])  # fmt: skip
        written = prior_figures(d, figures / f"prior-{layer}.png")
        for path in written:
            rel = path.relative_to(out)
            grid = (
                "the 2-D latent space" if vae["z_dim"] == 2 else "a 2-D slice of the latent space"
            )
            what = (f"kernels decoded on a grid of {grid}" if "latent" in path.name
                    else "source kernels (left) beside decoder means at z ~ N(0, I) and full "
                    "draws w ~ p(w | z)")  # fmt: skip
            kernels = meta.get("training", {}).get("kernels", "?")
            caption = f"*{preset} preset, {layer} prior fitted to {kernels}: {what}.*"
            figs += [f"![{layer} prior]({rel})", "", caption, ""]
    if not rows:
        return []
    return ["## Kernel priors", "",
            markdown_table(["layer", "kernel", "z", "train kernels", "median norm", "train ELBO",
                            "test ELBO", "effective rank: kernels / samples",
                            "Bayesian nets: kernels scaled"], rows), "",
            "ELBO in nats per kernel (10 draws of z) at the kernels' own scale; the reference's "
            "7x7 prior scores about 49.7 on its own test kernels (median norm 1.35). Effective "
            "rank of the kernel shapes (`dwp.kernels.kernel_diversity`; 1: all alike, k*k: "
            "spread evenly) of the training kernels and of 2048 decoder means at z ~ N(0, I): "
            "with the deep weight prior a Bayesian net's kernels stay close to such samples. "
            "The Bayesian nets use the priors moved by the factor of the last column: "
            "`(data)`, the kernel-scale rule (unit-std pre-activations on each split's training "
            "images; the range over the DWP runs), or a fixed move (`dwp prior rescale`); the "
            "scale of source kernels is a gauge of FConv. "
            "Ordinary nets (convergence, random features) start from the priors as fitted.", "",
            *figs]  # fmt: skip


def _data_factors(out: Path) -> dict[str, tuple[float, float]]:
    """Per prior (the name of its directory), the smallest and largest factor the kernel-scale
    rule moved the DWP by over the classification runs (their ``result.json``), over every
    conv layer that used the prior."""
    cfg = _load(out / "classification" / "config.json") or {}
    dirs = cfg.get("prior_dirs") or []
    found: dict[str, list[float]] = {}
    for res in sorted((out / "classification" / "runs").glob("dwp-*/result.json")):
        scales = (_load(res) or {}).get("prior_scales", {})
        for i, (layer, f) in enumerate(scales.items()):
            # the layers take the sweep's priors in order: the i-th layer the i-th directory
            prior = Path(dirs[i]).name.removesuffix("-rescaled") if i < len(dirs) else layer
            found.setdefault(prior, []).append(float(f))
    return {la: (min(v), max(v)) for la, v in found.items()}


def _classification_section(out: Path, preset: str) -> list[str]:
    s = _load(out / "classification" / "summary.json")
    if not s:
        return []
    cfg = _load(out / "classification" / "config.json") or {}
    lines = ["## Classification with limited data", "",
             f"Dataset {s['dataset']}, {cfg.get('epochs')} epochs per run; Bayesian "
             f"{_net(cfg, 'hidden', 'target')} ({cfg.get('ens_samples', 10)}-sample ensemble) "
             "with each prior, and the same net, deterministic, with L2. "
             + _paper_setting(s["dataset"]), "",
             markdown_table(
                 ["examples", "method", "accuracy (mean ± sd)", "NLL", "splits", "paper",
                  "ours - paper"],
                 ([r["examples"], r["method"], mean_sd(r["acc_mean"], r["acc_std"]),
                   f"{r['nll_mean']:.3f}", r["runs"], _fmt(r["paper"]), _signed(r["diff"])]
                  for r in s["rows"]))]  # fmt: skip
    by = {(r["method"], r["examples"]): r["acc_mean"] for r in s["rows"]}
    verdicts = []
    for n in sorted({r["examples"] for r in s["rows"]}):
        said = []
        for other, name in (("normal", "standard normal"), ("gaussian", "the Gaussian prior")):
            if ("dwp", n) in by and (other, n) in by:
                d = by[("dwp", n)] - by[(other, n)]
                said.append(f"{'above' if d > 0 else 'below'} {name} by {abs(d):.3f}")
        if said:
            verdicts.append(f"{n} examples: DWP {', '.join(said)}")
    lines += ["", *([f"{'; '.join(verdicts)}.", ""] if verdicts else [])]
    lines += ["![accuracy against training examples](classification/accuracy.png)", "",
              f"*{preset} preset, {s['dataset']}, splits {cfg.get('splits')}, {cfg.get('epochs')} "
              "epochs: test accuracy against the number of training examples, mean ± sd over "
              "splits" + ("; dotted: the paper.*" if family(s["dataset"]) else ".*"),
              ""]  # fmt: skip
    return lines + _uncertainty_lines(out / "classification", s, cfg, preset)


def _uncertainty_lines(exp: Path, s: dict, cfg: dict, preset: str) -> list[str]:
    """The classification runs' uncertainty (when the sweep evaluated it): the main columns
    per method and size, and the reliability and rotation figures."""
    from dwp.eval import uncertainty_columns

    ood, rotations = cfg.get("ood") or [], cfg.get("rotations") or []
    if not (ood or rotations):
        return []
    cols = uncertainty_columns(ood, rotations)
    rows = [r for r in s["rows"] if all(f"{k}_mean" in r for k in cols.values())]
    if not rows:
        return []
    source = (
        " The letters are the priors' source domain: telling them from digits is what a "
        "prior learned on letters could make harder."
        if "letters" in ood
        else ""
    )
    lines = ["### Uncertainty", "",
             f"Means over splits. ECE with {rows[0].get('ece_bins_mean', 15):.0f} equal-width "
             "bins; AUROC of an "
             "out-of-distribution set against the test digits, by the mutual information "
             "between prediction and weights (MI: the epistemic part) and by 1 - the max "
             f"probability; accuracy and ECE of the test digits rotated.{source}", "",
             markdown_table(["examples", "method", *cols],
                            ([r["examples"], r["method"],
                              *(f"{r[f'{k}_mean']:.3f}" for k in cols.values())]
                             for r in rows)), ""]  # fmt: skip
    n = min(r["examples"] for r in rows)
    if (exp / "reliability.png").is_file():
        lines += [
            "![reliability diagrams](classification/reliability.png)",
            "",
            f"*{preset} preset, {n} examples, the splits' test predictions pooled: "
            "accuracy against confidence per bin; the diagonal is calibration.*",
            "",
        ]
    if (exp / "rotation.png").is_file():
        lines += [
            "![accuracy and ECE against rotation](classification/rotation.png)",
            "",
            f"*{preset} preset, {n} examples: accuracy and ECE of the test digits rotated "
            "by 0..180 degrees, mean over splits.*",
            "",
        ]
    return lines


def _paper_setting(dataset: str) -> str:
    """What the paper's classification numbers beside a sweep on ``dataset`` were measured on."""
    fam = family(dataset)
    if fam == "cifar10":
        return "Paper: CIFAR-10 with priors from CIFAR-100 nets."
    if fam is None:
        return f"The paper has no numbers for {dataset} (its columns are empty)."
    return "Paper: full MNIST, 10 splits, 10000 epochs."


def _net(cfg: dict, key: str, role: str, extra: str = "") -> str:
    """``FConv 32/128`` for an experiment's config (its family and widths)."""
    from dwp.nn import describe_net

    try:
        return describe_net(cfg.get("arch", "auto"), cfg.get(key), role, cfg.get("dataset", ""),
                            extra)  # fmt: skip
    except (DWPError, KeyError, TypeError):  # a hand-edited config: a plain name
        return "net"


def _convergence_section(out: Path, preset: str, sub: str = "convergence") -> list[str]:
    s = _load(out / sub / "summary.json")
    if not s:
        return []
    cfg = _load(out / sub / "config.json") or {}
    vae = cfg.get("model") == "vae"
    metric, fmt = ("ELBO", "{:.1f}") if vae else ("accuracy", "{:.3f}")
    levels = list(next(iter(s.values()))["first_step"])
    if vae:
        title, intro = (
            "## Convergence of a VAE",
            (
                f"Conv VAE (z {cfg.get('z_dim')}) whose encoder convs are "
                f"{_net(cfg, 'hidden', 'target')}'s, on {cfg.get('dataset')}, {cfg.get('steps')} "
                f"Adam steps of batch {cfg.get('batch_size')}, seeds {cfg.get('seeds')}; test ELBO "
                "in nats per image (higher is better); the last columns: the first step at which "
                "the mean reaches Xavier's final ELBO. The paper: DWP and filters converge faster."
            ),
        )
    else:
        title, intro = (
            "## Convergence",
            (
                f"Ordinary {_net(cfg, 'hidden', 'target')} on {cfg.get('dataset')}, "
                f"{cfg.get('steps')} Adam steps of batch {cfg.get('batch_size')}, seeds "
                f"{cfg.get('seeds')}. The paper (ConvNet on MNIST): 0.96 after about 50 steps from "
                "DWP or filters, about 100 from Xavier."
            ),
        )
    rows = (
        [
            init,
            f"{fmt.format(r['final_mean'])} ± {fmt.format(r['final_std'])}",
            *(r["first_step"][lv] or "-" for lv in levels),
        ]
        for init, r in s.items()
    )
    header = ["init", f"final {metric}", *(f"first step ≥ {lv}" for lv in levels)]
    lines = [title, "", intro, "", markdown_table(header, rows)]  # fmt: skip
    early = {init: r["mean"][1] for init, r in s.items() if len(r["mean"]) > 1}
    if early:
        step = next(iter(s.values()))["step"][1]
        lines += ["", f"{metric[0].upper()}{metric[1:]} after {step} steps: "
                  + ", ".join(f"{i} {fmt.format(a)}" for i, a in early.items()) + "."]  # fmt: skip
    lines += ["", f"![{title[3:].lower()}]({sub}/convergence.png)", "",
              f"*{preset} preset, {cfg.get('dataset')}, seeds {cfg.get('seeds')}: test {metric} "
              "against training steps, mean ± sd over seeds.*", ""]  # fmt: skip
    return lines


def _features_section(out: Path, preset: str) -> list[str]:
    s = _load(out / "features" / "summary.json")
    if not s:
        return []
    cfg = _load(out / "features" / "config.json") or {}
    labels = next(iter(s.values()))["label"]
    lines = ["## Random feature extraction", "",
             f"{_net(cfg, 'base_hidden', 'source', ' with BatchNorm, widths k x')} "
             f"on {cfg.get('dataset')}, conv kernels frozen at their "
             f"initialisation, {cfg.get('epochs')} epochs of BatchNorm + classifier, seeds "
             f"{cfg.get('seeds')}. Paper (MNIST, k = 1/16): filters 0.963, DWP 0.956, Xavier "
             "0.930.", ""]  # fmt: skip
    rows = []
    for init, r in s.items():
        cells = [mean_sd(m, sd) for m, sd in zip(r["mean"], r["std"], strict=True)]
        pairs = zip(r["paper"], r["label"], strict=True)
        paper = ", ".join(f"{p:.3f} (k = {lab})" for p, lab in pairs if p is not None) or "-"
        rows.append([init, *cells, paper])
    lines.append(markdown_table(["init", *(f"k = {lab}" for lab in labels), "paper"], rows))
    lines += ["", "![random features](features/features.png)", "",
              f"*{preset} preset, {cfg.get('dataset')}, seeds {cfg.get('seeds')}: test accuracy "
              "against the width scale, mean ± sd over seeds; crosses: the "
              "paper.*", ""]  # fmt: skip
    return lines


def _rerun_command(out: Path, settings: dict) -> str:
    """The ``dwp reproduce`` call that resumes ``out``: ``--preset NAME`` for a built-in
    preset, ``--preset-file`` with the preset's copy in ``out`` for a custom one."""
    preset = settings.get("preset") or {}
    builtin = PRESETS.get(preset.get("name", ""))
    if builtin is not None and jsonable(builtin.to_dict()) == preset:
        how = f"--preset {builtin.name}"
    else:
        how = f"--preset-file {out / 'preset.json'}"
    kernels = settings.get("kernels_dir")
    if kernels and preset.get("kernels"):  # the preset's own kernel sets need no option
        from dwp.kernels import resolve_kernel_sets

        with contextlib.suppress(DWPError):
            if str(resolve_kernel_sets(preset["kernels"])) == kernels:
                kernels = None
    if kernels:
        how += f" --kernels {kernels}"
    return f"dwp reproduce {how} --out {out}"


def build_report(out: str | Path) -> Path:
    """Write ``out/report.md`` (and the prior figures under ``out/figures``) from the results in
    the reproduction directory ``out``; returns the report's path."""
    out = Path(out)
    if not out.is_dir():
        raise DWPError(f"{out} is not a directory")
    settings = _load(out / "config.json") or {}
    preset = settings.get("preset") or {}
    figures = out / "figures"
    body = []
    tag = preset.get("name", "custom")
    for section in (_stages_section(out), _priors_section(out, figures, tag),
                    _classification_section(out, tag), _convergence_section(out, tag),
                    _convergence_section(out, tag, "vae-convergence"),
                    _features_section(out, tag)):  # fmt: skip
        body += section
    if not body:
        raise DWPError(f"{out} holds no results to report (run `dwp reproduce --out {out}`)")
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = [f"# Deep Weight Prior: reproduction ({preset.get('name', 'custom')} preset)", "",
            f"{preset.get('description', '')}".strip(), "",
            f"Source {preset.get('source_dataset', '?')} -> target "
            f"{preset.get('target_dataset', '?')}"
            + (f"; kernel sets from {settings['kernels_dir']}" if settings.get("kernels_dir")
               else "")
            + f". dwp {dwp.__version__}, torch {torch.__version__}; written {when}.", "",
            f"Rebuild this report with `dwp report {out}`; rerun (finished stages are skipped) "
            f"with `{_rerun_command(out, settings)}`.", ""]  # fmt: skip
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(head + body).rstrip() + "\n")
    return path
