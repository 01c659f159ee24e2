"""The convergence experiment: `dwp experiment convergence`, its inits, resume and outputs."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
import torch

from dwp.cli import main
from dwp.errors import DWPError
from dwp.experiments import ConvergenceConfig, run_convergence
from dwp.experiments.convergence import _build
from dwp.nn import conv_layers
from dwp.priors import DeepWeightPrior, load_kernel_sets


def _args(tiny, out, *extra, jobs=1):
    return ["experiment", "convergence", "--out", str(out), "--dataset", "mnist", "--data-root",
            tiny["data"], "--prior-dirs", *tiny["priors"], "--hidden", "4", "8", "--steps", "4",
            "--eval-every", "2", "--seeds", "0", "1", "--device", "cpu", "--jobs", str(jobs),
            *extra]  # fmt: skip


def test_experiment_convergence(tiny_priors, tmp_path, capsys):
    out = tmp_path / "conv"
    assert main(_args(tiny_priors, out)) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| init | final test acc | first step >= 0.8 |")
    names = {line.split(" | ")[0][2:] for line in printed.splitlines()}
    assert {"xavier", "dwp", "filters"} <= names
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 3  # inits x seeds x evaluations at steps 0, 2, 4
    assert sorted({int(r["step"]) for r in rows}) == [0, 2, 4]
    summary = json.loads((out / "summary.json").read_text())
    for init, s in summary.items():
        finals = [float(r["test_acc"]) for r in rows if r["init"] == init and r["step"] == "4"]
        assert s["final_mean"] == pytest.approx(statistics.fmean(finals), abs=1e-6)
        assert s["seeds"] == [0, 1] and s["step"] == [0, 2, 4]
    # a finished experiment is read back; a lost run is recomputed, identically
    first = json.loads((out / "runs" / "dwp-s1.json").read_text())
    (out / "runs" / "dwp-s1.json").unlink()
    cached = []
    cfg = ConvergenceConfig(dataset="mnist", hidden=(4, 8), steps=4, eval_every=2, seeds=(0, 1),
                            prior_dirs=tuple(tiny_priors["priors"]))  # fmt: skip
    run_convergence(cfg, out, data_root=tiny_priors["data"], on_run=cached.append)
    assert [(r["init"], r["seed"]) for r in cached if not r["cached"]] == [("dwp", 1)]
    again = json.loads((out / "runs" / "dwp-s1.json").read_text())
    assert again["test_acc"] == first["test_acc"] and again["train_loss"] == first["train_loss"]
    # the runs in two worker processes (one torch thread each): the same curves
    par = tmp_path / "parallel"
    assert main(_args(tiny_priors, par, jobs=2)) == 0
    for name in ("xavier-s0", "dwp-s1", "filters-s1"):
        a, b = (json.loads((d / "runs" / f"{name}.json").read_text()) for d in (out, par))
        assert a["step"] == b["step"]
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.02)
        assert a["train_loss"][0] is None and b["train_loss"][0] is None  # before any step
        assert a["train_loss"][1:] == pytest.approx(b["train_loss"][1:], rel=1e-3)
    # a corrupt run file is a one-line error
    (out / "runs" / "dwp-s1.json").write_text("{not json")
    assert main(_args(tiny_priors, out)) == 2
    assert "dwp-s1.json: unreadable JSON" in capsys.readouterr().err
    # another config in the same directory is refused
    assert main(_args(tiny_priors, out, "--lr", "0.01")) == 2
    assert "another config (lr" in capsys.readouterr().err


def test_inits_set_the_kernels(tiny_priors):
    cfg = ConvergenceConfig(hidden=(4, 8), prior_dirs=tuple(tiny_priors["priors"]))
    names = ["conv1", "conv2"]
    priors = {n: DeepWeightPrior.from_dir(d) for n, d in zip(names, cfg.prior_dirs, strict=True)}
    sets = load_kernel_sets(names, prior_dirs=cfg.prior_dirs)
    filters = conv_layers(_build(cfg, "filters", 0, 1, 10, 28, priors, sets, "cpu"))
    for n, conv in filters.items():
        bank = torch.as_tensor(sets[n]).flatten(1)
        kernels = conv.weight.detach().reshape(-1, bank.shape[1])
        dist = torch.cdist(kernels[None], bank[None], compute_mode="donot_use_mm_for_euclid_dist")[
            0
        ]
        assert float(dist.min(1).values.max()) < 1e-6  # every kernel is a source kernel
    dwp = conv_layers(_build(cfg, "dwp", 0, 1, 10, 28, priors, sets, "cpu"))
    gen = torch.Generator().manual_seed(0)
    want = priors["conv1"].sample_kernels(4, gen)
    torch.testing.assert_close(dwp["conv1"].weight.detach(), want.reshape(4, 1, 7, 7))
    xavier = conv_layers(_build(cfg, "xavier", 0, 1, 10, 28, priors, sets, "cpu"))
    assert not torch.equal(xavier["conv1"].weight, dwp["conv1"].weight)
    # same seed, same classifier init whatever the kernels
    a, b = (_build(cfg, i, 0, 1, 10, 28, priors, sets, "cpu") for i in ("xavier", "dwp"))
    torch.testing.assert_close(a.fc.weight, b.fc.weight)


def test_convergence_config_errors():
    with pytest.raises(DWPError, match="init dwp needs --prior-dirs"):
        ConvergenceConfig()
    with pytest.raises(DWPError, match="'laplace' is not a valid Init"):
        ConvergenceConfig(inits=("laplace",))
    with pytest.raises(DWPError, match="steps"):
        ConvergenceConfig(inits=("xavier",), steps=0)


def test_conv_vae_elbo_matches_its_terms():
    """The ELBO is E_q log p(x|z) - KL: with the noise fixed, it equals the Bernoulli
    log-likelihood from torch.distributions minus the KL of two Gaussians (closed form)."""
    from torch.distributions import Bernoulli, Normal, kl_divergence

    from dwp.nn import ConvVAE

    torch.manual_seed(0)
    vae = ConvVAE((4, 8), z_dim=3)
    x = torch.rand(5, 1, 28, 28).round()
    got = vae.elbo(x, torch.Generator().manual_seed(7))
    mu, logvar = vae.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
    z = mu + eps * (0.5 * logvar).exp()
    rec = Bernoulli(logits=vae.decode(z)).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(got, rec - kl)
    assert list(conv_layers(vae)) == ["conv1", "conv2"]  # the FConv kernels the priors fit


def test_vae_convergence(tiny_priors, tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(_args(tiny_priors, out, "--model", "vae", "--z-dim", "2")) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| init | final test ELBO | first step >= ")
    with open(out / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 3 and all(float(r["test_elbo"]) < 0 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    xavier_final = summary["xavier"]["final_mean"]
    (level,) = summary["xavier"]["first_step"]
    assert float(level) == pytest.approx(xavier_final, rel=1e-3)
    assert summary["xavier"]["first_step"][level] is not None  # xavier reaches its own final
    # the DWP init sets the VAE encoder's kernels as for the classifier
    cfg = ConvergenceConfig(hidden=(4, 8), prior_dirs=tuple(tiny_priors["priors"]), model="vae",
                            z_dim=2)  # fmt: skip
    priors = {n: DeepWeightPrior.from_dir(d)
              for n, d in zip(["conv1", "conv2"], cfg.prior_dirs, strict=True)}  # fmt: skip
    vae = _build(cfg, "dwp", 0, 1, 10, 28, priors, None, "cpu")
    want = priors["conv1"].sample_kernels(4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(vae.conv1.weight.detach(), want.reshape(4, 1, 7, 7))
    # the VAE takes 28x28 grey images only
    with pytest.raises(DWPError, match="28x28 grey images"):
        _build(cfg, "xavier", 0, 3, 10, 32, None, None, "cpu")
