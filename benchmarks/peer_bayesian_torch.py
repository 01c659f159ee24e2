"""dwp's Bayesian FConv against the same net in bayesian-torch (the peer a user would pick),
standard-normal prior, 50 mnist5k digits: milliseconds per training step and the 10-sample
ensemble's test accuracy / NLL, split by split, every variant measured in the same run.

    python benchmarks/peer_bayesian_torch.py --peer ../shared/peers/bayesian_torch_fconv.py
        [--splits 0 1 2] [--epochs 300] [--examples 50]

Run it from a venv that holds torch, dwp and bayesian-torch (``pip install --no-deps
bayesian-torch``: its torchvision requirement is not needed by the layers). The peer script
(one process per run, one thread) trains Conv2dReparameterization (one weight draw per batch)
and Conv2dFlipout; dwp trains the same protocol in this process (one thread): full batch,
N/B * CE_sum + KL, Adam 1e-3 decayed linearly to 0, Xavier-normal means, log sigma^2 = -10,
with local reparameterization (``--sampling local``, the default) and with one weight draw per
batch (``--sampling weight``). ms / step is the training loop's time over its steps for both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from dwp.data import few_shot, load_dataset
from dwp.eval import evaluate_bnn
from dwp.nn import kl_divergence, set_noise_generator
from dwp.train.bnn import BNNConfig, build_bnn
from dwp.train.fit import _data_term
from dwp.train.loop import adam_linear_decay


def dwp_run(sampling: str, split: int, epochs: int, examples: int) -> dict:
    ds = load_dataset("mnist5k")
    train = few_shot(ds.train, examples, split)
    cfg = BNNConfig(prior="normal", init="xavier", sampling=sampling, seed=split)
    model = build_bnn(cfg, 1, 10, 28, "cpu")
    set_noise_generator(model, torch.Generator().manual_seed(split))
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = adam_linear_decay(params, 1e-3, epochs)
    x, y = train.images, train.labels
    t0 = time.perf_counter()
    for _ in range(epochs):
        loss = _data_term(model(x), y, len(y)) + kl_divergence(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    m = evaluate_bnn(model, ds.test.images, ds.test.labels, samples=10)
    return {"ms_per_step": 1000 * train_s / epochs, "ens_acc": m["ens_acc"], "nll": m["nll"]}


def peer_run(peer: str, layer: str, split: int, epochs: int, examples: int) -> dict:
    cmd = [sys.executable, peer, "--layer", layer, "--split", str(split), "--epochs",
           str(epochs), "--examples", str(examples), "--threads", "1"]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", required=True, help="path of bayesian_torch_fconv.py")
    ap.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--examples", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    variants = {
        "dwp, local reparameterization": lambda s: dwp_run("local", s, args.epochs, args.examples),
        "dwp, one weight draw per batch": lambda s: dwp_run("weight", s, args.epochs,
                                                             args.examples),
        "bayesian-torch Conv2dReparameterization": lambda s: peer_run(
            args.peer, "reparam", s, args.epochs, args.examples),
        "bayesian-torch Conv2dFlipout": lambda s: peer_run(
            args.peer, "flipout", s, args.epochs, args.examples),
    }  # fmt: skip
    rows: dict[str, list[dict]] = {k: [] for k in variants}
    for split in args.splits:  # interleaved, so a busy machine slows every variant alike
        for name, run in variants.items():
            r = run(split)
            rows[name].append(r)
            print(f"split {split} {name}: {r['ms_per_step']:.1f} ms/step, acc {r['ens_acc']:.4f}",
                  file=sys.stderr)  # fmt: skip
    base = statistics.median(r["ms_per_step"] for r in rows["dwp, local reparameterization"])
    print(
        f"torch {torch.__version__}, 1 thread; {args.examples} examples, {args.epochs} epochs, "
        f"splits {' '.join(map(str, args.splits))} (median ms / step, mean accuracy and NLL)"
    )
    print("| layer | ms / step | vs dwp local | accuracy | NLL |")
    print("|---|---|---|---|---|")
    for name, rs in rows.items():
        ms = statistics.median(r["ms_per_step"] for r in rs)
        acc = statistics.fmean(r["ens_acc"] for r in rs)
        nll = statistics.fmean(r["nll"] for r in rs)
        print(f"| {name} | {ms:.1f} | {ms / base:.2f}x | {acc:.3f} | {nll:.3f} |")


if __name__ == "__main__":
    main()
