"""Kernel datasets: every (out, in) slice of chosen conv layers of source nets (dwp's, or any
model or state dict).

A layer's kernels are stored as ``<out>/<layer>/train.npy`` and ``test.npy``, float32 arrays of
shape (N, 1, k, k) (the reference implementation's kernel file format). The test part comes from
held-out source nets (the last ``test_fraction`` of them). Slices whose L2 norm is below
``min_norm`` are dropped: the source nets' L2 penalty drives most kernels to almost zero, and
those carry no shape to learn. ``<out>/stats.json`` records the counts before and after pruning,
norm quantiles, a histogram of all norms and how diverse the kept kernels' shapes are
(:func:`kernel_diversity`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dwp.config import DEFAULT_MIN_NORM, KernelConfig
from dwp.data.shipped import SHIPPED_KERNELS, shipped_kernel_sets
from dwp.errors import DWPError
from dwp.io import atomic_path, cleanup_on_failure, write_json

__all__ = [
    "DEFAULT_MIN_NORM",
    "KernelConfig",
    "conv_weights",
    "extract_kernels",
    "kernel_diversity",
    "kernel_norms",
    "kernel_slices",
    "load_kernel_file",
    "load_models",
    "read_kernel_stats",
    "resolve_kernel_sets",
    "select_layers",
    "shipped_kernel_sets",
    "small_kernel_mass",
    "validate_kernels",
]

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def kernel_slices(weight: torch.Tensor) -> np.ndarray:
    """All (out, in) slices of a conv weight (out, in, kh, kw) as float32 (out * in, 1, kh, kw)."""
    w = weight.detach().cpu().float()
    return w.reshape(-1, 1, *w.shape[-2:]).numpy()


def kernel_norms(kernels: np.ndarray) -> np.ndarray:
    """L2 norm of each kernel of an (N, 1, k, k) array, in float64: shape (N,)."""
    return np.sqrt((kernels.astype(np.float64) ** 2).sum(axis=(1, 2, 3)))


def kernel_diversity(kernels: np.ndarray, max_kernels: int = 2048, seed: int = 0) -> dict:
    """How different the shapes of an (N, 1, k, k) kernel array are, ignoring scale: each
    nonzero kernel is scaled to unit norm, then

    - ``effective_rank``: exp of the entropy of the normalised squared singular values of the
      (N, k*k) matrix: 1 when all kernels are multiples of one kernel, k*k when they spread
      evenly over k*k orthogonal directions;
    - ``mean_abs_cosine``: mean |cos| between two distinct kernels (0 orthogonal, 1 parallel;
      None for fewer than two nonzero kernels).

    Uses at most ``max_kernels`` kernels (a random subset drawn with ``seed``). Trained source
    kernels that all look alike make poor features, and so do samples of a prior fitted to them:
    compare a prior's samples (``dwp prior eval``) with its training kernels and with random ones.
    """
    if max_kernels < 2:
        raise DWPError(f"max_kernels must be at least 2, got {max_kernels}")
    k = kernels.reshape(len(kernels), -1).astype(np.float64)
    norms = np.sqrt((k**2).sum(axis=1))
    k = k[norms > 0] / norms[norms > 0, None]
    if len(k) > max_kernels:
        k = k[np.sort(np.random.default_rng(seed).choice(len(k), max_kernels, replace=False))]
    if len(k) < 2:
        return {"effective_rank": float(len(k)), "mean_abs_cosine": None, "n_kernels": len(k)}
    energy = np.linalg.svd(k, compute_uv=False) ** 2
    p = energy[energy > 0] / energy.sum()
    cos = np.abs(k @ k.T)
    off_diagonal = (cos.sum() - np.trace(cos)) / (len(k) * (len(k) - 1))
    return {"effective_rank": float(np.exp(-(p * np.log(p)).sum())),
            "mean_abs_cosine": float(off_diagonal), "n_kernels": len(k)}  # fmt: skip


def small_kernel_mass(kernels: np.ndarray, samples: np.ndarray, quantile: float = 0.05) -> dict:
    """How much of a prior's mass lies on small kernels, against real kernels: the radius r
    below which the ``quantile`` fraction of ``kernels`` (N, 1, k, k) lies by L2 norm, and the
    fraction of ``samples`` (a prior's draws) with norms below r (``samples_below``; ``ratio``
    = that over ``kernels_below``). A ratio above 1: the prior's samples are small kernels more
    often than the kernels are (the 7x7 / 5x5 failure before ``min_norm``); below 1: less often.

    It complements the zero kernel's ELBO, a density at one point (the one a mean-field
    posterior's KL, about -log p at its mean, is pulled to): every density that peaks at zero is
    above its kernels' there (a Gaussian by k*k / 2 nats: log p(0) - E log p(w) = k*k / 2 for
    w ~ N(0, S)) and can still give the small kernels less mass than they have."""
    if not 0 < quantile < 1:
        raise DWPError(f"quantile must be in (0, 1), got {quantile}")
    real, drawn = kernel_norms(kernels), kernel_norms(samples)
    if not len(real) or not len(drawn):
        raise DWPError("small_kernel_mass needs kernels and samples")
    radius = float(np.quantile(real, quantile))
    below_real = float((real <= radius).mean())
    below = float((drawn <= radius).mean())
    return {"radius": radius, "kernels_below": below_real, "samples_below": below,
            "ratio": below / below_real}  # fmt: skip


def validate_kernels(kernels: np.ndarray, name: str, kernel_size: int | None = None) -> np.ndarray:
    """Check a kernel array: (N, 1, k, k), floating point, finite, not empty; returns float32."""
    if not isinstance(kernels, np.ndarray):
        raise DWPError(f"{name}: expected a numpy array of kernels, got {type(kernels).__name__}")
    if kernels.ndim != 4 or kernels.shape[1] != 1 or kernels.shape[2] != kernels.shape[3]:
        raise DWPError(f"{name}: expected kernels of shape (N, 1, k, k), got {kernels.shape}")
    if not np.issubdtype(kernels.dtype, np.floating):
        raise DWPError(f"{name}: expected floating-point kernels, got dtype {kernels.dtype}")
    if kernels.shape[0] == 0:
        raise DWPError(f"{name}: holds no kernels")
    if kernel_size is not None and kernels.shape[-1] != kernel_size:
        k = kernels.shape[-1]
        raise DWPError(f"{name}: holds {k}x{k} kernels, expected {kernel_size}x{kernel_size}")
    bad = ~np.isfinite(kernels)
    if bad.any():
        raise DWPError(f"{name}: {int(bad.any(axis=(1, 2, 3)).sum())} kernels contain NaN or inf")
    return kernels.astype(np.float32, copy=False)


def load_kernel_file(path: str | Path, kernel_size: int | None = None) -> np.ndarray:
    """Load and validate a kernel ``.npy`` file (see :func:`validate_kernels`)."""
    path = Path(path)
    if not path.is_file():
        raise DWPError(f"kernel file {path} does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        why = (
            str(exc).split(". ")[0]
            if "allow_pickle" not in str(exc)
            else ("it holds pickled Python objects, which dwp never loads")
        )  # never numpy's advice to load a file of unknown origin unsafely
        raise DWPError(
            f"{path}: not a readable .npy file ({why}); expected a float array saved by np.save"
        ) from None
    return validate_kernels(arr, str(path), kernel_size)


def _norm_stats(norms: np.ndarray, kept: np.ndarray) -> dict:
    q = np.quantile(kept, _QUANTILES) if len(kept) else [math.nan] * len(_QUANTILES)
    positive = norms[norms > 0]
    lo = math.floor(math.log10(positive.min())) if len(positive) else -6
    hi = math.ceil(math.log10(norms.max())) if len(positive) else 1
    edges = np.logspace(lo, max(hi, lo + 1), 41)
    counts, _ = np.histogram(np.clip(norms, edges[0], edges[-1]), bins=edges)
    return {
        "norm_quantiles": {f"{p:g}": float(v) for p, v in zip(_QUANTILES, q, strict=True)},
        "norm_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def _subsample(x: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or len(x) <= limit:
        return x
    return x[np.sort(rng.choice(len(x), size=limit, replace=False))]


def conv_weights(net) -> dict[str, torch.Tensor]:
    """The conv kernels of a model or a state dict, by layer name: for a module every
    ``nn.Conv2d`` (a Bayesian one gives its posterior means), for a state dict every 4-D
    ``NAME.weight`` (a dwp source checkpoint's or any ``{"state_dict": ...}`` is unwrapped).
    Weights are (out, in / groups, kh, kw): a grouped or depthwise conv gives its own slices."""
    from collections.abc import Mapping

    from dwp.nn.bayes import _candidates

    if isinstance(net, torch.nn.Module):
        return {n: m.weight.detach() for n, m in _candidates(net, linear=False).items()}
    if isinstance(net, Mapping):
        for key in ("state_dict", "model"):
            inner = net.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor)
                                                  for v in inner.values()):  # fmt: skip
                return conv_weights(inner)
        return {k.removesuffix(".weight"): v for k, v in net.items()
                if isinstance(v, torch.Tensor) and v.ndim == 4 and k.endswith("weight")
                and ".prior." not in k}  # fmt: skip
    raise DWPError(f"expected a model (nn.Module) or a state dict, got a {type(net).__name__}")


MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


def load_models(paths, trust: bool = False) -> list:
    """The models or state dicts in ``paths``: files saved by ``torch.save`` (a state dict, a
    checkpoint holding one, or a whole model: see :func:`dwp.io.load_torch_model` for
    ``trust``), or folders of them (a ``dwp source train`` directory gives its ``net-*.pt`` in
    order; another folder its model files, sorted by name)."""
    from dwp.io import load_torch_model

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("net-*.pt")) or sorted(
                f for f in p.iterdir() if f.is_file() and f.suffix in MODEL_SUFFIXES
            )
            if not found:
                raise DWPError(
                    f"{p}: no model files in it (net-*.pt of `dwp source train`, or "
                    f"{', '.join(MODEL_SUFFIXES)} files saved by torch.save)"
                )
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DWPError(f"{p} does not exist")
    nets = []
    for f in files:
        net = load_torch_model(f, "model or state dict", trust=trust)
        try:
            found = conv_weights(net)
        except DWPError as exc:
            raise DWPError(f"{f}: {exc}") from None
        if not found:
            raise DWPError(
                f"{f}: holds no conv layers (no 4-D NAME.weight tensors); expected a model, its "
                "state dict, or a checkpoint holding one"
            )
        nets.append(net)
    return nets


def select_layers(weights: dict[str, torch.Tensor], config: KernelConfig, what: str) -> list[str]:
    """The conv layers of ``weights`` that ``config`` chooses (``layers``: names or glob
    patterns; ``kernel_size``); non-square kernels among them are refused."""
    from fnmatch import fnmatchcase

    available = list(weights)
    if not available:
        raise DWPError(f"{what} has no conv layers (4-D weights)")
    if config.layers:
        chosen = []
        for pattern in config.layers:
            hits = [n for n in available if n == pattern or fnmatchcase(n, pattern)]
            if not hits:
                raise DWPError(
                    f"no conv layer {pattern!r} in {what}; its conv layers: {', '.join(available)}"
                )
            chosen += [n for n in hits if n not in chosen]
    else:
        chosen = available
    k = config.kernel_size
    if k is not None:
        sized = [n for n in chosen if tuple(weights[n].shape[-2:]) == (k, k)]
        if not sized:
            shapes = ", ".join(f"{n} {weights[n].shape[-2]}x{weights[n].shape[-1]}"
                               for n in chosen)  # fmt: skip
            raise DWPError(f"no conv layer of {what} has {k}x{k} kernels ({shapes})")
        chosen = sized
    odd = [n for n in chosen if weights[n].shape[-2] != weights[n].shape[-1]]
    if odd:
        n = odd[0]
        raise DWPError(
            f"layer {n} of {what} has non-square {weights[n].shape[-2]}x{weights[n].shape[-1]} "
            "kernels; a kernel prior takes k x k kernels: leave it out with --layers or "
            "--kernel-size"
        )
    return chosen


def extract_kernels(nets: list, out: str | Path, config: KernelConfig) -> dict:
    """Write the kernel datasets of ``nets`` (models or state dicts, in order) under ``out``.

    The last ``ceil(test_fraction * len(nets))`` nets give the test part, the others the train
    part; every net must have the chosen layers. Returns the statistics also written to
    ``out/stats.json``.
    """
    with cleanup_on_failure(out):  # a layer refused midway leaves no kernel sets behind
        return _extract_kernels(nets, out, config)


def _extract_kernels(nets: list, out: str | Path, config: KernelConfig) -> dict:
    if len(nets) < 2:
        raise DWPError(
            f"need at least 2 source nets to hold some out for the test kernels, got {len(nets)}"
        )
    weights = [conv_weights(n) for n in nets]
    n_test = max(1, math.ceil(config.test_fraction * len(nets)))
    layers = select_layers(weights[0], config, "the first net")
    if config.merge is not None:
        sizes = {n: tuple(weights[0][n].shape[-2:]) for n in layers}
        if len(set(sizes.values())) > 1:
            shapes = ", ".join(f"{n} {h}x{w}" for n, (h, w) in sizes.items())
            raise DWPError(
                f"--merge {config.merge}: the layers have different kernel sizes ({shapes}); "
                "choose layers of one size with --layers or --kernel-size"
            )
    for i, w in enumerate(weights, start=1):
        for layer in layers:
            if layer not in w:
                raise DWPError(f"net {i} has no conv layer {layer} (the first net has)")
            if w[layer].shape[-2:] != weights[0][layer].shape[-2:]:
                raise DWPError(f"net {i}'s {layer} has other kernel sizes than the first net's")
            if not torch.isfinite(w[layer]).all():
                raise DWPError(f"net {i}'s {layer} holds NaN or inf kernels")
    parts = {"train": weights[:-n_test], "test": weights[-n_test:]}
    rng = np.random.default_rng(config.seed)
    out = Path(out)
    stats: dict = {"config": asdict(config), "nets": {k: len(v) for k, v in parts.items()},
                   "layers": {}}  # fmt: skip
    # each written kernel set and the layers it is made of: one each, or all in one (--merge)
    groups = {config.merge: layers} if config.merge is not None else {n: [n] for n in layers}
    for layer, members in groups.items():
        arrays, all_norms, layer_stats = {}, [], {}
        for part, part_nets in parts.items():
            kernels = np.concatenate([kernel_slices(w[m]) for w in part_nets for m in members])
            norms = kernel_norms(kernels)
            all_norms.append(norms)
            keep = norms >= config.min_norm
            kept = kernels[keep]
            if len(kept) == 0:
                raise DWPError(
                    f"layer {layer}: all {len(kernels)} {part} kernels have norm below --min-norm "
                    f"{config.min_norm:g} (largest norm {norms.max():.3g}); lower the threshold"
                )
            arrays[part] = _subsample(kept, config.max_kernels, rng)
            layer_stats[part] = {"before": len(kernels), "after_pruning": len(kept),
                                 "written": len(arrays[part])}  # fmt: skip
            div = kernel_diversity(arrays[part], seed=config.seed)
            layer_stats.setdefault("diversity", {})[part] = div
        norms = np.concatenate(all_norms)
        kept_norms = norms[norms >= config.min_norm]
        k = arrays["train"].shape[-1]
        if config.merge is not None:
            layer_stats["layers"] = list(members)
        layer_stats.update({"kernel_size": int(k), "min_norm": config.min_norm,
                            "kept_fraction": float(len(kept_norms) / len(norms)),
                            **_norm_stats(norms, kept_norms)})  # fmt: skip
        for part, arr in arrays.items():
            with atomic_path(out / layer / f"{part}.npy") as tmp:
                np.save(tmp, np.ascontiguousarray(arr, dtype=np.float32))
        stats["layers"][layer] = layer_stats
    write_json(out / "stats.json", stats)
    return stats


def resolve_kernel_sets(name_or_path: str | Path) -> Path:
    """A kernel-set directory: an existing path, else the shipped set of that name."""
    path = Path(name_or_path)
    if path.exists():
        return path.resolve()
    if str(name_or_path) in shipped_kernel_sets():
        return SHIPPED_KERNELS / str(name_or_path)
    raise DWPError(
        f"kernel sets {name_or_path} not found: give a `dwp kernels extract` directory or a "
        f"shipped set ({', '.join(shipped_kernel_sets()) or 'none installed'})"
    )


def read_kernel_stats(kernels_dir: str | Path) -> dict:
    """The ``stats.json`` of a kernels directory written by :func:`extract_kernels`."""
    path = Path(kernels_dir) / "stats.json"
    if not path.is_file():
        raise DWPError(f"{path} not found: point at a directory written by `dwp kernels extract`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DWPError(f"{path}: not valid JSON ({exc})") from exc
