"""Wall time of the quick preset's Bayesian / L2 classification sweep by executor, in one run.

    python benchmarks/sweep_executors.py --out runs/bench-sweep [--executors sequential ray local2]

``sequential``: one run after another in this process (torch's default threads); ``local2``: two
worker processes, one thread each; ``ray``: a local Ray instance with 2 CPUs, one task per run.
Each executor writes its own copy of the sweep under OUT (deleted first), and the script compares
every executor's result files with the first one's (timings aside): identical where both ran their
runs with the same number of torch threads; otherwise float reductions differ in the last bits and
the largest relative difference of any number is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from dwp.executors import LocalExecutor, RayExecutor
from dwp.experiments import ClassificationConfig, run_classification
from dwp.kernels import resolve_kernel_sets
from dwp.priors import rescale_prior
from dwp.reproduce import PRESETS
from dwp.train.prior import PriorTrainConfig, fit_prior

TIMING = {"wall_s", "seconds", "wall_s_mean"}


def _numbers(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{prefix}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{prefix}[{i}]")
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield prefix, float(obj)


def _largest_difference(a: dict, b: dict) -> tuple[float, str]:
    """The largest relative difference between the numbers of two sets of result files."""
    if a.keys() != b.keys():
        return float("inf"), "different files"
    na, nb = dict(_numbers(a)), dict(_numbers(b))
    if na.keys() != nb.keys():
        return float("inf"), "different fields"
    worst = max(((abs(na[k] - nb[k]) / max(abs(na[k]), abs(nb[k]), 1e-12), k) for k in na),
                default=(0.0, ""))  # fmt: skip
    return worst


def _files(root: Path) -> dict:
    out = {}
    for p in sorted((root / "runs").rglob("*.json*")):
        text = p.read_text().splitlines() if p.suffix == ".jsonl" else [p.read_text()]
        out[str(p.relative_to(root))] = [
            {k: v for k, v in json.loads(t).items() if k not in TIMING} for t in text
        ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--executors", nargs="+", default=["sequential", "ray"],
                    choices=["sequential", "local2", "ray"])  # fmt: skip
    ap.add_argument("--priors", type=Path, default=None,
                    help="Directory with the preset's conv1-rescaled / conv2-rescaled priors "
                    "(default: fit them under OUT/priors)")  # fmt: skip
    args = ap.parse_args()
    preset = PRESETS["quick"]
    priors = args.priors or args.out / "priors"
    dirs = []
    for layer in ("conv1", "conv2"):
        d = priors / f"{layer}-rescaled"
        if not (d / "prior.json").is_file():
            a = dict(preset.prior_args[layer])
            median = a.pop("median_norm")
            kernels = resolve_kernel_sets(preset.kernels) / layer
            fit_prior(kernels, priors / layer, PriorTrainConfig(**a), "cpu")
            rescale_prior(priors / layer, d, median_norm=median)
        dirs.append(str(d))
    config = ClassificationConfig(dataset=preset.target_dataset, prior_dirs=tuple(dirs),
                                  **preset.classification_args)  # fmt: skip
    makers = {"sequential": lambda: None, "local2": lambda: LocalExecutor(jobs=2),
              "ray": lambda: RayExecutor()}  # fmt: skip
    times, notes, first = {}, {}, None
    for name in args.executors:
        out = args.out / name
        shutil.rmtree(out, ignore_errors=True)
        executor = makers[name]()
        t0 = time.perf_counter()
        run_classification(config, out, "cpu", executor=executor)
        times[name] = time.perf_counter() - t0
        files = _files(out)
        note = ""
        if first is None:
            first = files
        elif files == first:
            note = f"; result files identical to {args.executors[0]}'s"
        else:
            rel, where = _largest_difference(first, files)
            note = f"; largest relative difference from {args.executors[0]}'s {rel:.2g} ({where})"
        notes[name] = note
        print(f"{name}: {times[name]:.1f} s{note}", flush=True)
    base = times[args.executors[0]]
    print(f"\n| executor | wall s | speed-up over {args.executors[0]} |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {t:.1f} | {base / t:.2f}x |")
    print(f"\n{len(config.tasks())} runs each (timings aside in the comparisons)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
