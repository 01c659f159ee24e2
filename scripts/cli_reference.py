"""Write docs/cli.md, the CLI reference, from the `dwp` command's own definitions (run by
`make docs`; `tests/test_docs.py` fails when the file is out of date).

    python scripts/cli_reference.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dwp.cli import app

OUT = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def _commands(cmd, path: tuple[str, ...] = ()):
    if hasattr(cmd, "commands"):  # a group
        if path:
            yield path, cmd
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, cmd


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _row(param, ctx) -> str:
    """One table row: the option's forms and metavar, and its help with the default."""
    if param.param_type_name == "argument":
        return f"| `{param.name.upper()}` | {_cell(getattr(param, 'help', '') or '')} (required) |"
    forms, help_text = param.get_help_record(ctx)
    return f"| `{_cell(forms)}` | {_cell(help_text)} |"


def render() -> str:
    root = typer.main.get_command(app)
    lines = ["# CLI reference", "",
             "Generated from the command's definitions by `scripts/cli_reference.py`; "
             "`dwp COMMAND --help` shows the same. User errors print one line starting with "
             "`error:` and exit with status 2.", ""]  # fmt: skip
    for path, cmd in _commands(root):
        lines += [f"## `dwp {' '.join(path)}`", "", " ".join((cmd.help or "").split()), ""]
        if hasattr(cmd, "commands"):
            continue
        ctx = typer.Context(cmd, info_name=path[-1])
        params = [p for p in cmd.params if p.name != "help" and not p.hidden]
        if params:
            lines += ["| argument / option | description |", "|---|---|"]
            lines += [_row(p, ctx) for p in params]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
