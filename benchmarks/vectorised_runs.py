"""Would training several runs as one vectorised model pay on this CPU? The FConv's two convs
(7x7 1 -> 32, 5x5 32 -> 128, LeakyReLU and max-pool; forward and backward) of K runs on one
batch: K separate nets against one net whose first conv has K x 32 filters and whose second is
a grouped conv (K groups), the way a vectorised sweep would stack them.

    python benchmarks/vectorised_runs.py [--runs 4] [--batches 50 256] [--threads 1] [--steps 10]

Median milliseconds over ``--steps`` after two warm-up steps, both measured in the same run.
"""

from __future__ import annotations

import argparse

import torch
from run_cost import median_ms  # the same timing as the run-cost table (this directory)
from torch.nn import functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--batches", type=int, nargs="+", default=[50, 256])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    k = args.runs
    w1 = [torch.randn(32, 1, 7, 7, generator=g).requires_grad_() for _ in range(k)]
    w2 = [torch.randn(128, 32, 5, 5, generator=g).requires_grad_() for _ in range(k)]
    v1 = torch.cat(w1).detach().requires_grad_()
    v2 = torch.cat(w2).detach().requires_grad_()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {k} runs")
    print("| batch | separate nets, ms | one grouped net, ms | grouped / separate |")
    print("|---|---|---|---|")
    for batch in args.batches:
        x = torch.rand(batch, 1, 28, 28, generator=g)

        def separate(x=x):
            total = 0
            for a, b in zip(w1, w2, strict=True):
                h = F.max_pool2d(F.leaky_relu(F.conv2d(x, a)), 2)
                total = total + F.max_pool2d(F.leaky_relu(F.conv2d(h, b)), 2).sum()
            total.backward()

        def grouped(x=x):
            h = F.max_pool2d(F.leaky_relu(F.conv2d(x, v1)), 2)
            F.max_pool2d(F.leaky_relu(F.conv2d(h, v2, groups=k)), 2).sum().backward()

        a, b = median_ms(separate, args.steps), median_ms(grouped, args.steps)
        print(f"| {batch} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
