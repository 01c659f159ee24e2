"""Where datasets are looked for and where derived data is cached."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DATA_ROOT_ENV_VARS", "cache_dir", "data_roots"]

#: Environment variables naming data roots, in order of precedence. ``DATA_ROOT`` is the one the
#: reference implementation's scripts used. Each may hold several paths separated by ``os.pathsep``.
DATA_ROOT_ENV_VARS = ("DWP_DATA_ROOT", "DATA_ROOT")


def _split(value: str) -> list[Path]:
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def data_roots(explicit: str | Path | Sequence[str | Path] | None = None) -> list[Path]:
    """The data roots to search, in order.

    ``explicit`` (a path, an ``os.pathsep``-separated string, or a list) wins; otherwise the roots
    named by ``DWP_DATA_ROOT`` then ``DATA_ROOT``; then ``$XDG_DATA_HOME/dwp`` (default
    ``~/.local/share/dwp``), which is searched in every case.
    """
    roots: list[Path] = []
    if explicit is not None:
        items = [explicit] if isinstance(explicit, str | Path) else list(explicit)
        for item in items:
            roots.extend(_split(str(item)))
    else:
        for var in DATA_ROOT_ENV_VARS:
            roots.extend(_split(os.environ.get(var, "")))
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    roots.append(Path(xdg) / "dwp")
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def cache_dir() -> Path:
    """Directory for derived data (rendered letters, decoded PNG folders).

    ``DWP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/dwp`` (default ``~/.cache/dwp``).
    """
    env = os.environ.get("DWP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "dwp"
