"""Exceptions for bad input.

Every error the library raises for something the user can fix derives from :class:`DWPError`; the
CLI prints its message on one line and exits with status 2, without a traceback. Messages say what
was expected and where it was looked for.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CorruptFileError", "DWPError", "DatasetNotFoundError", "NonFiniteError", "one_line"]


class DWPError(Exception):
    """Base class of all user-facing errors."""


class DatasetNotFoundError(DWPError, FileNotFoundError):
    """A dataset's files are not in any of the places searched."""

    def __init__(
        self, name: str, expected: str, searched: list[Path] | tuple[Path, ...], install: str = ""
    ):
        self.name = name
        self.expected = expected
        self.searched = [Path(p) for p in searched]
        where = ", ".join(str(p) for p in self.searched) or "(no data root given)"
        super().__init__(
            f"dataset {name!r} not found: expected {expected}; searched {where}. "
            "Point --data-root (or DWP_DATA_ROOT / DATA_ROOT) at the directory that holds it"
            + (f", or {install}." if install else ".")
        )


class CorruptFileError(DWPError, ValueError):
    """A file exists but its content is not what its format promises."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NonFiniteError(DWPError, ArithmeticError):
    """A loss, metric or parameter became NaN or infinite: the run diverged (or its input holds
    such values). Training stops before anything claims to be finished."""


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters of it): how an
    exception from torch, pickle or a worker is quoted inside a one-line error."""
    text = str(exc).strip().splitlines()
    first = text[0][:limit] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
