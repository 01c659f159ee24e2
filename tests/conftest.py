from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

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


def reference_state(k: int, z: int, h: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with exactly the reference implementation's key names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def conv(cin, cout, ks, transposed=False):
        shape = (cin, cout, ks, ks) if transposed else (cout, cin, ks, ks)
        return torch.randn(shape, generator=g) * 0.3, torch.randn(cout, generator=g) * 0.1

    s = {}
    if k == 7:
        enc = [(1, h), (h, 2 * h), (2 * h, 2 * h)]
        for i, (a, b) in zip((0, 2, 4), enc, strict=True):
            s[f"encoder.features.{i}.weight"], s[f"encoder.features.{i}.bias"] = conv(a, b, 3)
        s["encoder.fc_mu.weight"], s["encoder.fc_mu.bias"] = conv(2 * h, z, 1)
        s["encoder.fc_var.weight"], s["encoder.fc_var.bias"] = conv(2 * h, z, 1)
        dec = [(z, 2 * h), (2 * h, 2 * h), (2 * h, h)]
        for i, (a, b) in zip((0, 2, 4), dec, strict=True):
            s[f"decoder.decoder.{i}.weight"], s[f"decoder.decoder.{i}.bias"] = conv(a, b, 3, True)
        s["decoder.fc_mu.weight"], s["decoder.fc_mu.bias"] = conv(h, 1, 1)
        s["decoder.fc_var.weight"], s["decoder.fc_var.bias"] = conv(h, 1, 1)
    else:  # 5x5
        enc = [(1, h), (h, h), (h, 2 * h), (2 * h, 2 * h)]
        for i, (a, b) in zip((0, 2, 4, 6), enc, strict=True):
            s[f"encoder.features.{i}.weight"], s[f"encoder.features.{i}.bias"] = conv(a, b, 3)
        s["encoder.fc_mu.weight"], s["encoder.fc_mu.bias"] = conv(2 * h, z, 1)
        s["encoder.fc_sigma.weight"], s["encoder.fc_sigma.bias"] = conv(2 * h, z, 1)
        s["decoder.decoder.0.weight"], s["decoder.decoder.0.bias"] = conv(z, 2 * h, 1)
        s["decoder.decoder.2.weight"], s["decoder.decoder.2.bias"] = conv(2 * h, 2 * h, 3, True)
        s["decoder.decoder.4.weight"], s["decoder.decoder.4.bias"] = conv(2 * h, 2 * h, 3, True)
        s["decoder.decoder.6.weight"], s["decoder.decoder.6.bias"] = conv(2 * h, h, 1)
        s["decoder.fc_mu.0.weight"], s["decoder.fc_mu.0.bias"] = conv(h, 1, 1)
        s["decoder.fc_var.0.weight"], s["decoder.fc_var.0.bias"] = conv(h, 1, 1)
    return s


def write_reference(folder, k, z, h, var="train"):
    folder.mkdir(parents=True)
    state = reference_state(k, z, h)
    torch.save(state, folder / "vae_params.torch")
    params = {"kernel_dim": k, "z_dim": z, "hidden_dim": h, "var": var, "batch_size": 128,
              "num_epochs": 300, "lr": 0.001}  # fmt: skip
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return state


@pytest.fixture(scope="session")
def tiny_priors(tmp_path_factory):
    """A tiny MNIST-format dataset and 7x7 / 5x5 priors fitted (2 epochs) to the kernels of three
    random FConv (4, 8) nets: ``{"root", "data", "priors": [conv1 dir, conv2 dir]}``."""
    from dwp.kernels import KernelConfig, extract_kernels
    from dwp.nn import FConv
    from dwp.train.prior import PriorTrainConfig, fit_prior

    root = tmp_path_factory.mktemp("tiny")
    make_idx_set(root / "data", n_train=40, n_test=30)
    torch.manual_seed(0)
    nets = [FConv((4, 8)) for _ in range(3)]
    extract_kernels(nets, root / "kernels", KernelConfig(min_norm=0.0))
    cfg = PriorTrainConfig(epochs=2)
    for layer in ("conv1", "conv2"):
        fit_prior(root / "kernels" / layer, root / f"prior-{layer}", cfg, torch.device("cpu"))
    return {"root": root, "data": str(root / "data"),
            "priors": [str(root / "prior-conv1"), str(root / "prior-conv2")]}  # fmt: skip


def make_cifar(root: Path, name: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write a tiny CIFAR-10 or CIFAR-100 folder in the real python-pickle format (byte keys,
    uint8 rows of 3072 = 3 colour planes of 32x32); images are a per-class colour plus noise,
    labels cycle through the classes. Returns the folder."""
    import pickle

    classes, folder, key = {
        "cifar10": (10, "cifar-10-batches-py", b"labels"),
        "cifar100": (100, "cifar-100-python", b"fine_labels"),
    }[name]
    rng = np.random.default_rng(seed)
    colour = rng.integers(30, 226, size=(classes, 3))
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)

    def batch(n: int, offset: int) -> dict:
        labels = [(offset + i) % classes for i in range(n)]
        planes = colour[labels][:, :, None] + rng.integers(-30, 31, size=(n, 3, 1024))
        return {b"data": planes.clip(0, 255).astype(np.uint8).reshape(n, 3072), key: labels}

    if name == "cifar10":
        parts = np.array_split(np.arange(n_train), 5)
        for i, part in enumerate(parts, start=1):
            with open(out / f"data_batch_{i}", "wb") as f:
                pickle.dump(batch(len(part), int(part[0]) if len(part) else 0), f)
        with open(out / "test_batch", "wb") as f:
            pickle.dump(batch(n_test, 0), f)
    else:
        for part, n in (("train", n_train), ("test", n_test)):
            with open(out / part, "wb") as f:
                pickle.dump(batch(n, 0), f)
    return out


def tiny_preset(tmp_path):
    """A custom preset file of the whole pipeline at toy sizes (the tiny MNIST-format data)."""
    preset = {
        "name": "tiny",
        "source_dataset": "mnist",
        "target_dataset": "mnist",
        "source_args": {"nets": 3, "hidden": [4, 8], "epochs": 1},
        "kernel_args": {"min_norm": 0.0},
        "prior_args": {
            "conv1": {"epochs": 1, "median_norm": 1.35},
            "conv2": {"epochs": 1, "z_dim": 3},
        },
        "classification_args": {"examples": [10], "splits": [0], "epochs": 2, "hidden": [4, 8]},
        "convergence_args": {"seeds": [0], "steps": 2, "eval_every": 1, "hidden": [4, 8]},
        "vae_convergence_args": {
            "seeds": [0],
            "steps": 2,
            "eval_every": 1,
            "hidden": [4, 8],
            "z_dim": 2,
        },
        "features_args": {"base_hidden": [8, 16], "scales": [0.5, 1], "seeds": [0], "epochs": 1},
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(preset))
    return path
