"""`bayling-local tm`: import TMX and reviewed XLIFF/PO into the translation memory, export TMX, show counts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bayling_local.cli.output import print_table

app = typer.Typer(
    help="Translation memory: import TMX and reviewed XLIFF/PO, export TMX 1.4, show counts.\n\n"
    "Imported translations count as human ones, which outrank the model's own.",
    no_args_is_help=True,
)

TmOption = Annotated[
    Path | None,
    typer.Option("--tm", help="The memory (SQLite). Default: $BAYLING_HOME/memory.sqlite, as for `translate`."),
]
FromOption = Annotated[str, typer.Option("--from", "-f", help="Source language of the pair (code or name: en, eng_Latn).")]
ToOption = Annotated[str, typer.Option("--to", "-t", help="Target language of the pair.")]


def _memory_path(tm: Path | None) -> Path:
    from bayling_local.translate.memory import default_path

    return tm or default_path()


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A .tmx file, or an .xlf/.xliff or .po file with reviewed targets.")],
    source: FromOption = ...,
    target: ToOption = ...,
    tm: TmOption = None,
) -> None:
    """Store the FILE's translations of one language pair as human units (a `tm export` TMX keeps its origins).

    TMX: every unit with text in both languages; XLIFF 1.2: approved or final/signed-off targets; XLIFF 2.x:
    final/reviewed segments; PO: translated entries that are not fuzzy. A file whose languages are not the pair
    is refused and nothing is stored.
    """
    from bayling_local.languages import resolve
    from bayling_local.translate.tm_files import import_file

    memory = _memory_path(tm)
    read = import_file(memory, path, resolve(source), resolve(target))
    skipped = "".join(f"; skipped {count} ({why})" for why, count in sorted(read.skipped.items()))
    print(f"imported {len(read.units)} units from {path.name} into {memory}{skipped}")


@app.command("export")
def export(
    path: Annotated[Path, typer.Argument(help="The TMX file to write.")],
    source: FromOption = ...,
    target: ToOption = ...,
    tm: TmOption = None,
) -> None:
    """Write the memory's units of one language pair (human and machine) to a TMX 1.4 file."""
    from bayling_local.languages import resolve
    from bayling_local.translate.tm_files import export_tmx

    count = export_tmx(_memory_path(tm), path, resolve(source), resolve(target))
    print(f"exported {count} units to {path}")


@app.command()
def stats(tm: TmOption = None) -> None:
    """Units per language pair and origin (human, machine, rejected), then per origin."""
    from bayling_local.translate.tm_files import existing_memory

    with existing_memory(_memory_path(tm)) as memory:
        counts = memory.stats()
    rows = [(r["source"] or "(unknown)", r["target"], r["origin"], r["units"]) for r in counts["pairs"]]
    print_table(("source", "target", "origin", "units"), rows)
    totals: dict[str, int] = {}
    for row in counts["pairs"]:
        totals[row["origin"]] = totals.get(row["origin"], 0) + row["units"]
    by_origin = ", ".join(f"{origin} {count}" for origin, count in sorted(totals.items()))
    print(f"{counts['units']} units in {counts['path']} ({by_origin or 'none'})")
