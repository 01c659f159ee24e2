"""The docs' own-CNN example under each prior, over few-shot splits: does a shipped deep weight
prior help a CNN that is not FConv?

    python benchmarks/own_model.py [--examples 100] [--epochs 300] [--splits 0 1 2]
        [--out runs/own-model]

The CNN of docs/own-model.md (conv 5x5 1->32, LeakyReLU, max-pool, conv 3x3 32->64, LeakyReLU,
global max-pool, linear), trained with ``dwp.fit`` on mnist5k, evaluated with the 10-sample
ensemble on its 1000 test digits. Rows: N(0, 1) on both convs; the shipped ``letters-fconv``
priors as fitted (the 5x5 one on the first conv, N(0, 1) on the 3x3), from the layers' own init
and from the DWP init; the same priors moved to a fixed median norm (0.17 for 5x5, ``dwp prior
rescale``); and moved by the kernel-scale rule on each split's training images
(``bayesianize(..., scale_to=train.images)``, the library's default for its own nets). Each run
is a ``dwp.fit`` run directory under ``--out`` (a re-run reads finished ones back); prints a
Markdown table of mean ± sd accuracy and NLL.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from torch import nn

import dwp
from dwp.data import few_shot, load_dataset
from dwp.priors import rescale_prior
from dwp.tables import markdown_table, mean_sd


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.LeakyReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.LeakyReLU(), nn.AdaptiveMaxPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/own-model"))
    ap.add_argument("--rows", type=int, nargs="+", default=None,
                    help="Run only these rows (0-based, in the order above).")  # fmt: skip
    args = ap.parse_args()
    data = load_dataset("mnist5k")
    moved = args.out / "priors" / "conv2-0.17"
    rescale_prior("letters-fconv/conv2", moved, median_norm=0.17)
    settings = {
        "normal": ("normal", "keep"),
        "letters-fconv": ("letters-fconv", "keep"),
        "letters-fconv, DWP init": ("letters-fconv", "dwp"),
        "letters-fconv at median norm 0.17": (str(moved), "keep"),
        "letters-fconv at median norm 0.17, DWP init": (str(moved), "dwp"),
        "letters-fconv, data scale": ("letters-fconv", "keep", "data"),
        "letters-fconv, data scale, DWP init": ("letters-fconv", "dwp", "data"),
    }
    rows = []
    chosen = list(settings.items())
    if args.rows is not None:
        chosen = [chosen[i] for i in args.rows]
    for label, (prior, init, *scale) in chosen:
        acc, nll = [], []
        for split in args.splits:
            torch.manual_seed(split)
            model = cnn()
            train = few_shot(data.train, args.examples, split_seed=split)
            to = train.images if scale else None
            dwp.bayesianize(model, prior, scale_to=to,
                            generator=torch.Generator().manual_seed(split))  # fmt: skip
            run = args.out / label.replace(" ", "_").replace(",", "") / f"split-{split}"
            result = dwp.fit(model, train, test=data.test, epochs=args.epochs, init=init,
                             seed=split, split_seed=split, dataset="mnist5k", out=run)  # fmt: skip
            acc.append(result["ens_acc"])
            nll.append(result["nll"])
            print(f"{label}, split {split}: acc {acc[-1]:.3f}, NLL {nll[-1]:.3f}", flush=True)
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        rows.append([label, mean_sd(statistics.fmean(acc), sd), f"{statistics.fmean(nll):.3f}"])
    print(f"\n{args.examples} examples, {args.epochs} epochs, splits {args.splits}:\n")
    print(markdown_table(["prior", "ensemble accuracy", "NLL"], rows))


if __name__ == "__main__":
    main()
