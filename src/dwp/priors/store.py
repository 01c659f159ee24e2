"""Prior directories: save, load, and import checkpoints of the reference implementation.

A prior directory holds ``prior.json`` (format name and version, architecture, how it was
trained, statistics of its kernels, final metrics) and ``weights.pt`` (the state dict).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import torch
import yaml

from dwp.data.shipped import resolve_kernel_layer, resolve_prior_dir, source_name
from dwp.errors import DWPError
from dwp.io import (
    atomic_path,
    check_finite_state,
    check_same_config,
    jsonable,
    load_torch,
    write_json,
)
from dwp.kernels import kernel_diversity, kernel_norms, load_kernel_file
from dwp.priors.vae import KernelVAE, VAEConfig

__all__ = [
    "PRIOR_FORMAT",
    "PRIOR_FORMAT_VERSION",
    "claim_prior_dir",
    "import_reference_prior",
    "kernel_summary",
    "load_kernel_prior",
    "load_prior",
    "prior_card",
    "read_prior_meta",
    "rescale_prior",
    "sample_diversity",
    "save_prior",
    "training_kernels",
]

PRIOR_FORMAT = "dwp-kernel-vae"
PRIOR_FORMAT_VERSION = 1
_META, _WEIGHTS = "prior.json", "weights.pt"


def kernel_summary(kernels: np.ndarray) -> dict:
    """Count, norm quantiles, pixel moments and shape diversity
    (:func:`dwp.kernels.kernel_diversity`) of a kernel array (N, 1, k, k)."""
    norms = kernel_norms(kernels)
    return {
        "count": len(kernels),
        "kernel_size": int(kernels.shape[-1]),
        "norm_quantiles": {
            f"{q:g}": float(v)
            for q, v in zip((0.05, 0.5, 0.95), np.quantile(norms, (0.05, 0.5, 0.95)), strict=True)
        },
        "pixel_mean": float(kernels.mean()),
        "pixel_std": float(kernels.std()),
        "diversity": kernel_diversity(kernels),
    }


@torch.no_grad()
def sample_diversity(vae: KernelVAE, n: int = 2048, seed: int = 0, mean: bool = True) -> dict:
    """:func:`dwp.kernels.kernel_diversity` of ``n`` decoder means at z ~ N(0, I) (the samples
    the DWP init starts from), or with ``mean=False`` of ``n`` draws w ~ p(w | z) (the prior's
    own samples, the ``dwp-draw`` init's), drawn with ``seed`` on the VAE's device."""
    device = next(vae.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    return kernel_diversity(vae.sample(n, generator=gen, mean=mean).cpu().numpy(), seed=seed)


def prior_card(name_or_path: str | Path, seed: int = 0) -> dict:
    """The figures ``dwp prior list`` shows for a prior: ``name``, ``family`` (``vae`` or
    ``gaussian``), ``kernel_size``, ``z_dim`` (None for a Gaussian), ``source`` (the kernels it
    was fitted to), ``test_elbo`` (nats per kernel, on held-out kernels, the train figure if it
    has none; a Gaussian's is its exact log-likelihood), ``zero_kernel_elbo`` (far above
    ``test_elbo``: the density peaks at the zero kernel), and the effective rank of 2048
    samples (``rank_samples``: decoder means, the DWP init's; ``rank_draws``: draws w ~ p(w | z),
    the prior's own samples; the same for a Gaussian) beside that of its training kernels (how
    much of their variety the samples keep)."""
    from dwp.data.shipped import source_name
    from dwp.priors.gaussian import GAUSSIAN_FORMAT, GaussianKernelPrior
    from dwp.train.prior import zero_kernel_elbo

    path = resolve_prior_dir(name_or_path)
    meta = read_prior_meta(path)
    gaussian = meta.get("format") == GAUSSIAN_FORMAT
    if gaussian:
        prior = GaussianKernelPrior.from_dir(path)
        k, z_dim, score_key = prior.kernel_size, None, "log_lik_per_kernel"
        zero = meta.get("zero_kernel_log_lik")
        drawn = prior.sample_kernels(2048, torch.Generator().manual_seed(seed)).numpy()
        rank = rank_draws = kernel_diversity(drawn, seed=seed)["effective_rank"]
    else:
        vae, meta = load_prior(path)
        k, z_dim, score_key = vae.kernel_size, vae.z_dim, "elbo_per_kernel"
        zero = zero_kernel_elbo(vae, samples=10, seed=seed)
        rank = sample_diversity(vae, seed=seed)["effective_rank"]
        rank_draws = sample_diversity(vae, seed=seed, mean=False)["effective_rank"]
    metrics = meta.get("metrics") or {}
    part = metrics.get("test") or metrics.get("train") or {}
    stats = (meta.get("kernel_stats") or {}).get("train") or {}
    rescaled = (meta.get("rescaled") or {}).get("factor")
    return {
        "name": source_name(path),
        "family": "gaussian" if gaussian else "vae",
        "kernel_size": k,
        "z_dim": z_dim,
        "source": (meta.get("training") or {}).get("kernels") or meta.get("imported_from"),
        "rescaled_by": rescaled,
        "test_elbo": part.get(score_key),
        "zero_kernel_elbo": zero,
        "rank_samples": rank,
        "rank_draws": rank_draws,
        "rank_kernels": (stats.get("diversity") or {}).get("effective_rank"),
        "kernels": stats.get("count"),
    }


def claim_prior_dir(out: str | Path, settings: dict) -> None:
    """Refuse to write a prior into ``out`` unless it is new, empty, or holds the prior of the
    same ``settings`` (its ``config.json``: what trained, imported or rescaled it), so that no
    prior is overwritten by another without a word."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DWPError(f"{out} is a file; a prior directory was expected there")
    check_same_config(out, jsonable(settings), "a prior")
    if out.is_dir() and not (out / "config.json").is_file():
        entries = sorted(p.name for p in out.iterdir() if p.name != ".lock")
        if entries:
            more = ", ..." if len(entries) > 3 else ""
            raise DWPError(
                f"{out} is not empty ({', '.join(entries[:3])}{more}) and records no prior "
                "config (config.json); use another --out or delete it"
            )


def save_prior(vae: KernelVAE, out: str | Path, **info) -> Path:
    """Write ``vae`` and ``info`` (JSON-serialisable: training config, kernel stats, metrics) to
    the prior directory ``out``. ``prior.json`` is removed first and written last, so a write
    killed midway leaves an incomplete directory that :func:`load_prior` refuses, never new
    weights beside old metadata."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _META).unlink(missing_ok=True)
    meta = {
        "format": PRIOR_FORMAT,
        "format_version": PRIOR_FORMAT_VERSION,
        "vae": vae.config.to_dict(),
        **info,
    }
    state = {k: v.detach().cpu() for k, v in vae.state_dict().items()}
    with atomic_path(out / _WEIGHTS) as tmp:
        torch.save(state, tmp)
    write_json(out / _META, meta)
    return out


def read_prior_meta(path: Path) -> dict:
    """``prior.json`` of a prior directory (of either family), as a dict; a one-line error for a
    missing, unreadable or non-object file."""
    meta_path = path / _META
    if not meta_path.is_file():
        raise DWPError(f"prior directory {path} is incomplete: missing {_META}")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DWPError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DWPError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def load_prior(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[KernelVAE, dict]:
    """Load a prior directory (or a shipped prior by name, ``letters-fconv/conv1``); returns
    the VAE (in eval mode) and its metadata."""
    path = resolve_prior_dir(path)
    meta_path, weights_path = path / _META, path / _WEIGHTS
    if not path.is_dir():
        raise DWPError(f"{path} is a file; a prior directory was expected")
    missing = [p.name for p in (meta_path, weights_path) if not p.is_file()]
    if missing:
        raise DWPError(
            f"prior directory {path} is incomplete: missing {', '.join(missing)} "
            f"(expected {_META} and {_WEIGHTS}; use `dwp prior import` for reference checkpoints)"
        )
    meta = read_prior_meta(path)
    if meta.get("format") != PRIOR_FORMAT or meta.get("format_version") != PRIOR_FORMAT_VERSION:
        raise DWPError(
            f"{path}: prior of format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}; this dwp reads {PRIOR_FORMAT!r} version "
            f"{PRIOR_FORMAT_VERSION}"
        )
    try:
        config = VAEConfig(**meta["vae"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DWPError(f"{meta_path}: no valid 'vae' architecture ({exc})") from None
    state = load_torch(weights_path, "kernel VAE state dict", map_location=map_location)
    check_finite_state(state, weights_path)
    vae = KernelVAE(config)
    try:
        vae.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])[:200]
        raise DWPError(
            f"{weights_path}: does not match the architecture in {_META} ({detail})"
        ) from None
    vae.to(map_location).eval()
    return vae, meta


def load_kernel_prior(path: str | Path, map_location: str | torch.device | None = None, **kwargs):
    """The kernel prior of a prior directory (or shipped name), whatever its family: a
    :class:`~dwp.priors.DeepWeightPrior` for a kernel VAE (``kwargs`` as its ``from_dir``'s),
    a :class:`~dwp.priors.GaussianKernelPrior` for a Gaussian prior directory."""
    from dwp.priors.gaussian import GAUSSIAN_FORMAT, GaussianKernelPrior
    from dwp.priors.weight import DeepWeightPrior

    if read_prior_meta(resolve_prior_dir(path)).get("format") == GAUSSIAN_FORMAT:
        return GaussianKernelPrior.from_dir(path, map_location=map_location)
    return DeepWeightPrior.from_dir(path, map_location=map_location, **kwargs)


# Reference key -> native key. The reference modules are Sequentials (odd indices are ELUs) and
# 1x1 conv heads named fc_mu / fc_var (encoder fc_sigma in the 5x5 and 3x3 variants), wrapped in
# a one-element Sequential in the 5x5 decoder.
_KEY_RULES = [
    (re.compile(r"^encoder\.features\.(\d+)\.(weight|bias)$"), r"encoder.body.\1.\2"),
    (re.compile(r"^encoder\.fc_mu\.(weight|bias)$"), r"encoder.mu.\1"),
    (re.compile(r"^encoder\.fc_(?:var|sigma)\.(weight|bias)$"), r"encoder.var.\1"),
    (re.compile(r"^decoder\.decoder\.(\d+)\.(weight|bias)$"), r"decoder.body.\1.\2"),
    (re.compile(r"^decoder\.fc_mu\.(?:0\.)?(weight|bias)$"), r"decoder.mu.\1"),
    (re.compile(r"^decoder\.fc_var\.(?:0\.)?(weight|bias)$"), r"decoder.var.\1"),
]


def _native_key(key: str) -> str | None:
    key = key.removeprefix("module.")
    for pattern, repl in _KEY_RULES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def import_reference_prior(ref_dir: str | Path, out: str | Path) -> tuple[KernelVAE, dict]:
    """Convert a checkpoint of the reference implementation (``params.yaml`` with kernel_dim,
    z_dim, hidden_dim, var; ``vae_params.torch``, a pickled state dict) into a prior directory."""
    ref_dir = Path(ref_dir)
    params_path, weights_path = ref_dir / "params.yaml", ref_dir / "vae_params.torch"
    missing = [p.name for p in (params_path, weights_path) if not p.is_file()]
    if missing:
        raise DWPError(
            f"{ref_dir} is not a reference prior checkpoint: missing {', '.join(missing)}"
        )
    try:
        params = yaml.safe_load(params_path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = " ".join(str(exc).split())[:200]
        raise DWPError(f"{params_path}: not valid YAML ({problem})") from None
    if not isinstance(params, dict):
        raise DWPError(
            f"{params_path}: expected a mapping of kernel_dim, z_dim, hidden_dim, var; got a "
            f"{type(params).__name__}"
        )
    need = [k for k in ("kernel_dim", "z_dim", "hidden_dim") if k not in params]
    if need:
        raise DWPError(f"{params_path}: missing keys {', '.join(need)}")
    for key in ("kernel_dim", "z_dim", "hidden_dim"):
        value = params[key]
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise DWPError(f"{params_path}: {key} must be a positive integer, got {value!r}")
    if str(params.get("var", "train")) != "train":
        raise DWPError(
            f"{params_path}: var={params['var']!r} (a fixed decoder variance) is not supported; "
            "only priors trained with var: train can be imported"
        )
    config = VAEConfig(params["kernel_dim"], params["z_dim"], params["hidden_dim"])
    out = Path(out)
    claim_prior_dir(out, {"imported_from": str(ref_dir.resolve()), "reference_params": params})
    ref_state = load_torch(weights_path, "state dict of a reference kernel VAE")
    if not isinstance(ref_state, dict):
        raise DWPError(f"{weights_path}: expected a state dict, got {type(ref_state).__name__}")
    check_finite_state(ref_state, weights_path)
    state, unknown = {}, []
    for key, value in ref_state.items():
        native = _native_key(key)
        if native is None:
            unknown.append(key)
        else:
            state[native] = value
    if unknown:
        raise DWPError(f"{weights_path}: unexpected keys {unknown[:4]} for a reference kernel VAE")
    vae = KernelVAE(config)
    try:
        vae.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise DWPError(
            f"{weights_path}: does not match a {config.kernel_size}x{config.kernel_size} VAE with "
            f"z_dim {config.z_dim}, hidden_dim {config.hidden} ({detail})"
        ) from exc
    info = {"imported_from": str(ref_dir.resolve()), "reference_params": params}
    write_json(out / "config.json", jsonable(info))  # first: a killed import can be re-run
    save_prior(vae, out, **info)
    return vae.eval(), info


def _median_norm(meta: dict) -> float | None:
    try:
        return float(meta["kernel_stats"]["train"]["norm_quantiles"]["0.5"])
    except (KeyError, TypeError, ValueError):
        return None


def rescale_prior(
    src: str | Path,
    out: str | Path,
    factor: float | None = None,
    median_norm: float | None = None,
) -> tuple[KernelVAE, dict]:
    """Write a copy of the prior ``src`` over kernels scaled by ``factor``: the density
    ``p_c(w) = p(w / c) / c^(k*k)``, exactly (the VAE's ``scale`` is multiplied by c).

    Give ``factor``, or ``median_norm``: the median L2 norm the prior's training kernels should
    have (the factor is then that over their recorded median). Why: in FConv the LeakyReLU and
    max-pool are positively homogeneous, so scaling a conv layer's kernels and bias by c and the
    next layer's weights by 1/c computes the same function; the scale of source kernels is a
    gauge that the L2 penalty and the optimiser's run length fix, not the data. Recorded
    statistics and ELBOs are converted; ``rescaled.factor`` accumulates over rescalings (the
    ``filters`` initialisation multiplies the recorded training kernels by it).
    """
    if (factor is None) == (median_norm is None):
        raise DWPError("give exactly one of factor and median_norm")
    src, out = resolve_prior_dir(src), Path(out)
    vae, meta = load_prior(src)
    if median_norm is not None:
        current = _median_norm(meta)
        if current is None:
            raise DWPError(
                f"{src} records no statistics of its training kernels (an imported prior?); "
                "give the factor instead of a median norm"
            )
        factor = median_norm / current
    if not (factor > 0 and math.isfinite(factor)):
        raise DWPError(f"the scale factor must be positive and finite, got {factor}")
    settings = {"rescaled_from": source_name(src), "factor": factor}
    if src.resolve() == Path(out).resolve():
        raise DWPError(f"{out}: rescale into another directory than the prior itself")
    claim_prior_dir(out, settings)
    k2 = vae.kernel_size**2
    vae.config = dataclasses.replace(vae.config, scale=vae.config.scale * factor)
    info = {key: v for key, v in meta.items() if key not in ("format", "format_version", "vae")}
    for part in (info.get("kernel_stats") or {}).values():
        if part:
            part["norm_quantiles"] = {q: v * factor for q, v in part["norm_quantiles"].items()}
            part["pixel_mean"] *= factor
            part["pixel_std"] *= factor
    shift = -k2 * math.log(factor)  # log-densities of scaled kernels
    for part in (info.get("metrics") or {}).values():
        for key in ("elbo_per_kernel", "iw_log_likelihood_per_kernel"):
            if key in part:
                part[key] += shift
    previous = meta.get("rescaled", {}).get("factor", 1.0)
    info["rescaled"] = {"factor": previous * factor, "from": source_name(src)}
    write_json(out / "config.json", settings)  # first: a killed rescale can be re-run
    save_prior(vae, out, **info)
    return vae.eval(), info


def _trained_on(prior_dir: str | Path) -> tuple[str, float, float] | None:
    """The training-kernel directory a prior records, the factor it was rescaled by and the
    norm below which its training left kernels out."""
    try:
        meta = json.loads((resolve_prior_dir(prior_dir) / "prior.json").read_text())
    except (OSError, ValueError, DWPError):
        return None
    stored = meta.get("training", {}).get("kernels")
    if not stored:
        return None
    try:
        stored = resolve_kernel_layer(stored)
    except DWPError:
        return None
    if not (stored / "train.npy").is_file():
        return None
    min_norm = float(meta["training"].get("min_norm", 0.0))
    return stored, float(meta.get("rescaled", {}).get("factor", 1.0)), min_norm


def training_kernels(prior_dir: str | Path) -> np.ndarray | None:
    """The training kernels a prior was fitted to, as it saw them (those of norm >= its
    ``min_norm``, scaled like the prior if it was rescaled); None if they are not on disk."""
    stored = _trained_on(resolve_prior_dir(prior_dir))
    if stored is None:
        return None
    d, factor, min_norm = stored
    kernels = load_kernel_file(Path(d) / "train.npy")
    if min_norm > 0:
        kernels = kernels[kernel_norms(kernels) >= min_norm]
    return kernels * np.float32(factor) if factor != 1.0 else kernels


def check_per_layer(dirs, names: list[str], what: str) -> None:
    """Refuse ``dirs`` unless it gives one entry per conv layer of ``names``."""
    if len(dirs) != len(names):
        raise DWPError(
            f"got {len(dirs)} {what} for {len(names)} conv layers ({', '.join(names)}); give one "
            "per layer, in order"
        )


def load_kernel_sets(
    names: list[str],
    kernel_dirs: tuple[str | Path, ...] | list = (),
    prior_dirs: tuple[str | Path, ...] | list = (),
) -> dict[str, np.ndarray]:
    """Kernel sets (N, 1, k, k) for the ``filters`` init, one per conv layer name, in order:
    ``kernel_dirs`` (layer directories or ``.npy`` files) as given, else the training kernels
    each prior directory records (those its training kept, scaled like the prior if it was
    rescaled)."""
    check_per_layer(kernel_dirs or prior_dirs, names,
                    "kernel sets" if kernel_dirs else "prior directories")  # fmt: skip
    if kernel_dirs:
        sources = [(d, 1.0, 0.0) for d in kernel_dirs]
    else:
        sources = [_trained_on(d) for d in prior_dirs]
        for n, stored in zip(names, sources, strict=True):
            if stored is None:
                raise DWPError(
                    f"the prior for {n} does not record its training kernels (an imported "
                    "prior?); give --kernel-dirs"
                )
    sets = {}
    for n, (d, factor, min_norm) in zip(names, sources, strict=True):
        path = Path(d) if Path(d).exists() else resolve_kernel_layer(d)
        kernels = load_kernel_file(path / "train.npy" if path.is_dir() else path)
        if min_norm > 0:
            kernels = kernels[kernel_norms(kernels) >= min_norm]
        sets[n] = kernels * np.float32(factor) if factor != 1.0 else kernels
    return sets
