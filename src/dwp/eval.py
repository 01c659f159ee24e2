"""Evaluation of (Bayesian) classifiers: MC-ensemble prediction, accuracy, NLL, calibration."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dwp.errors import DWPError
from dwp.nn.bayes import Mode, bayes_mode, set_noise_generator

__all__ = [
    "Prediction",
    "classification_metrics",
    "evaluate_accuracy",
    "evaluate_bnn",
    "expected_calibration_error",
    "predict",
    "predict_proba",
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
    deterministic pass is returned (samples 1). Inputs are moved to the model's device batch
    by batch; the result is on the CPU.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
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


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    """Accuracy, mean negative log-likelihood (nats) and ECE of predictive probabilities
    (N, classes)."""
    labels = labels.cpu()
    p_true = probs.gather(1, labels[:, None]).squeeze(1).double()
    return {
        "acc": float((probs.argmax(1) == labels).double().mean()),
        "nll": float(-(p_true.clamp_min(1e-300)).log().mean()),
        "ece": expected_calibration_error(probs, labels, bins),
    }


def evaluate_bnn(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, samples: int = 10,
    batch_size: int = 1000,
) -> dict:  # fmt: skip
    """The figures of a Bayesian classifier on a test set:

    ``ens_acc``, ``nll``, ``ece``: of the ``samples``-sample ensemble (the average of the
    predictive probabilities of ``samples`` weight draws, one per batch of ``batch_size``);
    ``sample_acc``: of one sample (the ensemble's first);
    ``det_acc``, ``det_nll``: of the deterministic net (posterior means).
    """
    per_sample = predict_proba(model, images, samples, batch_size, Mode.weight)
    ens = classification_metrics(per_sample.mean(0), labels)
    one = classification_metrics(per_sample[0], labels)
    det = classification_metrics(predict_proba(model, images, 1, batch_size, Mode.mean)[0], labels)
    out = {"ens_acc": ens["acc"], "sample_acc": one["acc"], "det_acc": det["acc"],
           "nll": ens["nll"], "ece": ens["ece"], "det_nll": det["nll"]}  # fmt: skip
    return out


@dataclass
class Prediction:
    """What :func:`predict` returns: ``probs`` (N, classes), the ensemble's predictive
    probabilities (the mean over samples); ``per_sample`` (samples, N, classes); ``metrics``
    (with labels: the ensemble's ``acc``, ``nll``, ``ece``, and ``sample_acc``, one sample's
    accuracy; else None). On the CPU."""

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
        p = self.probs.double()
        return -(p * p.clamp_min(1e-300).log()).sum(1)


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
