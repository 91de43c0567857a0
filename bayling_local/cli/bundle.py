"""`bayling-local bundle`: build an offline bundle on a connected machine, verify and install it on one without."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bayling_local.cli.output import human_size

app = typer.Typer(
    help="Offline bundles: wheels, models and a lock to install bayling-local on a machine with no network.",
    no_args_is_help=True,
)


@app.command()
def create(
    out: Annotated[str, typer.Argument(help="The bundle folder (or, with --archive, the .tar file).")],
    extras: Annotated[str, typer.Option("--extras", help="Comma-separated extras to install.")] = "llama,demo,tui",
    models: Annotated[list[str] | None, typer.Option("--models", help="Store entries to carry (repeat; default: the default model).")] = None,
    python: Annotated[str | None, typer.Option("--python", help="Target Python version, e.g. 3.12 (default: this one).")] = None,
    platform: Annotated[str | None, typer.Option("--platform", help="Target pip platform tag, e.g. manylinux2014_x86_64.")] = None,
    torch: Annotated[str, typer.Option("--torch", help="The torch requirement, when an extra needs torch.")] = "torch==2.13.0",
    archive: Annotated[bool, typer.Option("--archive", help="Write one .tar instead of a folder.")] = False,
) -> None:
    """Build a bundle at OUT; rerun it after an interruption and only what is missing is fetched or copied."""
    from bayling_local.bundle import Target, create_bundle, read_lock

    chosen = tuple(extra.strip() for extra in extras.split(",") if extra.strip())
    with _steps() as progress:
        path = create_bundle(out, extras=chosen, models=models or None, target=Target.of(python, platform),
                             torch=torch, archive=archive, progress=progress)
    size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if path.is_dir():
        lock = read_lock(path)
        print(f"{len(lock['wheels'])} wheels, {len(lock['models'])} model(s)", file=sys.stderr)
    print(f"bundle: {path} ({human_size(size)}); on the offline machine run `sh {Path(path).name}/install.sh`"
          if path.is_dir() else f"bundle: {path} ({human_size(size)}); unpack it and run install.sh, or "
          f"`bayling-local bundle install {path.name}`")


@app.command()
def verify(bundle: Annotated[str, typer.Argument(help="A bundle folder.")]) -> None:
    """Check every file of BUNDLE against its bundle.json (size and sha256); names the damaged ones."""
    from bayling_local.bundle import verify_bundle

    with _steps() as progress:
        lock = verify_bundle(bundle, progress)
    print(f"{bundle}: {len(lock['files'])} files verified")


@app.command()
def install(
    bundle: Annotated[str, typer.Argument(help="A bundle folder or .tar.")],
    venv: Annotated[str, typer.Option("--venv", help="The virtualenv to create.")] = "~/.local/share/bayling-local/venv",
) -> None:
    """Verify BUNDLE, then install it into a new virtualenv with no network, import its models, run doctor."""
    from bayling_local.bundle import install_bundle

    with _steps() as progress:
        command = install_bundle(bundle, venv, progress)
    print(f"installed: {command}")


class _steps:
    """rich progress bars, one per step, on a terminal; nothing in a pipe."""

    def __enter__(self):
        self.progress = None
        if not sys.stderr.isatty():
            return None
        from rich.progress import Progress

        self.progress, self.tasks = Progress(transient=True), {}
        self.progress.start()
        return self.update

    def update(self, description: str, done: int, total: int) -> None:
        if description not in self.tasks:
            self.tasks[description] = self.progress.add_task(description, total=total or None)
        self.progress.update(self.tasks[description], completed=done, total=total or None)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
