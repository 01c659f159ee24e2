"""Classification with limited data (the paper's main experiment): training-set sizes x split
seeds x methods, where a method is a Bayesian net (FConv; CIFARNet for CIFAR; VGGNet with
``arch="vgg"``) with a prior (``dwp``, ``gaussian``: the Gaussian kernel prior fitted to the
DWP's kernels, ``log-uniform``, ``normal``) or the same net, deterministic, with an L2 penalty
(``l2-xavier``, ``l2-dwp``, ``l2-kaiming``: its kernels start from Xavier, from samples of the
DWP, or from Kaiming-normal).

Each Bayesian run is an ordinary run directory of :func:`dwp.train.bnn.train_bnn`
(``OUT/runs/METHOD-nN-sS/``), each deterministic run a JSON file beside them, so a killed sweep
resumes where it stopped and a finished one is read back. ``OUT/results.csv`` holds one row per
run, ``OUT/summary.json`` the mean and standard deviation per method and size with the paper's
number beside it, ``OUT/accuracy.png`` the figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.nn import functional as F

from dwp.config import BAYES_METHODS, L2_METHODS, BNNConfig, ClassificationConfig, Init
from dwp.data import few_shot, load_dataset
from dwp.errors import DWPError
from dwp.eval import classification_metrics, flat_uncertainty, predict
from dwp.io import (
    check_finite,
    check_same_config,
    cleanup_on_failure,
    read_json,
    write_csv,
    write_json,
)
from dwp.nn import (
    DeepEnsemble,
    build_net,
    check_hidden,
    conv_layers,
    describe_net,
    init_classifier,
    init_conv_kernels,
    l2_penalty,
    resolve_arch,
)
from dwp.priors import DeepWeightPrior, check_per_layer, data_scales, scaled_priors
from dwp.train.bnn import UNCERTAINTY, train_bnn
from dwp.train.loop import adam_linear_decay

from .paper import family, paper_classification

__all__ = [
    "BAYES_METHODS",
    "L2_METHODS",
    "ClassificationConfig",
    "run_classification",
    "run_one",
    "summarise_classification",
]


#: Methods whose nets are deterministic (a JSON file per run, no run directory).
DETERMINISTIC_METHODS = (*L2_METHODS, "l2-kaiming", "ensemble")
_L2_INIT = {"l2-kaiming": Init.kaiming}  # l2-dwp: the sweep's dwp_init; the others: Xavier
#: Member m of an ensemble starts from seed split + m * this.
ENSEMBLE_SEED_STRIDE = 7919
#: The keys of a sweep's config that choose its runs, or what is measured of them, rather than
#: how each run trains.
GRID = ("examples", "splits", "methods", "ood", "rotations", "shift_examples")
#: What a sweep config written before a key existed did.
LEGACY_SWEEP = {"sampling": "local", "ensemble_size": 5, "test_examples": None, "dwp_init": "dwp"}


def run_name(task: dict) -> str:
    return f"{task['method']}-n{task['examples']}-s{task['split']}"


def _bnn_config(config: ClassificationConfig, task: dict) -> BNNConfig:
    learned = task["method"] in ("dwp", "gaussian")  # start from samples of their own prior
    return BNNConfig(
        dataset=config.dataset, examples=task["examples"], split_seed=task["split"],
        prior=task["method"], init=config.dwp_init if learned else Init.xavier,
        prior_dirs=config.prior_dirs if learned else (), hidden=config.hidden, arch=config.arch,
        epochs=config.epochs, lr=config.lr, eval_every=config.epochs,
        ens_samples=config.ens_samples, prior_scale=config.prior_scale, sampling=config.sampling,
        dwp_kernel_batch=config.dwp_kernel_batch if task["method"] == "dwp" else None,
        dwp_estimator=config.dwp_estimator if task["method"] == "dwp" else "cache",
        test_examples=config.test_examples,
    )  # fmt: skip


def _fit_l2_net(
    config: ClassificationConfig, task: dict, device: torch.device, ds, member: int = 0
) -> tuple[torch.nn.Module, float]:
    """One deterministic net of ``task`` trained on dataset ``ds`` (member ``m`` of an
    ensemble: init seed split + 7919 m; member 0 is the l2 net of that split), and its training
    accuracy."""
    train = few_shot(ds.train, task["examples"], task["split"])
    channels, size = int(train.images.shape[1]), int(train.images.shape[-1])
    seed = task["split"] + ENSEMBLE_SEED_STRIDE * member
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        arch = resolve_arch(config.arch, channels, size)
        model = build_net(arch, check_hidden(arch, config.hidden, "target"), channels,
                          ds.num_classes, size, bayes=True)  # fmt: skip
        init_classifier(model)
    convs = conv_layers(model)
    priors = None
    if task["method"] == "l2-dwp":
        check_per_layer(config.prior_dirs, list(convs), "prior directories")
        priors = {
            n: DeepWeightPrior.from_dir(d) for n, d in zip(convs, config.prior_dirs, strict=True)
        }
        if config.prior_scale == "data":  # the Bayesian DWP net's rule, on the same images
            gen = torch.Generator().manual_seed(seed + 1)
            scales = data_scales(model, priors, train.images, generator=gen,
                                 mean=config.dwp_init == Init.dwp)  # fmt: skip
            priors = scaled_priors(priors, scales)
    init = (
        config.dwp_init if task["method"] == "l2-dwp" else _L2_INIT.get(task["method"], Init.xavier)
    )
    init_conv_kernels(convs, init, priors=priors, generator=torch.Generator().manual_seed(seed))
    model.to(device)
    x, y = train.images.to(device), train.labels.to(device)
    opt, sched = adam_linear_decay(model.parameters(), config.lr, config.epochs)  # full batch
    for epoch in range(config.epochs):
        logits = model(x)
        loss = F.cross_entropy(logits, y) + config.l2 * l2_penalty(model)
        if not torch.isfinite(loss):
            raise DWPError(f"{run_name(task)}: the loss became {float(loss)} at epoch {epoch + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.inference_mode():
        train_acc = float((model(x).argmax(1) == y).double().mean())
    return model, train_acc


def train_l2_net(
    config: ClassificationConfig,
    task: dict,
    device: torch.device | str = "cpu",
    data_root=None,
    return_model: bool = False,
) -> dict:
    """The deterministic baseline: the Bayesian net's architecture trained on the few-shot set
    with mean cross-entropy + ``l2`` * sum of squares of the conv parameters, Adam with the lr
    decayed linearly to 0; for method ``ensemble``, ``ensemble_size`` such nets (Xavier inits
    of different seeds) whose predictive probabilities are averaged. Returns test ``acc``,
    ``nll``, ``brier``, ``ece``, ``adaptive_ece``, ``train_acc`` (the mean over an ensemble's
    nets) and ``wall_s`` (and the trained ``model``, a :class:`~dwp.nn.DeepEnsemble` for an
    ensemble, with ``return_model``)."""
    t0 = time.perf_counter()
    device = torch.device(device)
    size = config.ensemble_size if task["method"] == "ensemble" else 1
    ds = load_dataset(config.dataset, data_root, test_examples=config.test_examples)
    fitted = [_fit_l2_net(config, task, device, ds, m) for m in range(size)]
    model = DeepEnsemble([m for m, _ in fitted]) if task["method"] == "ensemble" else fitted[0][0]
    probs = predict(model, ds.test.images, samples=1, mode="mean").probs
    res = {**classification_metrics(probs, ds.test.labels),
           "train_acc": statistics.fmean(a for _, a in fitted),
           "wall_s": time.perf_counter() - t0}  # fmt: skip
    check_finite(res, f"{run_name(task)}: the trained net gave")  # a last step can give NaN
    return {**res, "model": model} if return_model else res


def run_one(
    config: ClassificationConfig, task: dict, *, out: str | Path, device="cpu", data_root=None
) -> dict:
    """Run (or read back) one task of the sweep; returns its row: method, examples, split,
    acc (the 10-sample ensemble's for Bayesian nets), nll, wall_s, and with ``config.ood`` or
    ``config.rotations`` the uncertainty figures of :func:`dwp.eval.flat_uncertainty`."""
    out = Path(out)
    name = run_name(task)
    model = None
    if task["method"] in DETERMINISTIC_METHODS:
        path = out / "runs" / f"{name}.json"
        if path.is_file():
            res = read_json(path)
            check_finite(res, f"{path} is not a valid result (delete it to re-run the run)")
        else:
            res = train_l2_net(config, task, device, data_root, return_model=True)
            model = res.pop("model")
            write_json(path, res)
        acc = res["acc"]
    else:
        res = train_bnn(_bnn_config(config, task), out / "runs" / name, device, data_root)
        acc = res["ens_acc"]
    row = {**task, "acc": acc, "nll": res["nll"], "wall_s": res["wall_s"]}
    if config.ood or config.rotations:
        u = _uncertainty(config, task, out, device, data_root, model)
        row.update(flat_uncertainty(u), reliability=u["test"]["reliability"])
    return row


def _uncertainty_path(out: Path, task: dict) -> Path:
    name = run_name(task)
    if task["method"] in DETERMINISTIC_METHODS:
        return out / "runs" / f"{name}.uncertainty.json"
    return out / "runs" / name / UNCERTAINTY


def _uncertainty(config, task, out: Path, device, data_root, model=None) -> dict:
    """The run's uncertainty evaluation: read back when it was made with the sweep's settings,
    else made (a deterministic net whose model is gone is trained again: it is seeded)."""
    from dwp.data.shift import ood_images
    from dwp.eval import evaluate_uncertainty
    from dwp.train.bnn import evaluate_run

    deterministic = task["method"] in DETERMINISTIC_METHODS
    samples = 1 if deterministic else config.ens_samples  # an ensemble: one per member
    path = _uncertainty_path(out, task)
    if path.is_file():
        u = read_json(path)
        made = (list(u.get("ood", {})), [r["degrees"] for r in u.get("rotation", [])],
                u.get("samples"), u.get("shift_examples"))  # fmt: skip
        if made == (list(config.ood), list(config.rotations), samples, config.shift_examples):
            return u
    if not deterministic:
        return evaluate_run(out / "runs" / run_name(task), config.ood, config.rotations,
                            samples, 0, device=device, data_root=data_root,
                            shift_examples=config.shift_examples)  # fmt: skip
    if model is None:
        model = train_l2_net(config, task, device, data_root, return_model=True)["model"]
    ds = load_dataset(config.dataset, data_root, test_examples=config.test_examples)
    shape = tuple(int(v) for v in ds.test.images.shape[1:])
    sets = {n: ood_images(n, shape, len(ds.test), data_root) for n in config.ood}
    u = evaluate_uncertainty(model, ds.test, ood=sets, rotations=config.rotations,
                             samples=samples, seed=0,
                             shift_examples=config.shift_examples)  # fmt: skip
    u = {"method": task["method"], "examples": task["examples"], "split_seed": task["split"], **u}
    write_json(path, u)
    return u


def _check_priors_fit(config: ClassificationConfig, tasks: list[dict]) -> None:
    """Build the DWP method's net once (on CPU, from the catalog's image shape) when a method
    uses the priors (dwp, l2-dwp: the same net and priors; gaussian: its own), so that priors
    that do not fit the net (or record no kernels to fit a Gaussian to) fail before any run."""
    from dwp.data import DATASETS
    from dwp.train.bnn import build_bnn

    uses = [t for t in tasks if t["method"] in ("dwp", "gaussian", "l2-dwp")]
    if not uses or config.dataset not in DATASETS:
        return  # nothing to check, or the runs name the unknown dataset
    channels, size = DATASETS[config.dataset].shape
    for method in sorted({"gaussian" if t["method"] == "gaussian" else "dwp" for t in uses}):
        build_bnn(_bnn_config(config, {**uses[0], "method": method}), channels, 10, size)


def _check_ood_sets(config: ClassificationConfig, data_root) -> None:
    """Out-of-distribution sets that do not exist or do not fit the target fail before any
    run."""
    if not config.ood:
        return
    from dwp.data.shift import ood_images

    shape = tuple(int(v) for v in load_dataset(config.dataset, data_root).test.images.shape[1:])
    for name in config.ood:
        ood_images(name, shape, 1, data_root)


def summarise_classification(rows: list[dict], dataset: str, arch: str = "auto") -> list[dict]:
    """Per method and training-set size: runs, mean and sd of accuracy, mean NLL, and the
    paper's accuracy (None where it has none, or where ``arch`` is not the paper's network)
    with the difference."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["examples"]), []).append(r)
    out = []
    for (method, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        accs = [r["acc"] for r in rs]
        mean = statistics.fmean(accs)
        paper = paper_classification(dataset, method, n, arch)
        out.append({
            "method": method, "examples": n, "runs": len(rs), "splits": [r["split"] for r in rs],
            "acc_mean": mean, "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "nll_mean": statistics.fmean(r["nll"] for r in rs),
            "wall_s_mean": statistics.fmean(r["wall_s"] for r in rs),
            "paper": paper, "diff": None if paper is None else mean - paper,
            **{f"{k}_mean": statistics.fmean(r[k] for r in rs) for k in _extra_keys(rs)},
        })  # fmt: skip
    return out


_ROW_KEYS = ("method", "examples", "split", "acc", "nll", "wall_s")
_PAPER_NOTE = {"mnist": " (full MNIST, 10000 epochs)"}


def _extra_keys(rows: list[dict]) -> list[str]:
    """The uncertainty figures every one of ``rows`` has, in their first row's order."""
    keys = [k for k, v in rows[0].items() if k not in _ROW_KEYS and isinstance(v, float | int)]
    return [k for k in keys if all(k in r for r in rows)]


def run_classification(
    config: ClassificationConfig,
    out: str | Path,
    device: torch.device | str = "cpu",
    data_root=None,
    on_run: Callable[[dict], None] | None = None,
    executor=None,
) -> list[dict]:
    """Run (or resume, or read back) the sweep in ``out``; returns the summary rows.

    ``on_run`` receives each finished row with ``index`` (how many have finished) and ``total``.
    ``executor``: where the runs execute (see :mod:`dwp.executors`); None runs them one after
    another in this process. A failed run does not stop the others: the results of those that
    finished are written, then :class:`~dwp.executors.RunFailed` names the failed ones."""
    with cleanup_on_failure(out, keep=["runs"]):  # a failure before any run: nothing left
        return _run_classification(config, out, device, data_root, on_run, executor)


def _run_classification(config, out, device, data_root, on_run, executor):
    from dwp.executors import gather

    out = Path(out)
    # the grid only picks runs (each run directory checks its own config), so a sweep can be
    # extended with more sizes, splits or methods; a config written before a key existed: legacy
    check_same_config(out, config.to_dict(), "an experiment", legacy=LEGACY_SWEEP, ignore=GRID)
    tasks = config.tasks()
    _check_priors_fit(config, tasks)
    _check_ood_sets(config, data_root)
    write_json(out / "config.json", config.to_dict())
    job = partial(run_one, config, out=out, device=str(device), data_root=data_root)
    finished = 0

    def on_result(_: int, row: dict) -> None:
        nonlocal finished
        finished += 1
        if on_run is not None:
            on_run({**row, "index": finished, "total": len(tasks)})

    results, error = gather(executor, job, tasks, [run_name(t) for t in tasks], on_result)
    rows = [r for r in results if r is not None]
    if not rows:
        raise error
    extra = _extra_keys(rows)
    write_csv(out / "results.csv", [*_ROW_KEYS, *extra],
              ([r["method"], r["examples"], r["split"], f"{r['acc']:.6f}", f"{r['nll']:.6f}",
                f"{r['wall_s']:.2f}", *(f"{r[k]:.6f}" for k in extra)]
               for r in rows))  # fmt: skip
    summary = summarise_classification(rows, config.dataset, config.arch)
    write_json(out / "summary.json", {"dataset": config.dataset, "rows": summary})
    from dwp.plots import accuracy_vs_examples

    if config.ood or config.rotations:
        _uncertainty_figures(config, rows, out)

    ds_note = f"{config.dataset}, splits {_ranges(config.splits)}"
    accuracy_vs_examples(
        summary, config.dataset, out / "accuracy.png",
        caption=f"{describe_net(config.arch, config.hidden, 'target', config.dataset)} on "
        f"{ds_note}; {config.epochs} "
        f"epochs; Bayesian nets: {config.ens_samples}-sample ensemble; mean ± sd over splits"
        + (f"; crosses: the paper{_PAPER_NOTE.get(family(config.dataset) or '', '')}"
           if any(r["paper"] is not None for r in summary) else ""),
    )  # fmt: skip
    if error is not None:
        raise error
    return summary


def _pool_bins(runs: list[list[dict]]) -> list[dict]:
    """The reliability bins of several runs as one set of predictions: counts added, mean
    confidence and accuracy weighted by the counts."""
    pooled = []
    for b in zip(*runs, strict=True):
        count = sum(x["count"] for x in b)

        def mean(key: str, b=b, count=count) -> float | None:
            return sum(x[key] * x["count"] for x in b if x["count"]) / count if count else None

        pooled.append({"lower": b[0]["lower"], "upper": b[0]["upper"], "count": count,
                       "confidence": mean("confidence"), "accuracy": mean("accuracy")})  # fmt: skip
    return pooled


def _uncertainty_figures(config: ClassificationConfig, rows: list[dict], out: Path) -> None:
    """``reliability.png`` (a panel per method, the bins of its runs at the smallest size
    pooled over splits) and, with rotations, ``rotation.png`` (accuracy and ECE against the
    angle per method at that size, the mean over splits)."""
    from dwp.plots import reliability_diagram, rotation_curves

    n = min(r["examples"] for r in rows if "reliability" in r)
    at_n = [r for r in rows if r["examples"] == n and "reliability" in r]
    methods = list(dict.fromkeys(r["method"] for r in at_n))
    pooled = {m: _pool_bins([r["reliability"] for r in at_n if r["method"] == m])
              for m in methods}  # fmt: skip
    splits = sorted({r["split"] for r in at_n})
    caption = (f"{config.dataset}, {n} training examples, splits {_ranges(tuple(splits))} "
               f"pooled; Bayesian nets: {config.ens_samples} weight draws")  # fmt: skip
    bins = len(next(iter(pooled.values())))
    reliability_diagram(pooled, out / "reliability.png", caption, bins)
    if config.rotations:
        curves = {m: [{"degrees": a, **{k: statistics.fmean(r[f"{k}_rot{a:g}"] for r in at_n
                                                          if r["method"] == m)
                                       for k in ("acc", "ece")}} for a in config.rotations]
                  for m in methods}  # fmt: skip
        turned = ("all test images" if config.shift_examples is None
                  else f"{config.shift_examples} test images")  # fmt: skip
        rotation_curves(curves, out / "rotation.png",
                        caption.replace(" pooled", f", mean; {turned} rotated"))  # fmt: skip


def _ranges(values: tuple[int, ...]) -> str:
    """``0..9`` for a run of consecutive integers, else a comma list."""
    v = sorted(values)
    if len(v) > 2 and v == list(range(v[0], v[-1] + 1)):
        return f"{v[0]}..{v[-1]}"
    return ", ".join(map(str, v))
