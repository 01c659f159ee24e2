"""Figures. Every function saves a PNG atomically and returns its path; nothing is shown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt
import numpy as np
import torch

from dwp.errors import DWPError
from dwp.io import atomic_path

__all__ = [
    "accuracy_vs_examples",
    "class_grid",
    "convergence_curves",
    "draw_kernels",
    "features_vs_scale",
    "kernel_preview",
    "latent_grid",
    "pick_kernels",
    "prior_samples",
    "reliability_diagram",
    "rotation_curves",
    "save_figure",
]


def save_figure(fig, out: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``out`` (PNG) via a temporary file, then close it."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DWPError(f"figure path must end in .png, got {out}")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return out


def class_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    out: str | Path,
    per_class: int = 10,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """A grid of example images with one row per class, the class name at the row's left.

    Args:
        images: (N, C, H, W) in [0, 1]; C is 1 (grey) or 3 (RGB).
        labels: (N,) class indices.
        per_class: images per row, drawn at random (``seed``) from the class.
    """
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    rows = len(classes)
    fig, axes = plt.subplots(
        rows, per_class, figsize=(per_class * 0.7 + 1.0, rows * 0.7), squeeze=False
    )
    for r, name in enumerate(classes):
        idx = np.flatnonzero(labels_np == r)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(pick):
                img = images[pick[c]].permute(1, 2, 0).numpy()
                if img.shape[2] == 1:
                    ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(img.clip(0, 1))
        axes[r, 0].set_ylabel(str(name), rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return save_figure(fig, out)


def _mosaic(kernels: np.ndarray, cols: int) -> np.ndarray:
    """Tile (N, 1, k, k) kernels into one 2-D array, a NaN gap of one pixel between tiles."""
    n, _, k, _ = kernels.shape
    rows = (n + cols - 1) // cols
    out = np.full((rows * (k + 1) - 1, cols * (k + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (k + 1) : r * (k + 1) + k, c * (k + 1) : c * (k + 1) + k] = kernels[i, 0]
    return out


def draw_kernels(ax, kernels: np.ndarray, cols: int, title: str, vmax: float | None = None):
    """Draw kernels as a mosaic on ``ax`` with a symmetric diverging colour map (red > 0,
    blue < 0); returns the colour scale used."""
    if vmax is None:
        vmax = float(np.quantile(np.abs(kernels), 0.99)) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    ax.imshow(_mosaic(kernels, cols), cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return vmax


def pick_kernels(kernels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` kernels chosen at random (``seed``), in their original order."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(kernels), size=min(n, len(kernels)), replace=False)
    return kernels[np.sort(idx)]


def kernel_preview(layers: dict[str, dict], out: str | Path, n: int = 64, seed: int = 0) -> Path:
    """One row per layer: random training kernels, and the histogram of all kernel norms (before
    pruning) with the pruning threshold.

    ``layers`` maps a layer name to ``{"kernels": (N, 1, k, k) array, "stats": layer stats}``.
    """
    fig, axes = plt.subplots(len(layers), 2, figsize=(9, 3.6 * len(layers)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.2]})  # fmt: skip
    for row, (name, item) in enumerate(layers.items()):
        kernels, stats = item["kernels"], item["stats"]
        k = kernels.shape[-1]
        shown = pick_kernels(kernels, n, seed)
        title = f"{name}: {len(kernels)} train kernels {k}x{k} (random {len(shown)})"
        draw_kernels(axes[row, 0], shown, 8, title)
        hist = stats["norm_histogram"]
        edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"])
        ax = axes[row, 1]
        ax.stairs(counts, edges, fill=True, alpha=0.6)
        ax.set_xscale("log")
        ax.axvline(
            stats["min_norm"], color="crimson", ls="--", label=f"min norm {stats['min_norm']:g}"
        )
        ax.set_xlabel("kernel L2 norm")
        ax.set_ylabel("kernels")
        kept = stats["kept_fraction"]
        ax.set_title(f"{name}: norms of all slices; {kept:.1%} kept", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


def prior_samples(
    real: np.ndarray | None,
    means: np.ndarray,
    draws: np.ndarray,
    out: str | Path,
    title: str,
    cols: int = 8,
) -> Path:
    """Real kernels (if given) beside kernels from the prior, all on one colour scale: decoder
    means at z ~ p(z), and full draws w ~ p(w | z) (means plus the decoder's noise)."""
    panels = [("real kernels", real)] if real is not None else []
    panels += [("prior: decoder means", means), ("prior: draws w ~ p(w | z)", draws)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    vmax = None
    for ax, (name, kernels) in zip(axes[0], panels, strict=True):
        vmax = draw_kernels(ax, kernels, cols, f"{name} ({len(kernels)})", vmax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def latent_grid(decoded: np.ndarray, size: int, out: str | Path, title: str) -> Path:
    """Kernels decoded on a ``size`` x ``size`` grid of a 2-D latent space (the paper's latent
    figure), as :meth:`dwp.priors.KernelVAE.latent_grid` returns them (row-major)."""
    fig, ax = plt.subplots(figsize=(6.5, 6.5))
    draw_kernels(ax, decoded, size, title)
    fig.tight_layout()
    return save_figure(fig, out)


_INIT_STYLE = {"xavier": ("tab:gray", "Xavier"), "dwp": ("tab:red", "DWP samples"),
               "dwp-draw": ("tab:purple", "DWP draws"),
               "filters": ("tab:blue", "source filters"),
               "kaiming": ("tab:olive", "Kaiming")}  # fmt: skip


def _save_accuracy_figure(
    fig, ax, xlabel: str, title: str, caption: str, out: str | Path,
    legend_size: int | None = 7, ylabel: str = "test accuracy", legend_outside: bool = False,
) -> Path:  # fmt: skip
    """Label a test-metric plot (axes, grid, legend, title, the caption under it) and save it;
    ``legend_outside``: the legend right of the axes, where it hides no point."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend_outside:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=legend_size,
                  borderaxespad=0.0)  # fmt: skip
    else:
        ax.legend(loc="lower right", fontsize=legend_size)
    ax.set_title(title, fontsize=10)
    fig.text(0.01, -0.02, caption, fontsize=7, wrap=True, ha="left", va="top")
    fig.tight_layout()
    return save_figure(fig, out)


def convergence_curves(summary: dict, out: str | Path, caption: str,
                       metric: str = "test_acc") -> Path:  # fmt: skip
    """Test accuracy (or ELBO, ``metric="test_elbo"``) against training steps per
    initialisation: the mean over seeds with a ± one standard deviation band (a summary from
    :func:`dwp.experiments.convergence.summarise`)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for init, s in summary.items():
        color, label = _INIT_STYLE.get(init, (None, init))
        steps, mean, std = np.array(s["step"]), np.array(s["mean"]), np.array(s["std"])
        n = len(s["seeds"])
        ax.plot(steps, mean, color=color, label=f"{label} ({n} seed{'s' if n > 1 else ''})")
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    lo = min(min(s["mean"][1:] or s["mean"]) for s in summary.values())
    if metric == "test_acc":
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        ylabel = "test accuracy"
    else:  # the ELBO starts hundreds of nats below where it ends: zoom on the last 3/4 of the run
        lo = min(s["mean"][len(s["mean"]) // 4] for s in summary.values())
        hi = max(max(s["mean"]) for s in summary.values())
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
        ylabel = "test ELBO (nats per image)"
    return _save_accuracy_figure(fig, ax, "training step",
                                 "Convergence by initialisation of the conv kernels", caption, out,
                                 legend_size=None, ylabel=ylabel)  # fmt: skip


_METHOD_STYLE = {
    "dwp": ("tab:red", "DWP"),
    "gaussian": ("tab:blue", "Gaussian kernel prior"),
    "log-uniform": ("tab:green", "log-uniform"),
    "normal": ("tab:gray", "standard normal"),
    "l2-xavier": ("tab:purple", "L2 net, Xavier init"),
    "l2-dwp": ("tab:orange", "L2 net, DWP init"),
    "l2-kaiming": ("tab:cyan", "L2 net, Kaiming init"),
    "ensemble": ("tab:brown", "deep ensemble (L2 nets)"),
}


def accuracy_vs_examples(rows: list[dict], dataset: str, out: str | Path, caption: str) -> Path:
    """Test accuracy against the number of training examples per method (rows of
    :func:`dwp.experiments.classification.summarise_classification`), log x axis: one line per
    method with a band of ± one standard deviation over splits (error bars where it has one
    size), the paper's numbers as crosses on a dotted line of the same colour; the legend
    beside the axes."""
    fig, ax = plt.subplots(figsize=(8.2, 4.4))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    one_size = len({r["examples"] for r in rows}) == 1
    for i, method in enumerate(methods):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["examples"])
        color, label = _METHOD_STYLE.get(method, (None, method))
        n = np.array([r["examples"] for r in rs], dtype=float)
        if one_size:  # keep the error bars of equal means apart
            n = n * (1 + 0.03 * (i - (len(methods) - 1) / 2))
        mean = np.array([r["acc_mean"] for r in rs])
        std = np.array([r["acc_std"] for r in rs])
        runs = sorted({r["runs"] for r in rs})
        splits = f"{runs[0]}" if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
        plural = "" if runs == [1] else "s"
        (line,) = ax.plot(n, mean, color=color, marker="o", markersize=4,
                          label=f"{label} ({splits} split{plural})")  # fmt: skip
        if len(n) > 1:
            ax.fill_between(n, mean - std, mean + std, color=line.get_color(), alpha=0.15,
                            linewidth=0)  # fmt: skip
        else:
            ax.errorbar(n, mean, yerr=std, color=line.get_color(), capsize=3, linestyle="none")
        paper = [(r["examples"], r["paper"]) for r in rs if r["paper"] is not None]
        if paper:
            px, py = zip(*paper, strict=True)
            ax.plot(px, py, color=line.get_color(), linestyle=":", marker="x", markersize=6,
                    alpha=0.8, label=f"{label}, paper")  # fmt: skip
    ax.set_xscale("log")
    sizes = sorted({r["examples"] for r in rows})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    if len(sizes) == 1:  # one size: give the log axis some room around it
        ax.set_xlim(sizes[0] / 1.6, sizes[0] * 1.6)
    return _save_accuracy_figure(fig, ax, f"training examples ({dataset})",
                                 "Classification with limited data", caption, out,
                                 legend_outside=True)  # fmt: skip


def features_vs_scale(summary: dict, out: str | Path, caption: str) -> Path:
    """Random-feature test accuracy against the width scale per initialisation (a summary of
    :func:`dwp.experiments.features.summarise_features`): mean ± one standard deviation over
    seeds; the paper's numbers as crosses."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for init, s in summary.items():
        color, label = _INIT_STYLE.get(init, (None, init))
        k, mean, std = np.array(s["scale"]), np.array(s["mean"]), np.array(s["std"])
        ax.errorbar(k, mean, yerr=std, color=color, marker="o", capsize=3,
                    label=f"{label} ({max(s['runs'])} seeds)")  # fmt: skip
        paper = [(x, p) for x, p in zip(k, s["paper"], strict=True) if p is not None]
        if paper:
            px, py = zip(*paper, strict=True)
            ax.scatter(px, py, color=color, marker="x", s=60, label=f"{label}, paper")
    scales = sorted({k for s in summary.values() for k in s["scale"]})
    labels = {
        k: lab for s in summary.values() for k, lab in zip(s["scale"], s["label"], strict=True)
    }
    ax.set_xscale("log", base=2)
    ax.set_xticks(scales, [labels[k] for k in scales])
    ax.minorticks_off()
    return _save_accuracy_figure(fig, ax, "width scale k",
                                 "Random feature extraction (frozen conv kernels)", caption,
                                 out)  # fmt: skip


def _style(name: str) -> tuple[str | None, str]:
    return _METHOD_STYLE.get(name, (None, name))


def reliability_diagram(
    per_method: dict[str, list[dict]], out: str | Path, caption: str, bins: int
) -> Path:
    """Reliability diagrams, one panel per method (name -> the bin rows of
    :func:`dwp.eval.reliability`): accuracy against mean confidence per equal-width bin (bars
    at the bins' accuracies, their gap to the diagonal shaded red), the share of examples per
    bin beneath; the panel title has the ECE."""
    names = list(per_method)
    fig, axes = plt.subplots(2, len(names), figsize=(2.8 * len(names) + 0.6, 4.6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True)  # fmt: skip
    for j, name in enumerate(names):
        rows = per_method[name]
        ax, hist = axes[0, j], axes[1, j]
        color, label = _style(name)
        lo = np.array([r["lower"] for r in rows])
        width = np.array([r["upper"] - r["lower"] for r in rows])
        count = np.array([r["count"] for r in rows], dtype=float)
        full = count > 0
        acc = np.array([r["accuracy"] if r["count"] else 0.0 for r in rows])
        conf = np.array([r["confidence"] if r["count"] else 0.0 for r in rows])
        ax.bar(lo[full], acc[full], width[full], align="edge", color=color or "tab:blue",
               alpha=0.75, edgecolor="black", linewidth=0.4, label="accuracy")  # fmt: skip
        ax.bar(lo[full], conf[full] - acc[full], width[full], bottom=acc[full], align="edge",
               color="tab:red", alpha=0.25, linewidth=0, label="gap to confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=0.8)
        ece = sum(c / count.sum() * abs(a - f) for c, a, f in zip(count, acc, conf, strict=True))
        ax.set_title(f"{label}\nECE {ece:.3f} ({bins} bins)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        hist.bar(lo, count / max(1.0, count.sum()), width, align="edge", color="gray",
                 edgecolor="black", linewidth=0.3)  # fmt: skip
        hist.set_xlabel("confidence")
        if j == 0:
            ax.set_ylabel("accuracy")
            hist.set_ylabel("share")
            ax.legend(loc="upper left", fontsize=7)
    fig.text(0.01, -0.02, caption, fontsize=7, wrap=True, ha="left", va="top")
    fig.tight_layout()
    return save_figure(fig, out)


def rotation_curves(per_method: dict[str, list[dict]], out: str | Path, caption: str) -> Path:
    """Accuracy and ECE against the rotation angle of the test images, one line per method
    (name -> the ``rotation`` rows of :func:`dwp.eval.evaluate_uncertainty`); two panels."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for name, rows in per_method.items():
        color, label = _style(name)
        deg = [r["degrees"] for r in rows]
        left.plot(deg, [r["acc"] for r in rows], color=color, marker="o", markersize=3,
                  label=label)  # fmt: skip
        right.plot(deg, [r["ece"] for r in rows], color=color, marker="o", markersize=3,
                   label=label)  # fmt: skip
    for ax, ylabel in ((left, "test accuracy"), (right, "ECE")):
        ax.set_xlabel("rotation of the test images (degrees)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.set_xticks(range(0, 181, 30))
    right.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, borderaxespad=0.0)
    left.set_title("Accuracy under rotation", fontsize=10)
    right.set_title("Calibration under rotation", fontsize=10)
    fig.text(0.01, -0.02, caption, fontsize=7, wrap=True, ha="left", va="top")
    fig.tight_layout()
    return save_figure(fig, out)
