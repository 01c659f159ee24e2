"""Tables of finished runs: read the ``result.json`` / ``config.json`` pairs of Bayesian CNN
runs and summarise them per setting (prior, init, examples, epochs) across split seeds."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from dwp import tables
from dwp.config import DEFAULT_HIDDEN, BNNConfig, defaults
from dwp.data.catalog import dataset_arch
from dwp.errors import DWPError
from dwp.io import read_json

__all__ = ["bnn_summary", "find_bnn_runs", "markdown_table"]

_KEY = ("dataset", "prior", "init", "examples", "epochs", "dwp_kernel_batch")
# Config fields that cannot change a run's result (or are the table's columns).
_NOT_SETTINGS = {"split_seed", "eval_every", "format_version", *_KEY}
_LABELS = {"prior_dirs": "priors", "kernel_dirs": "kernels"}


def find_bnn_runs(paths: list[str | Path]) -> list[dict]:
    """Every finished run under ``paths`` (run directories, or folders searched recursively),
    as ``{"run", "config", "result", "uncertainty"}`` dicts (the last None for a run that
    ``dwp bnn eval`` has not evaluated) sorted by run path; unfinished runs are skipped."""
    runs = []
    for p in map(Path, paths):
        if not p.exists():
            raise DWPError(f"{p} does not exist")
        results = [p / "result.json"] if (p / "result.json").is_file() else p.rglob("result.json")
        for r in results:
            result, config = read_json(r), read_json(r.parent / "config.json")
            u = r.parent / "uncertainty.json"  # `dwp bnn eval` made one
            runs.append({"run": str(r.parent), "config": config, "result": result,
                         "uncertainty": read_json(u) if u.is_file() else None})  # fmt: skip
    return sorted(runs, key=lambda x: x["run"])


def _final_kl(run: dict) -> float | None:
    """The run's KL at the end, as the exact mode estimates it (None for fast-mode runs that
    predate the ``kl_exact`` record: their ``kl`` is the cached model's value)."""
    result = run["result"]
    if "kl_exact" in result:
        return result["kl_exact"]  # None where it could not be measured
    return None if run["config"].get("dwp_kernel_batch") else result.get("kl")


def bnn_summary(runs: list[dict]) -> list[dict]:
    """One row per setting: the per-split accuracy and NLL, their means (and the accuracy's
    standard deviation over splits), the mean final KL (exact estimate; None if a run lacks
    it), and the median wall time per run."""
    groups = defaultdict(list)
    for r in runs:
        c = r["config"]
        other = tuple(sorted((k, _hashable(v)) for k, v in _settings(c).items()
                             if k not in _NOT_SETTINGS))  # fmt: skip
        groups[(tuple(c.get(k) for k in _KEY), other)].append(r)
    # settings beyond the table's columns that differ between groups name their rows
    varying = {k for k in {k for _, o in groups for k, _ in o}
               if len({dict(o).get(k) for _, o in groups}) > 1}  # fmt: skip
    rows = []
    for (key, _), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        members.sort(key=lambda r: r["config"].get("split_seed", 0))
        splits = [m["config"].get("split_seed") for m in members]
        twice = sorted({s for s in splits if splits.count(s) > 1}, key=str)
        if twice:
            dup = [m["run"] for m in members if m["config"].get("split_seed") == twice[0]]
            raise DWPError(
                f"split {twice[0]} of one setting was run twice ({', '.join(dup)}); "
                "summarise one of the runs"
            )
        acc = [m["result"]["ens_acc"] for m in members]
        nll = [m["result"]["nll"] for m in members]
        kls = [_final_kl(m) for m in members]
        rows.append({
            **dict(zip(_KEY, key, strict=True)),
            "setting": {k: v for k, v in _settings(members[0]["config"]).items() if k in varying},
            "splits": splits,
            "ens_acc": acc,
            "nll": nll,
            "mean_acc": statistics.fmean(acc),
            "std_acc": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "mean_nll": statistics.fmean(nll),
            "mean_kl": None if None in kls else statistics.fmean(kls),
            "wall_s": statistics.median(m["result"]["wall_s"] for m in members),
            "uncertainty": _mean_uncertainty(members),
        })  # fmt: skip
    return rows


def _mean_uncertainty(members: list[dict]) -> dict | None:
    """The means over the runs of their uncertainty figures (the main columns of
    :func:`dwp.eval.uncertainty_columns`, title -> mean), when every run was evaluated alike."""
    from dwp.eval import flat_uncertainty, uncertainty_columns

    us = [m.get("uncertainty") for m in members]
    if not us or None in us:
        return None
    ood = list(us[0]["ood"])
    rotations = [r["degrees"] for r in us[0]["rotation"]]
    if any(list(u["ood"]) != ood or [r["degrees"] for r in u["rotation"]] != rotations
           for u in us):  # fmt: skip
        return None
    flats = [flat_uncertainty(u) for u in us]
    return {title: statistics.fmean(f[key] for f in flats)
            for title, key in uncertainty_columns(ood, rotations).items()}  # fmt: skip


def markdown_table(rows: list[dict]) -> str:
    """The summary as a Markdown table (accuracy / NLL per split, then the means; then the
    uncertainty columns of rows whose runs `dwp bnn eval` evaluated alike)."""
    splits = sorted({s for r in rows for s in r["splits"]})
    head = ["dataset", "prior", "init", "examples", "epochs"] + [f"split {s}" for s in splits]
    head += ["mean acc (± sd)", "mean NLL", "final KL", "wall s / run"]
    extra = list(dict.fromkeys(k for r in rows for k in (r.get("uncertainty") or {})))
    head += extra
    cells = []
    for r in rows:
        by_split = dict(zip(r["splits"], zip(r["ens_acc"], r["nll"], strict=True), strict=True))
        prior = r["prior"]
        notes = [f"{_LABELS.get(k, k)} {_short(v)}" for k, v in sorted(r.get("setting", {}).items())
                 if v not in (None, [])]  # fmt: skip
        if prior == "dwp" and r.get("dwp_kernel_batch"):
            notes.append(f"kernel batch {r['dwp_kernel_batch']}")
        if notes:
            prior += f" ({', '.join(notes)})"
        row = [r["dataset"], prior, r["init"], r["examples"], r["epochs"]]
        row += [f"{by_split[s][0]:.3f} / {by_split[s][1]:.3f}" if s in by_split else "-"
                for s in splits]  # fmt: skip
        kl = "-" if r.get("mean_kl") is None else f"{r['mean_kl']:.0f}"
        row += [f"{r['mean_acc']:.4f} ± {r['std_acc']:.3f}", f"{r['mean_nll']:.3f}", kl,
                f"{r['wall_s']:.0f}"]  # fmt: skip
        u = r.get("uncertainty") or {}
        row += [f"{u[k]:.3f}" if k in u else "-" for k in extra]
        cells.append(row)
    return tables.markdown_table(head, cells)


def _settings(config: dict) -> dict:
    """A run's config with what older formats left implicit made explicit: fields they lack
    take today's defaults, and widths equal to the network family's default read as None."""
    out = defaults(BNNConfig)
    out.update(config)
    if out.get("model") or out.get("format") == "dwp-fit":  # a user's model: no family widths
        return out
    arch = dataset_arch(out["dataset"], out.get("arch", "auto"))
    hidden = out.get("hidden")
    if hidden is not None and tuple(hidden) == DEFAULT_HIDDEN[(arch, "target")]:
        out["hidden"] = None
    return out


def _hashable(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return tuple(map(_hashable, value)) if isinstance(value, list) else value


def _short(value) -> str:
    """A setting's value for a table cell: paths by their last two parts."""
    if isinstance(value, list):
        return " ".join(_short(v) for v in value) if value else "-"
    if isinstance(value, str) and "/" in value:
        return "/".join(Path(value).parts[-2:])
    return str(value)
