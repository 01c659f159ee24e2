"""Bayesian CNN runs: the `dwp bnn train` command, resume, idempotence, errors, imports."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from dwp.cli import main
from dwp.data import load_dataset
from dwp.errors import DWPError
from dwp.eval import predict_proba
from dwp.nn import BayesConv2d, LogUniformConv2d
from dwp.priors import DeepWeightPrior, LogUniformPrior, NormalPrior, rescale_prior
from dwp.train import fit as fit_mod
from dwp.train.bnn import BNNConfig, build_bnn, load_bnn, train_bnn

from conftest import write_reference


@pytest.fixture(scope="module")
def setup(tiny_priors):
    return tiny_priors


def _args(setup, out, *extra):
    return ["bnn", "train", "--out", str(out), "--dataset", "mnist", "--data-root",
            setup["data"], "--examples", "20", "--hidden", "4", "8", "--epochs", "3",
            "--eval-every", "2", "--ens-samples", "3", "--device", "cpu", *extra]  # fmt: skip


def test_bnn_train(setup, tmp_path, capsys):
    out = tmp_path / "run"
    args = _args(setup, out, "--prior", "dwp", "--init", "dwp", "--prior-dirs", *setup["priors"])
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "prior dwp, init dwp, 20 examples" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt", "config.json", "metrics.jsonl", "result.json"]  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["prior"] == "dwp" and config["epochs"] == 3 and config["examples"] == 20
    assert len(config["prior_dirs"]) == 2 and config["dwp_kernel_batch"] == 256  # the default
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [2, 3]
    for key in ("data_term", "kl", "train_acc", "ens_acc", "sample_acc", "det_acc", "nll", "ece"):
        assert all(np.isfinite(r[key]) for r in records), key
    result = json.loads((out / "result.json").read_text())
    for key in ("ens_acc", "sample_acc", "det_acc", "nll", "ece", "wall_s"):
        assert key in result
    assert 0 <= result["ens_acc"] <= 1 and result["nll"] > 0 and result["test_examples"] == 30
    # re-running a finished run does nothing
    stamp = (out / "result.json").stat().st_mtime_ns
    assert main(args) == 0
    assert "not re-running" in capsys.readouterr().err
    assert (out / "result.json").stat().st_mtime_ns == stamp
    # a finished run of another config is refused before anything claims it is finished
    assert main([*args, "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with another config (lr" in err and "not re-running" not in err
    # the saved model is the run's model: its layers carry the DWP prior
    model, cfg = load_bnn(out)
    assert isinstance(model.conv1, BayesConv2d) and isinstance(model.conv1.prior, DeepWeightPrior)
    assert model.conv2.prior.kernel_size == 5 and cfg.prior == "dwp"


@pytest.mark.parametrize(
    ("prior", "init", "layer", "prior_cls"),
    [
        ("normal", "filters", BayesConv2d, NormalPrior),
        ("log-uniform", "xavier", LogUniformConv2d, LogUniformPrior),
    ],
)
def test_bnn_train_other_priors(setup, tmp_path, prior, init, layer, prior_cls):
    out = tmp_path / "run"
    extra = ["--prior", prior, "--init", init]
    if prior == "normal":
        extra += ["--normal-std", "0.5"]
    if init == "filters":  # the kernels come from the priors' records of their training sets
        extra += ["--prior-dirs", setup["priors"][0], "--prior-dirs", setup["priors"][1]]
    assert main(_args(setup, out, *extra)) == 0
    model, _ = load_bnn(out)
    assert isinstance(model.conv1, layer) and isinstance(model.conv2.prior, prior_cls)
    if prior == "normal":
        assert model.conv2.prior.std == 0.5
    if init == "filters":
        bank = np.load(setup["root"] / "kernels" / "conv1" / "train.npy").reshape(-1, 49)
        first = model.conv1.weight.detach()  # trained for 3 epochs: close to the bank still
        dist = torch.cdist(first.reshape(-1, 49).double(), torch.from_numpy(bank).double())
        assert float(dist.min(1).values.max()) < 0.05


def test_exact_mode_and_kernel_batch_options(setup, tmp_path):
    dwp = ["--prior", "dwp", "--prior-dirs", *setup["priors"], "--epochs", "1"]
    assert main(_args(setup, tmp_path / "exact", *dwp, "--exact")) == 0
    assert json.loads((tmp_path / "exact" / "config.json").read_text())["dwp_kernel_batch"] is None
    assert main(_args(setup, tmp_path / "kb", *dwp, "--dwp-kernel-batch", "7")) == 0
    model, cfg = load_bnn(tmp_path / "kb")
    assert cfg.dwp_kernel_batch == 7 and model.conv2.prior.kernel_batch == 7
    assert model.conv2.prior.cache_value.shape == (32,)  # conv2: 4 x 8 kernels, from the checkpoint
    # the fast mode also records the exact mode's estimate of the KL at each evaluation
    (kb_rec,) = [
        json.loads(x) for x in (tmp_path / "kb" / "metrics.jsonl").read_text().splitlines()
    ]
    (ex_rec,) = [
        json.loads(x) for x in (tmp_path / "exact" / "metrics.jsonl").read_text().splitlines()
    ]
    assert "kl_exact" not in ex_rec and np.isfinite(kb_rec["kl_exact"])
    kb_result = json.loads((tmp_path / "kb" / "result.json").read_text())
    assert kb_result["kl_exact"] == kb_rec["kl_exact"] != kb_result["kl"]
    with torch.no_grad():  # an independent exact estimate of the saved model's KL agrees
        estimates = [float(model.conv1.kl() + model.conv2.kl()) for _ in range(20)]
    spread = 4 * np.std(estimates) + 1e-3 * abs(np.mean(estimates))
    assert abs(np.mean(estimates) - kb_rec["kl_exact"]) < spread
    # other priors do not record the option (it cannot change their runs)
    assert BNNConfig(prior="normal", dwp_kernel_batch=7).dwp_kernel_batch is None
    assert BNNConfig(prior="log-uniform", normal_std=0.5).normal_std == 1.0  # likewise
    with pytest.raises(DWPError, match="needs the exact mode"):  # refused by the config itself
        BNNConfig(prior="dwp", prior_dirs=tuple(setup["priors"]), train_encoder=True)
    assert main(_args(setup, tmp_path / "te", *dwp, "--train-encoder")) == 2
    assert main(_args(setup, tmp_path / "te", *dwp, "--train-encoder", "--exact")) == 0


def _strip_time(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "wall_s")} for r in records]


@pytest.mark.parametrize("kernel_batch", [None, 5])
def test_killed_run_resumes_to_the_same_result(setup, tmp_path, kernel_batch):
    """Also with the DWP's kernel cache (conv2 has 32 kernels, 5 recomputed per step)."""
    cfg = BNNConfig(dataset="mnist", examples=20, hidden=(4, 8), epochs=5, eval_every=2,
                    ens_samples=2, prior="dwp", prior_dirs=tuple(setup["priors"]),
                    dwp_kernel_batch=kernel_batch)  # fmt: skip
    full = tmp_path / "full"
    r_full = train_bnn(cfg, full, data_root=setup["data"])

    def die(m):
        if m["epoch"] == 3:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train_bnn(cfg, part, data_root=setup["data"], on_epoch=die)
    assert not (part / "result.json").exists()
    assert torch.load(part / "checkpoint.pt", weights_only=True)["epoch"] == 2
    epochs = []
    r_part = train_bnn(cfg, part, data_root=setup["data"], on_epoch=lambda m: epochs.append(m))
    assert [m["epoch"] for m in epochs] == [3, 4, 5]  # resumed after the checkpoint
    lines = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert _strip_time(lines(part)) == _strip_time(lines(full))
    assert _strip_time([r_part]) == _strip_time([r_full])
    a, _ = load_bnn(full)
    b, _ = load_bnn(part)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        if isinstance(p, dict):  # a deep weight prior's reference (source, hash)
            assert p == q, n
        else:
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


def test_other_config_in_the_run_directory_is_refused(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(setup, out)) == 0
    assert main(_args(setup, out, "--lr", "0.01")) == 2
    err = capsys.readouterr().err
    assert "another config (lr: 0.001 there, 0.01 now)" in err and "Traceback" not in err


def test_nan_loss_stops_with_the_step(setup, tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    real = fit_mod._data_term

    def poisoned(logits, y, n):
        calls["n"] += 1
        value = real(logits, y, n)
        return value * float("nan") if calls["n"] == 2 else value

    monkeypatch.setattr(fit_mod, "_data_term", poisoned)
    assert main(_args(setup, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the loss became nan at step 2 (epoch 2")


def test_nan_after_a_checkpoint_keeps_the_run_resumable(setup, tmp_path, capsys, monkeypatch):
    real, calls = fit_mod._data_term, {"n": 0}

    def poisoned(logits, y, n):  # epoch 3's step: after the checkpoint of epoch 2
        calls["n"] += 1
        return real(logits, y, n) * (float("nan") if calls["n"] == 3 else 1.0)

    monkeypatch.setattr(fit_mod, "_data_term", poisoned)
    out = tmp_path / "run"
    assert main(_args(setup, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "at step 3 (epoch 3" in err and f"{out} stays resumable from its checkpoint of " \
        "epoch 2" in err  # fmt: skip
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(fit_mod, "_data_term", real)
    assert main(_args(setup, out)) == 0 and (out / "result.json").is_file()


def test_wrong_priors_are_one_line_errors(setup, tmp_path, capsys):
    swapped = ["--prior", "dwp", "--prior-dirs", *reversed(setup["priors"])]
    assert main(_args(setup, tmp_path / "a", *swapped)) == 2
    err = capsys.readouterr().err.strip()
    assert "is for 5x5 kernels, but conv1 has 7x7 kernels" in err and "\n" not in err
    assert main(_args(setup, tmp_path / "b", "--prior", "dwp")) == 2
    assert "needs --prior-dirs" in capsys.readouterr().err
    assert main(_args(setup, tmp_path / "c", "--prior", "dwp", "--prior-dirs",
                      setup["priors"][0])) == 2  # fmt: skip
    assert "1 prior directories for 2 conv layers" in capsys.readouterr().err
    assert main(_args(setup, tmp_path / "d", "--prior", "dwp", "--prior-dirs",
                      str(tmp_path / "nope"), str(tmp_path / "nope"))) == 2  # fmt: skip
    assert "error:" in capsys.readouterr().err


def test_imported_reference_priors_work_unchanged(setup, tmp_path, capsys):
    dirs = []
    for k, z, h in ((7, 2, 32), (5, 4, 64)):
        write_reference(tmp_path / f"ref{k}", k, z, h)
        assert main(["prior", "import", str(tmp_path / f"ref{k}"), "--out",
                     str(tmp_path / f"p{k}")]) == 0  # fmt: skip
        dirs.append(str(tmp_path / f"p{k}"))
    out = tmp_path / "run"
    assert main(_args(setup, out, "--prior", "dwp", "--init", "dwp", "--prior-dirs", *dirs)) == 0
    assert json.loads((out / "result.json").read_text())["prior"] == "dwp"
    # filters need kernels, which an imported prior does not record
    assert main(_args(setup, tmp_path / "f", "--init", "filters", "--prior-dirs", *dirs)) == 2
    assert "give --kernel-dirs" in capsys.readouterr().err


def test_loaded_model_predicts_like_the_trained_one(setup, tmp_path):
    cfg = BNNConfig(dataset="mnist", examples=20, hidden=(4, 8), epochs=2, ens_samples=2)
    out = tmp_path / "run"
    result = train_bnn(cfg, out, data_root=setup["data"])
    model, _ = load_bnn(out)
    test = load_dataset("mnist", setup["data"]).test
    probs = predict_proba(model, test.images, mode="mean")[0]
    assert float((probs.argmax(1) == test.labels).double().mean()) == result["det_acc"]


def test_config_validation():
    with pytest.raises(DWPError, match="epochs"):
        BNNConfig(epochs=0)
    with pytest.raises(DWPError, match="needs --prior-dirs"):
        BNNConfig(init="dwp")
    with pytest.raises(DWPError):
        BNNConfig(prior="laplace")


def test_filters_init_follows_a_rescaled_prior(setup, tmp_path):
    scaled = []
    for i, d in enumerate(setup["priors"]):
        rescale_prior(d, tmp_path / f"p{i}", factor=10.0)
        scaled.append(str(tmp_path / f"p{i}"))
    cfg = BNNConfig(hidden=(4, 8), init="filters", prior_dirs=tuple(scaled))
    model = build_bnn(cfg, 1, 10, 28)
    bank = np.load(setup["root"] / "kernels" / "conv2" / "train.npy").reshape(-1, 25) * 10
    w = model.conv2.weight.detach().reshape(-1, 25).double()
    assert float(torch.cdist(w, torch.from_numpy(bank).double()).min(1).values.max()) < 1e-5


def test_bnn_summary(setup, tmp_path, capsys):
    """Two splits of one setting and one of two others: a row per setting, means over splits."""
    for split, prior in ((0, "normal"), (1, "normal"), (0, "log-uniform")):
        out = tmp_path / "runs" / f"{prior}-s{split}"
        assert main(_args(setup, out, "--prior", prior, "--split-seed", str(split))) == 0
    other_lr = tmp_path / "runs" / "normal-lr-s0"  # another setting: its own row, named by it
    assert main(_args(setup, other_lr, "--prior", "normal", "--lr", "0.01")) == 0
    (tmp_path / "runs" / "unfinished").mkdir()  # no result.json: skipped
    capsys.readouterr()
    assert main(["bnn", "summary", str(tmp_path / "runs"), "--json", str(tmp_path / "t.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| dataset | prior | init | examples | epochs | split 0 | split 1 |")
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [(r["prior"], r["splits"], r["setting"]) for r in rows] == [
        ("log-uniform", [0], {"lr": 0.001}), ("normal", [0, 1], {"lr": 0.001}),
        ("normal", [0], {"lr": 0.01})]  # fmt: skip
    assert "| normal (lr 0.01) | xavier |" in table[4]
    normal = rows[1]
    accs = [json.loads((tmp_path / "runs" / f"normal-s{s}" / "result.json").read_text())["ens_acc"]
            for s in (0, 1)]  # fmt: skip
    assert normal["ens_acc"] == accs and normal["mean_acc"] == pytest.approx(sum(accs) / 2)
    kls = [json.loads((tmp_path / "runs" / f"normal-s{s}" / "result.json").read_text())["kl"]
           for s in (0, 1)]  # fmt: skip
    assert normal["mean_kl"] == pytest.approx(sum(kls) / 2)  # closed form: the exact KL
    assert table[0].endswith("| mean acc (± sd) | mean NLL | final KL | wall s / run |")
    assert f"{accs[0]:.3f} / " in table[3] and "| - |" in table[2]  # log-uniform has no split 1
    assert main(["bnn", "summary", str(tmp_path / "runs" / "unfinished")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    shutil.copytree(other_lr, tmp_path / "runs" / "copy")  # a split counted twice is refused
    assert main(["bnn", "summary", str(tmp_path / "runs")]) == 2
    assert "split 0 of one setting was run twice" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "runs" / "copy")
    # a run of an older format (no "arch" field) with the same settings joins its row
    old = tmp_path / "runs" / "old-format"
    shutil.copytree(tmp_path / "runs" / "normal-s1", old)
    config = json.loads((old / "config.json").read_text())
    del config["arch"]
    (old / "config.json").write_text(json.dumps({**config, "split_seed": 2}))
    assert main(["bnn", "summary", str(tmp_path / "runs"), "--json", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["splits"] for r in rows if r["prior"] == "normal"] == [[0, 1, 2], [0]]


def test_a_run_directory_has_one_writer(setup, tmp_path, capsys):
    """A live process's lock refuses a second writer; a dead process's lock is taken over."""
    import os
    import socket
    import subprocess
    import sys

    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".lock"
    lock.write_text(f"{socket.gethostname()} {os.getpid()}\n")  # this test process: alive
    assert main(_args(setup, out)) == 2
    assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lock.write_text(f"{socket.gethostname()} {dead.stdout.strip()}\n")
    assert main(_args(setup, out)) == 0
    assert (out / "result.json").is_file() and not lock.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prior", "log-uniform", "--normal-std", "2"], "--normal-std applies to --prior normal"),
        (["--prior", "normal", "--dwp-kernel-batch", "64"], "apply to the DWP prior only"),
        (["--prior", "normal", "--exact"], "apply to the DWP prior only"),
        (["--prior", "normal", "--train-encoder"], "--train-encoder applies to --prior dwp"),
    ],
)
def test_bnn_train_refuses_options_its_prior_does_not_use(setup, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(_args(setup, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_bnn_config_says_when_it_ignores_a_value(caplog):
    with caplog.at_level("WARNING", logger="dwp.config"):
        config = BNNConfig(prior="log-uniform", normal_std=3.0, dwp_kernel_batch=64)
    assert config.normal_std == 1.0 and config.dwp_kernel_batch is None  # the stored config
    text = caplog.text
    assert "normal_std = 3.0 is ignored" in text and "dwp_kernel_batch = 64 is ignored" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="dwp.config"):
        BNNConfig(prior="normal")  # defaults: nothing to say
    assert caplog.text == ""
