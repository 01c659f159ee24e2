"""The ``dwp`` command: a typer root that adds one sub-app per command group
(:mod:`dwp.cli.data`, ``source``, ``kernels``, ``prior``, ``bnn``, ``experiment``) and the
``reproduce`` / ``report`` commands. The only package of dwp that parses argv or prints.

User errors (:class:`dwp.errors.DWPError`) are printed as one line on stderr with exit status 2
(:func:`main` is the one handler). Choices and defaults come from :mod:`dwp.config`; nothing
here imports torch until a command runs, so ``dwp --help`` stays fast.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback
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
    """Entry point of the ``dwp`` console script; returns the exit status.

    The one place where failures become what the user sees: a usage error, a
    :class:`~dwp.errors.DWPError` or an ``OSError`` on the user's paths is one line on stderr
    and exit status 2; Ctrl-C is one line and 130; anything else is a bug in dwp and shows its
    traceback and how to report it (status 1).
    """
    argv = _expand_multi_value(list(sys.argv[1:] if argv is None else argv))
    command = typer.main.get_command(app)
    try:
        with command.make_context("dwp", argv) as ctx:
            command.invoke(ctx)
    except typer.Exit as exc:  # --help, --version
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors (typer's click)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `dwp prior`: the group's help
            typer.echo(exc.format_message(), err=True)
            return exc.exit_code
        return _fail(_usage_line(exc), exc.exit_code)
    except typer.Abort:
        return _fail("aborted", 1)
    except KeyboardInterrupt:
        return _fail(
            "interrupted; runs resume from their last checkpoint when the same command is "
            "given again",
            130,
        )
    except DWPError as exc:
        return _fail(str(exc), 2)
    except OSError as exc:
        return _fail(os_error_line(exc), 2)
    except Exception as exc:
        if _out_of_memory(exc):
            return _fail(
                f"out of memory ({' '.join(str(exc).split())[:160]}); use smaller widths "
                "(--hidden, --width-scale), --batch-size or --jobs, or another --device",
                2,
            )
        traceback.print_exc()  # a bug: the traceback is what a report needs
        return _fail(
            f"this is a bug in dwp {dwp.__version__}, not in your input: please report it to "
            "the project's issue tracker with the command, `dwp --version` and the traceback "
            "above",
            1,
        )
    return 0


def _out_of_memory(exc: Exception) -> bool:
    """Host or device memory ran out: too large a model or batch for this machine, not a bug."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                              or "out of memory" in text)  # fmt: skip


def _fail(message: str, status: int) -> int:
    typer.echo("error: " + " ".join(message.split()), err=True)  # always one line
    return status


def _usage_line(exc: typer.TyperException) -> str:
    """A click usage error as one line, with the command whose --help explains it."""
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return exc.format_message() + hint


def os_error_line(exc: OSError) -> str:
    """``PATH: reason`` of an OSError on a user's path (permission, a file where a directory
    belongs, a full disk)."""
    reason = exc.strerror or type(exc).__name__
    if isinstance(exc, FileExistsError | NotADirectoryError):
        reason += " (a directory was expected there; give another path)"
    elif isinstance(exc, IsADirectoryError):
        reason += " (a file was expected there)"
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {reason}" if where else f"{reason} ({exc})"


def run() -> None:  # console-script wrapper: exit with main's status
    # a SIGTERM to the command (kill PID, a scheduler's stop) ends it as Ctrl-C does: its worker
    # processes stopped, its interrupted runs cleaned up, one line; not a silent death that
    # leaves the workers running on
    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(main())


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt
