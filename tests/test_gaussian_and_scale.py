"""The Gaussian kernel prior (closed forms against torch.distributions, storage, the CLI) and the
data-driven kernel scale (what the rule promises: unit-std pre-activations, independence of the
prior's own scale, runs that record and reuse the factors)."""

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import make_idx_set
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from dwp.errors import DWPError
from dwp.nn import BayesConv2d, FConv, bayesianize, load_bayesian, save_bayesian
from dwp.priors import (
    DeepWeightPrior,
    GaussianKernelPrior,
    KernelVAE,
    data_scales,
    default_vae_config,
    fit_gaussian,
    fit_gaussian_prior,
    load_kernel_prior,
    prior_from_spec,
)


def _random_gaussian(k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = k * k
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    return torch.randn(d, generator=g, dtype=torch.float64), cov


def _layer_with_posterior(out_c, in_c, k, seed=0):
    torch.manual_seed(seed)
    layer = BayesConv2d(in_c, out_c, k)
    with torch.no_grad():
        layer.weight.normal_()
        layer.log_sigma2.uniform_(-3, 0)
    return layer


def test_fit_gaussian_is_the_maximum_likelihood_estimate():
    x = np.random.default_rng(0).normal(size=(500, 1, 3, 3)).astype(np.float32)
    mean, cov = fit_gaussian(x)
    flat = x.reshape(500, 9).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), flat.mean(0), rtol=1e-10, atol=1e-12)
    ml = np.cov(flat, rowvar=False, bias=True)
    np.testing.assert_allclose(cov.numpy(), ml, atol=1e-5 * np.diag(ml).mean())
    with pytest.raises(DWPError, match="at least 2 kernels"):
        fit_gaussian(x[:1])
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DWPError, match="NaN"):
        fit_gaussian(bad)


def test_kl_and_log_prob_match_torch_distributions():
    mean, cov = _random_gaussian(3)
    prior = GaussianKernelPrior(mean, cov)
    layer = _layer_with_posterior(4, 2, 3)
    mu, var, _ = layer.posterior()
    p = MultivariateNormal(mean, covariance_matrix=cov)
    var_k = torch.diag_embed(var.detach().reshape(-1, 9).double())
    q = MultivariateNormal(mu.detach().reshape(-1, 9).double(), covariance_matrix=var_k)
    expected = kl_divergence(q, p).sum()
    torch.testing.assert_close(prior.kl(layer).double(), expected, rtol=1e-4, atol=1e-3)
    w = torch.randn(7, 1, 3, 3)
    torch.testing.assert_close(prior.log_prob(w).double(), p.log_prob(w.reshape(7, 9).double()),
                               rtol=1e-4, atol=1e-3)  # fmt: skip
    # the KL is differentiable in the posterior's parameters
    prior.kl(layer).backward()
    assert layer.weight.grad is not None and layer.log_sigma2.grad is not None


def test_samples_have_the_prior_moments_and_follow_the_generator():
    mean, cov = _random_gaussian(3, seed=1)
    prior = GaussianKernelPrior(mean, cov)
    s = prior.sample_kernels(40000, torch.Generator().manual_seed(0)).double().reshape(-1, 9)
    assert s.shape == (40000, 9)
    torch.testing.assert_close(s.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(s.T), cov, atol=0.05, rtol=0)
    a = prior.sample_kernels(5, torch.Generator().manual_seed(3))
    b = prior.sample_kernels(5, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_scaled_prior_is_the_density_of_scaled_kernels_and_keeps_the_kl():
    mean, cov = _random_gaussian(3, seed=2)
    prior = GaussianKernelPrior(mean, cov)
    c = 2.5
    moved = prior.scaled(c)
    w = torch.randn(6, 1, 3, 3)
    torch.testing.assert_close(moved.log_prob(c * w), prior.log_prob(w) - 9 * math.log(c),
                               rtol=1e-4, atol=1e-3)  # fmt: skip
    layer = _layer_with_posterior(3, 2, 3)
    big = _layer_with_posterior(3, 2, 3)
    with torch.no_grad():  # the same posterior over kernels scaled by c
        big.weight.mul_(c)
        big.log_sigma2.add_(2 * math.log(c))
    torch.testing.assert_close(moved.kl(big), prior.kl(layer), rtol=1e-4, atol=1e-2)
    assert moved.scale_factor == c and "scaled x2.5" in moved.describe()
    with pytest.raises(DWPError, match="positive and finite"):
        prior.scaled(0.0)


def test_deep_weight_prior_scaled_is_exact():
    torch.manual_seed(0)
    vae = KernelVAE(default_vae_config(5, z_dim=2, hidden=8))
    prior = DeepWeightPrior(vae)
    moved = prior.scaled(3.0)
    w = torch.randn(16, 1, 5, 5) * 0.1
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(moved.vae.elbo(3.0 * w, g2), vae.elbo(w, g1) - 25 * math.log(3.0),
                               rtol=1e-4, atol=1e-3)  # fmt: skip
    assert prior.vae.config.scale == 1.0  # the original is untouched
    assert moved.sha256 != prior.sha256 and moved.scale_factor == 3.0


def test_wrong_priors_are_one_line_errors():
    mean, cov = _random_gaussian(3)
    prior = GaussianKernelPrior(mean, cov)
    layer = BayesConv2d(2, 3, 5)
    with pytest.raises(DWPError, match="for 3x3 kernels, but layer has 5x5"):
        prior.kl(layer)
    with pytest.raises(DWPError, match="not positive definite"):
        GaussianKernelPrior(torch.zeros(9), -torch.eye(9))
    with pytest.raises(DWPError, match="k\\*k values"):
        GaussianKernelPrior(torch.zeros(8), torch.eye(8))
    with pytest.raises(DWPError, match="fits none of the chosen convs"):
        bayesianize(FConv((4, 8)), prior)


@pytest.fixture(scope="module")
def gaussian_dirs(tiny_priors, tmp_path_factory):
    root = tmp_path_factory.mktemp("gauss")
    out = []
    for layer in ("conv1", "conv2"):
        fit_gaussian_prior(tiny_priors["root"] / "kernels" / layer, root / layer)
        out.append(str(root / layer))
    return out


def test_gaussian_prior_directory_round_trip(gaussian_dirs, tiny_priors):
    prior = load_kernel_prior(gaussian_dirs[0])
    assert isinstance(prior, GaussianKernelPrior) and prior.kernel_size == 7
    kernels = np.load(tiny_priors["root"] / "kernels" / "conv1" / "train.npy")
    mean, cov = fit_gaussian(kernels)
    torch.testing.assert_close(prior.mean, mean)
    torch.testing.assert_close(prior.cov, cov)
    meta = json.loads((Path(gaussian_dirs[0]) / "prior.json").read_text())
    ll = float(prior.log_prob(torch.from_numpy(kernels)).double().mean())
    assert meta["format"] == "dwp-kernel-gaussian"
    assert meta["metrics"]["train"]["log_lik_per_kernel"] == pytest.approx(ll, rel=1e-5)
    # a kernel VAE's directory: the Gaussian fitted to the kernels that VAE was fitted to
    from_vae = GaussianKernelPrior.from_dir(tiny_priors["priors"][0])
    torch.testing.assert_close(from_vae.cov, prior.cov)
    assert "fitted to the kernels of" in from_vae.describe()
    assert isinstance(load_kernel_prior(tiny_priors["priors"][0]), DeepWeightPrior)
    # a saved model references the prior (and its scale) and rebuilds it
    rebuilt = prior_from_spec(prior.scaled(2.0).spec())
    torch.testing.assert_close(rebuilt.cov, prior.cov * 4, rtol=1e-5, atol=1e-6)
    inline = prior_from_spec(GaussianKernelPrior(prior.mean, prior.cov).spec())
    torch.testing.assert_close(inline.cov, prior.cov)


def test_refit_into_a_directory_of_another_prior_is_refused(gaussian_dirs, tiny_priors):
    with pytest.raises(DWPError):
        fit_gaussian_prior(tiny_priors["root"] / "kernels" / "conv2", gaussian_dirs[0])


def test_saved_model_under_gaussian_priors_loads(gaussian_dirs, tmp_path):
    model = FConv((4, 8))
    bayesianize(model, gaussian_dirs)
    x = torch.rand(5, 1, 28, 28)
    save_bayesian(model, tmp_path / "m.pt")
    again = FConv((4, 8))
    load_bayesian(again, tmp_path / "m.pt")
    from dwp.nn import set_mode

    set_mode(model, "mean")
    set_mode(again, "mean")
    torch.testing.assert_close(again(x), model(x))
    assert isinstance(again.conv1.prior, GaussianKernelPrior)


# --------------------------------------------------------------------------- the scale rule
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3)
        self.b = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        return self.b(nn.functional.leaky_relu(self.a(x), 0.01))


def test_data_scales_give_unit_preactivations_and_do_not_depend_on_the_prior_scale():
    torch.manual_seed(0)
    net = _Net()
    mean, cov = _random_gaussian(3, seed=4)
    priors = {"a": GaussianKernelPrior(mean, cov), "b": GaussianKernelPrior(mean * 0, cov * 0.01)}
    x = torch.rand(20, 1, 12, 12)
    before = {n: p.detach().clone() for n, p in net.state_dict().items()}
    scales = data_scales(net, priors, x, generator=torch.Generator().manual_seed(0))
    for n, p in net.state_dict().items():  # the model is not changed
        torch.testing.assert_close(p, before[n])
    g = torch.Generator().manual_seed(0)
    wa = priors["a"].sample_kernels(6, g).reshape(6, 1, 3, 3) * scales["a"]
    wb = priors["b"].sample_kernels(24, g).reshape(4, 6, 3, 3) * scales["b"]
    pre_a = nn.functional.conv2d(x, wa)
    assert float(pre_a.std()) == pytest.approx(1.0, rel=1e-4)
    h = nn.functional.leaky_relu(pre_a + net.a.bias[None, :, None, None], 0.01)
    pre_b = nn.functional.conv2d(h.detach(), wb, padding=1)
    assert float(pre_b.std()) == pytest.approx(1.0, rel=1e-4)
    # the gauge: a prior moved by c before the rule ends where the unmoved one does
    moved = {"a": priors["a"].scaled(4.0), "b": priors["b"].scaled(0.1)}
    again = data_scales(net, moved, x, generator=torch.Generator().manual_seed(0))
    assert again["a"] == pytest.approx(scales["a"] / 4.0, rel=1e-4)
    assert again["b"] == pytest.approx(scales["b"] / 0.1, rel=1e-4)


def test_data_scales_of_draws_size_the_draws():
    """``mean=False`` sizes a Deep Weight Prior's draws w ~ p(w | z) (the dwp-draw init), not
    its decoder means: a draw-sized prior's draws give unit-std pre-activations."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 6, 3)
    vae = KernelVAE(default_vae_config(3, z_dim=2, hidden=8))
    prior = DeepWeightPrior(vae)
    x = torch.rand(20, 1, 12, 12)
    for mean in (True, False):
        c = data_scales(conv, {"": prior}, x, generator=torch.Generator().manual_seed(0),
                        mean=mean)[""]  # fmt: skip
        w = prior.sample_kernels(6, torch.Generator().manual_seed(0), mean=mean) * c
        assert float(nn.functional.conv2d(x, w).std()) == pytest.approx(1.0, rel=1e-4)
        if mean:
            by_means = c
    assert c != pytest.approx(by_means, rel=1e-3)  # the noise makes the draws larger


def test_data_scales_refuse_what_they_cannot_move():
    net = _Net()
    mean, cov = _random_gaussian(5)
    with pytest.raises(DWPError, match="for 5x5 kernels, but a has 3x3"):
        data_scales(net, {"a": GaussianKernelPrior(mean, cov)}, torch.rand(2, 1, 12, 12))
    with pytest.raises(DWPError, match="no conv layers named zz"):
        data_scales(net, {"zz": GaussianKernelPrior(*_random_gaussian(3))}, torch.rand(2, 1, 9, 9))
    with pytest.raises(DWPError, match="std 0"):
        data_scales(net, {"a": GaussianKernelPrior(*_random_gaussian(3))}, torch.zeros(2, 1, 9, 9))


@pytest.mark.parametrize("prior", ["dwp", "gaussian"])
def test_bnn_run_records_its_prior_scales_and_reloads_with_them(tiny_priors, tmp_path, prior):
    from dwp.train.bnn import BNNConfig, load_bnn, train_bnn

    make_idx_set(tmp_path / "data", n_train=40, n_test=20)
    cfg = BNNConfig(dataset="mnist", examples=10, prior=prior, init="dwp", hidden=(4, 8),
                    prior_dirs=tuple(tiny_priors["priors"]), epochs=2, eval_every=1)  # fmt: skip
    res = train_bnn(cfg, tmp_path / "run", data_root=tmp_path / "data")
    scales = res["prior_scales"]
    assert set(scales) == {"conv1", "conv2"} and all(v > 0 for v in scales.values())
    model, _ = load_bnn(tmp_path / "run")
    assert model.conv1.prior.scale_factor == pytest.approx(scales["conv1"])
    none = BNNConfig(**{**cfg.to_dict(), "prior_scale": "none"})
    res_none = train_bnn(none, tmp_path / "run-none", data_root=tmp_path / "data")
    assert res_none["prior_scales"] == {}


def test_bayesianize_moves_learned_priors_to_the_data(gaussian_dirs):
    torch.manual_seed(0)
    model = FConv((4, 8))
    x = torch.rand(16, 1, 28, 28)
    layers = bayesianize(model, gaussian_dirs, scale_to=x,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    names = ("conv1", "conv2")
    priors = {n: GaussianKernelPrior.from_dir(d) for n, d in zip(names, gaussian_dirs, strict=True)}
    expected = data_scales(FConv((4, 8)), priors, x, generator=torch.Generator().manual_seed(0))
    for name in ("conv1", "conv2"):
        assert layers[name].prior.scale_factor == pytest.approx(expected[name])


def test_subsampled_dwp_estimate_is_unbiased(monkeypatch):
    torch.manual_seed(0)
    vae = KernelVAE(default_vae_config(3, z_dim=2, hidden=4))
    prior = DeepWeightPrior(vae, kernel_batch=4, estimator="subsample")
    prior.generator = torch.Generator().manual_seed(1)
    # a deterministic per-kernel value, so the estimator's only randomness is the subset
    monkeypatch.setattr(prior, "_kernel_elbo", lambda mu, var: -(mu**2).flatten(1).sum(1))
    layer = _layer_with_posterior(3, 4, 3)  # 12 kernels, 4 per step
    mu, var, _ = layer.posterior()
    exact = float(-(mu.detach() ** 2).sum())
    draws = [float(prior.expected_log_prior(mu, var)) for _ in range(3000)]
    assert statistics.fmean(draws) == pytest.approx(exact, rel=0.02)
    assert len(set(round(d, 4) for d in draws)) > 10  # a random subset each step
    with torch.no_grad():  # evaluation: every kernel, exactly
        assert float(prior.expected_log_prior(mu, var)) == pytest.approx(exact, rel=1e-5)
    assert "subsampled" in prior.describe() and prior.for_layer().estimator == "subsample"
    with pytest.raises(DWPError, match="cache or subsample"):
        DeepWeightPrior(vae, estimator="other")


def test_weight_mode_is_a_conv_with_one_weight_draw():
    from dwp.nn.bayes import Mode

    layer = _layer_with_posterior(5, 3, 3)
    layer.mode = Mode.weight
    x = torch.rand(4, 3, 8, 8)
    layer.generator = torch.Generator().manual_seed(0)
    out = layer(x)
    w = layer.sample_weight(torch.Generator().manual_seed(0))
    conv = nn.Conv2d(3, 5, 3)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(layer.bias)
    torch.testing.assert_close(out, conv(x))


def test_cli_fits_lists_and_trains_under_a_gaussian_prior(tiny_priors, tmp_path, capsys):
    from dwp.cli import main

    kernels = tiny_priors["root"] / "kernels"
    for layer in ("conv1", "conv2"):
        assert main(["prior", "train", "--family", "gaussian", "--kernels", str(kernels / layer),
                     "--out", str(tmp_path / layer)]) == 0  # fmt: skip
    assert "Gaussian prior 7x7" in capsys.readouterr().out
    assert main(["prior", "list", str(tmp_path / "conv1")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "conv1" in line
               and str(tmp_path) in line)  # fmt: skip
    assert "| Gaussian |" in row
    make_idx_set(tmp_path / "data", n_train=40, n_test=20)
    argv = ["bnn", "train", "--prior", "gaussian", "--init", "dwp", "--prior-dirs",
            str(tmp_path / "conv1"), str(tmp_path / "conv2"), "--dataset", "mnist", "--data-root",
            str(tmp_path / "data"), "--examples", "10", "--hidden", "4", "8", "--epochs", "2",
            "--device", "cpu", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Gaussian kernel prior" in out and "scaled x" in out


def test_a_run_from_before_the_scale_rule_is_read_back(tmp_path):
    from dwp.train.bnn import BNNConfig, train_bnn

    make_idx_set(tmp_path / "data", n_train=40, n_test=20)
    cfg = BNNConfig(dataset="mnist", examples=10, prior="normal", hidden=(4, 8), epochs=2)
    first = train_bnn(cfg, tmp_path / "run", data_root=tmp_path / "data")
    path = tmp_path / "run" / "config.json"
    old = json.loads(path.read_text())
    for key in ("prior_scale", "dwp_estimator"):  # what a config of an earlier release lacks
        del old[key]
    path.write_text(json.dumps(old))
    assert train_bnn(cfg, tmp_path / "run", data_root=tmp_path / "data") == first


def test_weight_sampling_trains_with_one_draw_per_batch(tmp_path):
    from dwp.nn.bayes import Mode
    from dwp.train.bnn import BNNConfig, load_bnn, train_bnn

    make_idx_set(tmp_path / "data", n_train=40, n_test=20)
    cfg = BNNConfig(dataset="mnist", examples=10, prior="normal", hidden=(4, 8), epochs=2,
                    sampling="weight")  # fmt: skip
    res = train_bnn(cfg, tmp_path / "run", data_root=tmp_path / "data")
    assert 0.0 <= res["ens_acc"] <= 1.0
    model, _ = load_bnn(tmp_path / "run")
    assert model.conv1.mode is Mode.weight and model.conv2.mode is Mode.weight
    with pytest.raises(DWPError, match="sampling: 'other' is not one of local, weight"):
        BNNConfig(sampling="other")
