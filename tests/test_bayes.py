"""Bayesian layers, weight priors, the DWP bound, initialisation and evaluation metrics."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import distributions as D
from torch import nn
from torch.nn import functional as F

from dwp.errors import DWPError
from dwp.eval import classification_metrics, expected_calibration_error, predict_proba
from dwp.nn import (
    BayesConv2d,
    BayesLinear,
    Init,
    LogUniformConv2d,
    LogUniformLinear,
    bayes_mode,
    bayesianize,
    init_conv_kernels,
    kl_divergence,
    set_mode,
    set_noise_generator,
)
from dwp.priors import (
    DeepWeightPrior,
    GaussianKernelPrior,
    KernelVAE,
    LogUniformPrior,
    NormalPrior,
    default_vae_config,
    kernel_summary,
    load_prior,
    rescale_prior,
    save_prior,
)

CONV_SETTINGS = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=2, out_channels=6, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)),
    dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1, dilation=2),
    dict(in_channels=3, out_channels=3, kernel_size=5, stride=2, bias=False),
    dict(in_channels=2, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("kwargs", CONV_SETTINGS)
@pytest.mark.parametrize("cls", [BayesConv2d, LogUniformConv2d])
def test_zero_variance_equals_conv2d(cls, kwargs):
    torch.manual_seed(0)
    ref = nn.Conv2d(**kwargs).double()
    layer = cls(**kwargs, dtype=torch.float64)
    layer.load_state_dict(ref.state_dict(), strict=False)
    if cls is BayesConv2d:
        nn.init.constant_(layer.log_sigma2, -200.0)  # variance -> 0
    else:
        nn.init.constant_(layer.alpha_logit, -200.0)
    x = torch.randn(2, kwargs["in_channels"], 12, 13, dtype=torch.float64)
    expected = ref(x)
    with bayes_mode(layer, "mean"):
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-7)  # sample mode
    assert isinstance(layer, nn.Conv2d)


def test_bayes_linear_zero_variance_equals_linear():
    torch.manual_seed(0)
    ref = nn.Linear(5, 3).double()
    for cls, name in ((BayesLinear, "log_sigma2"), (LogUniformLinear, "alpha_logit")):
        layer = cls(5, 3, dtype=torch.float64)
        layer.load_state_dict(ref.state_dict(), strict=False)
        nn.init.constant_(getattr(layer, name), -200.0)
        x = torch.randn(7, 5, dtype=torch.float64)
        torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=1e-7)


def test_local_reparameterization_matches_weight_sampling():
    """Pre-activations sampled by the layer have the moments of conv(x, W), W ~ q."""
    torch.manual_seed(0)
    layer = BayesConv2d(2, 3, 3, padding=1, dtype=torch.float64, log_sigma2_init=-1.0)
    with torch.no_grad():
        layer.log_sigma2.uniform_(-2.0, 0.0)
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    mu, var, _ = layer.posterior()
    # closed form of the local reparameterization
    mean = F.conv2d(x, mu, layer.bias, padding=1)
    variance = F.conv2d(x * x, var, None, padding=1)
    # Monte Carlo over sampled weights
    g = torch.Generator().manual_seed(1)
    n = 20000
    w = layer.sample_weight(g)
    sampled = torch.stack(
        [F.conv2d(x, layer.sample_weight(g), layer.bias, padding=1)[0] for _ in range(n)]
    )
    assert w.shape == mu.shape
    torch.testing.assert_close(sampled.mean(0), mean[0], atol=0.05, rtol=0)
    torch.testing.assert_close(sampled.var(0), variance[0], rtol=0.06, atol=0)
    # the layer's own samples
    set_noise_generator(layer, torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = torch.stack([layer(x)[0] for _ in range(n)])
    torch.testing.assert_close(out.mean(0), mean[0], atol=0.05, rtol=0)
    torch.testing.assert_close(out.var(0), variance[0], rtol=0.06, atol=0)


def test_noise_generator_pins_samples():
    layer = BayesConv2d(1, 2, 3, log_sigma2_init=-1.0)
    x = torch.rand(2, 1, 6, 6)
    outs = []
    for _ in range(2):
        set_noise_generator(layer, torch.Generator().manual_seed(5))
        outs.append(layer(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert not torch.equal(layer(x), outs[0])


def test_normal_prior_kl_matches_torch_distributions():
    torch.manual_seed(0)
    layer = BayesConv2d(3, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        layer.log_sigma2.uniform_(-6, 1)
    for std in (1.0, 0.3):
        prior = NormalPrior(std)
        mu, var, _ = layer.posterior()
        expected = D.kl_divergence(D.Normal(mu, var.sqrt()), D.Normal(0.0, std)).sum()
        torch.testing.assert_close(prior.kl(layer), expected)
    # the log-uniform layer's posterior N(mu, alpha mu^2) under the normal prior
    lu = LogUniformConv2d(3, 4, 3, dtype=torch.float64)
    mu, var, log_var = lu.posterior()
    torch.testing.assert_close(var, torch.sigmoid(torch.tensor(-2.0)).item() * mu**2)
    torch.testing.assert_close(log_var, var.log())
    expected = D.kl_divergence(D.Normal(mu, var.sqrt()), D.Normal(0.0, 1.0)).sum()
    torch.testing.assert_close(NormalPrior().kl(lu), expected)


def test_log_uniform_kl_formula():
    a = torch.tensor([-6.0, -2.0, 0.0, 3.0], dtype=torch.float64)
    layer = LogUniformLinear(4, 1, dtype=torch.float64)
    with torch.no_grad():
        layer.alpha_logit.copy_(a[None])
    alpha = torch.sigmoid(a)
    c1, c2, c3 = 1.16145124, -1.50204118, 0.58629921
    expected = (-0.5 * alpha.log() - c1 * alpha - c2 * alpha**2 - c3 * alpha**3).sum()
    torch.testing.assert_close(LogUniformPrior().kl(layer), expected)
    # the library's KL falls as alpha grows towards 1 (more noise is cheaper under this prior)
    vals = []
    for x in (0.01, 0.1, 0.5):
        one = LogUniformLinear(1, 1, dtype=torch.float64)
        with torch.no_grad():
            one.alpha_logit.fill_(math.log(x / (1 - x)))
        vals.append(float(LogUniformPrior().kl(one).detach()))
    assert vals == sorted(vals, reverse=True)
    with pytest.raises(DWPError, match="log-uniform posterior"):
        LogUniformPrior().kl(BayesConv2d(1, 1, 3))


def test_entropy_matches_torch_distributions():
    layer = BayesConv2d(2, 2, 3, dtype=torch.float64, log_sigma2_init=-3.0)
    mu, var, _ = layer.posterior()
    torch.testing.assert_close(layer.entropy(), D.Normal(mu, var.sqrt()).entropy().sum())


class LinearGaussianVAE(nn.Module):
    """p(z) = N(0, I), p(w | z) = N(A z + b, diag(d)) over k x k kernels: p(w) = N(b, AA^T + D).
    The encoder is the exact posterior p(z | w), optionally with its mean shifted."""

    def __init__(self, k=3, z=2, shift=0.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = k * k
        self.kernel_size, self.z_dim = k, z
        self.A = torch.randn(n, z, generator=g, dtype=torch.float64) * 0.5
        self.b = torch.randn(n, generator=g, dtype=torch.float64) * 0.1
        self.d = torch.rand(n, generator=g, dtype=torch.float64) * 0.2 + 0.05
        prec = torch.eye(z, dtype=torch.float64) + self.A.T @ (self.A / self.d[:, None])
        self.post_cov = torch.linalg.inv(prec)
        self.shift = shift
        self.encoder = nn.Linear(1, 1)  # stand-ins, so the prior can freeze "parameters"
        self.decoder = nn.Linear(1, 1)

    def encode(self, w):
        r = w.flatten(1) - self.b  # (N, n)
        mu = (r / self.d) @ self.A @ self.post_cov + self.shift
        var = torch.diagonal(self.post_cov).expand_as(mu)  # diagonal r: exact when z = 1
        return mu[:, :, None, None], var[:, :, None, None].clone()

    def decode(self, z):
        z = z.flatten(1)
        k = self.kernel_size
        mu = (z @ self.A.T + self.b).reshape(-1, 1, k, k)
        return mu, self.d.reshape(1, 1, k, k).expand_as(mu)

    def marginal(self):
        return D.MultivariateNormal(self.b, self.A @ self.A.T + torch.diag(self.d))


@torch.no_grad()
def _exact_kl(layer, vae):
    mu, var, _ = layer.posterior()
    q = D.MultivariateNormal(mu.reshape(-1, 9), torch.diag_embed(var.reshape(-1, 9)))
    return D.kl_divergence(q, vae.marginal()).sum()


def _dwp_layer(z_dim):
    torch.manual_seed(3)
    layer = BayesConv2d(2, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.normal_(0, 0.3)
        layer.log_sigma2.uniform_(-4, -2)
    return layer


def test_dwp_bound_is_exact_for_the_exact_posterior():
    """With a 1-D latent the diagonal r is the exact posterior: the bound's expectation is the
    exact KL(q || p)."""
    vae = LinearGaussianVAE(z=1)
    layer = _dwp_layer(1)
    exact = _exact_kl(layer, vae)
    prior = DeepWeightPrior(vae, samples=4000)
    prior.generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        est = prior.kl(layer)
    assert abs(float(est - exact)) < 0.01 * abs(float(exact)) + 0.5


def test_dwp_bound_is_an_upper_bound_on_kl():
    """A mis-specified encoder (shifted mean, or a diagonal r for a 2-D latent) makes the
    estimate larger than the exact KL, in expectation."""
    for vae in (LinearGaussianVAE(z=1, shift=0.7), LinearGaussianVAE(z=2, shift=0.3)):
        layer = _dwp_layer(vae.z_dim)
        exact = float(_exact_kl(layer, vae))
        prior = DeepWeightPrior(vae, samples=4000)
        prior.generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            est = float(prior.kl(layer))
        assert est > exact + 0.5


def test_dwp_kl_is_a_differentiable_tensor_and_refuses_other_kernel_sizes():
    vae = KernelVAE(default_vae_config(7))
    prior = DeepWeightPrior(vae)
    layer = BayesConv2d(1, 4, 7)
    bayesianize_model = nn.Sequential(nn.Conv2d(1, 4, 7), nn.Conv2d(4, 2, 5))
    kl = prior.kl(layer)
    assert kl.ndim == 0 and kl.requires_grad
    kl.backward()
    assert layer.weight.grad is not None and layer.log_sigma2.grad is not None
    assert all(p.grad is None for p in vae.parameters())  # frozen
    with pytest.raises(DWPError, match="7x7 kernels, but 1 has 5x5"):  # named: must fit
        bayesianize(bayesianize_model, prior, layers=["0", "1"])
    with pytest.raises(DWPError, match=r"fits none of the chosen convs: 1 \(conv 4->2 5x5\)"):
        bayesianize(bayesianize_model, prior, layers=lambda n, m: n == "1", fallback=None)
    with pytest.raises(DWPError, match="7x7"):
        prior.kl(BayesConv2d(1, 1, (7, 5)))


def _cached_prior(batch, seed=0, samples=1):
    prior = DeepWeightPrior(LinearGaussianVAE(z=1), samples=samples, kernel_batch=batch)
    prior.generator = torch.Generator().manual_seed(seed)
    return prior


def _kl_and_grads(prior, layer):
    layer.zero_grad(set_to_none=True)
    kl = prior.kl(layer)
    kl.backward()
    return kl.detach(), layer.weight.grad.clone(), layer.log_sigma2.grad.clone()


def test_dwp_kernel_batch_first_call_is_the_exact_mode():
    layer = _dwp_layer(1)  # 6 kernels
    exact = DeepWeightPrior(LinearGaussianVAE(z=1))
    exact.generator = torch.Generator().manual_seed(0)
    for a, b in zip(_kl_and_grads(exact, layer), _kl_and_grads(_cached_prior(2), layer),
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)


def test_dwp_kernel_batch_refreshes_every_kernel_once_per_cycle():
    """Each call recomputes one block of ``batch`` kernels; within ceil(M/B) calls every kernel
    is recomputed once; the others follow their second-order model around the point they were
    last computed at, whose curvature is the decoder's precision."""
    vae = LinearGaussianVAE(z=1)
    layer, prior = _dwp_layer(1), _cached_prior(2)
    _kl_and_grads(prior, layer)
    v0, g0, mu0 = prior.cache_value.clone(), prior.cache_grad_mu.clone(), prior.cache_mu.clone()
    torch.testing.assert_close(
        prior.cache_precision, (1 / vae.d).reshape(1, 1, 3, 3).expand(6, 1, 3, 3)
    )
    with torch.no_grad():
        layer.weight.mul_(3.0)  # every cached entry is now stale
    for call in range(1, 4):
        kl, g_mu, _ = _kl_and_grads(prior, layer)
        refreshed = prior.cache_value != v0
        assert refreshed.sum().item() == 2 * call
        mu = layer.weight.detach().reshape(-1, 1, 3, 3)
        stale = ~refreshed
        want = g0 - (mu - mu0) * prior.cache_precision  # the model's gradient (of +E log p)
        torch.testing.assert_close(-g_mu.reshape_as(mu)[stale], want[stale])
    assert int(prior.cache_pos) == 0  # a new permutation starts the next cycle
    # after a full cycle every kernel is fresh: the value is the cached estimates' sum
    log_var = layer.posterior()[2].detach()
    entropy_part = -0.5 * (log_var + math.log(2 * math.pi) + 1.0).sum()
    torch.testing.assert_close(kl, entropy_part - prior.cache_value.sum())


def test_dwp_kernel_batch_gradient_matches_the_exact_mode_on_average():
    """With the means fixed, each cached entry is a fresh draw at the same point, so the
    cached gradient averages to the exact mode's."""
    layer = _dwp_layer(1)
    exact = DeepWeightPrior(LinearGaussianVAE(z=1), samples=64)
    cached = _cached_prior(2, seed=1, samples=64)
    exact.generator = torch.Generator().manual_seed(2)
    n = 150
    g_exact = sum(_kl_and_grads(exact, layer)[1] for _ in range(n)) / n
    g_cached = sum(_kl_and_grads(cached, layer)[1] for _ in range(n)) / n
    torch.testing.assert_close(g_cached, g_exact, atol=0.05 * g_exact.abs().max().item(), rtol=0)


def test_dwp_kernel_batch_cache_survives_a_state_dict_round_trip():
    layer, prior = _dwp_layer(1), _cached_prior(4)
    for _ in range(2):
        _kl_and_grads(prior, layer)
    fresh = DeepWeightPrior(prior.vae, kernel_batch=4)  # the same prior, a new instance
    fresh.generator = torch.Generator()
    fresh.load_state_dict(prior.state_dict())
    fresh.generator.set_state(prior.generator.get_state())
    for a, b in zip(_kl_and_grads(prior, layer), _kl_and_grads(fresh, layer), strict=True):
        torch.testing.assert_close(a, b)


def test_dwp_kernel_batch_errors():
    with pytest.raises(DWPError, match="frozen encoder"):
        DeepWeightPrior(LinearGaussianVAE(), kernel_batch=4, train_encoder=True)
    with pytest.raises(DWPError, match="kernel_batch must be"):
        DeepWeightPrior(LinearGaussianVAE(), kernel_batch=0)
    prior = _cached_prior(2)
    _kl_and_grads(prior, _dwp_layer(1))
    with pytest.raises(DWPError, match="one DeepWeightPrior per layer"):
        prior.kl(BayesConv2d(2, 2, 3, dtype=torch.float64))


def test_dwp_encoder_training_option():
    vae = KernelVAE(default_vae_config(5))
    frozen = DeepWeightPrior(vae)
    assert not any(p.requires_grad for p in frozen.parameters())
    joint = DeepWeightPrior(KernelVAE(default_vae_config(5)), train_encoder=True)
    assert all(p.requires_grad for p in joint.vae.encoder.parameters())
    assert not any(p.requires_grad for p in joint.vae.decoder.parameters())


def test_dwp_samples_reduce_variance():
    vae = KernelVAE(default_vae_config(5))
    layer = BayesConv2d(2, 3, 5)

    def spread(samples):
        prior = DeepWeightPrior(vae, samples=samples)
        prior.generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return torch.stack([prior.kl(layer) for _ in range(30)]).std()

    assert spread(8) < spread(1)


def test_prior_state_dict_holds_a_reference_not_the_vae():
    vae = KernelVAE(default_vae_config(7))
    prior = DeepWeightPrior(vae)
    state = prior.state_dict()
    assert not [k for k in state if k.startswith("vae.")]  # the frozen VAE is not saved
    assert state["_extra_state"]["sha256"] == prior.sha256
    with pytest.raises(DWPError, match="the prior changed since the model was saved"):
        DeepWeightPrior(KernelVAE(default_vae_config(7))).load_state_dict(state)
    other = DeepWeightPrior(vae)
    other.load_state_dict(state)
    layer = BayesConv2d(1, 3, 7)
    for p in (prior, other):
        p.generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(prior.kl(layer), other.kl(layer))
    # .to() moves the VAE with the prior: a float64 copy scores a float64 layer the same
    wide = DeepWeightPrior(copy.deepcopy(vae)).to(torch.float64)
    wide.load_state_dict(prior.state_dict())  # the same prior at another precision
    assert all(p.dtype == torch.float64 for p in wide.parameters())
    layer64 = BayesConv2d(1, 3, 7, dtype=torch.float64)
    with torch.no_grad():
        for p64, p32 in zip(layer64.parameters(), layer.parameters(), strict=True):
            p64.copy_(p32)
    for p in (prior, wide):
        p.generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(wide.kl(layer64).float(), prior.kl(layer), rtol=1e-4, atol=1e-3)


def test_dwp_from_dir(tmp_path):
    vae = KernelVAE(default_vae_config(5))
    save_prior(vae, tmp_path / "p")
    prior = DeepWeightPrior.from_dir(tmp_path / "p", samples=2)
    assert prior.kernel_size == 5 and prior.samples == 2
    with pytest.raises(DWPError, match=r"5x5 kernels, but conv has 7x7"):
        prior.check_layer(BayesConv2d(1, 1, 7), "conv")


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(4, 4, 3, groups=2, stride=2))  # fmt: skip
        self.head = nn.Conv2d(4, 2, 3)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.head(self.body(x)).mean((2, 3)))


def test_bayesianize_keeps_weights_and_behaviour():
    torch.manual_seed(0)
    model = Small()
    x = torch.rand(3, 1, 9, 9)
    before = model(x)
    weights = {n: p.clone() for n, p in model.state_dict().items()}
    new = bayesianize(model, NormalPrior(), log_sigma2_init=-30.0)
    assert set(new) == {"body.0", "body.2", "head"}
    assert isinstance(model.body[2], BayesConv2d) and model.body[2].groups == 2
    assert model.body[2].stride == (2, 2)
    for n, w in weights.items():
        torch.testing.assert_close(model.state_dict()[n], w)
    set_mode(model, "mean")
    torch.testing.assert_close(model(x), before)
    set_mode(model, "sample")
    torch.testing.assert_close(model(x), before, atol=1e-4, rtol=0)
    kl = kl_divergence(model)
    assert kl.ndim == 0 and kl > 0
    with pytest.raises(
        DWPError, match=r"Bayesian already: change their priors with dwp\.nn\.set_prior"
    ):
        bayesianize(model, NormalPrior())  # never a silent no-op


def test_bayesianize_chooses_layers_and_priors():
    model = Small()
    new = bayesianize(model, {"head": LogUniformPrior()}, layers=["head"])
    assert isinstance(new["head"], LogUniformConv2d)
    assert type(model.body[0]) is nn.Conv2d
    model = Small()
    bayesianize(model, lambda name, conv: NormalPrior(2.0), layers=lambda n, m: m.groups == 2)
    assert isinstance(model.body[2], BayesConv2d) and model.body[2].prior.std == 2.0
    with pytest.raises(
        DWPError, match=r"no conv named 'nope' in the model; its convs: body\.0, body\.2, head"
    ):
        bayesianize(Small(), NormalPrior(), layers=["nope"])


def test_init_conv_kernels():
    g = torch.Generator().manual_seed(0)
    convs = {"a": BayesConv2d(8, 64, 5)}
    init_conv_kernels(convs, Init.xavier, generator=g)
    std = math.sqrt(2.0 / (8 * 25 + 64 * 25))
    assert abs(float(convs["a"].weight.detach().std()) - std) < 0.1 * std
    # Kaiming-normal: torch's gain for LeakyReLU(0.01) over sqrt(fan_in), fan_in = 8 * 25
    init_conv_kernels(convs, "kaiming", generator=g)
    std = torch.nn.init.calculate_gain("leaky_relu", 0.01) / math.sqrt(8 * 25)
    assert abs(float(convs["a"].weight.detach().std()) - std) < 0.03 * std
    vae = KernelVAE(default_vae_config(5))
    prior = DeepWeightPrior(vae)
    init_conv_kernels(convs, "dwp", priors={"a": prior}, generator=torch.Generator().manual_seed(7))
    expected = prior.sample_kernels(64 * 8, torch.Generator().manual_seed(7))
    torch.testing.assert_close(convs["a"].weight.detach(), expected.reshape(64, 8, 5, 5))
    # dwp-draw: w ~ p(w | z), the decoder mean at the same z plus its noise
    init_conv_kernels(convs, "dwp-draw", priors={"a": prior},
                      generator=torch.Generator().manual_seed(7))  # fmt: skip
    g7 = torch.Generator().manual_seed(7)
    z = torch.randn(64 * 8, vae.z_dim, 1, 1, generator=g7)
    mu, var = vae.decode(z)
    eps = torch.randn(mu.shape, generator=g7)
    drawn = convs["a"].weight.detach().reshape(-1, 1, 5, 5)
    torch.testing.assert_close(drawn, (mu + var.sqrt() * eps).detach())
    torch.testing.assert_close(drawn, prior.sample_kernels(512, g7.manual_seed(7), mean=False))
    # a Gaussian kernel prior's samples are draws already: both inits give them
    gauss = GaussianKernelPrior(torch.zeros(25, dtype=torch.float64),
                                torch.eye(25, dtype=torch.float64))  # fmt: skip
    for init in ("dwp", "dwp-draw"):
        init_conv_kernels(convs, init, priors={"a": gauss}, generator=g7.manual_seed(3))
        want = gauss.sample_kernels(512, torch.Generator().manual_seed(3))
        torch.testing.assert_close(convs["a"].weight.detach(), want.reshape(64, 8, 5, 5))
    kernels = torch.randn(600, 1, 5, 5)
    init_conv_kernels(convs, "filters", kernel_sets={"a": kernels}, generator=g)
    flat = convs["a"].weight.detach().reshape(-1, 25)
    bank = {tuple(k.flatten().tolist()) for k in kernels}
    assert all(tuple(row.tolist()) in bank for row in flat)
    with pytest.raises(DWPError, match="3x3 kernels, but a has 5x5"):
        init_conv_kernels(convs, "filters", kernel_sets={"a": torch.randn(9, 1, 3, 3)})
    with pytest.raises(DWPError, match="needs a learned kernel prior"):
        init_conv_kernels(convs, "dwp")
    with pytest.raises(DWPError, match="--init dwp-draw needs a learned kernel prior"):
        init_conv_kernels(convs, "dwp-draw")


def test_ece_and_metrics_against_hand_computed_values():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = torch.tensor([0, 1, 1, 0])
    # bins of width 1/15: 0.9 -> (0.867, 0.933], 0.6 -> (0.533, 0.6], 0.7 -> (0.667, 0.733],
    # 0.8 -> (0.733, 0.8]; one example each: |1-0.9| + |0-0.6| + |1-0.7| + |0-0.8| over 4
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.6 + 0.3 + 0.8) / 4)
    m = classification_metrics(probs, labels)
    assert m["acc"] == 0.5
    nll = -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.2)) / 4
    assert m["nll"] == pytest.approx(nll)
    assert expected_calibration_error(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == 0.0


def test_predict_proba_modes():
    torch.manual_seed(0)
    model = nn.Sequential(BayesConv2d(1, 2, 3, log_sigma2_init=0.0), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3))  # fmt: skip
    x = torch.rand(5, 1, 6, 6)
    p = predict_proba(model, x, samples=4, batch_size=2)
    assert p.shape == (4, 5, 3)
    torch.testing.assert_close(p.sum(-1), torch.ones(4, 5))
    assert not torch.allclose(p[0], p[1])
    det = predict_proba(model, x, samples=4, mode="mean")
    assert det.shape == (1, 5, 3)
    assert model[0].mode == "sample"  # restored


def test_rescaled_prior_is_the_scaled_density(tmp_path):
    torch.manual_seed(0)
    vae = KernelVAE(default_vae_config(5, scale=0.02))
    kernels = (np.random.default_rng(0).normal(size=(50, 1, 5, 5)) * 0.02).astype(np.float32)
    median = float(np.median(np.sqrt((kernels.astype(np.float64) ** 2).sum((1, 2, 3)))))
    save_prior(vae, tmp_path / "p", kernel_stats={"train": kernel_summary(kernels), "test": None},
               metrics={"test": {"elbo_per_kernel": 10.0}})  # fmt: skip
    _, info = rescale_prior(tmp_path / "p", tmp_path / "q", median_norm=2 * median)
    c = info["rescaled"]["factor"]
    assert c == pytest.approx(2.0, rel=1e-5)
    scaled, meta = load_prior(tmp_path / "q")
    w = torch.from_numpy(kernels)
    with torch.no_grad():
        a = vae.elbo(w, torch.Generator().manual_seed(0))
        b = scaled.elbo(w * c, torch.Generator().manual_seed(0))
    torch.testing.assert_close(b, a - 25 * math.log(c), rtol=0, atol=1e-3)
    assert meta["kernel_stats"]["train"]["norm_quantiles"]["0.5"] == pytest.approx(2 * median)
    assert meta["metrics"]["test"]["elbo_per_kernel"] == pytest.approx(10 - 25 * math.log(c))
    _, again = rescale_prior(tmp_path / "q", tmp_path / "r", factor=3.0)
    assert again["rescaled"]["factor"] == pytest.approx(6.0, rel=1e-5)
    save_prior(vae, tmp_path / "bare")
    with pytest.raises(DWPError, match="give the factor"):
        rescale_prior(tmp_path / "bare", tmp_path / "x", median_norm=1.0)
    with pytest.raises(DWPError, match="positive"):
        rescale_prior(tmp_path / "bare", tmp_path / "x", factor=-1.0)
