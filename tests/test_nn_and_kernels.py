from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dwp.errors import DWPError
from dwp.kernels import (
    KernelConfig,
    extract_kernels,
    kernel_diversity,
    kernel_slices,
    validate_kernels,
)
from dwp.nn import FConv, conv_layers, l2_penalty


def test_fconv_matches_design():
    torch.manual_seed(0)
    net = FConv((6, 10))
    x = torch.rand(3, 1, 28, 28)
    h = F.max_pool2d(F.leaky_relu(F.conv2d(x, net.conv1.weight, net.conv1.bias), 0.01), 2)
    h = F.max_pool2d(F.leaky_relu(F.conv2d(h, net.conv2.weight, net.conv2.bias), 0.01), 2)
    assert h.shape == (3, 10, 3, 3)
    expected = F.linear(h.flatten(1), net.fc.weight, net.fc.bias)
    torch.testing.assert_close(net(x), expected)
    assert list(conv_layers(net)) == ["conv1", "conv2"]
    assert net.conv1.kernel_size == (7, 7) and net.conv2.kernel_size == (5, 5)


def test_fconv_layer_kind_is_a_parameter():
    made = []

    class Recording(nn.Conv2d):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.kernel_size)

    FConv((4, 8), conv=Recording)
    assert made == [(7, 7), (5, 5)]


def test_l2_penalty_is_sum_of_squares_of_conv_params():
    net = FConv((3, 5))
    manual = sum((p**2).sum() for n, p in net.named_parameters() if n.startswith("conv"))
    torch.testing.assert_close(l2_penalty(net), manual)


def test_kernel_slices_order():
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    s = kernel_slices(w)
    assert s.shape == (6, 1, 2, 2) and s.dtype == np.float32
    np.testing.assert_array_equal(s[4, 0], w[1, 1].numpy())  # slice o * in + i


def _nets_with_dead_kernels(n):
    nets = []
    for i in range(n):
        torch.manual_seed(i)
        net = FConv((4, 6))
        with torch.no_grad():
            net.conv1.weight[:2] = 1e-5  # two dead 7x7 output channels per net
        nets.append(net)
    return nets


def test_extract_prunes_and_holds_out_nets(tmp_path):
    nets = _nets_with_dead_kernels(5)
    stats = extract_kernels(nets, tmp_path, KernelConfig(min_norm=1e-3, test_fraction=0.2))
    assert stats["nets"] == {"train": 4, "test": 1}
    c1 = stats["layers"]["conv1"]
    assert c1["train"] == {"before": 16, "after_pruning": 8, "written": 8}
    assert c1["test"]["after_pruning"] == 2 and c1["kept_fraction"] == 0.5
    test = np.load(tmp_path / "conv1" / "test.npy")
    np.testing.assert_array_equal(test, kernel_slices(nets[-1].conv1.weight)[2:])
    assert sum(c1["norm_histogram"]["counts"]) == 20


def test_extract_max_kernels_and_layer_choice(tmp_path):
    nets = _nets_with_dead_kernels(4)
    cfg = KernelConfig(min_norm=0, layers=("conv2",), max_kernels=10, seed=3)
    stats = extract_kernels(nets, tmp_path, cfg)
    assert list(stats["layers"]) == ["conv2"] and not (tmp_path / "conv1").exists()
    assert np.load(tmp_path / "conv2" / "train.npy").shape == (10, 1, 5, 5)
    with pytest.raises(
        DWPError, match=r"no conv layer 'fc' in the first net; its conv layers: conv1, conv2"
    ):
        extract_kernels(nets, tmp_path, KernelConfig(layers=("fc",)))
    with pytest.raises(DWPError, match="at least 2 source nets"):
        extract_kernels(nets[:1], tmp_path, KernelConfig())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"min_norm": -1}, "--min-norm"), ({"test_fraction": 1.0}, "--test-fraction"),
     ({"max_kernels": 0}, "--max-kernels")],
)  # fmt: skip
def test_kernel_config_validation(kwargs, message):
    with pytest.raises(DWPError, match=message):
        KernelConfig(**kwargs)


def test_kernel_diversity_closed_forms():
    # k*k orthonormal kernels (any scales): full effective rank, no two alike
    basis = np.eye(25).reshape(25, 1, 5, 5) * np.linspace(0.1, 3, 25)[:, None, None, None]
    d = kernel_diversity(basis)
    assert d["effective_rank"] == pytest.approx(25) and d["mean_abs_cosine"] == pytest.approx(0)
    # multiples of one kernel (signs and scales differ): rank 1, all parallel
    one = np.random.default_rng(0).normal(size=(1, 1, 5, 5))
    d = kernel_diversity(one * np.array([1.0, -2.0, 0.5])[:, None, None, None])
    assert d["effective_rank"] == pytest.approx(1) and d["mean_abs_cosine"] == pytest.approx(1)
    # three kernels along e1, one along e2: energies 3/4, 1/4; 6 of the 12 ordered pairs parallel
    k = np.zeros((4, 1, 3, 3))
    k[:3, 0, 0, 0], k[3, 0, 1, 1] = [1.0, 2.0, -1.0], 5.0
    d = kernel_diversity(k)
    assert d["effective_rank"] == pytest.approx(
        np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    )
    assert d["mean_abs_cosine"] == pytest.approx(0.5)
    # zero kernels are ignored (a lone kernel has no pair to compare); the subset is seeded
    assert kernel_diversity(np.concatenate([k, np.zeros((2, 1, 3, 3))]))["n_kernels"] == 4
    assert kernel_diversity(k[:1]) == {"effective_rank": 1.0, "mean_abs_cosine": None,
                                       "n_kernels": 1}  # fmt: skip
    many = np.random.default_rng(1).normal(size=(300, 1, 5, 5))
    assert kernel_diversity(many, max_kernels=50, seed=3) == kernel_diversity(many, 50, seed=3)
    assert kernel_diversity(many, max_kernels=50)["n_kernels"] == 50


def test_validate_kernels_accepts_float64_and_returns_float32():
    out = validate_kernels(np.zeros((2, 1, 3, 3)), "x", 3)
    assert out.dtype == np.float32
    with pytest.raises(DWPError, match="holds no kernels"):
        validate_kernels(np.zeros((0, 1, 3, 3), np.float32), "x")


def test_shipped_paper_protocol_kernels_are_valid():
    from dwp.kernels import read_kernel_stats, resolve_kernel_sets
    from dwp.train.prior import load_kernel_dir

    root = resolve_kernel_sets("letters-fconv")  # shipped inside the package
    stats = read_kernel_stats(root)
    for layer, k in (("conv1", 7), ("conv2", 5)):
        train, test = load_kernel_dir(root / layer)
        assert train.shape[1:] == test.shape[1:] == (1, k, k)
        assert len(train) == stats["layers"][layer]["train"]["written"]
        norms = np.sqrt((train.astype(np.float64) ** 2).sum(axis=(1, 2, 3)))
        assert norms.min() >= stats["layers"][layer]["min_norm"]
