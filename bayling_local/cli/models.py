"""`bayling-local models`: list, info, import, export, pull and rm entries of the local model store."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated

import typer

from bayling_local.cli.output import human_size, print_table

app = typer.Typer(help="Manage the local model store ($BAYLING_HOME/models).", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """Models in the store (and the bundled demo model)."""
    from bayling_local.store import list_models, models_dir

    entries = list_models()
    if not entries:
        print(f"no models in {models_dir()}; import one with `bayling-local models import PATH`", file=sys.stderr)
        return
    print_table(
        ("name", "format", "quant", "size", "chat format", "source"),
        [
            (m.name, m.manifest.format, m.manifest.quant, human_size(m.manifest.size), m.manifest.chat_format,
             "bundled" if m.bundled else m.manifest.source)
            for m in entries
        ],
    )


@app.command()
def info(name: Annotated[str, typer.Argument(help="Store name.")]) -> None:
    """The manifest of one model, as JSON."""
    from bayling_local.store import get_model

    model = get_model(name)
    print(json.dumps({**asdict(model.manifest), "path": str(model.path)}, indent=2, ensure_ascii=False))


@app.command("import")
def import_(
    path: Annotated[str, typer.Argument(help="A .gguf file, a Hugging Face checkpoint folder, an ONNX export folder, or a "
                                             "`models export` folder or bundle (every model in it, with its manifest).")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Store name (default: from the file or folder name).")] = None,
    chat_format: Annotated[str | None, typer.Option("--chat-format", help="bayling-2, bayling-3, chatml or template.")] = None,
    link: Annotated[bool, typer.Option("--link", help="Reference the file where it is instead of copying it.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an entry of the same name.")] = False,
) -> None:
    """Copy a local model, or every model of an export or bundle, into the store (checked first: a corrupt,
    truncated or changed file is refused)."""
    from bayling_local.errors import UnknownChatFormatError
    from bayling_local.prompts import CHAT_FORMAT_IDS
    from bayling_local.store import exported_entries, import_model

    if exported_entries(path):
        _import_exported(path, force)
        return
    if chat_format and chat_format not in CHAT_FORMAT_IDS:
        raise UnknownChatFormatError(f"unknown chat format '{chat_format}'; choose one of: {', '.join(CHAT_FORMAT_IDS)}")
    with _byte_progress(f"importing {path}") as progress:
        model = import_model(path, name=name, chat_format=chat_format, link=link, force=force, progress=progress)
    print(f"imported '{model.name}' ({model.manifest.format}, {model.manifest.quant}, {human_size(model.manifest.size)})")


def _import_exported(path: str, force: bool) -> None:
    from bayling_local.store import import_exported

    with _byte_progress(f"importing {path}") as progress:
        models = import_exported(path, force=force, progress=progress)
    for model in models:
        print(f"imported '{model.name}' ({model.manifest.format}, {model.manifest.quant}, {human_size(model.manifest.size)})")


@app.command()
def export(
    names_and_out: Annotated[list[str], typer.Argument(help="Store names, then the output folder.", metavar="NAME... OUT")],
) -> None:
    """Copy store entries with their manifests to OUT/NAME/, for `models import OUT` on another machine.

    A copy interrupted (even killed) resumes when rerun and ends byte-identical; every file is checked against its manifest's sha256."""
    from bayling_local.errors import UsageError
    from bayling_local.store import export_models

    if len(names_and_out) < 2:
        raise UsageError("give at least one model name and the output folder: `bayling-local models export NAME... OUT`")
    *names, out = names_and_out
    with _byte_progress(f"exporting to {out}") as progress:
        folders = export_models(names, out, progress)
    for folder in folders:
        print(f"exported '{folder.name}' to {folder}")


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="Catalog name: bayling-2-7b, bayling-2-13b, bayling-3-8b.")],
    force: Annotated[bool, typer.Option("--force", help="Download again even if present.")] = False,
) -> None:
    """Download a catalog model from the Hugging Face hub (needs a network)."""
    from bayling_local.store import pull_model

    model = pull_model(name, force=force)
    print(f"pulled '{model.name}' into {model.path}")


@app.command()
def rm(name: Annotated[str, typer.Argument(help="Store name.")]) -> None:
    """Delete a model from the store."""
    from bayling_local.store import remove_model

    print(f"removed {remove_model(name)}")


class _byte_progress:
    """A rich progress bar for byte copies on a terminal; nothing in a pipe."""

    def __init__(self, description: str):
        self.description = description

    def __enter__(self):
        if not sys.stderr.isatty():
            self.progress = None
            return None
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        self.progress = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True)
        self.progress.start()
        task = self.progress.add_task(self.description, total=None)
        return lambda done, total: self.progress.update(task, completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
