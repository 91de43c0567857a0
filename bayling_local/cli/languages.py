"""`bayling-local languages`: list the 204 languages, or the rows matching a code, alias or name."""

from __future__ import annotations

from typing import Annotated

import typer

from bayling_local.cli.output import print_table
from bayling_local.errors import UnknownLanguageError


def languages(
    query: Annotated[str | None, typer.Argument(help="Code, alias or name (part of a name works too).")] = None,
) -> None:
    """List languages; with QUERY, every row it could mean (the default variant first)."""
    from bayling_local.languages import LANGUAGES, search

    rows = search(query) if query else list(LANGUAGES)
    if not rows:
        raise UnknownLanguageError(f"no language matches '{query}'; run `bayling-local languages` for all 204")
    print_table(
        ("code", "english name", "native name", "script", "iso 639-1", "aliases"),
        [(r.code, r.english_name, r.native_name, r.script, r.iso639_1 or "", ", ".join(r.aliases)) for r in rows],
    )
