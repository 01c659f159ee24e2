"""The ``dwp`` command. Thin: it parses arguments, calls the library and reports.

User errors (:class:`dwp.errors.DWPError`) are printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

import dwp
from dwp.errors import DWPError

app = typer.Typer(
    help="The Deep Weight Prior: learned kernel priors for Bayesian CNNs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: what is available here, and previews.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataRoot = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Directory holding dataset files (default: $DWP_DATA_ROOT, then $DATA_ROOT).",
        show_default=False,
    ),
]


class Part(StrEnum):
    """Which part of a dataset."""

    train = "train"
    test = "test"


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


@data_app.command("list")
def data_list(data_root: DataRoot = None) -> None:
    """List the datasets of the catalog, whether each is available here, and where from."""
    from dwp.data import dataset_status

    rows = dataset_status(data_root)
    width = max(len(r.name) for r in rows)
    for r in rows:
        mark = "yes" if r.available else "no "
        typer.echo(f"{r.name:<{width}}  {mark}  {r.where}")
        typer.echo(f"{'':<{width}}       {r.description}")


@data_app.command("preview")
def data_preview(
    name: Annotated[str, typer.Argument(help="Dataset name (see `dwp data list`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    part: Annotated[Part, typer.Option(help="Which part to show.")] = Part.train,
    per_class: Annotated[int, typer.Option(min=1, max=50, help="Images per class row.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed for choosing the images.")] = 0,
    data_root: DataRoot = None,
) -> None:
    """Write a grid of examples, one row per class."""
    from dwp.data import load_dataset
    from dwp.plots import class_grid

    ds = load_dataset(name, data_root)
    images = ds.train if part is Part.train else ds.test
    if ds.num_classes > 20:
        typer.echo(f"{name} has {ds.num_classes} classes; showing the first 20", err=True)
        keep = images.labels < 20
        images = images.subset(keep.nonzero().squeeze(1))
    classes = ds.classes[:20]
    title = f"{name} ({part.value}, {len(images)} images)"
    path = class_grid(images.images, images.labels, classes, out, per_class, seed, title)
    typer.echo(f"wrote {path}  ({name}: {len(ds.train)} train / {len(ds.test)} test; {ds.source})")
    if ds.info.get("fonts"):
        typer.echo(f"fonts: {len(ds.info['fonts'])}")
    if ds.info.get("skipped_unreadable"):
        typer.echo(f"skipped {ds.info['skipped_unreadable']} unreadable images")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dwp`` console script; returns the exit status."""
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


if __name__ == "__main__":
    run()
