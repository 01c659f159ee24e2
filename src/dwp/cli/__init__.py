"""The ``dwp`` command: a typer root that adds one sub-app per command group
(:mod:`dwp.cli.data`, ``source``, ``kernels``, ``prior``, ``bnn``, ``experiment``) and the
``reproduce`` / ``report`` commands. The only package of dwp that parses argv or prints.

User errors (:class:`dwp.errors.DWPError`) are printed as one line on stderr with exit status 2
(:func:`main` is the one handler). Choices and defaults come from :mod:`dwp.config`; nothing
here imports torch until a command runs, so ``dwp --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

import dwp
from dwp.cli import bnn, data, experiment, kernels, prior, reproduce, source
from dwp.cli._common import MULTI_VALUE
from dwp.errors import DWPError

__all__ = ["app", "main", "run"]

app = typer.Typer(
    help="The Deep Weight Prior: learned kernel priors for Bayesian CNNs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for _module in (data, source, kernels, prior, bnn, experiment):
    app.add_typer(_module.app, name=_module.__name__.rsplit(".", 1)[-1])
app.command("reproduce")(reproduce.reproduce_cmd)
app.command("report")(reproduce.report_cmd)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dwp {dwp.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


def _expand_multi_value(argv: list[str]) -> list[str]:
    """Let list options take several values after one flag (``--prior-dirs A B``), as well as
    the repeated form (``--prior-dirs A --prior-dirs B``) that click understands."""
    out, current, taken = [], None, 0
    for tok in argv:
        if tok in MULTI_VALUE:
            if current is not None and not taken:
                out.append(current)  # a flag without values: let click report it
            current, taken = tok, 0
            continue
        if current is not None:
            if tok.startswith("-"):
                if not taken:
                    out.append(current)
                current = None
            else:
                out += [current, tok]
                taken += 1
                continue
        out.append(tok)
    if current is not None and not taken:
        out.append(current)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dwp`` console script; returns the exit status."""
    argv = _expand_multi_value(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=argv, prog_name="dwp")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except DWPError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


def run() -> None:  # console-script wrapper: exit with main's status
    sys.exit(main())
