from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dwp.data.readers import write_idx


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """No test reads the user's data roots or writes to the user's cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("DWP_CACHE_DIR", str(home / "cache"))
    monkeypatch.delenv("DWP_DATA_ROOT", raising=False)
    monkeypatch.delenv("DATA_ROOT", raising=False)
    monkeypatch.delenv("DWP_FONT_DIRS", raising=False)


def make_idx_set(folder: Path, n_train=30, n_test=20, classes=10, gz=True, seed=0, size=28):
    """Write the four MNIST-layout IDX files with random images; return the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        y = (np.arange(n) % classes).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", y)
        arrays[prefix] = (x, y)
    return arrays
