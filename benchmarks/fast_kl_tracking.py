"""Does the fast DWP mode optimise the same KL as the exact mode? Train the Bayesian FConv
(32 / 128) on 50 MNIST digits with the DWP prior, the library's optimiser and schedule, and every
``--every`` steps print the KL the optimiser saw, an estimate of the exact KL (every kernel
through the VAE, mean of ``--draws`` draws) and, every second time, the ensemble accuracy.

    python benchmarks/fast_kl_tracking.py --prior-dirs PRIOR7x7 PRIOR5x5 --mode fast \
        [--kernel-batch 256] [--steps 300] [--split 0] [--every 50] [--draws 4] [--threads 1]

Modes: ``exact``; ``fast`` (the library's kernel cache); and two variants of the cache's model
for comparison, not in the library: ``fast-nocurv`` (stale value and gradient, no curvature
term) and ``fast-woodbury`` (curvature of the linear-Gaussian marginal, P - P J (I + J^T P J)^-1
J^T P, P the decoder's precision and J its Jacobian in z at the encoder's mean: the latent code
follows the kernel; the Jacobian is costly on CPU). One JSON line per report.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch.func import jacfwd, vmap

from dwp.data import few_shot, load_dataset
from dwp.eval import evaluate_bnn
from dwp.nn import bayes_layers, kl_divergence, set_noise_generator
from dwp.priors import DeepWeightPrior, kernel_view
from dwp.train.bnn import BNNConfig, build_bnn
from dwp.train.fit import _data_term

_LIBRARY_CACHE = DeepWeightPrior._cached_elbo


def _no_curvature(self, mu_k, var_k, batch):
    value = _LIBRARY_CACHE(self, mu_k, var_k, batch)
    d_mu = mu_k - self.cache_mu
    return value + 0.5 * (self.cache_precision * d_mu * d_mu).sum()  # undo the curvature term


def _woodbury(self, mu_k, var_k, batch):
    m = len(mu_k)
    if self.cache_value.numel() != m:
        self.cache_value = torch.zeros(m, dtype=mu_k.dtype, device=mu_k.device)
        for name in ("cache_mu", "cache_var", "cache_grad_mu", "cache_grad_var",
                     "cache_precision"):  # fmt: skip
            setattr(self, name, torch.zeros_like(mu_k.detach()))
        self.cache_u = torch.zeros(m, mu_k[0].numel(), self.vae.z_dim, device=mu_k.device)
        idx = None
    else:
        pos = int(self.cache_pos)
        idx = self.cache_order[pos : pos + batch]
        pos += batch
        if pos >= m:
            self.cache_order = torch.randperm(m, generator=self.generator, device=mu_k.device)
            pos = 0
        self.cache_pos.fill_(pos)
    fresh = slice(None) if idx is None else idx
    mu_b = mu_k.detach()[fresh].requires_grad_(True)
    var_b = var_k.detach()[fresh].requires_grad_(True)
    elbo = self._kernel_elbo(mu_b, var_b)
    g_mu, g_var = torch.autograd.grad(elbo.sum(), (mu_b, var_b))
    with torch.no_grad():
        z = self.vae.encode(mu_b)[0].flatten(1)
        jac = vmap(jacfwd(lambda z1: self.vae.decode(z1[None])[0].reshape(-1)))(z)  # (B, k2, z)
        precision = 1.0 / self.vae.decode(z)[1].flatten(1)
        pj = precision[:, :, None] * jac
        inner = torch.eye(jac.shape[-1]) + jac.transpose(1, 2) @ pj
        chol = torch.linalg.cholesky(inner)
        u = torch.linalg.solve_triangular(chol, pj.transpose(1, 2), upper=False).transpose(1, 2)
    if idx is None:
        self.cache_order = torch.randperm(m, generator=self.generator, device=mu_k.device)
        self.cache_pos.zero_()
    with torch.no_grad():
        for name, new in (("cache_value", elbo), ("cache_mu", mu_b), ("cache_var", var_b),
                          ("cache_grad_mu", g_mu), ("cache_grad_var", g_var),
                          ("cache_precision", precision.reshape_as(mu_b))):  # fmt: skip
            getattr(self, name)[fresh] = new
        self.cache_u[fresh] = u
    d_mu, d_var = mu_k - self.cache_mu, var_k - self.cache_var
    model = (self.cache_grad_mu * d_mu).sum() + (self.cache_grad_var * d_var).sum()
    d = d_mu.flatten(1)
    quad = (self.cache_precision.flatten(1) * d * d).sum()
    quad = quad - ((d[:, :, None] * self.cache_u).sum(1) ** 2).sum()  # d^T (P - U U^T) d
    return self.cache_value.sum() + model - 0.5 * quad


@torch.no_grad()
def exact_kl(model, draws: int) -> float:
    """Mean of ``draws`` exact-mode estimates of the model's KL."""
    total = 0.0
    for layer in bayes_layers(model).values():
        mu, var, log_var = layer.posterior()
        neg_entropy = -0.5 * (log_var + math.log(2 * math.pi) + 1.0).sum()
        prior = layer.prior
        elbo = sum(prior._kernel_elbo(kernel_view(mu), kernel_view(var)).sum()
                   for _ in range(draws)) / draws  # fmt: skip
        total += float(neg_entropy - elbo)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior-dirs", nargs=2, required=True)
    ap.add_argument("--mode", choices=["exact", "fast", "fast-nocurv", "fast-woodbury"],
                    default="fast")  # fmt: skip
    ap.add_argument("--kernel-batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "fast-nocurv":
        DeepWeightPrior._cached_elbo = _no_curvature
    elif args.mode == "fast-woodbury":
        DeepWeightPrior._cached_elbo = _woodbury

    batch = None if args.mode == "exact" else args.kernel_batch
    cfg = BNNConfig(prior="dwp", init="dwp", prior_dirs=tuple(args.prior_dirs),
                    split_seed=args.split, epochs=args.steps, dwp_kernel_batch=batch)  # fmt: skip
    ds = load_dataset(cfg.dataset)
    train = few_shot(ds.train, cfg.examples, args.split)
    model = build_bnn(cfg, 1, ds.num_classes, 28)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / args.steps)
    noise = torch.Generator().manual_seed(2)
    set_noise_generator(model, noise)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        logits = model(train.images)  # the library's order: forward pass, then the KL
        kl = kl_divergence(model)
        loss = _data_term(logits, train.labels, len(train)) + kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % args.every:
            continue
        row = {"mode": args.mode, "step": step, "kl": round(float(kl.detach())),
               "kl_exact": round(exact_kl(model, args.draws))}  # fmt: skip
        if step % (2 * args.every) == 0:
            set_noise_generator(model, torch.Generator().manual_seed(7))
            row["ens_acc"] = evaluate_bnn(model, ds.test.images, ds.test.labels, 10)["ens_acc"]
            set_noise_generator(model, noise)
            model.train()
        row["seconds"] = round(time.perf_counter() - t0)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
