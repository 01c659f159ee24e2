"""What ships inside the package: kernel sets and fitted priors, found by name (torch-free).

Layout (``dwp/data/``)::

    kernels/SET/LAYER/train.npy, test.npy    a kernel set (`dwp kernels extract`), README.md
    priors/SET/LAYER/prior.json, weights.pt  a fitted prior (`dwp prior train`), README.md

A shipped kernel layer or prior is named ``SET/LAYER`` (``letters-fconv/conv1``); a shipped
prior set by ``SET`` alone (every prior in it, matched to layers by kernel size). Anywhere a
directory is accepted, an existing path wins over a shipped name of the same spelling.
"""

from __future__ import annotations

from pathlib import Path

from dwp.errors import DWPError

__all__ = [
    "SHIPPED_KERNELS",
    "SHIPPED_PRIORS",
    "is_shipped_name",
    "resolve_kernel_layer",
    "resolve_prior_dir",
    "resolve_prior_set",
    "shipped_kernel_sets",
    "shipped_prior_sets",
    "shipped_priors",
    "source_name",
]

_DATA = Path(__file__).parent
SHIPPED_KERNELS = _DATA / "kernels"
SHIPPED_PRIORS = _DATA / "priors"


def _children(root: Path, marker: str) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / marker).is_file())


def shipped_kernel_sets() -> list[str]:
    """Names of the kernel sets shipped with dwp (``dwp/data/kernels/NAME``, each with a README
    saying how it was made)."""
    return _children(SHIPPED_KERNELS, "stats.json")


def shipped_prior_sets() -> list[str]:
    """Names of the prior sets shipped with dwp (``dwp/data/priors/SET``)."""
    if not SHIPPED_PRIORS.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_PRIORS.iterdir() if _children(p, "prior.json"))


def shipped_priors() -> list[str]:
    """Names ``SET/LAYER`` of every prior shipped with dwp."""
    sets = shipped_prior_sets()
    return [f"{s}/{la}" for s in sets for la in _children(SHIPPED_PRIORS / s, "prior.json")]


def _shipped(root: Path, name: str, marker: str) -> Path | None:
    parts = str(name).split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        return None
    path = root / parts[0] / parts[1]
    return path if (path / marker).is_file() else None


def resolve_kernel_layer(name_or_path: str | Path) -> Path:
    """A kernel layer directory: an existing path, else the shipped layer ``SET/LAYER``."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = _shipped(SHIPPED_KERNELS, str(name_or_path), "train.npy")
    if shipped is not None:
        return shipped
    names = [f"{s}/{la}" for s in shipped_kernel_sets()
             for la in _children(SHIPPED_KERNELS / s, "train.npy")]  # fmt: skip
    raise DWPError(
        f"kernels {name_or_path} not found: give a layer directory of `dwp kernels extract` "
        f"(holding train.npy) or a shipped one ({', '.join(names) or 'none installed'})"
    )


def resolve_prior_dir(name_or_path: str | Path) -> Path:
    """A prior directory: an existing path, else the shipped prior ``SET/LAYER``."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = _shipped(SHIPPED_PRIORS, str(name_or_path), "prior.json")
    if shipped is not None:
        return shipped
    raise DWPError(
        f"prior {name_or_path} not found: give a prior directory (`dwp prior train`) or a "
        f"shipped prior ({', '.join(shipped_priors()) or 'none installed'}; `dwp prior list`)"
    )


def resolve_prior_set(name_or_path: str | Path) -> list[Path]:
    """The prior directories a name stands for: one prior (a directory or ``SET/LAYER``), or a
    set (a shipped ``SET``, or a directory whose subdirectories are priors)."""
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in shipped_prior_sets():
        path = SHIPPED_PRIORS / str(name_or_path)
    if path.is_dir() and not (path / "prior.json").is_file():
        members = [path / n for n in _children(path, "prior.json")]
        if members:
            return members
    return [resolve_prior_dir(name_or_path)]


def source_name(path: str | Path) -> str:
    """How a run records a kernel layer or prior it used: ``SET/LAYER`` for a shipped one (valid
    wherever dwp is installed), else the absolute path."""
    resolved = Path(path).resolve()
    for root in (SHIPPED_KERNELS, SHIPPED_PRIORS):
        try:
            rel = resolved.relative_to(root.resolve())
        except ValueError:
            continue
        if len(rel.parts) == 2:
            return rel.as_posix()
    return str(resolved)


def is_shipped_name(value: str | Path) -> bool:
    """Whether ``value`` is no path here but names a shipped prior, prior set or kernel layer."""
    if Path(value).exists():
        return False
    name = str(value)
    return (name in shipped_prior_sets() or _shipped(SHIPPED_PRIORS, name, "prior.json") is not None
            or _shipped(SHIPPED_KERNELS, name, "train.npy") is not None)  # fmt: skip
