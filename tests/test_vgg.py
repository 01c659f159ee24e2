"""VGGNet (3x3 convs) and one kernel set for several layers (``--merge``), through the
library and the CLI: source nets, merged 3x3 kernels, a 3x3 prior, a Bayesian VGGNet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dwp.cli import main
from dwp.errors import DWPError
from dwp.kernels import KernelConfig, extract_kernels, kernel_slices
from dwp.nn import FConv, VGGNet, bayes_layers, build_net, conv_layers, conv_names
from dwp.train.bnn import BNNConfig, build_bnn

from conftest import make_idx_set


def test_vgg_matches_its_definition():
    torch.manual_seed(0)
    net = VGGNet((3, 5))
    x = torch.rand(2, 1, 28, 28)

    def layer(h, conv):
        return F.leaky_relu(F.conv2d(h, conv.weight, conv.bias, padding=1), 0.01)

    h = F.max_pool2d(layer(layer(x, net.conv1), net.conv2), 2)
    h = F.max_pool2d(layer(layer(h, net.conv3), net.conv4), 2)
    assert h.shape == (2, 5, 7, 7)
    torch.testing.assert_close(net(x), F.linear(h.flatten(1), net.fc.weight, net.fc.bias))
    convs = conv_layers(net)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs.values()] == [
        (1, 3, (3, 3), (1, 1)), (3, 3, (3, 3), (1, 1)),
        (3, 5, (3, 3), (1, 1)), (5, 5, (3, 3), (1, 1))]  # fmt: skip
    assert tuple(convs) == conv_names("vgg") == conv_names("vgg", bayes=True)
    # Xavier-normal kernels, zero biases; BatchNorm only when asked for
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs.values())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    bn = build_net("vgg", (3, 5), 3, 10, 32, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 4
    assert bn.fc.in_features == 5 * 8 * 8 and bn(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_vgg_widths_and_sizes():
    with pytest.raises(DWPError, match="vgg needs 2 positive conv widths"):
        build_net("vgg", (4, 8, 8), 1, 10, 28)
    with pytest.raises(DWPError, match=r"too small for VGGNet \(needs >= 4\)"):
        build_net("vgg", (4, 8), 1, 10, 3)
    assert build_net("vgg", (2, 2), 1, 10, 4)(torch.rand(1, 1, 4, 4)).shape == (1, 10)


def test_bayesian_vgg_takes_one_prior_per_conv(tiny_priors):
    cfg = BNNConfig(dataset="mnist", examples=10, arch="vgg", hidden=(3, 4), epochs=1)
    model = build_bnn(cfg, 1, 10, 28)
    assert list(bayes_layers(model)) == ["conv1", "conv2", "conv3", "conv4"]
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    # the DWP needs a prior per conv: two 7x7 / 5x5 priors for four 3x3 layers are refused
    bad = BNNConfig(dataset="mnist", examples=10, arch="vgg", hidden=(3, 4), epochs=1,
                    prior="dwp", prior_dirs=tuple(tiny_priors["priors"]))  # fmt: skip
    with pytest.raises(DWPError, match="got 2 prior directories for 4 conv layers"):
        build_bnn(bad, 1, 10, 28)


def _vgg_nets(n: int) -> list[VGGNet]:
    torch.manual_seed(0)
    return [VGGNet((2, 3)) for _ in range(n)]


def test_merge_writes_one_set_of_the_chosen_layers(tmp_path):
    nets = _vgg_nets(3)
    cfg = KernelConfig(min_norm=0, layers=("conv2", "conv3", "conv4"), merge="deep")
    stats = extract_kernels(nets, tmp_path, cfg)
    assert list(stats["layers"]) == ["deep"] and not (tmp_path / "conv2").exists()
    deep = stats["layers"]["deep"]
    assert deep["layers"] == ["conv2", "conv3", "conv4"] and deep["kernel_size"] == 3
    # 2 x 2 + 3 x 2 + 3 x 3 slices per net; two train nets, one test net
    assert deep["train"]["before"] == 2 * 19 and deep["test"]["before"] == 19
    test = np.load(tmp_path / "deep" / "test.npy")
    want = np.concatenate([kernel_slices(nets[-1].get_submodule(n).weight) for n in
                           ("conv2", "conv3", "conv4")])  # fmt: skip
    np.testing.assert_array_equal(test, want)


def test_merge_refuses_mixed_sizes_and_bad_names(tmp_path):
    torch.manual_seed(0)
    fconvs = [FConv((2, 3)) for _ in range(2)]
    with pytest.raises(DWPError, match=r"different kernel sizes \(conv1 7x7, conv2 5x5\)"):
        extract_kernels(fconvs, tmp_path / "k", KernelConfig(merge="all"))
    assert not (tmp_path / "k").exists()
    for bad in ("a/b", "..", ""):
        with pytest.raises(DWPError, match="--merge must be a plain directory name"):
            KernelConfig(merge=bad)


def test_cli_vgg_source_to_bayesian_net(tmp_path, capsys):
    """`dwp source train --arch vgg`, every 3x3 layer's kernels as one set, one 3x3 prior on
    all four convs of a Bayesian VGGNet (`dwp bnn train --arch vgg`)."""
    make_idx_set(tmp_path / "data", n_train=40, n_test=20)
    common = ["--dataset", "mnist", "--data-root", str(tmp_path / "data"), "--device", "cpu"]
    source = tmp_path / "source"
    assert main(["source", "train", *common, "--arch", "vgg", "--nets", "2", "--hidden", "2",
                 "3", "--epochs", "1", "--batch-size", "20",
                 "--out", str(source)]) == 0  # fmt: skip
    ckpt = torch.load(source / "net-000.pt", weights_only=True)
    assert ckpt["model"]["kind"] == "vgg" and ckpt["state_dict"]["conv4.weight"].shape == (
        3, 3, 3, 3)  # fmt: skip
    kernels = tmp_path / "kernels"
    assert main(["kernels", "extract", "--source", str(source), "--out", str(kernels),
                 "--min-norm", "0", "--merge", "all3x3"]) == 0  # fmt: skip
    assert "all3x3 (3x3 from conv1, conv2, conv3, conv4)" in capsys.readouterr().out
    prior = tmp_path / "prior3"
    assert main(["prior", "train", "--kernels", str(kernels / "all3x3"), "--out", str(prior),
                 "--epochs", "1", "--min-steps", "0", "--device", "cpu"]) == 0  # fmt: skip
    run = tmp_path / "run"
    assert main(["bnn", "train", *common, "--arch", "vgg", "--hidden", "2", "3", "--examples",
                 "10", "--epochs", "1", "--prior", "dwp", "--prior-dirs", *[str(prior)] * 4,
                 "--ens-samples", "2", "--out", str(run)]) == 0  # fmt: skip
    result = json.loads((run / "result.json").read_text())
    assert 0 <= result["ens_acc"] <= 1 and set(result["prior_scales"]) == {
        "conv1", "conv2", "conv3", "conv4"}  # fmt: skip
    # the experiments take the family too: classification, convergence (an ordinary VGGNet from
    # Xavier / DWP samples / source filters), frozen random features
    exp = tmp_path / "classification"
    assert main(["experiment", "classification", *common, "--arch", "vgg", "--hidden", "2", "3",
                 "--examples", "10", "--splits", "0", "--epochs", "1", "--methods", "dwp",
                 "normal", "l2-dwp", "l2-kaiming", "--prior-dirs", *[str(prior)] * 4, "--jobs", "1",
                 "--out", str(exp)]) == 0  # fmt: skip
    rows = json.loads((exp / "summary.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"dwp", "normal", "l2-dwp", "l2-kaiming"}
    run_config = json.loads((exp / "runs" / "dwp-n10-s0" / "config.json").read_text())
    assert run_config["arch"] == "vgg" and run_config["init"] == "dwp"
    # the learned prior's methods from its draws instead of its decoder means
    drawn = tmp_path / "classification-draws"
    assert main(["experiment", "classification", *common, "--arch", "vgg", "--hidden", "2", "3",
                 "--examples", "10", "--splits", "0", "--epochs", "1", "--methods", "dwp",
                 "l2-dwp", "--dwp-init", "dwp-draw", "--prior-dirs", *[str(prior)] * 4,
                 "--jobs", "1", "--out", str(drawn)]) == 0  # fmt: skip
    assert json.loads((drawn / "config.json").read_text())["dwp_init"] == "dwp-draw"
    run_config = json.loads((drawn / "runs" / "dwp-n10-s0" / "config.json").read_text())
    assert run_config["init"] == "dwp-draw"
    means, draws = (json.loads((d / "runs" / "l2-dwp-n10-s0.json").read_text())
                    for d in (exp, drawn))  # fmt: skip
    assert means["nll"] != draws["nll"]  # another start
    inits = ["--prior-dirs", *[str(prior)] * 4, "--kernel-dirs", *[str(kernels / "all3x3")] * 4]
    conv = tmp_path / "convergence"
    assert main(["experiment", "convergence", *common, "--arch", "vgg", "--hidden", "2", "3",
                 "--seeds", "0", "--steps", "2", "--eval-every", "1", "--examples", "20",
                 "--inits", "xavier", "kaiming", "dwp", "filters", *inits, "--jobs", "1",
                 "--out", str(conv)]) == 0  # fmt: skip
    curves = json.loads((conv / "summary.json").read_text())
    assert set(curves) == {"xavier", "kaiming", "dwp", "filters"} and curves["dwp"]["step"] == [
        0,
        1,
        2,
    ]
    feats = tmp_path / "features"
    assert main(["experiment", "features", *common, "--arch", "vgg", "--base-hidden", "2", "3",
                 "--scales", "1", "--seeds", "0", "--epochs", "1", "--examples", "20",
                 "--inits", "xavier", "dwp", "dwp-draw", *inits[:5], "--jobs", "1",
                 "--out", str(feats)]) == 0  # fmt: skip
    assert set(json.loads((feats / "summary.json").read_text())) == {"xavier", "dwp", "dwp-draw"}
