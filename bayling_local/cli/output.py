"""Tables: a rich table on a terminal, tab-separated lines in a pipe (easy to cut and grep)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bayling_local.units import human_size  # the verbs' tables show sizes; the TUI imports it from units

__all__ = ["human_size", "print_table"]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    if not sys.stdout.isatty():
        for row in rows:
            print("\t".join(str(cell) for cell in row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, show_lines=False)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console().print(table)
