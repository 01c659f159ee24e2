"""CIFARNet and the CIFAR-100 -> CIFAR-10 pipeline, on tiny CIFAR-format files."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dwp.cli import main
from dwp.data import load_dataset
from dwp.errors import DWPError
from dwp.nn import (
    ARCHS,
    CIFARNet,
    bayes_layers,
    build_net,
    cifarnet_hidden,
    conv_layers,
    conv_names,
    resolve_arch,
)
from dwp.train.bnn import BNNConfig, build_bnn

from conftest import make_cifar


def test_cifarnet_layers_and_shapes():
    net = build_net("cifarnet", (4, 8, 6), 3, 10, 32)
    assert isinstance(net, CIFARNet)
    convs = conv_layers(net)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs.values()] == [
        (3, 4, (7, 7)), (4, 8, (5, 5)), (8, 6, (5, 5)), (6, 512, (5, 5))]  # fmt: skip
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == 1
    assert net.fc1.in_features == 512 and net(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    # the Bayesian variant: no BatchNorm, no conv4, the classifier sees h3 * 5 * 5
    bnet = build_net("cifarnet", (4, 8, 6), 3, 10, 32, bayes=True)
    assert list(conv_layers(bnet)) == ["conv1", "conv2", "conv3"]
    assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in bnet.modules())
    assert bnet.fc1.in_features == 6 * 5 * 5 and bnet(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_conv_names_match_the_built_nets():
    for arch in ARCHS:
        for bayes in (False, True):
            hidden = (2, 3, 3) if arch == "cifarnet" else (2, 3)
            size, channels = (32, 3) if arch == "cifarnet" else (28, 1)
            net = build_net(arch, hidden, channels, 10, size, bayes=bayes)
            assert tuple(conv_layers(net)) == conv_names(arch, bayes)


def test_family_choice_and_width_errors():
    assert resolve_arch("auto", 3, 32) == "cifarnet"
    assert resolve_arch("auto", 1, 28) == "fconv"
    assert resolve_arch("fconv", 3, 32) == "fconv"
    with pytest.raises(DWPError, match="unknown network"):
        resolve_arch("resnet", 3, 32)
    with pytest.raises(DWPError, match="cifarnet needs 3 positive conv widths"):
        build_net("cifarnet", (4, 8), 3, 10, 32)
    with pytest.raises(DWPError, match=r"too small for CIFARNet \(needs >= 32\)"):
        build_net("cifarnet", (4, 8, 8), 3, 10, 31)
    with pytest.raises(DWPError, match=r"needs >= 24"):
        build_net("cifarnet", (4, 8, 8), 3, 10, 23, bayes=True)
    smallest = build_net("cifarnet", (4, 8, 8), 3, 10, 24, bayes=True)
    assert smallest(torch.rand(1, 3, 24, 24)).shape == (1, 10)
    assert cifarnet_hidden(0.125) == (16, 32, 32) and cifarnet_hidden(1 / 512) == (1, 1, 1)


def test_cifar_files_feed_a_bayesian_cifarnet(tmp_path):
    make_cifar(tmp_path, "cifar10", n_train=40, n_test=20)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train.images.shape == (40, 3, 32, 32) and ds.num_classes == 10
    cfg = BNNConfig(dataset="cifar10", examples=10, hidden=(4, 8, 8), epochs=1)
    model = build_bnn(cfg, 3, 10, 32)
    assert list(bayes_layers(model)) == ["conv1", "conv2", "conv3"]
    assert model(ds.train.images[:2]).shape == (2, 10)


def test_cli_cifar_widths(tmp_path, capsys):
    make_cifar(tmp_path, "cifar10", n_train=40, n_test=20)
    run = tmp_path / "run"
    base = ["bnn", "train", "--dataset", "cifar10", "--examples", "10", "--epochs", "1",
            "--data-root", str(tmp_path), "--device", "cpu", "--ens-samples", "2"]  # fmt: skip
    assert main([*base, "--hidden", "4", "8", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "cifarnet needs 3 positive conv widths" in err and "Traceback" not in err
    assert main([*base, "--hidden", "4", "8", "--width-scale", "0.5", "--out", str(run)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--width-scale", "0.03125", "--out", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["examples"] == 10 and 0 <= result["ens_acc"] <= 1
    assert json.loads((run / "config.json").read_text())["hidden"] == [4, 8, 8]


def test_reproduce_cifar100_to_cifar10(tmp_path, capsys):
    """The CIFAR pipeline runs unchanged: CIFARNet source nets on CIFAR-100, four kernel sets
    and priors, the Bayesian variant (three priors) and the ordinary CIFARNet (four) on CIFAR-10."""
    make_cifar(tmp_path, "cifar100", n_train=200, n_test=100)
    make_cifar(tmp_path, "cifar10", n_train=60, n_test=20, seed=1)
    tiny = [4, 8, 8]
    preset = {
        "name": "tiny-cifar",
        "source_dataset": "cifar100",
        "target_dataset": "cifar10",
        "source_args": {"nets": 3, "hidden": tiny, "epochs": 1},
        "kernel_args": {"min_norm": 0.0},
        "prior_args": {f"conv{i}": {"epochs": 1} for i in range(1, 5)},
        "classification_args": {"examples": [50], "splits": [0], "epochs": 2, "hidden": tiny,
                                "methods": ["dwp", "normal", "l2-dwp"]},
        "convergence_args": {"seeds": [0], "steps": 2, "eval_every": 1, "hidden": tiny},
        "features_args": {"base_hidden": tiny, "scales": [0.5, 1], "seeds": [0], "epochs": 1},
    }  # fmt: skip
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(preset))
    out = tmp_path / "repro"
    args = ["reproduce", "--preset-file", str(path), "--out", str(out), "--data-root",
            str(tmp_path), "--device", "cpu", "--jobs", "1"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    for layer in ("conv1", "conv2", "conv3", "conv4"):
        assert (out / "kernels" / layer / "train.npy").is_file()
        assert (out / "priors" / layer / "prior.json").is_file()
    conv1 = json.loads((out / "priors" / "conv1" / "prior.json").read_text())
    assert conv1["vae"]["kernel_size"] == 7
    cls = json.loads((out / "classification" / "config.json").read_text())
    conv = json.loads((out / "convergence" / "config.json").read_text())
    assert [p.rsplit("/", 1)[1] for p in cls["prior_dirs"]] == ["conv1", "conv2", "conv3"]
    assert [p.rsplit("/", 1)[1] for p in conv["prior_dirs"]] == [f"conv{i}" for i in range(1, 5)]
    rows = json.loads((out / "classification" / "summary.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"dwp", "normal", "l2-dwp"}
    # the paper's CIFAR-10 numbers at 50 examples stand beside ours
    assert {r["method"]: r["paper"] for r in rows} == {
        "dwp": 0.237,
        "normal": 0.225,
        "l2-dwp": None,
    }
    stages = json.loads((out / "stages.json").read_text())
    assert "28x28 grey images" in stages["vae-convergence"]["skipped"]
    report = (out / "report.md").read_text()
    assert "CIFARNet 4/8/8" in report and "prior-conv4.png" in report


def test_the_family_of_a_dataset_comes_from_its_image_shape_not_its_name(monkeypatch):
    from dataclasses import replace

    from dwp.data import DATASETS, dataset_arch
    from dwp.nn import describe_net
    from dwp.results import _settings

    # a 3x32x32 dataset whose name does not start with "cifar" (an SVHN-like set)
    monkeypatch.setitem(DATASETS, "colour32", replace(DATASETS["cifar10"], name="colour32"))
    assert dataset_arch("colour32") == "cifarnet" and dataset_arch("mnist5k") == "fconv"
    assert dataset_arch("colour32", "fconv") == "fconv"  # an explicit family wins
    assert describe_net("auto", None, "target", "colour32") == "CIFARNet 128/256/256"
    # a run at the family's default widths reads as "default widths" in the summary
    assert _settings({"dataset": "colour32", "hidden": [128, 256, 256]})["hidden"] is None
    assert _settings({"dataset": "mnist5k", "hidden": [128, 256, 256]})["hidden"] == [128, 256, 256]
