from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributions as D
import yaml
from torch.nn import functional as F

from dwp.errors import DWPError
from dwp.priors import (
    KernelVAE,
    VAEConfig,
    default_vae_config,
    import_reference_prior,
    load_prior,
    save_prior,
)
from dwp.train.prior import (
    PriorTrainConfig,
    evaluate_prior,
    split_validation,
    train_prior,
    zero_kernel_elbo,
)

from conftest import write_reference

torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize(("k", "z", "h"), [(7, 2, 32), (5, 4, 64), (3, 2, 32)])
def test_paper_defaults_and_shapes(k, z, h):
    cfg = default_vae_config(k)
    assert (cfg.z_dim, cfg.hidden) == (z, h)
    vae = KernelVAE(cfg)
    w = torch.randn(6, 1, k, k)
    mu, var = vae.encode(w)
    assert mu.shape == var.shape == (6, z, 1, 1) and (var > 0).all()
    x_mu, x_var = vae.decode(torch.randn(6, z))
    assert x_mu.shape == x_var.shape == (6, 1, k, k) and (x_var > 0).all()


def test_architecture_7x7_matches_design():
    vae = KernelVAE(VAEConfig(7, 2, 32))
    convs = [m for m in vae.encoder.body if not isinstance(m, torch.nn.ELU)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)), (32, 64, (3, 3)), (64, 64, (3, 3))]  # fmt: skip
    tconvs = [m for m in vae.decoder.body if not isinstance(m, torch.nn.ELU)]
    assert all(isinstance(t, torch.nn.ConvTranspose2d) for t in tconvs)
    assert [(t.in_channels, t.out_channels) for t in tconvs] == [(2, 64), (64, 64), (64, 32)]
    # ELU after every hidden conv, including the last one of each body
    assert isinstance(vae.encoder.body[-1], torch.nn.ELU)
    assert isinstance(vae.decoder.body[-1], torch.nn.ELU)


def test_unknown_kernel_size():
    with pytest.raises(DWPError, match=r"no kernel VAE architecture for 4x4.*3x3, 5x5, 7x7"):
        default_vae_config(4)


def test_wrong_kernel_size_input():
    vae = KernelVAE(default_vae_config(7))
    with pytest.raises(DWPError, match=r"this prior is for 7x7 kernels"):
        vae.elbo(torch.randn(3, 1, 5, 5))


def _elbo_reference(vae, w, eps):
    """The ELBO written with torch.distributions, given the standard-normal draw eps."""
    mu, var = vae.encode(w)
    q = D.Normal(mu, var.sqrt())
    kl = D.kl_divergence(q, D.Normal(torch.zeros_like(mu), torch.ones_like(mu))).flatten(1).sum(1)
    x_mu, x_var = vae.decode(mu + var.sqrt() * eps)
    ll = D.Normal(x_mu, x_var.sqrt()).log_prob(w).flatten(1).sum(1)
    return ll - kl


@pytest.mark.parametrize("k", [7, 5, 3])
def test_elbo_matches_torch_distributions(k):
    torch.manual_seed(0)
    vae = KernelVAE(default_vae_config(k)).double()
    w = torch.randn(5, 1, k, k, dtype=torch.float64) * 0.3
    gen = torch.Generator().manual_seed(11)
    got = vae.elbo(w, gen)
    eps = torch.randn((5, vae.z_dim, 1, 1), generator=torch.Generator().manual_seed(11),
                      dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(got, _elbo_reference(vae, w, eps))


def test_iw_bound_one_sample_is_elbo_and_tightens():
    torch.manual_seed(1)
    vae = KernelVAE(default_vae_config(7)).double()
    w = torch.randn(8, 1, 7, 7, dtype=torch.float64) * 0.2
    one = vae.iw_log_likelihood(w, 1, torch.Generator().manual_seed(3))
    # with one sample: log p(w|z) + log p(z) - log r(z|w) at z = mu + std * eps
    eps = torch.randn((8, 2, 1, 1), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mu, var = vae.encode(w)
    z = mu + var.sqrt() * eps
    x_mu, x_var = vae.decode(z)
    expected = (
        D.Normal(x_mu, x_var.sqrt()).log_prob(w).flatten(1).sum(1)
        + D.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
        - D.Normal(mu, var.sqrt()).log_prob(z).flatten(1).sum(1)
    )
    torch.testing.assert_close(one, expected)
    many = vae.iw_log_likelihood(w, 2000, torch.Generator().manual_seed(4)).mean()
    mean_elbo = vae.elbo(w, torch.Generator().manual_seed(5), samples=200).mean()
    assert many > mean_elbo


def test_iw_log_likelihood_exact_for_linear_gaussian():
    # A VAE whose decoder ignores z is a plain Gaussian with posterior p(z | w) = p(z); with that
    # posterior as proposal the importance-weighted estimate is exact with any sample count.
    vae = KernelVAE(VAEConfig(3, 2, 4)).double()
    for p in vae.parameters():
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        vae.encoder.var.bias.fill_(math.log(math.e - 1))  # r(z | w) = N(0, I) = p(z)
        vae.decoder.mu.bias.fill_(0.5)
        vae.decoder.var.bias.fill_(math.log(math.e - 1))  # softplus -> variance 1
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    exact = D.Normal(0.5, 1.0).log_prob(w).flatten(1).sum(1)
    got = vae.iw_log_likelihood(w, 50, torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, exact)


def test_sample_shapes_and_determinism():
    vae = KernelVAE(default_vae_config(5))
    a = vae.sample(7, torch.Generator().manual_seed(2))
    b = vae.sample(7, torch.Generator().manual_seed(2))
    assert a.shape == (7, 1, 5, 5) and torch.equal(a, b)
    c = vae.sample(7, torch.Generator().manual_seed(2), mean=False)
    assert not torch.equal(a, c)


def test_training_improves_test_elbo():
    # kernels: random multiples of two fixed patterns plus a little noise
    gen = torch.Generator().manual_seed(0)
    patterns = torch.randn(2, 1, 7, 7, generator=gen) * 0.3

    def kernels(n):
        coef = torch.randn(n, 2, 1, 1, 1, generator=gen)
        return (coef * patterns).sum(1) + 0.01 * torch.randn(n, 1, 7, 7, generator=gen)

    train, test = kernels(512), kernels(256)
    torch.manual_seed(0)
    vae = KernelVAE(default_vae_config(7))
    before = evaluate_prior(vae, test, samples=5)["elbo_per_kernel"]
    history = train_prior(vae, train, test, PriorTrainConfig(epochs=30, batch_size=64, min_steps=0))
    after = evaluate_prior(vae, test, samples=5)["elbo_per_kernel"]
    assert len(history) == 30 and history[-1]["lr"] == 0.0
    assert after > before + 40 and after > 0  # from a vague density to a sharp one
    assert history[-1]["test_elbo_per_kernel"] > history[0]["test_elbo_per_kernel"]


def test_save_load_roundtrip(tmp_path):
    vae = KernelVAE(default_vae_config(5))
    save_prior(vae, tmp_path / "p", metrics={"x": 1})
    back, meta = load_prior(tmp_path / "p")
    assert meta["metrics"] == {"x": 1} and meta["vae"]["kernel_size"] == 5
    w = torch.randn(3, 1, 5, 5)
    torch.testing.assert_close(back.encode(w), vae.encode(w))
    assert not any(p.name.startswith(".") for p in (tmp_path / "p").iterdir())


def test_load_errors(tmp_path):
    with pytest.raises(DWPError, match="not found: give a prior directory"):
        load_prior(tmp_path / "nope")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "prior.json").write_text("{}")
    with pytest.raises(DWPError, match=r"incomplete: missing weights\.pt"):
        load_prior(tmp_path / "p")
    save_prior(KernelVAE(default_vae_config(7)), tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "prior.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "q" / "prior.json").write_text(json.dumps(meta))
    with pytest.raises(DWPError, match="version 99; this dwp reads"):
        load_prior(tmp_path / "q")


# ----------------------------------------------------------------------------- reference import
def _reference_forward(s, k, w, z):
    """The reference networks written out with functional ops on the reference state dict."""
    x = w
    pads = {7: [0, 0, 0], 5: [1, 1, 0, 0]}[k]
    for i, p in enumerate(pads):
        x = F.elu(F.conv2d(x, s[f"encoder.features.{2 * i}.weight"],
                           s[f"encoder.features.{2 * i}.bias"], padding=p))  # fmt: skip
    var_key = "encoder.fc_var" if k == 7 else "encoder.fc_sigma"
    e_mu = F.conv2d(x, s["encoder.fc_mu.weight"], s["encoder.fc_mu.bias"])
    e_var = F.softplus(F.conv2d(x, s[f"{var_key}.weight"], s[f"{var_key}.bias"]))
    y = z
    if k == 7:
        for i in (0, 2, 4):
            y = F.elu(F.conv_transpose2d(y, s[f"decoder.decoder.{i}.weight"],
                                         s[f"decoder.decoder.{i}.bias"]))  # fmt: skip
        head = ""
    else:
        for i, op in zip((0, 2, 4, 6), (F.conv2d, F.conv_transpose2d, F.conv_transpose2d,
                                         F.conv2d), strict=True):  # fmt: skip
            y = F.elu(op(y, s[f"decoder.decoder.{i}.weight"], s[f"decoder.decoder.{i}.bias"]))
        head = ".0"
    d_mu = F.conv2d(y, s[f"decoder.fc_mu{head}.weight"], s[f"decoder.fc_mu{head}.bias"])
    d_var = F.softplus(F.conv2d(y, s[f"decoder.fc_var{head}.weight"],
                                s[f"decoder.fc_var{head}.bias"]))  # fmt: skip
    return e_mu, e_var, d_mu, d_var


@pytest.mark.parametrize(("k", "z", "h"), [(7, 2, 32), (5, 4, 64)])
def test_import_reference_gives_same_outputs(tmp_path, k, z, h):
    state = write_reference(tmp_path / "ref", k, z, h)
    vae, info = import_reference_prior(tmp_path / "ref", tmp_path / "native")
    assert info["reference_params"]["kernel_dim"] == k
    loaded, _ = load_prior(tmp_path / "native")
    w = torch.randn(4, 1, k, k)
    zz = torch.randn(4, z, 1, 1)
    e_mu, e_var, d_mu, d_var = _reference_forward(state, k, w, zz)
    for model in (vae, loaded):
        mu, var = model.encode(w)
        torch.testing.assert_close(mu, e_mu)
        torch.testing.assert_close(var, e_var)
        x_mu, x_var = model.decode(zz)
        torch.testing.assert_close(x_mu, d_mu)
        torch.testing.assert_close(x_var, d_var)


def test_import_errors(tmp_path):
    with pytest.raises(DWPError, match=r"missing params\.yaml, vae_params\.torch"):
        import_reference_prior(tmp_path, tmp_path / "out")
    write_reference(tmp_path / "fixed", 5, 4, 64, var="0.001")
    with pytest.raises(DWPError, match="fixed decoder variance"):
        import_reference_prior(tmp_path / "fixed", tmp_path / "out")
    ref = tmp_path / "wrong"
    write_reference(ref, 7, 2, 32)
    (ref / "params.yaml").write_text(yaml.safe_dump({"kernel_dim": 7, "z_dim": 2,
                                                     "hidden_dim": 16}))  # fmt: skip
    with pytest.raises(DWPError, match="does not match a 7x7 VAE with z_dim 2, hidden_dim 16"):
        import_reference_prior(ref, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_evaluate_prior_iw_key():
    vae = KernelVAE(default_vae_config(3))
    res = evaluate_prior(vae, torch.randn(10, 1, 3, 3) * 0.1, samples=2, iw_samples=5)
    assert set(res) >= {"elbo_per_kernel", "iw_log_likelihood_per_kernel", "n_kernels"}
    assert np.isfinite(res["elbo_per_kernel"])


def test_zero_kernel_elbo_is_the_elbo_of_zero_kernels():
    torch.manual_seed(0)
    vae = KernelVAE(default_vae_config(5))
    kernels = torch.randn(30, 1, 5, 5) * 2  # far from zero: a lower ELBO
    res = evaluate_prior(vae, kernels, samples=20, seed=1)
    zeros = evaluate_prior(vae, torch.zeros(256, 1, 5, 5), samples=20, seed=2)
    at_zero = zero_kernel_elbo(vae, samples=20, seed=1)
    assert at_zero == pytest.approx(zeros["elbo_per_kernel"], abs=0.5)
    assert at_zero != pytest.approx(res["elbo_per_kernel"], abs=0.5)


def test_min_norm_is_validated():
    with pytest.raises(DWPError, match="min_norm must be a number >= 0"):
        PriorTrainConfig(min_norm=-1.0)


def test_min_steps_extends_small_sets_only():
    cfg = PriorTrainConfig(epochs=300, batch_size=128, min_steps=20000)
    assert cfg.epochs_for(1769) == 1429  # 14 steps per epoch
    assert cfg.epochs_for(100000) == 300
    assert PriorTrainConfig(min_steps=0).epochs_for(10) == 300
    vae = KernelVAE(default_vae_config(3))
    hist = train_prior(vae, torch.randn(20, 1, 3, 3), None, PriorTrainConfig(2, 10, min_steps=7))
    assert len(hist) == 4  # 2 steps per epoch -> 4 epochs for 7 steps


def test_scale_is_an_exact_change_of_variables():
    torch.manual_seed(3)
    s = 0.05
    scaled = KernelVAE(VAEConfig(7, 2, 8, scale=s)).double()
    plain = KernelVAE(VAEConfig(7, 2, 8)).double()
    plain.load_state_dict(scaled.state_dict())
    w = torch.randn(6, 1, 7, 7, dtype=torch.float64) * s
    shift = 49 * math.log(s)
    torch.testing.assert_close(
        scaled.elbo(w, torch.Generator().manual_seed(1)),
        plain.elbo(w / s, torch.Generator().manual_seed(1)) - shift,
    )
    torch.testing.assert_close(
        scaled.iw_log_likelihood(w, 30, torch.Generator().manual_seed(2)),
        plain.iw_log_likelihood(w / s, 30, torch.Generator().manual_seed(2)) - shift,
    )
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(scaled.sample(4, gen), plain.sample(4, gen.manual_seed(0)) * s)
    with pytest.raises(DWPError, match="positive number"):
        VAEConfig(7, 2, 8, scale=0.0)


def test_split_validation():
    fit, val = split_validation(300, 0.1, seed=0)
    assert len(val) == 30 and len(fit) == 270 and not set(fit.tolist()) & set(val.tolist())
    assert len(split_validation(100, 0.1, 0)[1]) == 0  # fewer than 20 held out: none
    assert len(split_validation(300, 0.0, 0)[1]) == 0


def test_best_epoch_on_validation_is_kept():
    gen = torch.Generator().manual_seed(0)
    kernels = torch.randn(400, 1, 3, 3, generator=gen) * 0.1
    torch.manual_seed(0)
    vae = KernelVAE(default_vae_config(3))
    cfg = PriorTrainConfig(epochs=6, batch_size=50, min_steps=0, val_fraction=0.1)
    history = train_prior(vae, kernels, None, cfg)
    best = [r for r in history if r.get("best")]
    assert len(best) == 1
    assert best[0]["val_elbo_per_kernel"] == max(r["val_elbo_per_kernel"] for r in history)
    _, val_idx = split_validation(400, 0.1, 0)
    again = evaluate_prior(vae, kernels[val_idx], samples=4, seed=0)["elbo_per_kernel"]
    assert again == pytest.approx(best[0]["val_elbo_per_kernel"], rel=1e-6)


def test_latent_grid_decodes_normal_quantiles_row_major():
    torch.manual_seed(0)
    vae = KernelVAE(default_vae_config(7)).double()
    grid = vae.latent_grid(size=3, lo=0.1, hi=0.9)
    assert grid.shape == (9, 1, 7, 7)
    q = D.Normal(0.0, 1.0).icdf(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    # first row: largest z2, z1 increasing along the row
    expected = vae.decode(torch.stack([q, q[2].repeat(3)], 1))[0]
    torch.testing.assert_close(grid[:3], expected)
    # a larger latent space: a slice along the chosen coordinates, the others at 0
    vae4 = KernelVAE(default_vae_config(5)).double()
    z = torch.zeros(3, 4, dtype=torch.float64)
    z[:, 3], z[:, 1] = q, q[2]
    torch.testing.assert_close(vae4.latent_grid(3, 0.1, 0.9, dims=(3, 1))[:3], vae4.decode(z)[0])
    for dims in [(0, 0), (0, 4)]:
        with pytest.raises(DWPError, match=r"two distinct latent coordinates of 0\.\.3"):
            vae4.latent_grid(dims=dims)


def test_busiest_dims_finds_the_coordinates_the_encoder_uses():
    torch.manual_seed(0)
    vae = KernelVAE(default_vae_config(5, z_dim=4)).double()
    with torch.no_grad():  # encoder means: coordinate 2 varies most, then 0
        vae.encoder.mu.weight.mul_(torch.tensor([3.0, 0.01, 10.0, 0.001]).view(4, 1, 1, 1))
    kernels = torch.randn(200, 1, 5, 5, dtype=torch.float64)
    assert vae.busiest_dims(kernels) == (2, 0)


def test_gaussian_helpers_match_torch_distributions():
    from torch import distributions as D

    from dwp.nn.gaussian import (
        gaussian_entropy,
        gaussian_log_prob,
        kl_std_normal,
        std_normal_log_prob,
    )

    g = torch.Generator().manual_seed(0)
    x, mu = (
        torch.randn(5, 1, 3, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 1, 3, 3, generator=g, dtype=torch.float64),
    )
    var = torch.rand(5, 1, 3, 3, generator=g, dtype=torch.float64) + 0.1
    normal = D.Normal(mu, var.sqrt())
    torch.testing.assert_close(gaussian_log_prob(x, mu, var), normal.log_prob(x).flatten(1).sum(1))
    torch.testing.assert_close(
        std_normal_log_prob(x), D.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    )
    kl = D.kl_divergence(normal, D.Normal(torch.zeros_like(mu), torch.ones_like(var)))
    torch.testing.assert_close(kl_std_normal(mu, var), kl.flatten(1).sum(1))
    torch.testing.assert_close(kl_std_normal(mu, var, var.log()), kl.flatten(1).sum(1))
    torch.testing.assert_close(gaussian_entropy(var.log()), normal.entropy().sum())
