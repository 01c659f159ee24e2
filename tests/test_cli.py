"""Every command of the CLI, smoke-tested through its entry point with tiny inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image

from dwp.cli import app, main
from dwp.priors import load_kernel_sets

from conftest import make_idx_set, write_reference

# Each command path of the CLI, and the test that exercises it. A new command without an entry
# here fails test_every_command_is_smoke_tested.
SMOKE_TESTED = {
    ("data", "list"): "test_data_list",
    ("data", "preview"): "test_data_preview_mnist",
    ("data", "render-letters"): "test_data_render_letters_round_trips_through_the_notmnist_reader",
    ("source", "train"): "test_source_train",
    ("kernels", "extract"): "test_kernels_extract",
    ("kernels", "preview"): "test_kernels_preview",
    ("prior", "list"): "test_own_model.py::test_prior_list",
    ("prior", "train"): "test_prior_train",
    ("prior", "eval"): "test_prior_eval",
    ("prior", "sample"): "test_prior_sample",
    ("prior", "import"): "test_prior_import",
    ("prior", "rescale"): "test_prior_rescale",
    ("bnn", "train"): "test_bnn.py::test_bnn_train",
    ("bnn", "summary"): "test_bnn.py::test_bnn_summary",
    ("bnn", "eval"): "test_uncertainty.py::test_bnn_eval",
    ("experiment", "convergence"): "test_experiments.py::test_experiment_convergence",
    ("experiment", "classification"): "test_reproduce.py::test_experiment_classification",
    ("experiment", "features"): "test_reproduce.py::test_experiment_features",
    ("reproduce",): "test_reproduce.py::test_reproduce_and_report",
    ("report",): "test_reproduce.py::test_reproduce_and_report",
}


def _command_paths(cmd, prefix=()):
    if hasattr(cmd, "commands"):  # a group
        for name, sub in cmd.commands.items():
            yield from _command_paths(sub, (*prefix, name))
    else:
        yield prefix


def test_every_command_is_smoke_tested():
    paths = set(_command_paths(typer.main.get_command(app)))
    assert paths == set(SMOKE_TESTED)
    for test in SMOKE_TESTED.values():
        module, _, name = test.rpartition("::")
        if module:
            assert f"def {name}(" in (Path(__file__).parent / module).read_text()
        else:
            assert test in globals()


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("dwp ")


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    assert "data" in capsys.readouterr().out
    assert main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    assert "list" in out and "preview" in out


def test_data_list(tmp_path, capsys):
    make_idx_set(tmp_path / "MNIST" / "raw")
    assert main(["data", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("mnist "))
    assert "yes" in line and str(tmp_path / "MNIST" / "raw") in line
    cifar = next(ln for ln in out.splitlines() if ln.startswith("cifar10 "))
    assert "no" in cifar and "not found" in cifar


def test_data_preview_mnist(tmp_path, capsys):
    make_idx_set(tmp_path)
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "mnist", "--out", str(out), "--data-root", str(tmp_path),
                 "--per-class", "3"]) == 0  # fmt: skip
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 100
    assert "wrote" in capsys.readouterr().out


def test_data_render_letters_round_trips_through_the_notmnist_reader(tmp_path, capsys, monkeypatch):
    import matplotlib

    from dwp.data import find_fonts, load_dataset
    from dwp.data.letters import load_letters

    monkeypatch.setenv("DWP_CACHE_DIR", str(tmp_path / "cache"))
    fonts_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    out = tmp_path / "rendered"
    assert main(["data", "render-letters", "--out", str(out), "--train", "30", "--test", "20",
                 "--seed", "3", "--font-dir", str(fonts_dir)]) == 0  # fmt: skip
    assert "--dataset notmnist" in capsys.readouterr().out
    fonts = find_fonts([fonts_dir])
    expected = load_letters(30, 20, seed=3, fonts=fonts, cache=None)
    ds = load_dataset("notmnist", out)
    assert ds.classes == tuple("ABCDEFGHIJ")
    for part, images in (("train", ds.train), ("test", ds.test)):
        got = np.round(images.images.numpy() * 255).astype(np.uint8)
        np.testing.assert_array_equal(got, expected[f"{part}_images"])
        np.testing.assert_array_equal(images.labels.numpy(), expected[f"{part}_labels"])
    names = (out / "notMNIST" / "fonts.txt").read_text().splitlines()
    assert names == [f.name for f in fonts]
    assert not any(".tmp" in p.name for p in out.rglob("*"))
    # too few letters is a usage error, not a traceback
    assert main(["data", "render-letters", "--out", str(out), "--train", "3"]) == 2
    err = capsys.readouterr().err
    assert "greater than or equal to 10" in err and "Traceback" not in err


def test_missing_dataset_is_one_line_exit_2(tmp_path, capsys):
    code = main(["data", "preview", "mnist", "--out", str(tmp_path / "x.png"),
                 "--data-root", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: dataset 'mnist' not found") and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_corrupt_file_is_one_line_exit_2(tmp_path, capsys):
    make_idx_set(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04rubbish")
    code = main(["data", "preview", "mnist", "--out", str(tmp_path / "x.png"),
                 "--data-root", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "not an IDX file" in err and "Traceback" not in err


def test_bad_option_is_a_usage_error(capsys):
    assert main(["data", "preview", "mnist", "--out", "x.png", "--part", "valid"]) == 2
    assert "Invalid value" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    # the script installed beside this interpreter (binutils also ships a /usr/bin/dwp)
    exe = Path(sys.executable).parent / "dwp"
    assert exe.exists(), "install the package (pip install -e .) to get the dwp script"
    res = subprocess.run([exe, "data", "preview", "nope", "--out", str(tmp_path / "a.png")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2
    assert "unknown dataset 'nope'" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("args", [["data", "preview", "mnist5k", "--per-class", "2"]])
def test_preview_embedded_digits(tmp_path, args):
    out = tmp_path / "m.png"
    assert main([*args, "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 100


# ----------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Tiny source -> kernels -> prior run through the CLI, shared by the tests below."""
    root = tmp_path_factory.mktemp("pipe")
    make_idx_set(root / "data", n_train=60, n_test=20)
    paths = {"root": root, "source": root / "source", "kernels": root / "kernels",
             "prior": root / "prior7"}  # fmt: skip
    args = ["source", "train", "--dataset", "mnist", "--data-root", str(root / "data"),
            "--nets", "3", "--hidden", "4", "8", "--epochs", "1", "--batch-size", "32",
            "--out", str(paths["source"]), "--device", "cpu"]  # fmt: skip
    paths["source_args"] = args
    assert main(args) == 0
    assert main(["kernels", "extract", "--source", str(paths["source"]),
                 "--out", str(paths["kernels"]), "--min-norm", "0"]) == 0  # fmt: skip
    conv1 = str(paths["kernels"] / "conv1")
    assert main(["prior", "train", "--kernels", conv1, "--out", str(paths["prior"]),
                 "--epochs", "2", "--min-steps", "0", "--device", "cpu"]) == 0  # fmt: skip
    return paths


def test_source_train(pipeline, capsys):
    nets = sorted(pipeline["source"].glob("net-*.pt"))
    assert [p.name for p in nets] == ["net-000.pt", "net-001.pt", "net-002.pt"]
    ckpt = torch.load(nets[1], weights_only=True)
    assert ckpt["seed"] == 1 and 0 <= ckpt["metrics"]["test_acc"] <= 1
    assert ckpt["state_dict"]["conv1.weight"].shape == (4, 1, 7, 7)
    before = [p.stat().st_mtime_ns for p in nets]
    capsys.readouterr()
    assert main(pipeline["source_args"]) == 0  # a re-run skips the finished nets
    assert [p.stat().st_mtime_ns for p in nets] == before
    assert "3 nets in" in capsys.readouterr().out
    changed = [*pipeline["source_args"]]
    changed[changed.index("--epochs") + 1] = "2"
    assert main(changed) == 2
    assert "another config (differs in epochs)" in capsys.readouterr().err


def test_kernels_extract(pipeline):
    k = pipeline["kernels"]
    train, test = np.load(k / "conv1" / "train.npy"), np.load(k / "conv1" / "test.npy")
    # 3 nets: 2 train, 1 test; conv1 has 4 x 1 slices of 7x7 per net
    assert train.shape == (8, 1, 7, 7) and test.shape == (4, 1, 7, 7) and train.dtype == np.float32
    assert np.load(k / "conv2" / "train.npy").shape == (2 * 32, 1, 5, 5)
    stats = json.loads((k / "stats.json").read_text())
    assert stats["layers"]["conv1"]["train"] == {"before": 8, "after_pruning": 8, "written": 8}
    div = stats["layers"]["conv1"]["diversity"]
    assert div["train"]["n_kernels"] == 8 and 1 <= div["test"]["effective_rank"] <= 4
    # the test kernels are the last net's
    last = torch.load(pipeline["source"] / "net-002.pt", weights_only=True)
    np.testing.assert_array_equal(test, last["state_dict"]["conv1.weight"].numpy())


def test_kernels_extract_nothing_left(pipeline, tmp_path, capsys):
    code = main(["kernels", "extract", "--source", str(pipeline["source"]), "--out",
                 str(tmp_path / "k"), "--min-norm", "1000"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "have norm below --min-norm 1000" in err and err.count("\n") == 1


def test_kernels_extract_missing_source(tmp_path, capsys):
    assert (
        main(["kernels", "extract", "--source", str(tmp_path), "--out", str(tmp_path / "k")]) == 2
    )
    assert "no model files in it" in capsys.readouterr().err


def test_kernels_preview(pipeline, tmp_path):
    out = tmp_path / "k.png"
    assert main(["kernels", "preview", str(pipeline["kernels"]), "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 300


def test_prior_train(pipeline):
    meta = json.loads((pipeline["prior"] / "prior.json").read_text())
    train = np.load(pipeline["kernels"] / "conv1" / "train.npy").astype(np.float64)
    rms = np.sqrt((train**2).mean())
    assert meta["vae"] == {"kernel_size": 7, "z_dim": 2, "hidden": 32,
                           "scale": pytest.approx(rms, rel=1e-6)}  # fmt: skip
    assert meta["training"]["standardize"] is True
    assert meta["kernel_stats"]["train"]["count"] == 8
    assert "elbo_per_kernel" in meta["metrics"]["test"]
    lines = (pipeline["prior"] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    assert "test_elbo_per_kernel" in json.loads(lines[-1])


def test_prior_eval(pipeline, capsys):
    capsys.readouterr()
    test_file = pipeline["kernels"] / "conv1" / "test.npy"
    assert main(["prior", "eval", "--prior", str(pipeline["prior"]), "--kernels",
                 str(test_file), "--iw-samples", "20", "--device", "cpu"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert res["n_kernels"] == 4 and np.isfinite(res["elbo_per_kernel"])
    assert res["iw_log_likelihood_per_kernel"] > res["elbo_per_kernel"] - 5
    assert np.isfinite(res["zero_kernel_elbo"])
    div = res["diversity"]
    assert div["kernels"]["n_kernels"] == 4 and div["samples"]["n_kernels"] == 2048
    assert 1 <= div["samples"]["effective_rank"] <= 49
    assert div["draws"]["effective_rank"] != div["samples"]["effective_rank"]
    # the Gaussian reference: N(mean, cov) of the VAE's training kernels, exact log-densities
    from dwp.priors.gaussian import JITTER
    from dwp.priors.store import training_kernels

    fitted = torch.from_numpy(training_kernels(pipeline["prior"])).double().flatten(1)
    cov = torch.cov(fitted.T, correction=0)
    cov = cov + JITTER * cov.diagonal().mean() * torch.eye(49, dtype=torch.float64)
    normal = torch.distributions.MultivariateNormal(fitted.mean(0), cov)
    w = torch.from_numpy(np.load(test_file)).double().flatten(1)
    ref = res["gaussian_reference"]
    assert ref["log_lik_per_kernel"] == pytest.approx(float(normal.log_prob(w).mean()), rel=1e-5)
    zero = float(normal.log_prob(torch.zeros(49, dtype=torch.float64)))
    assert ref["zero_kernel_log_lik"] == pytest.approx(zero, rel=1e-5)
    # the small kernels: the kernels' 5% norm quantile, the draws below it
    small = res["small_kernels"]
    assert small["radius"] == pytest.approx(float(np.quantile(w.norm(dim=1).numpy(), 0.05)))
    assert 0 <= small["samples_below"] <= 1 and small["kernels_below"] == 0.25  # 1 of 4


def test_prior_eval_of_a_gaussian_prior(pipeline, tmp_path, capsys):
    out = tmp_path / "gauss"
    kernels = pipeline["kernels"] / "conv1"
    assert main(["prior", "train", "--family", "gaussian", "--kernels", str(kernels),
                 "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["prior", "eval", "--prior", str(out), "--kernels",
                 str(kernels / "test.npy")]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    from dwp.priors import GaussianKernelPrior

    prior = GaussianKernelPrior.from_dir(out)
    normal = torch.distributions.MultivariateNormal(prior.mean, prior.cov)
    w = torch.from_numpy(np.load(kernels / "test.npy")).double().flatten(1)
    assert res["family"] == "gaussian" and res["n_kernels"] == len(w)
    assert res["log_lik_per_kernel"] == pytest.approx(float(normal.log_prob(w).mean()), rel=1e-5)
    div = res["diversity"]
    assert div["samples"] == div["draws"]  # a Gaussian's samples are its draws


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 1, 5, 5), np.float32), "holds 5x5 kernels, expected 7x7"),
        (np.zeros((3, 7, 7), np.float32), "expected kernels of shape (N, 1, k, k)"),
        (np.zeros((3, 1, 7, 7), np.int64), "expected floating-point kernels"),
        (np.full((3, 1, 7, 7), np.nan, np.float32), "3 kernels contain NaN or inf"),
    ],
)
def test_prior_eval_bad_kernels(pipeline, tmp_path, capsys, array, message):
    path = tmp_path / "k.npy"
    np.save(path, array)
    code = main(["prior", "eval", "--prior", str(pipeline["prior"]), "--kernels", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_prior_eval_incomplete_prior(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "k.npy", np.zeros((2, 1, 7, 7), np.float32))
    code = main(["prior", "eval", "--prior", str(tmp_path / "p"), "--kernels",
                 str(tmp_path / "k.npy")])  # fmt: skip
    assert code == 2 and "incomplete: missing prior.json, weights.pt" in capsys.readouterr().err


def test_prior_sample(pipeline, tmp_path):
    out = tmp_path / "s.png"
    assert main(["prior", "sample", "--prior", str(pipeline["prior"]), "--out", str(out),
                 "--n", "16"]) == 0  # fmt: skip
    assert Image.open(out).size[0] > 300
    assert Image.open(tmp_path / "s_latent.png").size[0] > 300  # z = 2: the latent grid


def test_prior_import(tmp_path, capsys):
    write_reference(tmp_path / "ref", 7, 2, 32)
    assert main(["prior", "import", str(tmp_path / "ref"), "--out", str(tmp_path / "p")]) == 0
    assert "imported 7x7 prior" in capsys.readouterr().out
    np.save(tmp_path / "k.npy", np.random.default_rng(0).normal(size=(5, 1, 7, 7)) * 0.1)
    assert main(["prior", "eval", "--prior", str(tmp_path / "p"), "--kernels",
                 str(tmp_path / "k.npy"), "--iw-samples", "0"]) == 0  # fmt: skip


def test_prior_rescale(pipeline, tmp_path, capsys):
    out = tmp_path / "scaled"
    assert main(["prior", "rescale", str(pipeline["prior"]), "--out", str(out),
                 "--median-norm", "1.35"]) == 0  # fmt: skip
    assert "7x7 prior over its training kernels scaled by" in capsys.readouterr().out
    meta = json.loads((out / "prior.json").read_text())
    assert meta["kernel_stats"]["train"]["norm_quantiles"]["0.5"] == pytest.approx(1.35)
    assert main(["prior", "rescale", str(pipeline["prior"]), "--out", str(out)]) == 2
    assert "exactly one of --median-norm and --factor" in capsys.readouterr().err


def test_prior_train_options(pipeline, tmp_path):
    out = tmp_path / "paper"
    conv1 = str(pipeline["kernels"] / "conv1")
    assert main(["prior", "train", "--kernels", conv1, "--out", str(out), "--no-standardize",
                 "--epochs", "1", "--min-steps", "3"]) == 0  # fmt: skip
    meta = json.loads((out / "prior.json").read_text())
    assert meta["vae"]["scale"] == 1.0 and meta["training"]["min_steps"] == 3
    # 8 kernels, batch 128: one step per epoch, so 3 epochs for 3 steps
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    # --min-norm leaves small kernels out of training, its statistics, a rescale and filters
    train = np.load(pipeline["kernels"] / "conv1" / "train.npy")
    norms = np.linalg.norm(train.reshape(len(train), -1).astype(np.float64), axis=1)
    cut = float(np.sort(norms)[len(norms) // 2])
    kept = train[norms >= cut]
    assert main(["prior", "train", "--kernels", conv1, "--out", str(tmp_path / "big"),
                 "--epochs", "1", "--min-norm", str(cut)]) == 0  # fmt: skip
    meta = json.loads((tmp_path / "big" / "prior.json").read_text())
    assert meta["training"]["min_norm"] == cut and meta["kernel_stats"]["train"]["count"] == len(
        kept
    )
    median = float(np.median(np.linalg.norm(kept.reshape(len(kept), -1), axis=1)))
    assert meta["kernel_stats"]["train"]["norm_quantiles"]["0.5"] == pytest.approx(median)
    assert main(["prior", "rescale", str(tmp_path / "big"), "--out", str(tmp_path / "big2"),
                 "--median-norm", "2"]) == 0  # fmt: skip
    (filters,) = load_kernel_sets(["conv1"], prior_dirs=[str(tmp_path / "big2")]).values()
    np.testing.assert_allclose(filters, kept * np.float32(2 / median), rtol=1e-5)
    assert main(["prior", "train", "--kernels", conv1, "--out", str(tmp_path / "none"),
                 "--min-norm", str(norms.max() * 2)]) == 2  # fmt: skip
    assert not (tmp_path / "none").exists()


def test_cli_defaults_match_the_library():
    import dataclasses
    import inspect

    from dwp.cli.bnn import bnn_train
    from dwp.cli.experiment import (
        experiment_classification,
        experiment_convergence,
        experiment_features,
    )
    from dwp.cli.kernels import kernels_extract
    from dwp.cli.prior import prior_train
    from dwp.cli.source import source_train
    from dwp.config import (
        BNNConfig,
        ClassificationConfig,
        ConvergenceConfig,
        FeaturesConfig,
        KernelConfig,
        PriorTrainConfig,
        SourceConfig,
    )

    for command, config in ((source_train, SourceConfig), (kernels_extract, KernelConfig),
                            (prior_train, PriorTrainConfig), (bnn_train, BNNConfig),
                            (experiment_convergence, ConvergenceConfig),
                            (experiment_classification, ClassificationConfig),
                            (experiment_features, FeaturesConfig)):  # fmt: skip
        params = inspect.signature(command).parameters
        fields = {f.name: f.default for f in dataclasses.fields(config)}
        # None there (the CLI's "not given" for lists, or 0 for "all examples"), () / None here
        unset = {"prior_dirs", "kernel_dirs", "inits", "seeds", "methods", "splits", "scales",
                 "dwp_kernel_batch", "normal_std", "ood"}  # fmt: skip
        if command in (experiment_convergence, experiment_features, experiment_classification):
            unset.add("examples")
        shared = set(params) & set(fields) - unset
        assert len(shared) >= 4
        for name in shared:
            cli_default = params[name].default
            cli_default = tuple(cli_default) if isinstance(cli_default, list) else cli_default
            assert cli_default == fields[name], f"{command.__name__} --{name}"


def test_help_does_not_import_torch():
    code = ("import sys; from dwp.cli import main; code = main(['bnn', 'train', '--help']); "
            "assert code == 0 and 'torch' not in sys.modules, sorted(sys.modules)")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
