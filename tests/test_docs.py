"""The README and the docs: the README's example runs as written, the docs' copy of it is the
same, the CLI reference is current, and the README stays a user's guide."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import typer

from dwp.cli import app

ROOT = Path(__file__).resolve().parent.parent


def _python_block(path: Path, after: str) -> str:
    text = path.read_text()
    start = text.index("```python\n", text.index(after)) + len("```python\n")
    return text[start : text.index("```", start)]


def test_readme_is_a_short_guide_naming_every_command_group():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert readme.index("## Quick start") < readme.index("## Use the prior on your own model")
    assert "make quick" in readme and "make test" in readme
    table = readme[readme.index("## Commands") :]
    for name in typer.main.get_command(app).commands:
        assert f"`dwp {name}" in table or f"`{name}`" in table, name


def test_readme_example_runs_as_written(tmp_path):
    code = _python_block(ROOT / "README.md", "## Use the prior on your own model")
    assert _python_block(ROOT / "docs" / "own-model.md", "# Use the prior") == code
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    accuracy = float(done.stdout.strip().rsplit(" ", 1)[1])
    assert 0.3 < accuracy <= 1.0  # 100 digits, 100 epochs: far above chance (0.1)
    assert "prior deep weight prior letters-fconv/conv2 (5x5" in done.stdout
    assert (tmp_path / "runs" / "my-cnn" / "result.json").is_file()
    assert (tmp_path / "my-cnn.pt").is_file()


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" /
                                                  "cli_reference.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "cli.md").read_text() == module.render(), (
        "docs/cli.md is out of date: run python scripts/cli_reference.py (or make docs)"
    )


def test_benchmarks_start():
    """Every benchmark script imports what it uses (they are not run by the suite)."""
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, f"{script.name}: {done.stderr[-500:]}"
