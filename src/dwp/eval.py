"""Evaluation of (Bayesian) classifiers: MC-ensemble prediction, accuracy, NLL, Brier score,
calibration (ECE, adaptive ECE, reliability diagrams) and out-of-distribution detection.

The metrics take predictive probabilities (N, classes) of any model: the mean over the MC
samples of a Bayesian net, a deep ensemble's mean, one net's softmax. The uncertainty scores
(:func:`uncertainty_scores`) also use the samples (S, N, classes), for the part of the
uncertainty that is about the weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dwp.errors import DWPError
from dwp.nn.bayes import Mode, bayes_mode, set_noise_generator

__all__ = [
    "OOD_SCORES",
    "Prediction",
    "adaptive_calibration_error",
    "brier_score",
    "classification_metrics",
    "evaluate_accuracy",
    "evaluate_bnn",
    "evaluate_uncertainty",
    "expected_calibration_error",
    "flat_uncertainty",
    "ood_detection",
    "predict",
    "predict_proba",
    "reliability",
    "uncertainty_columns",
    "uncertainty_scores",
]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data, batch_size: int = 1000) -> float:
    """Top-1 accuracy of an ordinary ``model`` on an :class:`~dwp.data.ImageSet`, evaluated
    on the model's device (in eval mode; the model's mode is restored)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        x = data.images[start : start + batch_size].to(device)
        y = data.labels[start : start + batch_size].to(device)
        correct += int((model(x).argmax(1) == y).sum())
    model.train(was_training)
    return correct / max(1, len(data))


@torch.inference_mode()
def predict_proba(
    model: nn.Module,
    images: torch.Tensor,
    samples: int = 10,
    batch_size: int = 1000,
    mode: Mode | str = Mode.weight,
) -> torch.Tensor:
    """Predictive probabilities per MC sample, shape (samples, N, classes).

    In ``weight`` mode every sample is a forward pass with a fresh draw of the weights (per
    batch of ``batch_size``: a network drawn from the posterior); in ``sample`` mode with fresh
    local-reparameterization noise (each Bayesian layer draws from its ``generator``; the
    same predictive distribution per example, twice the cost); in ``mean`` mode one
    deterministic pass is returned (samples 1). A :class:`~dwp.nn.DeepEnsemble` gives one
    sample per member (whatever ``samples`` is). Inputs are moved to the model's device batch
    by batch; the result is on the CPU.
    """
    from dwp.nn.ensemble import DeepEnsemble

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    if isinstance(model, DeepEnsemble):  # a sample per member
        with bayes_mode(model, mode):
            out = [model.member_probs(images[i : i + batch_size].to(device)).cpu()
                   for i in range(0, len(images), batch_size)]  # fmt: skip
        model.train(was_training)
        return torch.cat(out, dim=1)
    n_samples = 1 if Mode(mode) is Mode.mean else samples
    out = []
    with bayes_mode(model, mode):
        for _ in range(n_samples):
            probs = [
                F.softmax(model(images[i : i + batch_size].to(device)), dim=1).cpu()
                for i in range(0, len(images), batch_size)
            ]
            out.append(torch.cat(probs))
    model.train(was_training)
    return torch.stack(out)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): the confidence axis [0, 1] cut into ``bins`` equal bins, the mean
    over examples of |accuracy - confidence| of each example's bin. ``probs`` (N, classes)."""
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    conf = conf.double()
    # bin b holds confidences in (b/bins, (b+1)/bins]; confidence 0 goes to bin 0
    which = (conf * bins).ceil().long().clamp(1, bins) - 1
    gap = torch.zeros(bins, dtype=torch.float64)
    gap.index_add_(0, which, correct - conf)
    return float(gap.abs().sum() / max(1, len(labels)))


def _check_probs(probs: torch.Tensor, labels: torch.Tensor | None, what: str) -> None:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or probs.shape[0] == 0:
        raise DWPError(f"{what}: expected probabilities of shape (N, classes) with N >= 1")
    if labels is not None and labels.shape != probs.shape[:1]:
        raise DWPError(f"{what}: {len(probs)} predictions but labels of shape "
                       f"{tuple(labels.shape)}")  # fmt: skip


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The multi-class Brier score (Brier 1950): the mean over examples of the squared
    distance sum_k (p_k - [y = k])^2 between the predicted distribution and the one-hot label;
    0 for a certain, right prediction, 2 for a certain, wrong one."""
    _check_probs(probs, labels, "brier_score")
    p = probs.double().cpu()
    onehot = F.one_hot(labels.cpu().long(), p.shape[1]).double()
    return float((p - onehot).pow(2).sum(1).mean())


def adaptive_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Adaptive ECE (Nguyen & O'Connor 2015; Nixon et al. 2019): as the ECE, but the bins hold
    equal numbers of examples (the confidences sorted and cut into ``bins`` runs whose sizes
    differ by at most one) instead of equal widths of the confidence axis; the mean over
    examples of |accuracy - confidence| of each example's bin."""
    _check_probs(probs, labels, "adaptive_calibration_error")
    conf, pred = probs.double().cpu().max(1)
    correct = (pred == labels.cpu()).double()
    order = conf.argsort()
    gap = sum(abs(float(correct[i].sum() - conf[i].sum()))
              for i in order.tensor_split(min(bins, len(conf))))  # fmt: skip
    return gap / len(conf)


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    """The reliability diagram's data: the confidence axis [0, 1] cut into ``bins`` equal bins
    (bin b holds confidences in (b/bins, (b+1)/bins], as :func:`expected_calibration_error`);
    per bin its ``lower`` and ``upper`` edge, ``count``, mean ``confidence`` and ``accuracy``
    (None for an empty bin), and ``bins`` and ``ece``."""
    _check_probs(probs, labels, "reliability")
    conf, pred = probs.double().cpu().max(1)
    correct = (pred == labels.cpu()).double()
    which = (conf * bins).ceil().long().clamp(1, bins) - 1
    count = torch.bincount(which, minlength=bins)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, conf)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct)
    rows = [{"lower": b / bins, "upper": (b + 1) / bins, "count": int(count[b]),
             "confidence": float(conf_sum[b] / count[b]) if count[b] else None,
             "accuracy": float(acc_sum[b] / count[b]) if count[b] else None}
            for b in range(bins)]  # fmt: skip
    return {"bins": bins, "rows": rows, "ece": expected_calibration_error(probs, labels, bins)}


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    """Accuracy, mean negative log-likelihood (nats), Brier score, ECE and adaptive ECE (both
    with ``bins`` bins, recorded as ``ece_bins``) of predictive probabilities (N, classes)."""
    _check_probs(probs, labels, "classification_metrics")
    labels = labels.cpu()
    p_true = probs.gather(1, labels[:, None]).squeeze(1).double()
    return {
        "acc": float((probs.argmax(1) == labels).double().mean()),
        "nll": float(-(p_true.clamp_min(1e-300)).log().mean()),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs, labels, bins),
        "adaptive_ece": adaptive_calibration_error(probs, labels, bins),
        "ece_bins": bins,
    }


#: The out-of-distribution scores of :func:`uncertainty_scores`, each larger for inputs the
#: model is less sure of.
OOD_SCORES = ("max_prob", "entropy", "mutual_info")


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-300).log()).sum(-1)


def uncertainty_scores(per_sample: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example uncertainty from MC-sample probabilities (S, N, classes) (or one model's
    (N, classes)), each (N,) and larger where the model is less sure:

    ``max_prob``: 1 - the largest predictive probability (Hendrycks & Gimpel 2017, as a score
    that grows with uncertainty); ``entropy``: the predictive distribution's entropy (nats, the
    total uncertainty); ``mutual_info``: the mutual information between the prediction and the
    weights, the entropy of the mean minus the mean entropy of the samples (the epistemic
    part; 0 for a single model or samples that agree)."""
    p = per_sample.double().cpu()
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1] == 0:
        raise DWPError("uncertainty_scores: expected probabilities (samples, N, classes)")
    mean = p.mean(0)
    total = _entropy(mean)
    return {"max_prob": 1 - mean.max(1).values, "entropy": total,
            "mutual_info": (total - _entropy(p).mean(0)).clamp_min(0)}  # fmt: skip


def ood_detection(in_scores: torch.Tensor, out_scores: torch.Tensor) -> dict:
    """How well a score separates out-of-distribution inputs (positives) from in-distribution
    ones (negatives), larger scores meaning "out": ``auroc`` (area under the ROC curve),
    ``aupr`` (average precision, out-of-distribution as the positive class) and ``fpr95``
    (the fraction of in-distribution inputs flagged when the threshold catches 95% of the
    out-of-distribution ones), computed by scikit-learn."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    a = torch.as_tensor(in_scores).double().flatten()
    b = torch.as_tensor(out_scores).double().flatten()
    if len(a) == 0 or len(b) == 0:
        raise DWPError("ood_detection: needs at least one in- and one out-of-distribution score")
    s = torch.cat([a, b])
    if not torch.isfinite(s).all():
        raise DWPError("ood_detection: the scores hold NaN or inf")
    y, s = [0] * len(a) + [1] * len(b), s.numpy()
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "aupr": float(average_precision_score(y, s)),
            "fpr95": float(fpr[(tpr >= 0.95).argmax()])}  # fmt: skip


def evaluate_bnn(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, samples: int = 10,
    batch_size: int = 1000,
) -> dict:  # fmt: skip
    """The figures of a Bayesian classifier on a test set:

    ``ens_acc``, ``nll``, ``brier``, ``ece``, ``adaptive_ece`` (``ece_bins`` bins): of the
    ``samples``-sample ensemble (the average of the
    predictive probabilities of ``samples`` weight draws, one per batch of ``batch_size``);
    ``sample_acc``: of one sample (the ensemble's first);
    ``det_acc``, ``det_nll``: of the deterministic net (posterior means).
    """
    per_sample = predict_proba(model, images, samples, batch_size, Mode.weight)
    ens = classification_metrics(per_sample.mean(0), labels)
    one = classification_metrics(per_sample[0], labels)
    det = classification_metrics(predict_proba(model, images, 1, batch_size, Mode.mean)[0], labels)
    out = {"ens_acc": ens["acc"], "sample_acc": one["acc"], "det_acc": det["acc"],
           "nll": ens["nll"], "brier": ens["brier"], "ece": ens["ece"],
           "adaptive_ece": ens["adaptive_ece"], "ece_bins": ens["ece_bins"],
           "det_nll": det["nll"]}  # fmt: skip
    return out


@dataclass
class Prediction:
    """What :func:`predict` returns: ``probs`` (N, classes), the ensemble's predictive
    probabilities (the mean over samples); ``per_sample`` (samples, N, classes); ``metrics``
    (with labels: the ensemble's :func:`classification_metrics`, and ``sample_acc``, one
    sample's accuracy; else None). On the CPU."""

    probs: torch.Tensor
    per_sample: torch.Tensor
    metrics: dict | None = None

    @property
    def labels(self) -> torch.Tensor:
        """The predicted class of each example (the ensemble's argmax), (N,)."""
        return self.probs.argmax(1)

    @property
    def entropy(self) -> torch.Tensor:
        """Entropy of the predictive distribution per example (nats), (N,): total uncertainty."""
        return _entropy(self.probs.double())

    @property
    def scores(self) -> dict[str, torch.Tensor]:
        """The out-of-distribution scores of :func:`uncertainty_scores` per example (N,)."""
        return uncertainty_scores(self.per_sample)


def predict(
    model: nn.Module,
    data,
    samples: int = 10,
    *,
    labels: torch.Tensor | None = None,
    mode: Mode | str = Mode.weight,
    seed: int | None = None,
    batch_size: int = 1000,
) -> Prediction:
    """The MC ensemble of a (Bayesian) model on ``data``: images (N, C, H, W), an
    :class:`~dwp.data.ImageSet` or a pair ``(images, labels)`` (whose labels give the metrics).

    ``samples`` forward passes, each with a fresh draw of the weights (mode ``weight``; fresh
    local-reparameterization noise in mode ``sample``; one pass of the posterior means in mode
    ``mean``), averaged into predictive probabilities; ``seed`` pins the noise
    (the layers' generators are restored after). Evaluated in ``model.eval()`` (which leaves
    Bayesian layers sampling; see :func:`dwp.nn.set_mode`) and on the model's device.
    """
    if hasattr(data, "images") and hasattr(data, "labels"):
        images, labels = data.images, data.labels if labels is None else labels
    elif isinstance(data, tuple | list) and len(data) == 2:
        images, labels = data[0], data[1] if labels is None else labels
    else:
        images = data
    if not isinstance(images, torch.Tensor) or images.ndim < 2:
        raise DWPError("predict: expected images as a tensor (N, ...), an ImageSet or a pair")
    if samples < 1:
        raise DWPError(f"predict: samples must be >= 1, got {samples}")
    layers = [m for m in model.modules() if hasattr(m, "generator")]  # layers and priors
    before = [m.generator for m in layers]
    if seed is not None:
        device = next(model.parameters()).device
        set_noise_generator(model, torch.Generator(device).manual_seed(seed))
    try:
        per_sample = predict_proba(model, images, samples, batch_size, mode)
    finally:
        if seed is not None:
            for m, g in zip(layers, before, strict=True):
                m.generator = g
    probs = per_sample.mean(0)
    metrics = None
    if labels is not None:
        if len(labels) != len(images):
            raise DWPError(f"predict: {len(images)} images but {len(labels)} labels")
        metrics = classification_metrics(probs, labels.long())
        metrics["sample_acc"] = classification_metrics(per_sample[0], labels.long())["acc"]
    return Prediction(probs=probs, per_sample=per_sample, metrics=metrics)


def evaluate_uncertainty(
    model: nn.Module,
    test,
    *,
    ood: dict[str, torch.Tensor] | None = None,
    rotations: Sequence[float] = (),
    samples: int = 10,
    seed: int = 0,
    bins: int = 15,
    batch_size: int = 1000,
    shift_examples: int | None = None,
) -> dict:
    """Accuracy and uncertainty of a (Bayesian) classifier, each set through :func:`predict`
    with ``samples`` weight draws pinned by ``seed``:

    ``test``: :func:`classification_metrics` of the test set (an ImageSet or a pair) and its
    ``reliability`` diagram; ``ood``: per out-of-distribution set (name -> images) its size
    and, per score of :data:`OOD_SCORES`, :func:`ood_detection` of the test images (negatives)
    against the set's (positives); ``rotation``: per angle (degrees) the metrics of the test
    images rotated (:func:`dwp.data.shift.rotate`): all of them, or ``shift_examples`` drawn
    by ``seed`` (:func:`dwp.data.shift.subset`; the same ones at every angle). A multiple of
    360 degrees reuses the test set's predictions. Also ``samples``, ``seed``, ``bins`` and
    ``shift_examples`` (None: all test images)."""
    from dwp.data.shift import rotate, subset

    x, y = _as_images_and_labels(test)
    pred = predict(model, x, samples, labels=y, seed=seed, batch_size=batch_size)
    metrics = classification_metrics(pred.probs, y, bins)
    metrics["sample_acc"] = pred.metrics["sample_acc"]
    in_scores = pred.scores
    if shift_examples is not None and shift_examples < 1:
        raise DWPError(f"shift_examples must be >= 1, got {shift_examples}")
    keep = subset(len(x), len(x) if shift_examples is None else shift_examples, seed)
    out: dict = {"samples": samples, "seed": seed, "bins": bins, "shift_examples": shift_examples,
                 "test": {**metrics, "reliability": reliability(pred.probs, y, bins)["rows"]},
                 "ood": {}, "rotation": []}  # fmt: skip
    for name, images in (ood or {}).items():
        if tuple(images.shape[1:]) != tuple(x.shape[1:]):
            raise DWPError(f"out-of-distribution set {name}: images of shape "
                           f"{tuple(images.shape[1:])}, the test images are "
                           f"{tuple(x.shape[1:])}")  # fmt: skip
        scores = predict(model, images, samples, seed=seed, batch_size=batch_size).scores
        out["ood"][name] = {"n": len(images), **{
            k: ood_detection(in_scores[k], scores[k]) for k in OOD_SCORES}}  # fmt: skip
    xs, ys = x[keep], y[keep]
    for degrees in rotations:
        if degrees % 360 == 0:  # the test images themselves: the same draws' predictions
            probs = pred.probs[keep]
        else:
            probs = predict(model, rotate(xs, degrees), samples, seed=seed,
                            batch_size=batch_size).probs  # fmt: skip
        out["rotation"].append({"degrees": float(degrees),
                                **classification_metrics(probs, ys, bins)})  # fmt: skip
    return out


def _as_images_and_labels(data) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, data.labels.long()
    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], torch.as_tensor(data[1]).long()
    raise DWPError("expected a labelled test set: an ImageSet or a pair (images, labels)")


def flat_uncertainty(u: dict) -> dict:
    """The figures of an uncertainty evaluation (:func:`evaluate_uncertainty`) as one flat
    dict, for tables: ``brier``, ``ece``, ``adaptive_ece`` (``ece_bins`` bins) of the test set; per
    out-of-distribution set S and score K ``auroc_S_K``, ``aupr_S_K``, ``fpr95_S_K``; per
    rotation angle A ``acc_rotA``, ``nll_rotA``, ``ece_rotA``."""
    t = u["test"]
    row = {"brier": t["brier"], "ece": t["ece"], "adaptive_ece": t["adaptive_ece"],
           "ece_bins": t["ece_bins"]}  # fmt: skip
    for name, d in u["ood"].items():
        for score in OOD_SCORES:
            for k in ("auroc", "aupr", "fpr95"):
                row[f"{k}_{name}_{score}"] = d[score][k]
    for r in u["rotation"]:
        for k in ("acc", "nll", "ece"):
            row[f"{k}_rot{r['degrees']:g}"] = r[k]
    return row


def uncertainty_columns(ood: Sequence[str], rotations: Sequence[float]) -> dict[str, str]:
    """The main columns of an uncertainty table, title -> key of :func:`flat_uncertainty`:
    Brier, ECE, the AUROC of the mutual information and of the max probability per
    out-of-distribution set, accuracy and ECE at 60 degrees (or the angle nearest it)."""
    cols = {"Brier": "brier", "ECE": "ece"}
    for name in ood:
        cols[f"AUROC {name} (MI)"] = f"auroc_{name}_mutual_info"
        cols[f"AUROC {name} (max p)"] = f"auroc_{name}_max_prob"
    if rotations:
        a = min(rotations, key=lambda d: abs(d - 60))
        cols[f"acc {a:g}°"] = f"acc_rot{a:g}"
        cols[f"ECE {a:g}°"] = f"ece_rot{a:g}"
    return cols
