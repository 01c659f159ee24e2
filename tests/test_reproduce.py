"""The classification sweep, random feature extraction, executors, `dwp reproduce` and
`dwp report`: outputs, resume, and errors; all on tiny MNIST-format files."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from dwp.cli import main
from dwp.data import load_dataset
from dwp.errors import DWPError
from dwp.executors import LocalExecutor
from dwp.experiments import ClassificationConfig, FeaturesConfig, run_classification, run_features
from dwp.experiments.classification import summarise_classification, train_l2_net
from dwp.experiments.features import frozen_features_model, scale_label, widths
from dwp.experiments.paper import paper_classification
from dwp.nn import conv_layers
from dwp.priors import DeepWeightPrior

from conftest import tiny_preset


def _classification_args(tiny, out, *extra):
    return ["experiment", "classification", "--out", str(out), "--dataset", "mnist",
            "--data-root", tiny["data"], "--prior-dirs", *tiny["priors"], "--hidden", "4", "8",
            "--examples", "10", "20", "--splits", "0", "1", "--epochs", "3", "--device", "cpu",
            *extra]  # fmt: skip


def test_experiment_classification(tiny_priors, tmp_path, capsys):
    out = tmp_path / "cls"
    assert main(_classification_args(tiny_priors, out)) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| examples | method | accuracy | NLL | splits | paper |")
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 6  # sizes x splits x methods
    assert {r["method"] for r in rows} == {"dwp", "gaussian", "log-uniform", "normal",
                                           "l2-xavier", "l2-dwp"}  # fmt: skip
    # the learned priors' runs record the factors the kernel-scale rule moved them by
    scaled = json.loads((out / "runs" / "gaussian-n10-s0" / "result.json").read_text())
    assert set(scaled["prior_scales"]) == {"conv1", "conv2"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "mnist"
    for s in summary["rows"]:
        accs = [float(r["acc"]) for r in rows
                if r["method"] == s["method"] and int(r["examples"]) == s["examples"]]  # fmt: skip
        assert s["runs"] == 2
        assert s["acc_mean"] == pytest.approx(statistics.fmean(accs), abs=1e-6)
        assert s["paper"] is None  # the paper has no 10- or 20-example numbers
    # Bayesian runs are ordinary run directories: the ensemble accuracy is the row's
    bnn = json.loads((out / "runs" / "normal-n10-s1" / "result.json").read_text())
    row = next(r for r in rows if r["method"] == "normal" and r["examples"] == "10"
               and r["split"] == "1")  # fmt: skip
    assert float(row["acc"]) == pytest.approx(bnn["ens_acc"], abs=1e-6)
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a finished sweep is read back; a lost deterministic run is recomputed identically
    lost = out / "runs" / "l2-dwp-n20-s0.json"
    first = json.loads(lost.read_text())
    lost.unlink()
    done = []
    cfg = ClassificationConfig(dataset="mnist", examples=(10, 20), splits=(0, 1), epochs=3,
                               hidden=(4, 8), prior_dirs=tuple(tiny_priors["priors"]))  # fmt: skip
    run_classification(
        cfg, out, data_root=tiny_priors["data"], on_run=done.append, executor=LocalExecutor(jobs=2)
    )  # as the CLI's default: 1 thread per run
    again = json.loads(lost.read_text())
    assert again["acc"] == first["acc"] and again["nll"] == first["nll"]
    assert len(done) == 24 and done[-1]["index"] == done[-1]["total"] == 24
    # another config in the same directory is refused
    assert main(_classification_args(tiny_priors, out, "--l2", "0.5")) == 2
    assert "another config (l2" in capsys.readouterr().err


def test_classification_scores_a_test_subset(tiny_priors, tmp_path):
    out = tmp_path / "cls"
    args = _classification_args(tiny_priors, out, "--methods", "normal", "--methods",
                                "l2-xavier", "--test-examples", "10",
                                "--shift", "rotate", "--shift-examples", "3")  # fmt: skip
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["test_examples"] == 10
    bnn = out / "runs" / "normal-n10-s0"
    assert json.loads((bnn / "config.json").read_text())["test_examples"] == 10
    for u in (bnn / "uncertainty.json", out / "runs" / "l2-xavier-n10-s0.uncertainty.json"):
        scored = sum(b["count"] for b in json.loads(u.read_text())["test"]["reliability"])
        assert scored == 10  # of the 20 test images
    acc = json.loads((out / "runs" / "l2-xavier-n10-s0.json").read_text())["acc"]
    assert round(acc * 10, 6) == round(acc * 10)
    # the same sweep on all test images is another config
    assert main(_classification_args(tiny_priors, out, "--methods", "normal")) == 2


def test_classification_refuses_dwp_options_without_the_dwp(tiny_priors, tmp_path, capsys):
    out = tmp_path / "cls"
    for extra in (["--methods", "normal", "--exact"], ["--exact", "--dwp-kernel-batch", "8"]):
        assert main(_classification_args(tiny_priors, out, *extra)) == 2
        err = capsys.readouterr().err
        assert ("apply to the DWP prior only" in err or "not both" in err) and err.count("\n") == 1
    assert not out.exists()


def test_classification_in_worker_processes_matches(tiny_priors, tmp_path):
    cfg = ClassificationConfig(dataset="mnist", examples=(10,), splits=(0, 1), epochs=2,
                               hidden=(4, 8), methods=("normal", "l2-xavier"))  # fmt: skip
    serial = run_classification(cfg, tmp_path / "a", data_root=tiny_priors["data"])
    parallel = run_classification(cfg, tmp_path / "b", data_root=tiny_priors["data"],
                                  executor=LocalExecutor(jobs=2))  # fmt: skip
    for a, b in zip(serial, parallel, strict=True):
        assert (a["method"], a["examples"]) == (b["method"], b["examples"])
        assert a["acc_mean"] == pytest.approx(b["acc_mean"], abs=1e-9)


def test_classification_sweep_grows_and_trains_with_weight_draws(tiny_priors, tmp_path):
    data, out = tiny_priors["data"], tmp_path / "cls"

    def cfg(splits, sampling="weight", methods=("normal", "l2-xavier")):
        return ClassificationConfig(dataset="mnist", examples=(10, 20), splits=splits, epochs=2,
                                    hidden=(4, 8), methods=methods, sampling=sampling)  # fmt: skip

    # split by split: a sweep stopped part-way has the whole curve of the splits it finished
    assert [(t["split"], t["examples"]) for t in cfg((0, 1)).tasks()][:4] == [
        (0, 10), (0, 10), (0, 20), (0, 20)]  # fmt: skip
    first = {
        (r["method"], r["examples"]): r for r in run_classification(cfg((0,)), out, data_root=data)
    }
    run = json.loads((out / "runs" / "normal-n10-s0" / "config.json").read_text())
    assert run["sampling"] == "weight"
    # more splits in the same directory: the finished runs are read back, the new ones run
    with open(out / "results.csv") as f:
        before = {(r["method"], r["examples"]): r["wall_s"] for r in csv.DictReader(f)}
    grown = run_classification(cfg((0, 1)), out, data_root=data)
    assert all(r["runs"] == 2 for r in grown)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert {(r["method"], int(r["examples"])): r["wall_s"] for r in rows
            if r["split"] == "0"} == {(m, int(n)): w for (m, n), w in before.items()}  # fmt: skip
    assert first  # the first sweep's summary
    # how a run trains is not part of the grid: another estimator is refused
    with pytest.raises(DWPError, match="another config \\(sampling"):
        run_classification(cfg((0, 1), "local"), out, data_root=data)
    # a sweep written before `sampling` existed reads as local reparameterization
    old = tmp_path / "old"
    run_classification(cfg((0,), "local", ("l2-xavier",)), old, data_root=data)
    stored = json.loads((old / "config.json").read_text())
    del stored["sampling"]
    (old / "config.json").write_text(json.dumps(stored))
    run_classification(cfg((0,), "local", ("l2-xavier",)), old, data_root=data)
    with pytest.raises(DWPError, match="sampling: 'flipout' is not one of local, weight"):
        ClassificationConfig(methods=("normal",), sampling="flipout")


def test_deep_ensemble_averages_its_nets(tiny_priors):
    from dwp.nn import DeepEnsemble

    task = {"method": "ensemble", "examples": 10, "split": 1}

    def cfg(size):
        return ClassificationConfig(dataset="mnist", examples=(10,), splits=(1,), epochs=3,
                                    hidden=(4, 8), methods=("ensemble", "l2-xavier"),
                                    ensemble_size=size)  # fmt: skip

    data = tiny_priors["data"]
    res = train_l2_net(cfg(3), task, data_root=data, return_model=True)
    ens = res.pop("model")
    assert isinstance(ens, DeepEnsemble) and len(ens.members) == 3
    x = load_dataset("mnist", data).test.images
    with torch.no_grad():
        each = torch.stack([torch.softmax(m(x), 1) for m in ens.members])
        assert torch.allclose(torch.softmax(ens(x), 1), each.mean(0), atol=1e-6)
    assert not torch.allclose(each[0], each[1])  # members start from different inits
    assert res["acc"] == pytest.approx(float((each.mean(0).argmax(1) == load_dataset(
        "mnist", data).test.labels).double().mean()))  # fmt: skip
    # member 0 is the l2-xavier net of the split: an ensemble of one is that net
    single = train_l2_net(cfg(1), task, data_root=data)
    l2 = train_l2_net(cfg(1), {**task, "method": "l2-xavier"}, data_root=data)
    assert single["acc"] == l2["acc"] and single["nll"] == pytest.approx(l2["nll"], rel=1e-12)
    with pytest.raises(DWPError, match="ensemble_size"):
        cfg(0)


def test_l2_baseline_penalises_the_conv_kernels(tiny_priors):
    task = {"method": "l2-xavier", "examples": 10, "split": 0}

    def norm_after(l2):
        cfg = ClassificationConfig(dataset="mnist", examples=(10,), splits=(0,), epochs=40,
                                   hidden=(4, 8), methods=("l2-xavier",), l2=l2,
                                   lr=0.03)  # fmt: skip
        res = train_l2_net(cfg, task, data_root=tiny_priors["data"], return_model=True)
        model = res.pop("model")
        assert 0 <= res["acc"] <= 1 and res["nll"] > 0 and res["train_acc"] >= 0
        return sum(float(c.weight.detach().pow(2).sum()) for c in conv_layers(model).values())

    assert norm_after(1.0) < 0.5 * norm_after(0.0)


def test_summary_has_the_papers_numbers():
    assert paper_classification("mnist5k", "dwp", 50) == 0.800
    assert paper_classification("mnist", "normal", 1000) == 0.960
    assert paper_classification("fashion-mnist", "dwp", 50) is None
    rows = [{"method": "dwp", "examples": 50, "split": s, "acc": a, "nll": 1.0, "wall_s": 1.0}
            for s, a in enumerate((0.7, 0.8))]  # fmt: skip
    (s,) = summarise_classification(rows, "mnist5k")
    assert s["acc_mean"] == pytest.approx(0.75)
    assert s["acc_std"] == pytest.approx(statistics.stdev([0.7, 0.8]))
    assert s["paper"] == 0.8 and s["diff"] == pytest.approx(-0.05)
    # the paper's numbers are for its own networks: FConv on MNIST, CIFARNet on CIFAR-10
    assert paper_classification("mnist5k", "dwp", 50, "fconv") == 0.800
    assert paper_classification("mnist5k", "dwp", 50, "vgg") is None
    assert paper_classification("cifar10", "dwp", 50, "cifarnet") == 0.237
    assert paper_classification("cifar10", "dwp", 50, "fconv") is None
    (s,) = summarise_classification(rows, "mnist5k", "vgg")
    assert s["paper"] is None and s["diff"] is None


def test_classification_config_errors():
    with pytest.raises(DWPError, match="need --prior-dirs"):
        ClassificationConfig()
    with pytest.raises(DWPError, match="unknown methods"):
        ClassificationConfig(methods=("laplace",))
    with pytest.raises(DWPError, match="examples"):
        ClassificationConfig(methods=("normal",), examples=(0,))


def _features_args(tiny, out, *extra):
    return ["experiment", "features", "--out", str(out), "--dataset", "mnist", "--data-root",
            tiny["data"], "--prior-dirs", *tiny["priors"], "--base-hidden", "8", "16",
            "--scales", "0.5", "1", "--seeds", "0", "1", "--epochs", "2", "--device", "cpu",
            *extra]  # fmt: skip


def test_experiment_features(tiny_priors, tmp_path, capsys):
    out = tmp_path / "rfe"
    assert main(_features_args(tiny_priors, out)) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| init | k = 1/2 | k = 1 |")
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 2
    assert {r["hidden"] for r in rows} == {"4/8", "8/16"}
    summary = json.loads((out / "summary.json").read_text())
    for init, s in summary.items():
        assert s["label"] == ["1/2", "1"] and s["runs"] == [2, 2]
        accs = [float(r["test_acc"]) for r in rows if r["init"] == init and r["scale"] == "1"]
        assert s["mean"][1] == pytest.approx(statistics.fmean(accs), abs=1e-6)
        assert s["paper"] == [None, None]  # the paper's MNIST number is at k = 1/16
    assert (out / "features.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # resume: a lost run is recomputed identically, the others are read back
    lost = out / "runs" / "filters-k0.5-s1.json"
    first = json.loads(lost.read_text())
    lost.unlink()
    seen = []
    cfg = FeaturesConfig(dataset="mnist", base_hidden=(8, 16), scales=(0.5, 1), seeds=(0, 1),
                         epochs=2, prior_dirs=tuple(tiny_priors["priors"]))  # fmt: skip
    run_features(cfg, out, data_root=tiny_priors["data"], on_run=seen.append)
    assert [(r["init"], r["scale"], r["seed"]) for r in seen if not r["cached"]] == [
        ("filters", 0.5, 1)
    ]
    assert json.loads(lost.read_text())["test_acc"] == first["test_acc"]


def test_random_features_train_only_batchnorm_and_classifier(tiny_priors):
    from dwp.data import load_dataset
    from dwp.experiments.features import _train

    priors = {n: DeepWeightPrior.from_dir(d)
              for n, d in zip(("conv1", "conv2"), tiny_priors["priors"], strict=True)}  # fmt: skip
    model = frozen_features_model((4, 8), "dwp", 0, 1, 10, 28, priors=priors)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = load_dataset("mnist", tiny_priors["data"])
    cfg = FeaturesConfig(dataset="mnist", inits=("xavier",), epochs=2)
    res = _train(model, ds.train, ds.test, cfg, 0, "cpu")
    after = model.state_dict()
    for name in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"):
        torch.testing.assert_close(after[name], before[name])  # frozen at the init
    for name in ("bn1.weight", "bn2.bias", "fc.weight", "bn1.running_mean"):
        assert not torch.equal(after[name], before[name]), name
    trainable = 2 * (4 + 8) + 8 * 9 * 10 + 10
    assert res["trained_params"] == trainable
    # the kernels are the prior's samples for seed 0
    want = priors["conv1"].sample_kernels(4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(after["conv1.weight"], want.reshape(4, 1, 7, 7))


def test_scales_and_widths():
    assert scale_label(1 / 16) == "1/16" and scale_label(1.0) == "1" and scale_label(0.5) == "1/2"
    assert widths((256, 512), 1 / 16) == (16, 32)
    assert widths((4, 8), 1 / 16) == (1, 1)  # at least one channel
    with pytest.raises(DWPError, match="scales"):
        FeaturesConfig(inits=("xavier",), scales=(0,))


def test_local_executor_runs_every_item():
    assert dict(LocalExecutor(2).run(math.factorial, [5, 3, 4])) == {0: 120, 1: 6, 2: 24}
    (i, err), (j, ok) = LocalExecutor(1).run(math.factorial, [-1, 3])
    assert (i, j, ok) == (0, 1, 6) and isinstance(err, ValueError)  # a failure stops nothing
    (i, err), (j, ok) = sorted(LocalExecutor(2).run(math.factorial, [-1, 3]))
    assert (i, j, ok) == (0, 1, 6) and isinstance(err, ValueError)
    with pytest.raises(DWPError, match="--jobs"):
        LocalExecutor(0)


def test_reproduce_and_report(tiny_priors, tmp_path, capsys):
    out = tmp_path / "repro"
    args = ["reproduce", "--preset-file", str(tiny_preset(tmp_path)), "--out", str(out),
            "--data-root", tiny_priors["data"], "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[1/8] source" in printed and "[8/8] report" in printed
    report = (out / "report.md").read_text()
    for heading in ("## Stages", "## Kernel priors", "## Classification with limited data",
                    "## Convergence", "## Convergence of a VAE",
                    "## Random feature extraction"):  # fmt: skip
        assert heading in report
    # every figure the report shows exists and is a PNG
    figures = [line[line.index("](") + 2 : -1] for line in report.splitlines()
               if line.startswith("![")]  # fmt: skip
    assert len(figures) >= 5
    for rel in figures:
        assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    # the Bayesian nets use conv1's prior moved to median norm 1.35, ordinary nets the fitted one
    cls = json.loads((out / "classification" / "config.json").read_text())
    conv = json.loads((out / "convergence" / "config.json").read_text())
    assert [p.rsplit("/", 1)[1] for p in cls["prior_dirs"]] == ["conv1-rescaled", "conv2"]
    assert [p.rsplit("/", 1)[1] for p in conv["prior_dirs"]] == ["conv1", "conv2"]
    moved = json.loads((out / "priors" / "conv1-rescaled" / "prior.json").read_text())
    assert moved["kernel_stats"]["train"]["norm_quantiles"]["0.5"] == pytest.approx(1.35)
    # the VAE's latent size comes from the preset where it says (conv2), else the paper's (conv1)
    z = [json.loads((out / "priors" / c / "prior.json").read_text())["vae"]["z_dim"]
         for c in ("conv1", "conv2")]  # fmt: skip
    assert z == [2, 3]
    assert "x " in report.split("## Kernel priors")[1].split("\n\n")[1]  # the scale column
    # a custom preset is resumed from its copy in the output directory, not by name
    hint = f"dwp reproduce --preset-file {out / 'preset.json'} --out {out}"
    assert hint in report and "--preset tiny" not in report
    assert json.loads((out / "preset.json").read_text())["name"] == "tiny"
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["source", "kernels", "priors", "classification", "convergence",
                            "vae-convergence", "features"]  # fmt: skip
    assert all(s["done"] and s["seconds"] >= 0 for s in stages.values())
    # a re-run skips every finished stage and rebuilds the report
    assert main(args) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 7
    # the hint's command resumes the run
    assert main([*hint.split()[1:], "--data-root", tiny_priors["data"], "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 7
    # `dwp report` rebuilds it from the results alone
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text().count("## ") == report.count("## ")
    # another preset in the same directory is refused
    assert main(["reproduce", "--preset", "quick", "--out", str(out)]) == 2
    assert "holds a reproduction with another config" in capsys.readouterr().err


def test_reproduce_one_prior_for_every_3x3_conv(tiny_priors, tmp_path):
    """The modern preset's pipeline at toy sizes: VGG-style source nets, their 3x3 kernels
    merged into one set, one prior fitted to it and put on all four convs of every net."""
    preset = json.loads(tiny_preset(tmp_path).read_text())
    preset.update(
        name="tiny-vgg",
        source_args={"nets": 3, "hidden": [4, 8], "epochs": 1, "arch": "vgg"},
        kernel_args={"min_norm": 0.0, "merge": "all3x3"},
        prior_args={"all3x3": {"epochs": 1, "median_norm": 0.5}},
        classification_args={"examples": [10], "splits": [0], "epochs": 2, "hidden": [4, 8],
                             "arch": "vgg", "methods": ["dwp", "l2-dwp"]},
        convergence_args={"seeds": [0], "steps": 2, "eval_every": 1, "hidden": [4, 8],
                          "arch": "vgg", "inits": ["kaiming", "dwp", "filters"]},
        features_args={"base_hidden": [4, 8], "scales": [1], "seeds": [0], "epochs": 1,
                       "arch": "vgg"},
    )  # fmt: skip
    path = tmp_path / "vgg.json"
    path.write_text(json.dumps(preset))
    out = tmp_path / "repro"
    argv = ["reproduce", "--preset-file", str(path), "--out", str(out), "--data-root",
            tiny_priors["data"], "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in (out / "kernels").iterdir() if p.is_dir()) == ["all3x3"]
    assert sorted(p.name for p in (out / "priors").iterdir()) == ["all3x3", "all3x3-rescaled"]
    cls = json.loads((out / "classification" / "config.json").read_text())
    conv = json.loads((out / "convergence" / "config.json").read_text())
    assert [Path(p).name for p in cls["prior_dirs"]] == ["all3x3-rescaled"] * 4
    assert [Path(p).name for p in conv["prior_dirs"]] == ["all3x3"] * 4
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages["kernels"]) == {"all3x3", "done", "seconds"}
    assert "skipped" in stages["vae-convergence"]  # the VAE variant is FConv's
    priors = (out / "report.md").read_text().split("## Kernel priors")[1].split("\n## ")[0]
    row = next(line for line in priors.splitlines() if line.startswith("| all3x3 | 3x3 |"))
    assert row.rstrip(" |").rsplit("| x ", 1)[1]  # the Bayesian nets' move of the prior


def test_reproduce_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "source_dataset": "mnist", "target_dataset": "mnist",
                               "epochs": 3}))  # fmt: skip
    assert main(["reproduce", "--preset-file", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown preset fields ['epochs']" in capsys.readouterr().err
    assert main(["reproduce", "--kernels", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "lacks conv1/train.npy, conv2/train.npy" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no results to report" in capsys.readouterr().err
    # missing datasets are named before any stage starts
    assert main(["reproduce", "--preset", "paper", "--out", str(tmp_path / "paper")]) == 2
    assert "the preset needs mnist and notmnist, not found here" in capsys.readouterr().err
    assert not (tmp_path / "paper").exists()
    assert main(["reproduce", "--preset", "paper-cifar", "--out", str(tmp_path / "c")]) == 2
    assert "the preset needs cifar10 and cifar100, not found here" in capsys.readouterr().err


def test_builtin_presets_make_valid_stage_configs():
    from dwp.config import PRESETS, PresetName, stage_configs

    assert [p.value for p in PresetName] == list(PRESETS)
    for preset in PRESETS.values():
        configs = stage_configs(preset)
        assert set(configs["priors"]) == set(preset.prior_args)


@pytest.mark.parametrize(
    ("field", "args", "message"),
    [
        ("classification_args", {"epochss": 3}, "classification_args has an unknown key 'epochss'"),
        ("features_args", {"dataset": "mnist"}, "features_args sets 'dataset', which the preset"),
        ("convergence_args", {"steps": "many"}, "preset tiny: convergence_args: "),
        ("prior_args", {"conv1": {"epoch": 3}}, "prior_args.conv1 has an unknown key 'epoch'"),
        ("prior_args", {"conv9": {"epochs": 3}}, "prior_args names conv9, but the fconv net"),
        ("kernel_args", {"layers": ["conv1"]}, "kernel_args.layers must include every conv layer"),
        # merged layers take one prior, named by the merge: prior_args still names the layers
        (
            "kernel_args",
            {"merge": "all3x3"},
            "prior_args names conv1, conv2, but the fconv net "
            "of mnist merges its conv layers into the kernel set all3x3",
        ),
    ],
)
def test_a_preset_is_checked_whole_before_the_first_stage(
    tiny_priors, tmp_path, capsys, field, args, message
):
    preset = json.loads(tiny_preset(tmp_path).read_text())
    preset[field] = args
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(preset))
    out = tmp_path / "out"
    argv = ["reproduce", "--preset-file", str(path), "--out", str(out), "--data-root",
            tiny_priors["data"], "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # no stage ran


def test_a_preset_file_can_start_from_a_builtin_preset(tmp_path):
    from dwp.config import PRESETS, load_preset

    modern = PRESETS["modern"]
    path = tmp_path / "m500.json"
    path.write_text(json.dumps({
        "base": "modern", "name": "modern-500", "target_dataset": "mnist5k",
        "classification_args": {"examples": [500], "test_examples": None},
        "prior_args": {"all3x3": {"epochs": 5}},
    }))  # fmt: skip
    p = load_preset(path)
    assert (p.name, p.target_dataset, p.source_dataset) == ("modern-500", "mnist5k", "letters")
    assert "based on modern" in p.description
    # the *_args objects are merged key by key: what the file does not say is the base's
    assert list(p.classification_args["examples"]) == [500]
    assert "test_examples" not in p.classification_args  # null: the stage's default
    assert p.classification_args["methods"] == modern.classification_args["methods"]
    assert p.classification_args["splits"] == modern.classification_args["splits"]
    assert p.prior_args == {"all3x3": {**modern.prior_args["all3x3"], "epochs": 5}}
    assert p.convergence_args == modern.convergence_args and p.kernels == modern.kernels
    # the base is left as it was
    assert list(modern.classification_args["examples"]) == [50, 100]
    assert modern.prior_args["all3x3"]["epochs"] == 60

    # a top-level null is a value: no shipped kernels, so the source nets are trained
    path.write_text(json.dumps({"base": "modern", "kernels": None, "priors": None}))
    p = load_preset(path)
    assert p.name == "modern" and p.kernels is None and p.priors is None


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ({"base": "moden"}, "base 'moden' is not a built-in preset; one of ["),
        ({"base": "modern", "epochs": 3}, "unknown preset fields ['epochs']"),
        ({"base": "modern", "features_args": [1]}, "features_args must be an object"),
        (
            {"base": "modern", "classification_args": {"epochss": 3}},
            "classification_args has an unknown key 'epochss'",
        ),
        ([1, 2], "a preset is a JSON object"),
    ],
)
def test_preset_file_errors(tmp_path, preset, message):
    from dwp.config import load_preset

    path = tmp_path / "p.json"
    path.write_text(json.dumps(preset))
    with pytest.raises(DWPError) as err:
        load_preset(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_reproduce_writes_under_dwp_path_without_out(tiny_priors, tmp_path, monkeypatch):
    from dwp.cli.reproduce import default_out

    monkeypatch.delenv("DWP_PATH", raising=False)
    assert default_out() == Path("results/reproduce")
    monkeypatch.setenv("DWP_PATH", str(tmp_path / "runs"))
    assert default_out() == tmp_path / "runs" / "reproduce"
    preset = json.loads(tiny_preset(tmp_path).read_text())
    preset["source_args"]["nets"] = 1  # too few nets for a test part: the kernel stage fails
    path = tmp_path / "p.json"
    path.write_text(json.dumps(preset))
    argv = ["reproduce", "--preset-file", str(path), "--data-root", tiny_priors["data"],
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert (tmp_path / "runs" / "reproduce" / "config.json").is_file()


def test_shipped_kernel_sets_resolve_by_name(tmp_path):
    from dwp.kernels import load_kernel_file, resolve_kernel_sets, shipped_kernel_sets

    assert "letters-fconv" in shipped_kernel_sets()
    d = resolve_kernel_sets("letters-fconv")
    assert load_kernel_file(d / "conv1" / "train.npy", 7).shape[1:] == (1, 7, 7)
    assert load_kernel_file(d / "conv2" / "test.npy", 5).shape[1:] == (1, 5, 5)
    assert resolve_kernel_sets(tmp_path) == tmp_path.resolve()  # a path wins
    with pytest.raises(DWPError, match="shipped set \\(letters-fconv"):
        resolve_kernel_sets("no-such-set")


def test_reproduce_uses_the_shipped_priors_of_a_preset(tiny_priors, tmp_path, capsys):
    """The quick preset's priors stage: the shipped priors, checked against its settings and
    copied (not fitted), at toy experiment sizes; --refit-priors is another reproduction."""
    from dwp.config import PRESETS

    quick = PRESETS["quick"]
    preset = json.loads(tiny_preset(tmp_path).read_text())
    preset.update(name="tiny-shipped", source_dataset="letters", kernels=quick.kernels,
                  priors=quick.priors, prior_args=quick.prior_args)  # fmt: skip
    for key in ("source_args", "kernel_args"):
        preset.pop(key)
    path = tmp_path / "shipped.json"
    path.write_text(json.dumps(preset))
    out = tmp_path / "repro"
    args = ["reproduce", "--preset-file", str(path), "--out", str(out), "--data-root",
            tiny_priors["data"], "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    stages = json.loads((out / "stages.json").read_text())
    assert stages["priors"]["conv1"]["shipped"] == "letters-fconv/conv1"
    assert stages["priors"]["seconds"] < 5  # copied, not fitted (conv1 alone fits in 26 s)
    assert not (out / "priors" / "conv1" / "checkpoint.pt").exists()
    shipped = DeepWeightPrior.pretrained("letters-fconv/conv2")
    assert DeepWeightPrior.from_dir(out / "priors" / "conv2").sha256 == shipped.sha256
    assert "conv1 {shipped: letters-fconv/conv1" in (out / "report.md").read_text()  # stage table
    capsys.readouterr()
    assert main([*args, "--refit-priors"]) == 2
    assert "another config (shipped_priors: 'letters-fconv' there, None now)" in (
        capsys.readouterr().err
    )
