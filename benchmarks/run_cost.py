"""Where a Bayesian FConv run's time goes, by prior and training-set size: milliseconds per
training step (and how much of it is the KL term), per evaluation (10-sample ensemble on the
1000 mnist5k test images, and the exact-KL estimate the fast DWP mode adds), and the cost of a
whole run and of the classification table that follows from them.

    python benchmarks/run_cost.py [--prior-dirs letters-fconv/conv1 letters-fconv/conv2]
        [--sizes 50 100 200 500 1000] [--priors normal log-uniform gaussian dwp]
        [--epochs 300] [--splits 10] [--jobs 2] [--threads 1] [--steps 8]
        [--sampling local weight]

One thread per process by default, as the sweeps run (``JOBS`` processes side by side). Every
figure is a median over ``--steps`` timed steps after two warm-up steps, measured in this run.
The run cost is ``epochs * ceil(N / 256) * step + evaluations * eval``; the table estimate
divides the sum over methods, sizes and splits by ``--jobs`` (the deterministic L2 baselines
cost a few seconds a run and are left out).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time

import torch

from dwp.data import few_shot, load_dataset
from dwp.eval import evaluate_bnn
from dwp.nn import kl_divergence, set_noise_generator
from dwp.train.bnn import BNNConfig, bnn_prior_scales, build_bnn
from dwp.train.fit import _data_term


def median_ms(fn, steps: int) -> float:
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior-dirs", nargs=2, default=["letters-fconv/conv1", "letters-fconv/conv2"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    ap.add_argument("--priors", nargs="+", default=["normal", "log-uniform", "gaussian", "dwp"])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--evals", type=int, default=1, help="evaluations per run (the sweep's 1)")
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument(
        "--sampling",
        nargs="+",
        choices=["local", "weight"],
        default=["local"],
        help="training estimators to time (BNNConfig.sampling), a row each",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("mnist5k")
    print(f"torch {torch.__version__}, {args.threads} thread(s); {args.epochs} epochs, "
          f"{args.evals} evaluation(s) per run")  # fmt: skip
    print("| prior | examples | ms / step | of it KL | ms / epoch | s / evaluation | "
          "s / exact KL | s / run |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    total = 0.0
    eval_s = {}
    for n in args.sizes:
        train = few_shot(ds.train, n, 0)
        batch = min(256, n)
        x, y = train.images[:batch], train.labels[:batch]
        for prior, sampling in itertools.product(args.priors, args.sampling):
            learned = prior in ("dwp", "gaussian")
            cfg = BNNConfig(prior=prior, init="dwp" if learned else "xavier", sampling=sampling,
                            prior_dirs=tuple(args.prior_dirs) if learned else ())  # fmt: skip
            label = prior if len(args.sampling) == 1 else f"{prior}, {sampling}"
            model = build_bnn(cfg, 1, 10, 28, "cpu", bnn_prior_scales(cfg, train.images, 10))
            set_noise_generator(model, torch.Generator().manual_seed(0))
            opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)

            def step(model=model, opt=opt, x=x, y=y, n=n):
                loss = _data_term(model(x), y, n) + kl_divergence(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            def kl_only(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                kl_divergence(model).backward()

            ms = median_ms(step, args.steps)
            kl_ms = median_ms(kl_only, args.steps)
            epoch_ms = ms * math.ceil(n / 256)
            if prior not in eval_s:  # the evaluation does not depend on the training set size
                t = time.perf_counter()
                evaluate_bnn(model, ds.test.images, ds.test.labels, samples=10)
                eval_s[prior] = time.perf_counter() - t
            exact = 0.0
            if prior == "dwp":  # with no grad every kernel goes through the VAE
                t = time.perf_counter()
                with torch.no_grad():
                    kl_divergence(model)
                exact = time.perf_counter() - t
            run_s = args.epochs * epoch_ms / 1000 + args.evals * (eval_s[prior] + exact)
            total += run_s * args.splits
            print(f"| {label} | {n} | {ms:.0f} | {100 * kl_ms / ms:.0f}% | {epoch_ms:.0f} | "
                  f"{eval_s[prior]:.2f} | {exact:.2f} | {run_s:.0f} |")  # fmt: skip
    hours = total / args.jobs / 3600 / len(args.sampling)
    print(f"\nthe table (per estimator: {len(args.priors)} Bayesian methods x "
          f"{len(args.sizes)} sizes x {args.splits} splits, {args.jobs} jobs side by side, "
          "if they do not slow each other): "
          f"{hours:.1f} h")  # fmt: skip


if __name__ == "__main__":
    main()
