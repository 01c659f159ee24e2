"""Uncertainty metrics of dwp.eval against closed forms and independent computations."""

import itertools
import json
import math
import statistics

import pytest
import torch

from dwp.errors import DWPError
from dwp.eval import (
    adaptive_calibration_error,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    ood_detection,
    predict,
    reliability,
    uncertainty_scores,
)


def _random_probs(n=200, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(n, k, generator=g), 1)
    labels = torch.randint(0, k, (n,), generator=g)
    return probs, labels


def test_brier_score_closed_form():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    # (0.3^2 + 0.2^2 + 0.1^2), 0 (certain and right), 2 (certain and wrong)
    assert brier_score(probs, labels) == pytest.approx((0.14 + 0.0 + 2.0) / 3)
    probs, labels = _random_probs()
    loop = sum(sum((float(p[k]) - (k == int(y))) ** 2 for k in range(len(p)))
               for p, y in zip(probs, labels, strict=True)) / len(labels)  # fmt: skip
    assert brier_score(probs, labels) == pytest.approx(loop, rel=1e-9)


def test_adaptive_ece_uses_equal_mass_bins():
    # confidences 0.6, 0.65, 0.9, 0.95; two bins of two examples each
    probs = torch.tensor([[0.6, 0.4], [0.35, 0.65], [0.9, 0.1], [0.05, 0.95]])
    labels = torch.tensor([0, 0, 0, 1])  # right, wrong, right, right
    low = abs(1 - (0.6 + 0.65))  # bin 1: one right of two, confidences sum 1.25
    high = abs(2 - (0.9 + 0.95))
    assert adaptive_calibration_error(probs, labels, bins=2) == pytest.approx((low + high) / 4)
    # equal-width bins put all four in (0.5, 1]: one bin
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(
        abs(3 - (0.6 + 0.65 + 0.9 + 0.95)) / 4
    )
    # as many bins as examples: the mean of |correct - confidence|
    p, y = _random_probs(n=50)
    conf, pred = p.max(1)
    direct = float(((pred == y).double() - conf.double()).abs().mean())
    assert adaptive_calibration_error(p, y, bins=50) == pytest.approx(direct, rel=1e-9)


def test_reliability_bins_add_up_to_the_ece():
    probs, labels = _random_probs(n=500)
    rel = reliability(probs, labels, bins=10)
    rows = rel["rows"]
    assert rel["bins"] == 10 and len(rows) == 10
    assert sum(r["count"] for r in rows) == 500
    conf = probs.max(1).values
    for r in rows:
        inside = (conf > r["lower"]) & (conf <= r["upper"])
        assert r["count"] == int(inside.sum())
        if r["count"]:
            assert r["lower"] < r["confidence"] <= r["upper"]
    ece = sum(r["count"] / 500 * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"])
    assert rel["ece"] == pytest.approx(ece, rel=1e-9)
    assert rel["ece"] == expected_calibration_error(probs, labels, bins=10)


def test_classification_metrics_state_the_bin_count():
    probs, labels = _random_probs()
    m = classification_metrics(probs, labels, bins=7)
    assert m["ece_bins"] == 7
    assert m["ece"] == expected_calibration_error(probs, labels, 7)
    assert m["adaptive_ece"] == adaptive_calibration_error(probs, labels, 7)
    assert m["brier"] == brier_score(probs, labels)
    with pytest.raises(DWPError, match="3 predictions but labels of shape"):
        brier_score(probs[:3], labels)


def test_uncertainty_scores_closed_forms():
    k = 4
    uniform = torch.full((1, 3, k), 1 / k)
    s = uncertainty_scores(uniform)
    assert torch.allclose(s["entropy"], torch.full((3,), math.log(k), dtype=torch.float64))
    assert torch.allclose(s["max_prob"], torch.full((3,), 1 - 1 / k, dtype=torch.float64))
    assert torch.allclose(s["mutual_info"], torch.zeros(3, dtype=torch.float64))
    # two certain samples that disagree: predictive entropy log 2, all of it epistemic
    disagree = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    s = uncertainty_scores(disagree)
    assert float(s["entropy"][0]) == pytest.approx(math.log(2))
    assert float(s["mutual_info"][0]) == pytest.approx(math.log(2))
    # against torch.distributions: H[mean] - mean H[sample]
    g = torch.Generator().manual_seed(1)
    per_sample = torch.softmax(torch.randn(6, 20, 3, generator=g), -1).double()
    h = lambda p: torch.distributions.Categorical(probs=p).entropy()  # noqa: E731
    want = h(per_sample.mean(0)) - h(per_sample).mean(0)
    assert torch.allclose(uncertainty_scores(per_sample)["mutual_info"], want, atol=1e-12)
    # one model: (N, classes) works, with no epistemic part
    assert float(uncertainty_scores(per_sample[0])["mutual_info"].abs().max()) < 1e-12


def test_ood_detection_against_pair_counts():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(60, generator=g)
    b = torch.randn(40, generator=g) + 1.0
    res = ood_detection(a, b)
    # AUROC is the probability that an out-score beats an in-score (Mann-Whitney)
    pairs = sum(float(y > x) for x, y in itertools.product(a, b))
    assert res["auroc"] == pytest.approx(pairs / (60 * 40), rel=1e-9)
    # FPR at 95% TPR: the threshold at the 95%-quantile of the out-scores, counted directly
    ranked = b.sort(descending=True).values
    t = ranked[math.ceil(0.95 * 40) - 1]
    assert res["fpr95"] == pytest.approx(float((a >= t).double().mean()))
    # average precision, by the definition: mean over positives of precision at their rank
    s = torch.cat([a, b])
    y = torch.cat([torch.zeros(60), torch.ones(40)])
    order = s.argsort(descending=True)
    hits = y[order].cumsum(0)
    ap = float((hits.double() / torch.arange(1, 101))[y[order] == 1].mean())
    assert res["aupr"] == pytest.approx(ap, rel=1e-9)
    perfect = ood_detection(torch.zeros(5), torch.ones(5))
    assert perfect == {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0}
    with pytest.raises(DWPError, match="NaN"):
        ood_detection(torch.tensor([0.0, float("nan")]), torch.ones(2))
    with pytest.raises(DWPError, match="at least one"):
        ood_detection(torch.zeros(0), torch.ones(2))


def test_prediction_scores_of_a_bayesian_net():
    from dwp.nn import BayesConv2d

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        BayesConv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 4)
    )
    with torch.no_grad():
        net[0].log_sigma2.fill_(0.0)  # wide posterior: the samples disagree
    x = torch.randn(8, 1, 6, 6)
    pred = predict(net, x, samples=5, seed=0)
    s = pred.scores
    assert set(s) == {"max_prob", "entropy", "mutual_info"}
    assert torch.allclose(s["entropy"], pred.entropy)
    assert (s["mutual_info"] > 0).all() and (s["mutual_info"] <= s["entropy"] + 1e-12).all()


def test_rotate_matches_rot90_and_keeps_the_centre():
    from dwp.data.shift import ROTATIONS, rotate

    x = torch.rand(3, 2, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rotate(x, 0), x)
    for k in (1, 2, 3):  # counter-clockwise, as torch.rot90 over (H, W)
        assert torch.allclose(rotate(x, 90 * k), torch.rot90(x, k, (2, 3)), atol=1e-5)
    assert torch.allclose(rotate(x, -90), torch.rot90(x, -1, (2, 3)), atol=1e-5)
    # a disc centred in the image is (nearly) unchanged by any angle; its mass is kept
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    disc = (((yy - 13.5) ** 2 + (xx - 13.5) ** 2) < 36).float()[None, None]
    turned = rotate(disc, 37)
    assert float((turned - disc).abs().mean()) < 0.02
    assert float(turned.sum()) == pytest.approx(float(disc.sum()), rel=0.02)
    assert ROTATIONS[0] == 0 and ROTATIONS[-1] == 180 and len(ROTATIONS) == 13
    with pytest.raises(DWPError, match=r"expected images \(N, C, H, W\)"):
        rotate(torch.rand(28, 28), 30)


def test_subset_is_seeded_and_draws_from_every_class():
    from dwp.data.shift import subset

    assert torch.equal(subset(5, 5), torch.arange(5)) and torch.equal(subset(5, 9), torch.arange(5))
    a, b = subset(1000, 300, seed=0), subset(1000, 300, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, subset(1000, 300, seed=1))
    assert len(a.unique()) == 300 and torch.equal(a, a.sort().values)
    labels = torch.arange(1000) // 100  # a test part stored class by class
    counts = torch.bincount(labels[a], minlength=10)
    assert (counts >= 15).all()  # the first 300 would hold three classes only
    with pytest.raises(DWPError, match="n must be >= 1"):
        subset(10, 0)


def test_shift_examples_rotate_one_seeded_subset_at_every_angle():
    from dwp.data.shift import rotate, subset
    from dwp.eval import evaluate_uncertainty
    from dwp.nn import BayesConv2d

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        BayesConv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 4)
    )
    with torch.no_grad():
        net[0].log_sigma2.fill_(-2.0)
    x, y = torch.rand(40, 1, 8, 8), torch.arange(40) % 4
    u = evaluate_uncertainty(net, (x, y), rotations=(0, 90), samples=3, seed=4,
                             shift_examples=15)  # fmt: skip
    assert u["shift_examples"] == 15
    keep = subset(40, 15, seed=4)
    full = predict(net, x, 3, seed=4)  # the test pass: its draws serve the 0-degree row
    at0 = classification_metrics(full.probs[keep], y[keep], 15)
    assert u["rotation"][0]["acc"] == at0["acc"]
    assert u["rotation"][0]["nll"] == pytest.approx(at0["nll"], rel=1e-12)
    turned = predict(net, rotate(x[keep], 90), 3, seed=4)
    at90 = classification_metrics(turned.probs, y[keep], 15)
    assert u["rotation"][1]["nll"] == pytest.approx(at90["nll"], rel=1e-12)
    assert u["test"]["nll"] == pytest.approx(
        classification_metrics(full.probs, y, 15)["nll"], rel=1e-12
    )
    with pytest.raises(DWPError, match="shift_examples must be >= 1"):
        evaluate_uncertainty(net, (x, y), rotations=(90,), samples=2, shift_examples=0)


def test_ood_images_subset_is_seeded(tmp_path):
    from dwp.data.shift import ood_images, subset

    from conftest import make_idx_set

    make_idx_set(tmp_path / "fashion-mnist", n_train=10, n_test=30, seed=5)
    every = ood_images("fashion-mnist", (1, 28, 28), None, tmp_path)
    some = ood_images("fashion-mnist", (1, 28, 28), 12, tmp_path, seed=3)
    assert len(every) == 30 and torch.equal(some, every[subset(30, 12, seed=3)])


def _tiny_run(tmp_path, data):
    from dwp.cli import main

    run = tmp_path / "run"
    args = ["bnn", "train", "--dataset", "mnist", "--data-root", str(data), "--examples", "10",
            "--epochs", "2", "--hidden", "4", "8", "--prior", "normal", "--out", str(run),
            "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    return run


def test_bnn_eval(tmp_path, capsys):
    from dwp.cli import main

    from conftest import make_cifar, make_idx_set

    data = tmp_path / "data"
    make_idx_set(data, n_train=40, n_test=30)
    make_idx_set(data / "fashion-mnist", n_train=20, n_test=25, seed=5)
    run = _tiny_run(tmp_path, data)
    capsys.readouterr()
    args = ["bnn", "eval", str(run), "--ood", "fashion-mnist", "--shift", "rotate",
            "--samples", "3", "--data-root", str(data), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| mnist test |" in printed and "| fashion-mnist | mutual_info |" in printed
    res = json.loads((run / "uncertainty.json").read_text())
    assert res["samples"] == 3 and res["prior"] == "normal" and res["bins"] == 15
    assert res["ood"]["fashion-mnist"]["n"] == 25  # as many as the set has (fewer than 30)
    for score in ("max_prob", "entropy", "mutual_info"):
        d = res["ood"]["fashion-mnist"][score]
        assert 0 <= d["auroc"] <= 1 and 0 <= d["aupr"] <= 1 and 0 <= d["fpr95"] <= 1
    assert [r["degrees"] for r in res["rotation"]] == [float(a) for a in range(0, 181, 15)]
    # the 0-degree row is the test set itself, with the same weight draws
    assert res["rotation"][0]["acc"] == res["test"]["acc"]
    assert res["rotation"][0]["nll"] == pytest.approx(res["test"]["nll"], rel=1e-12)
    assert sum(b["count"] for b in res["test"]["reliability"]) == 30
    for fig in ("reliability.png", "rotation.png"):
        assert (run / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same seed gives the same numbers
    again = json.loads((run / "uncertainty.json").read_text())
    assert main(args) == 0 and json.loads((run / "uncertainty.json").read_text()) == again
    # `dwp bnn summary` gains the main columns
    capsys.readouterr()
    assert main(["bnn", "summary", str(run)]) == 0
    table = capsys.readouterr().out
    assert "| AUROC fashion-mnist (MI) |" in table and "| acc 60° | ECE 60° |" in table
    auroc = res["ood"]["fashion-mnist"]["mutual_info"]["auroc"]
    assert f"| {auroc:.3f} |" in table
    # bad input: one line each, nothing written
    make_cifar(data, "cifar10", 10, 10)
    for extra, msg in (
        (["--ood", "cifar10"], "has images of shape (3, 32, 32), but the model takes (1, 28, 28)"),
        (["--ood", "svhn"], "unknown out-of-distribution set 'svhn'"),
    ):
        capsys.readouterr()
        assert main(["bnn", "eval", str(run), "--data-root", str(data), *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1
    # a seeded subset of the test images is rotated
    assert main([*args, "--shift-examples", "12"]) == 0
    sub = json.loads((run / "uncertainty.json").read_text())
    assert sub["shift_examples"] == 12 and sub["test"] == again["test"]
    assert sum(b["count"] for b in sub["test"]["reliability"]) == 30
    (run / "result.json").rename(run / "result.json.bak")
    assert main(["bnn", "eval", str(run), "--data-root", str(data)]) == 2
    assert "is not a finished Bayesian CNN run" in capsys.readouterr().err


def test_classification_sweep_records_uncertainty(tmp_path, capsys):
    import csv

    from dwp.cli import main

    from conftest import make_cifar, make_idx_set

    data, out = tmp_path / "data", tmp_path / "repro" / "classification"
    make_idx_set(data, n_train=40, n_test=30)
    make_idx_set(data / "fashion-mnist", n_train=20, n_test=30, seed=5)
    args = ["experiment", "classification", "--out", str(out), "--dataset", "mnist",
            "--data-root", str(data), "--hidden", "4", "8", "--examples", "10", "--splits", "0",
            "1", "--epochs", "2", "--methods", "normal", "l2-xavier", "ensemble",
            "--ensemble-size", "2", "--ood", "fashion-mnist", "--shift", "rotate", "--device",
            "cpu", "--jobs", "1"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "AUROC fashion-mnist (MI)" in printed and "acc 60°" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for r in rows:
        for k in ("brier", "ece", "adaptive_ece", "auroc_fashion-mnist_mutual_info",
                  "fpr95_fashion-mnist_max_prob", "acc_rot60", "ece_rot180"):  # fmt: skip
            assert 0 <= float(r[k]) <= 2, (r["method"], k)
    # one net has no epistemic part: its mutual information is 0 everywhere (AUROC 0.5)
    l2 = [r for r in rows if r["method"] == "l2-xavier"]
    assert all(float(r["auroc_fashion-mnist_mutual_info"]) == 0.5 for r in l2)
    summary = json.loads((out / "summary.json").read_text())["rows"]
    ens = next(s for s in summary if s["method"] == "ensemble")
    want = statistics.fmean(float(r["acc_rot60"]) for r in rows if r["method"] == "ensemble")
    assert ens["acc_rot60_mean"] == pytest.approx(want, abs=1e-6)
    for fig in ("accuracy.png", "reliability.png", "rotation.png"):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    u = json.loads((out / "runs" / "normal-n10-s0" / "uncertainty.json").read_text())
    assert u["samples"] == 10 and list(u["ood"]) == ["fashion-mnist"]
    # read back, not evaluated again; a lost deterministic evaluation is made again, equal
    lost = out / "runs" / "l2-xavier-n10-s1.uncertainty.json"
    first = json.loads(lost.read_text())
    lost.unlink()
    stamp = (out / "runs" / "normal-n10-s0" / "uncertainty.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "runs" / "normal-n10-s0" / "uncertainty.json").stat().st_mtime_ns == stamp
    assert json.loads(lost.read_text()) == first
    # the report shows the main columns and both figures
    from dwp.report import build_report

    report = build_report(tmp_path / "repro").read_text()
    section = report.split("### Uncertainty")[1]
    assert "| AUROC fashion-mnist (MI) |" in section and "ECE with 15 equal-width bins" in section
    assert "(classification/reliability.png)" in section
    assert "(classification/rotation.png)" in section
    # another count of rotated images: the evaluations are made again, the runs read back
    assert main([*args, "--shift-examples", "12"]) == 0
    u = json.loads((out / "runs" / "normal-n10-s0" / "uncertainty.json").read_text())
    assert u["shift_examples"] == 12
    assert json.loads((out / "config.json").read_text())["shift_examples"] == 12
    # an out-of-distribution set of another shape: one line, before any run
    make_cifar(data, "cifar10", 10, 10)
    capsys.readouterr()
    bad = [a if a != "fashion-mnist" else "cifar10" for a in args]
    assert main(bad) == 2
    assert "out-of-distribution set cifar10" in capsys.readouterr().err
