"""Every command of the CLI, smoke-tested through its entry point with tiny inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from dwp.cli import app, main

from conftest import make_idx_set

# Each command path of the CLI, and the test that exercises it. A new command without an entry
# here fails test_every_command_is_smoke_tested.
SMOKE_TESTED = {
    ("data", "list"): "test_data_list",
    ("data", "preview"): "test_data_preview_mnist",
}


def _command_paths(cmd, prefix=()):
    if hasattr(cmd, "commands"):  # a group
        for name, sub in cmd.commands.items():
            yield from _command_paths(sub, (*prefix, name))
    else:
        yield prefix


def test_every_command_is_smoke_tested():
    paths = set(_command_paths(typer.main.get_command(app)))
    assert paths == set(SMOKE_TESTED)
    for test in SMOKE_TESTED.values():
        assert test in globals()


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("dwp ")


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    assert "data" in capsys.readouterr().out
    assert main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    assert "list" in out and "preview" in out


def test_data_list(tmp_path, capsys):
    make_idx_set(tmp_path / "MNIST" / "raw")
    assert main(["data", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("mnist "))
    assert "yes" in line and str(tmp_path / "MNIST" / "raw") in line
    cifar = next(ln for ln in out.splitlines() if ln.startswith("cifar10 "))
    assert "no" in cifar and "not found" in cifar


def test_data_preview_mnist(tmp_path, capsys):
    make_idx_set(tmp_path)
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "mnist", "--out", str(out), "--data-root", str(tmp_path),
                 "--per-class", "3"]) == 0  # fmt: skip
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 100
    assert "wrote" in capsys.readouterr().out


def test_missing_dataset_is_one_line_exit_2(tmp_path, capsys):
    code = main(["data", "preview", "mnist", "--out", str(tmp_path / "x.png"),
                 "--data-root", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: dataset 'mnist' not found") and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_corrupt_file_is_one_line_exit_2(tmp_path, capsys):
    make_idx_set(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04rubbish")
    code = main(["data", "preview", "mnist", "--out", str(tmp_path / "x.png"),
                 "--data-root", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "not an IDX file" in err and "Traceback" not in err


def test_bad_option_is_a_usage_error(capsys):
    assert main(["data", "preview", "mnist", "--out", "x.png", "--part", "valid"]) == 2
    assert "Invalid value" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    # the script installed beside this interpreter (binutils also ships a /usr/bin/dwp)
    exe = Path(sys.executable).parent / "dwp"
    assert exe.exists(), "install the package (pip install -e .) to get the dwp script"
    res = subprocess.run([exe, "data", "preview", "nope", "--out", str(tmp_path / "a.png")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2
    assert "unknown dataset 'nope'" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("args", [["data", "preview", "mnist5k", "--per-class", "2"]])
def test_preview_embedded_digits(tmp_path, args):
    out = tmp_path / "m.png"
    assert main([*args, "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 100
