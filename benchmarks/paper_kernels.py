"""Source nets at the paper's widths on `letters`, then their kernel datasets, on one device.

Runs from a source checkout without installing the package (PYTHONPATH=src), so it also runs on
a GPU machine that has PyTorch but not dwp's CLI dependencies. Nets are trained one after another
and saved as they finish; after --seconds the training stops and the kernels are extracted from
the nets finished by then. Example (the run behind the issue-3 note, on one H100/H200):

    PYTHONPATH=src python3 benchmarks/paper_kernels.py --out $OUT --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dwp.kernels import KernelConfig, extract_kernels
from dwp.train.source import SourceConfig, list_source_nets, load_source_net, train_source_nets


class _Deadline(Exception):
    pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dataset", default="letters", help="source dataset (catalog name)")
    p.add_argument("--data-root", default=None, help="where the dataset's files are")
    p.add_argument("--work", type=Path, default=Path("/tmp/dwp-work"))
    p.add_argument("--nets", type=int, default=100)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs=2, default=(256, 512))
    p.add_argument("--seconds", type=float, default=360.0, help="training time budget")
    p.add_argument("--max-kernels", type=int, default=60000)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()

    device = torch.device(args.device)
    print(
        "torch",
        torch.__version__,
        "python",
        sys.version.split()[0],
        "device",
        torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        flush=True,
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cfg = SourceConfig(
        dataset=args.dataset, nets=args.nets, hidden=tuple(args.hidden), epochs=args.epochs
    )
    t0 = time.perf_counter()

    def done(i: int, m: dict) -> None:
        print(
            f"net {i:3d} test acc {m['test_acc']:.4f} loss {m['train_loss']:.4f} "
            f"{m['seconds']:.2f}s",
            flush=True,
        )
        if time.perf_counter() - t0 > args.seconds:
            raise _Deadline

    try:
        train_source_nets(
            cfg, args.work / "source", device, data_root=args.data_root, on_net_done=done
        )
    except _Deadline:
        print(f"time budget of {args.seconds:.0f}s reached", flush=True)
    train_seconds = time.perf_counter() - t0
    paths = list_source_nets(args.work / "source")
    t1 = time.perf_counter()
    stats = extract_kernels(
        [load_source_net(q)[0] for q in paths],
        args.out / "kernels",
        KernelConfig(max_kernels=args.max_kernels),
    )
    summary = {
        "dataset": args.dataset,
        "nets": len(paths),
        "epochs": args.epochs,
        "hidden": args.hidden,
        "train_seconds": train_seconds,
        "extract_seconds": time.perf_counter() - t1,
        "device": str(device),
        "layers": {k: {p: v[p] for p in ("train", "test")} for k, v in stats["layers"].items()},
    }
    print(json.dumps(summary, indent=1), flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    src = args.work / "source" / "metrics.jsonl"
    (args.out / "source_metrics.jsonl").write_text(src.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
