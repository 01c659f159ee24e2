"""``dwp data``: what datasets are available here, previews, rendered letters."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from dwp.cli._common import DataRoot, bar, group
from dwp.errors import DWPError

app = group("Datasets: what is available here, previews, and rendered letters as notMNIST files.")


class Part(StrEnum):
    """Which part of a dataset."""

    train = "train"
    test = "test"


@app.command("list")
def data_list(data_root: DataRoot = None) -> None:
    """List the datasets of the catalog, whether each is available here, and where from."""
    from dwp.data import dataset_status

    rows = dataset_status(data_root)
    width = max(len(r.name) for r in rows)
    for r in rows:
        mark = "yes" if r.available else "no "
        typer.echo(f"{r.name:<{width}}  {mark}  {r.where}")
        typer.echo(f"{'':<{width}}       {r.description}")


@app.command("preview")
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
    for folder, by_class in ds.info.get("skipped", {}).items():
        counts = ", ".join(
            f"{c}: {b['unreadable']} unreadable, {b['wrong_size']} of another size"
            for c, b in by_class.items()
        )
        typer.echo(f"skipped in {folder}: {counts}")


@app.command("render-letters")
def data_render_letters(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory; the files go to OUT/notMNIST/.")
    ],
    train: Annotated[int, typer.Option(min=10, help="Number of training letters.")] = 100000,
    test: Annotated[int, typer.Option(min=10, help="Number of test letters.")] = 10000,
    seed: Annotated[int, typer.Option(help="Seed of the rendering (fonts, jitter, order).")] = 0,
    font_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--font-dir",
            help="Search only these font directories (repeatable; default: matplotlib's fonts, "
            "the system's and $DWP_FONT_DIRS).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Render notMNIST-style letters from every usable font here and write them as notMNIST
    IDX files, readable anywhere as `--dataset notmnist --data-root OUT`."""
    from dwp.data import cache_dir, export_letters, find_fonts
    from dwp.data.letters import NO_FONTS
    from dwp.io import check_out_dir

    check_out_dir(out / "notMNIST")  # before the rendering, not after it
    fonts = find_fonts(font_dir) if font_dir else find_fonts()
    if not fonts and font_dir:  # before the first line of output, not after it
        where = ", ".join(map(str, font_dir))
        raise DWPError(f"--font-dir {where}: no font there can render the letters A..J")
    if not fonts:
        raise DWPError(NO_FONTS)
    typer.echo(f"rendering {train} + {test} letters from {len(fonts)} fonts ...", err=True)
    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for b in bars.values():
                b.close()
            bars[stage] = bar(total, stage, "font" if stage.endswith("fonts") else "letter")
        bars[stage].update(done - bars[stage].n)

    try:
        info = export_letters(out, train, test, seed, fonts=fonts, cache=cache_dir(),
                              progress=progress)  # fmt: skip
    finally:
        for b in bars.values():
            b.close()
    typer.echo(
        f"wrote {info['folder']}  ({info['n_train']} train / {info['n_test']} test letters, "
        f"{info['fonts']} fonts); read them with --dataset notmnist --data-root {out}"
    )
