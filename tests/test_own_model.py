"""The prior as a product: shipped priors by name, any CNN in a few lines, fit / predict, saved
models that reference their priors, kernels from any model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import dwp
from dwp.cli import main
from dwp.data.shipped import SHIPPED_PRIORS, shipped_prior_sets, shipped_priors
from dwp.errors import DWPError
from dwp.nn import (
    BayesConv2d,
    BayesLinear,
    bayesianize,
    describe_bayes,
    kl_divergence,
    load_bayesian,
    save_bayesian,
    set_mode,
    set_prior,
)
from dwp.priors import DeepWeightPrior, KernelVAE, NormalPrior, default_vae_config

from conftest import make_idx_set


class Net(nn.Module):
    """Not FConv: 5x5, 3x3 (grouped) and 7x7 convs, batch norm, global pooling."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.BatchNorm2d(8), nn.ReLU())
        self.mid = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.wide = nn.Conv2d(8, 4, 7, padding=3)
        self.head = nn.Linear(4, classes)

    def forward(self, x):
        x = self.wide(torch.relu(self.mid(self.stem(x))))
        return self.head(x.amax((2, 3)))


def test_the_zoo_ships_the_quick_presets_priors():
    assert {"letters-fconv/conv1", "letters-fconv/conv2"} <= set(shipped_priors())
    assert "letters-fconv" in shipped_prior_sets()
    seven, five = (DeepWeightPrior.pretrained(f"letters-fconv/conv{i}") for i in (1, 2))
    assert (seven.kernel_size, five.kernel_size) == (7, 5)
    assert seven.source == "letters-fconv/conv1"  # recorded by name, valid on any install
    for name in shipped_priors():
        assert (SHIPPED_PRIORS / name / "README.md").is_file()
        assert "dwp prior train --kernels" in (SHIPPED_PRIORS / name / "README.md").read_text()
    with pytest.raises(DWPError, match="no shipped prior 'nope'; shipped: letters-fconv/conv1"):
        DeepWeightPrior.pretrained("nope")


@pytest.mark.parametrize("name", ["quick", "modern"])
def test_preset_settings_are_those_of_the_shipped_priors(name):
    """A preset copies the shipped priors only where it would fit the same ones."""
    from dwp.config import PRESETS, stage_configs
    from dwp.train.prior import prior_settings

    preset = PRESETS[name]
    for layer, (cfg, shape, _) in stage_configs(preset)["priors"].items():
        want = prior_settings(f"{preset.kernels}/{layer}", cfg, **shape)
        stored = json.loads((SHIPPED_PRIORS / preset.priors / layer / "config.json").read_text())
        assert stored == want, layer


def test_the_zoo_has_one_3x3_prior_for_every_3x3_conv(capsys):
    """letters-vgg: a VGGNet gets the same 3x3 prior on its four convs by the set's name, and
    `dwp prior eval` scores a shipped kernel layer (its held-out kernels) by name."""
    from dwp.nn import VGGNet

    model = VGGNet((4, 8))
    rows = {r["layer"]: r for r in bayesianize(model, "letters-vgg").rows()}
    assert set(rows) == {"conv1", "conv2", "conv3", "conv4"}
    assert all("letters-vgg/all3x3 (3x3" in r["prior"] for r in rows.values())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    argv = ["prior", "eval", "--prior", "letters-vgg/all3x3", "--kernels", "letters-vgg/all3x3",
            "--samples", "1", "--iw-samples", "0"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_kernels"] == 14337 and result["kernels"].endswith("all3x3/test.npy")
    # the draws are as varied as the kernels (the zoo's bar: 80% of their effective rank)
    ranks = result["diversity"]
    assert ranks["draws"]["effective_rank"] >= 0.8 * ranks["kernels"]["effective_rank"]


def test_copy_shipped_prior_refuses_other_settings(tmp_path):
    from dwp.reproduce import copy_shipped_prior

    stored = json.loads((SHIPPED_PRIORS / "letters-fconv/conv1/config.json").read_text())
    with pytest.raises(
        DWPError, match="fitted with epochs 300, the preset asks for 5; use --refit"
    ):
        copy_shipped_prior("letters-fconv/conv1", tmp_path / "p", {**stored, "epochs": 5})
    assert not (tmp_path / "p").exists()
    copy_shipped_prior("letters-fconv/conv1", tmp_path / "p", stored)
    assert (
        DeepWeightPrior.from_dir(tmp_path / "p").sha256
        == DeepWeightPrior.pretrained("letters-fconv/conv1").sha256
    )


@pytest.mark.slow
def test_a_shipped_prior_is_rebuilt_by_the_command_in_its_readme(tmp_path):
    """conv1 end to end (26 s on 2 cores): the README's command gives the same config and, on
    this CPU build, the same prior."""
    name = "letters-fconv/conv1"
    readme = (SHIPPED_PRIORS / name / "README.md").read_text()
    command = readme[readme.index("dwp prior train") :].split("\n\n")[0]
    argv = command.replace("\\\n", " ").split()[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "rebuilt")
    assert main(argv) == 0
    shipped, rebuilt = SHIPPED_PRIORS / name, tmp_path / "rebuilt"
    assert json.loads((rebuilt / "config.json").read_text()) == json.loads(
        (shipped / "config.json").read_text()
    )
    meta = [json.loads((d / "prior.json").read_text()) for d in (shipped, rebuilt)]
    assert meta[0]["vae"] == meta[1]["vae"]
    for part in ("train", "test"):  # deterministic here; a tolerance for other CPUs' rounding
        a, b = (m["metrics"][part]["elbo_per_kernel"] for m in meta)
        assert abs(a - b) < 0.5, part


def test_prior_list(capsys, tmp_path):
    assert main(["prior", "list", "--json", str(tmp_path / "cards.json")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| letters-fconv/conv1 "))
    assert "| 7x7 | 8 | letters-fconv/conv1 | 562 | 103.3 |" in row
    cards = json.loads((tmp_path / "cards.json").read_text())
    assert {c["name"] for c in cards} >= {"letters-fconv/conv1", "letters-fconv/conv2"}
    for c in cards:  # the density's peak at zero and the samples' variety, as documented
        assert c["zero_kernel_elbo"] > c["test_elbo"] and 1 < c["rank_samples"] < c["rank_kernels"]
    assert main(["prior", "list", str(tmp_path / "nope")]) == 2
    assert "nope not found: give a prior directory" in capsys.readouterr().err


def test_any_cnn_gets_shipped_priors_by_kernel_size_and_a_fallback():
    torch.manual_seed(0)
    model = Net()
    new = bayesianize(model, "letters-fconv")  # the whole recipe: one line
    assert set(new) == {"stem.0", "mid", "wide"}
    rows = {r["layer"]: r for r in describe_bayes(model)}
    assert "letters-fconv/conv2 (5x5" in rows["stem.0"]["prior"]
    assert "letters-fconv/conv1 (7x7" in rows["wide"]["prior"]
    assert rows["mid"]["prior"] == "normal N(0, 1^2)" and rows["mid"]["shape"].endswith("groups 2")
    assert rows["head"]["posterior"] == "deterministic"
    kl = kl_divergence(model)
    assert kl.ndim == 0 and torch.isfinite(kl)
    x = torch.rand(2, 1, 12, 12)
    assert model(x).shape == (2, 10)
    # Linear layers too, with a stated fallback for the 3x3 conv
    other = Net()
    bayesianize(other, ["letters-fconv/conv1"], fallback=NormalPrior(0.5), linear="normal")
    kinds = {r["layer"]: r for r in describe_bayes(other)}
    assert isinstance(other.head, BayesLinear) and kinds["mid"]["prior"] == "normal N(0, 0.5^2)"
    assert kinds["stem.0"]["prior"] == "normal N(0, 0.5^2)"  # no 5x5 prior given
    # fallback None leaves the convs no prior fits deterministic
    third = Net()
    assert set(bayesianize(third, "letters-fconv/conv1", fallback=None)) == {"wide"}
    assert type(third.mid) is nn.Conv2d


def test_bayesianize_errors_name_the_layer_and_list_the_valid_names():
    with pytest.raises(
        DWPError, match=r"no conv named 'mdi' in the model; its convs: stem\.0, mid, wide"
    ):
        bayesianize(Net(), "normal", layers=["mdi"])
    with pytest.raises(
        DWPError, match=r"priors given for unknown layers 'x'; the model's convs: stem"
    ):
        bayesianize(Net(), {"x": NormalPrior()})
    with pytest.raises(DWPError, match="is for 7x7 kernels, but mid has 3x3"):
        bayesianize(Net(), {"mid": "letters-fconv/conv1"})
    with pytest.raises(DWPError, match=r"letters-fconv/conv1 \(7x7, z 8\) fits none of the chosen"):
        bayesianize(nn.Sequential(nn.Conv2d(1, 2, 3)), "letters-fconv/conv1")
    with pytest.raises(DWPError, match="prior nope not found"):
        bayesianize(Net(), "nope")
    with pytest.raises(DWPError, match=r"a ReLU given as the prior of stem\.0 is not a prior"):
        bayesianize(Net(), nn.ReLU())
    model = Net()
    bayesianize(model, "normal")
    with pytest.raises(DWPError, match=r"stem\.0, mid, wide are Bayesian already.*set_prior"):
        bayesianize(model, "letters-fconv")


def test_set_prior_changes_the_priors_of_a_bayesian_model():
    model = Net()
    bayesianize(model, "normal")
    changed = set_prior(model, "letters-fconv")
    assert set(changed) == {"stem.0", "wide"}  # no 3x3 prior: mid keeps N(0, 1)
    assert isinstance(model.wide.prior, DeepWeightPrior) and model.mid.prior.std == 1.0
    with pytest.raises(DWPError, match="is for 5x5 kernels, but mid has 3x3"):
        set_prior(model, "letters-fconv/conv2", layers=["mid"])
    with pytest.raises(DWPError, match="no Bayesian layers"):
        set_prior(Net(), "normal")


def _two_layers_same_count():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 5), nn.Conv2d(16, 8, 5))  # 128 kernels each
    with torch.no_grad():
        model[1].weight.mul_(0.2)  # other kernels than the first layer's
    return model


def test_one_fast_mode_prior_for_two_layers_gives_each_its_own_cache():
    """The silent wrong KL: one DeepWeightPrior(kernel_batch=...) given for two layers with the
    same kernel count used to share one cache, so the second layer's KL was made of the first
    layer's kernels. The fast mode's first call fills the cache and equals the exact mode."""
    vae = DeepWeightPrior.pretrained("letters-fconv/conv2").vae  # a sharp density: stale
    fast_model, exact_model = _two_layers_same_count(), _two_layers_same_count()
    fast = DeepWeightPrior(vae, kernel_batch=16)
    bayesianize(fast_model, fast)
    bayesianize(exact_model, DeepWeightPrior(vae))
    assert fast_model[0].prior is not fast_model[1].prior
    assert fast_model[0].prior.vae is fast_model[1].prior.vae  # shared: frozen, never copied
    set_mode(fast_model, "mean")
    for model in (fast_model, exact_model):
        for i, layer in enumerate(model):  # the same draws per layer in both models
            layer.prior.generator = torch.Generator().manual_seed(i)
    with torch.no_grad():
        kl_exact = kl_divergence(exact_model).item()
    kl_fast = kl_divergence(fast_model).item()  # with gradients: the fast mode's path
    assert kl_fast == pytest.approx(kl_exact, rel=1e-5)  # shared: 17734 against 10302
    assert fast_model[1].prior.cache_value.numel() == 128


def test_model_eval_keeps_sampling_and_set_mode_gives_the_means():
    torch.manual_seed(0)
    model = Net()
    bayesianize(model, "normal", log_sigma2_init=-2.0)
    model.eval()  # batch norm's running statistics; the Bayesian layers still sample
    x = torch.rand(3, 1, 12, 12)
    assert not torch.equal(model(x), model(x))
    set_mode(model, "mean")  # the posterior means: a deterministic net
    assert torch.equal(model(x), model(x))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from dwp.data import load_dataset

    root = tmp_path_factory.mktemp("digits")
    make_idx_set(root / "data", n_train=40, n_test=30, size=12)
    return load_dataset("mnist", root / "data")


def test_fit_predict_save_and_load_a_users_model(digits, tmp_path):
    torch.manual_seed(0)
    model = Net()
    bayesianize(model, "letters-fconv")
    result = dwp.fit(model, digits.train, test=digits.test, epochs=3, eval_every=1,
                     ens_samples=3, init="dwp", out=tmp_path / "run")  # fmt: skip
    assert result["epochs"] == 3 and result["examples"] == 40 and 0 <= result["ens_acc"] <= 1
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    pred = dwp.predict(model, digits.test, samples=4, seed=0)
    assert pred.per_sample.shape == (4, 30, 10) and pred.probs.shape == (30, 10)
    torch.testing.assert_close(pred.probs.sum(1), torch.ones(30))
    assert set(pred.metrics) == {"acc", "nll", "brier", "ece", "adaptive_ece", "ece_bins",
                                 "sample_acc"}  # fmt: skip
    assert torch.equal(dwp.predict(model, digits.test, samples=4, seed=0).probs, pred.probs)
    # a saved model references its priors and holds no VAE weights
    path = save_bayesian(model, tmp_path / "model.pt")
    saved = torch.load(path, weights_only=True)
    assert not [k for k in saved["state_dict"] if ".prior.vae." in k or ".prior.cache_" in k]
    assert saved["layers"]["wide"]["prior"]["source"] == "letters-fconv/conv1"
    assert saved["layers"]["mid"]["prior"] == {"type": "normal", "std": 1.0}
    assert path.stat().st_size < 100_000  # the 5x5 prior's VAE alone is 2.3 MB
    back = load_bayesian(Net(), path)  # one call into a fresh instance of the user's class
    back.eval()
    model.eval()
    again = dwp.predict(back, digits.test, samples=4, seed=0)
    torch.testing.assert_close(again.probs, pred.probs)
    from_run = load_bayesian(Net(), tmp_path / "run")  # a run directory of fit, too
    torch.testing.assert_close(from_run.wide.weight, model.wide.weight)
    # the run directory is dwp bnn summary's
    assert main(["bnn", "summary", str(tmp_path / "run")]) == 0
    # a finished run is read back, not re-trained
    fresh = Net()
    bayesianize(fresh, "letters-fconv")
    assert dwp.fit(fresh, digits.train, test=digits.test, epochs=3, eval_every=1, ens_samples=3,
                   init="dwp", out=tmp_path / "run") == result  # fmt: skip
    torch.testing.assert_close(fresh.wide.weight, model.wide.weight)


def test_fit_resumes_a_killed_run_exactly(digits, tmp_path):
    def build():
        torch.manual_seed(0)
        m = Net()
        bayesianize(m, [DeepWeightPrior.pretrained("letters-fconv/conv1", kernel_batch=8)])
        return m

    kw = {"test": digits.test, "epochs": 4, "eval_every": 2, "ens_samples": 2}
    full = dwp.fit(build(), digits.train, out=tmp_path / "full", **kw)

    def die(record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dwp.fit(build(), digits.train, out=tmp_path / "part", on_epoch=die, **kw)
    part = dwp.fit(build(), digits.train, out=tmp_path / "part", **kw)
    drop = ("wall_s",)
    assert {k: v for k, v in part.items() if k not in drop} == {
        k: v for k, v in full.items() if k not in drop
    }
    assert "kl_exact" in full  # the fast mode's exact estimate is recorded


def test_fit_rejects_bad_input(digits):
    with pytest.raises(DWPError, match="no Bayesian layers"):
        dwp.fit(Net(), digits.train)
    model = Net()
    bayesianize(model)
    with pytest.raises(DWPError, match="train: 3 images and 2 labels"):
        dwp.fit(model, (torch.rand(3, 1, 12, 12), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(DWPError, match="the images contain NaN"):
        dwp.fit(model, (torch.full((2, 1, 12, 12), float("nan")), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(DWPError, match=r"invalid fit config: epochs = 0 out of range"):
        dwp.fit(model, digits.train, epochs=0)
    with pytest.raises(DWPError, match="unexpected keyword argument 'epoch'"):
        dwp.fit(model, digits.train, epoch=3)


def test_a_prior_that_changed_since_saving_is_refused(tmp_path):
    shutil.copytree(SHIPPED_PRIORS / "letters-fconv" / "conv1", tmp_path / "p7")
    model = nn.Sequential(nn.Conv2d(1, 2, 7))
    bayesianize(model, str(tmp_path / "p7"))
    save_bayesian(model, tmp_path / "m.pt")
    load_bayesian(nn.Sequential(nn.Conv2d(1, 2, 7)), tmp_path / "m.pt")  # unchanged: fine
    meta = json.loads((tmp_path / "p7" / "prior.json").read_text())
    meta["vae"]["scale"] *= 2  # another density over kernels
    (tmp_path / "p7" / "prior.json").write_text(json.dumps(meta))
    with pytest.raises(DWPError, match=r"p7 changed since the model was saved \(sha256"):
        load_bayesian(nn.Sequential(nn.Conv2d(1, 2, 7)), tmp_path / "m.pt")
    with pytest.raises(DWPError, match=r"has the Bayesian layers 0, which this Linear lacks"):
        load_bayesian(nn.Linear(2, 2), tmp_path / "m.pt")
    in_memory = nn.Sequential(nn.Conv2d(1, 2, 7))
    bayesianize(in_memory, DeepWeightPrior(KernelVAE(default_vae_config(7))))
    with pytest.raises(DWPError, match="in-memory VAE, which a saved model cannot reference"):
        save_bayesian(in_memory, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_bnn_train_model_option_takes_a_users_factory(tmp_path, capsys, digits):
    root = tmp_path / "data"
    make_idx_set(root, n_train=40, n_test=30)
    factory = tmp_path / "models.py"
    factory.write_text(
        "from torch import nn\n\n"
        "def small(in_channels, num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 4, 5, padding=2), nn.ReLU(),\n"
        "                         nn.Conv2d(4, 4, 3), nn.AdaptiveMaxPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(4, num_classes))\n"
    )
    out = tmp_path / "run"
    argv = ["bnn", "train", "--out", str(out), "--dataset", "mnist", "--data-root", str(root),
            "--examples", "20", "--epochs", "2", "--ens-samples", "2", "--device", "cpu",
            "--model", f"{factory}:small", "--prior", "dwp", "--init", "dwp"]  # fmt: skip
    assert main(argv) == 0
    out_text = capsys.readouterr().out
    assert "| 0 | conv 1->4 5x5 | gaussian | deep weight prior letters-fconv/conv2" in out_text
    assert "| 2 | conv 4->4 3x3 | gaussian | normal N(0, 1^2) |" in out_text
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == f"{factory.resolve()}:small"
    assert config["prior_dirs"] == ["letters-fconv"]
    from dwp.train.bnn import load_bnn, load_factory

    loaded, _ = load_bnn(out)
    assert isinstance(loaded[0], BayesConv2d)
    back = load_bayesian(load_factory(f"{factory}:small")(in_channels=1, num_classes=10), out)
    torch.testing.assert_close(back[0].weight, loaded[0].weight)
    other = [*argv[:2], "--out", str(tmp_path / "other"), *argv[4:-6]]
    assert main([*other, "--model", f"{factory}:nope"]) == 2
    assert "has no callable 'nope' (it defines small)" in capsys.readouterr().err
    assert main([*other, "--model", "nope"]) == 2
    assert "package.module:factory" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


# --- kernels from any model


def _save_state_dicts(folder: Path, n: int = 3) -> list[nn.Module]:
    folder.mkdir()
    nets = []
    for i in range(n):
        torch.manual_seed(i)
        net = Net()
        torch.save(net.state_dict(), folder / f"m{i}.pt")
        nets.append(net)
    return nets


def test_kernels_extract_reads_plain_state_dicts(tmp_path, capsys):
    nets = _save_state_dicts(tmp_path / "models")
    out = tmp_path / "k"
    argv = ["kernels", "extract", "--source", str(tmp_path / "models"), "--out", str(out),
            "--min-norm", "0"]  # fmt: skip
    assert main(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert list(stats["layers"]) == ["stem.0", "mid", "wide"]
    train = np.load(out / "mid" / "train.npy")
    assert train.shape == (2 * 8 * 4, 1, 3, 3)  # grouped conv: (out, in / groups) slices
    want = torch.cat([n.mid.weight.detach().reshape(-1, 1, 3, 3) for n in nets[:2]]).numpy()
    np.testing.assert_array_equal(train, want)
    np.testing.assert_array_equal(
        np.load(out / "wide" / "test.npy"), nets[2].wide.weight.detach().reshape(-1, 1, 7, 7)
    )
    # --kernel-size and glob patterns choose layers
    assert main([*argv[:-4], "--out", str(tmp_path / "k3"), "--kernel-size", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "k3").iterdir()) == ["mid", "stats.json"]
    assert main([*argv[:-4], "--out", str(tmp_path / "kg"), "--layers", "st*"]) == 0
    assert sorted(p.name for p in (tmp_path / "kg").iterdir()) == ["stats.json", "stem.0"]
    capsys.readouterr()
    assert main([*argv[:-4], "--out", str(tmp_path / "kx"), "--layers", "fc*"]) == 2
    assert "no conv layer 'fc*' in the first net; its conv layers: stem.0, mid, wide" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "kx").exists()


def test_kernels_extract_reads_saved_modules(tmp_path, capsys):
    torch.manual_seed(0)
    files = []
    for i in range(2):
        seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4))
        torch.save(seq, tmp_path / f"seq{i}.pt")  # a whole model of torch.nn layers
        files.append(str(tmp_path / f"seq{i}.pt"))
    out = tmp_path / "k"
    assert main(["kernels", "extract", "--source", *files[:1], "--source", files[1],
                 "--out", str(out), "--min-norm", "0"]) == 0  # fmt: skip
    assert np.load(out / "2" / "train.npy").shape == (4, 1, 3, 3)  # depthwise: 4 x 1 slices
    from dwp.kernels import KernelConfig, extract_kernels

    with pytest.raises(DWPError, match="need at least 2 source nets"):  # the Python form
        extract_kernels([nn.Conv2d(1, 1, 3)], tmp_path / "py", KernelConfig())


def test_kernels_extract_refuses_non_square_kernels_and_unknown_pickles(tmp_path, capsys):
    for i in range(2):
        torch.save({"a.weight": torch.randn(2, 2, 3, 5)}, tmp_path / f"ns{i}.pt")
    argv = ["kernels", "extract", "--source", str(tmp_path / "ns0.pt"), "--source",
            str(tmp_path / "ns1.pt"), "--out", str(tmp_path / "k")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "layer a of the first net has non-square 3x5 kernels" in err and "--kernel-size" in err
    (tmp_path / "pick").mkdir()
    for i in range(2):
        torch.save(Net(), tmp_path / "pick" / f"net{i}.pt")  # a class of this test module
    argv = ["kernels", "extract", "--source", str(tmp_path / "pick"), "--out", str(tmp_path / "k")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds a pickled test_own_model.Net, which dwp does not unpickle" in err
    assert "--trust-pickle" in err and "Traceback" not in err
    assert main([*argv, "--trust-pickle", "--min-norm", "0"]) == 0
    assert (tmp_path / "k" / "wide" / "train.npy").is_file()


def test_shipped_names_work_where_prior_directories_go(tmp_path, capsys):
    root = tmp_path / "data"
    make_idx_set(root, n_train=40, n_test=30)
    out = tmp_path / "run"
    argv = ["bnn", "train", "--out", str(out), "--dataset", "mnist", "--data-root", str(root),
            "--examples", "20", "--hidden", "4", "8", "--epochs", "2", "--ens-samples", "2",
            "--device", "cpu", "--prior", "dwp", "--init", "filters", "--prior-dirs",
            "letters-fconv/conv1", "letters-fconv/conv2"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["prior_dirs"] == ["letters-fconv/conv1", "letters-fconv/conv2"]  # portable
    assert "deep weight prior letters-fconv/conv1 (7x7" in capsys.readouterr().out
    assert main(["prior", "rescale", "letters-fconv/conv2", "--out", str(tmp_path / "r"),
                 "--median-norm", "0.17"]) == 0  # fmt: skip
    assert main(["prior", "eval", "--prior", "letters-fconv/conv1", "--kernels",
                 str(SHIPPED_PRIORS.parent / "kernels/letters-fconv/conv1/test.npy"),
                 "--iw-samples", "0", "--samples", "1"]) == 0  # fmt: skip
