"""Milliseconds per training step of the Bayesian FConv (32 / 128) on 50 MNIST digits, per prior,
and seconds per 10-sample ensemble evaluation on the mnist5k test part (1000 images).

    python benchmarks/bnn_step.py --prior-dirs PRIOR7x7 PRIOR5x5 [--steps 12] [--threads 2]
        [--kernel-batches 512 256 128]

``--full-run DIR`` adds the time-to-accuracy row: a complete DWP run with the library defaults
(split 0, DWP init) written to DIR (which must not hold a finished run), its wall time and the
ensemble accuracy it ends at.

The DWP rows: the exact mode (every kernel through the VAE each step), the kernel cache
(``--dwp-kernel-batch B``: B kernels per layer each step, the others follow a second-order model
of their last value) and the subsampled estimate (``--dwp-estimator subsample``: B fresh kernels,
times M/B).

Every row is measured in the same run (median over the steps after two warm-up steps).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from dwp.data import few_shot, load_dataset
from dwp.eval import evaluate_bnn
from dwp.nn import kl_divergence, set_noise_generator
from dwp.train.bnn import BNNConfig, build_bnn, train_bnn
from dwp.train.fit import _data_term


def step_ms(model, x, y, steps: int) -> float:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        loss = _data_term(model(x), y, len(y)) + kl_divergence(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior-dirs", nargs=2, required=True, help="7x7 and 5x5 prior directories")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--kernel-batches", type=int, nargs="*", default=[512, 256, 128])
    ap.add_argument("--full-run", type=Path, help="run directory for the time-to-accuracy row")
    args = ap.parse_args()
    if args.full_run and (args.full_run / "result.json").exists():
        ap.error(f"{args.full_run} holds a finished run; give a new directory")
    torch.set_num_threads(args.threads)
    ds = load_dataset("mnist5k")
    train = few_shot(ds.train, 50, 0)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print("| prior | ms / step |")
    print("|---|---|")
    model = None
    rows = [("normal", None, "cache"), ("log-uniform", None, "cache"), ("dwp", None, "cache")]
    rows += [("dwp", b, "cache") for b in args.kernel_batches]
    rows += [("dwp", b, "subsample") for b in args.kernel_batches]
    for prior, batch, estimator in rows:
        cfg = BNNConfig(prior=prior, prior_dirs=tuple(args.prior_dirs), dwp_kernel_batch=batch,
                        dwp_estimator=estimator if batch else "cache")  # fmt: skip
        model = build_bnn(cfg, 1, 10, 28)
        set_noise_generator(model, torch.Generator().manual_seed(0))
        name = prior if prior != "dwp" else f"dwp, kernel batch {batch or 'all (exact)'}"
        name += f", {estimator}" if batch else ""
        print(f"| {name} | {step_ms(model, train.images, train.labels, args.steps):.0f} |")
    t = time.perf_counter()
    evaluate_bnn(model, ds.test.images, ds.test.labels, samples=10)
    print(f"\n10-sample ensemble evaluation on {len(ds.test)} images: "
          f"{time.perf_counter() - t:.2f} s")  # fmt: skip
    if args.full_run:
        cfg = BNNConfig(prior="dwp", init="dwp", prior_dirs=tuple(args.prior_dirs))
        t = time.perf_counter()
        r = train_bnn(cfg, args.full_run)
        print(
            f"complete DWP run with the defaults ({cfg.epochs} epochs, kernel batch "
            f"{cfg.dwp_kernel_batch}, {cfg.epochs_between_evals}-epoch evaluations), split 0: "
            f"{time.perf_counter() - t:.0f} s wall, ensemble accuracy {r['ens_acc']:.4f}"
        )


if __name__ == "__main__":
    main()
