"""Markdown tables: the one renderer of the CLI's printed tables, ``dwp bnn summary`` and
``report.md``. Torch-free."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_table", "mean_sd"]


def _line(cells: Sequence) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown_table(header: Sequence, rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table: ``| a | b |``, ``|---|---|``, one line per row; cells
    are ``str()``-ed. Every row must have the header's length."""
    lines = [_line(header), "|" + "---|" * len(header)]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells, the header {len(header)}")
        lines.append(_line(row))
    return "\n".join(lines)


def mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """``0.833 ± 0.012``: a mean and a standard deviation as a table shows them."""
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"
