"""Tables of finished runs: read the ``result.json`` / ``config.json`` pairs of Bayesian CNN
runs and summarise them per setting (prior, init, examples, epochs) across split seeds."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from dwp.errors import DWPError
from dwp.io import read_json

__all__ = ["bnn_summary", "find_bnn_runs", "markdown_table"]

_KEY = ("dataset", "prior", "init", "examples", "epochs", "dwp_kernel_batch")


def find_bnn_runs(paths: list[str | Path]) -> list[dict]:
    """Every finished run under ``paths`` (run directories, or folders searched recursively),
    as ``{"run", "config", "result"}`` dicts sorted by run path; unfinished runs are skipped."""
    runs = []
    for p in map(Path, paths):
        if not p.exists():
            raise DWPError(f"{p} does not exist")
        results = [p / "result.json"] if (p / "result.json").is_file() else p.rglob("result.json")
        for r in results:
            result, config = read_json(r), read_json(r.parent / "config.json")
            runs.append({"run": str(r.parent), "config": config, "result": result})
    return sorted(runs, key=lambda x: x["run"])


def bnn_summary(runs: list[dict]) -> list[dict]:
    """One row per setting: the per-split accuracy and NLL, their means (and the accuracy's
    standard deviation over splits), and the median wall time per run."""
    groups = defaultdict(list)
    for r in runs:
        c = r["config"]
        groups[tuple(c.get(k) for k in _KEY)].append(r)
    rows = []
    for key, members in sorted(groups.items(), key=lambda kv: [str(x) for x in kv[0]]):
        members.sort(key=lambda r: r["config"].get("split_seed", 0))
        acc = [m["result"]["ens_acc"] for m in members]
        nll = [m["result"]["nll"] for m in members]
        rows.append({
            **dict(zip(_KEY, key, strict=True)),
            "splits": [m["config"].get("split_seed") for m in members],
            "ens_acc": acc,
            "nll": nll,
            "mean_acc": statistics.fmean(acc),
            "std_acc": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "mean_nll": statistics.fmean(nll),
            "wall_s": statistics.median(m["result"]["wall_s"] for m in members),
        })  # fmt: skip
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The summary as a Markdown table (accuracy / NLL per split, then the means)."""
    splits = sorted({s for r in rows for s in r["splits"]})
    head = ["dataset", "prior", "init", "examples", "epochs"] + [f"split {s}" for s in splits]
    head += ["mean acc (± sd)", "mean NLL", "wall s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        by_split = dict(zip(r["splits"], zip(r["ens_acc"], r["nll"], strict=True), strict=True))
        prior = r["prior"]
        if prior == "dwp" and r.get("dwp_kernel_batch"):
            prior += f" (kernel batch {r['dwp_kernel_batch']})"
        cells = [r["dataset"], prior, r["init"], str(r["examples"]), str(r["epochs"])]
        cells += [f"{by_split[s][0]:.3f} / {by_split[s][1]:.3f}" if s in by_split else "-"
                  for s in splits]  # fmt: skip
        cells += [f"{r['mean_acc']:.4f} ± {r['std_acc']:.3f}", f"{r['mean_nll']:.3f}",
                  f"{r['wall_s']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
