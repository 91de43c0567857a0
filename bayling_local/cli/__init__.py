"""The `bayling-local` command: one small module per verb, one error layer (`main`).

Verb modules import only typer and our light modules at start-up; each verb imports the heavy
runtime it needs when it runs, so `bayling-local --help` stays instant.
"""

from __future__ import annotations

import sys

import typer

from bayling_local import __version__
from bayling_local.cli import bench, chat, convert, doctor, generate, languages, models, train, translate, tui, verify

app = typer.Typer(
    name="bayling-local",
    help="Offline multilingual LLMs: chat, translate and manage models (BayLing and friends). "
    "Add --debug anywhere to see tracebacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(chat.chat)
app.command()(translate.translate)
app.command()(generate.generate)
app.command()(languages.languages)
app.command()(doctor.doctor)
app.command()(convert.convert)
app.command()(verify.verify)
app.command()(tui.tui)
app.add_typer(models.app, name="models")
app.add_typer(train.app, name="train")
app.add_typer(bench.app, name="bench")


def _version(value: bool) -> None:
    if value:
        print(f"bayling-local {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Offline multilingual LLMs: chat, translate and manage models."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error becomes one line on stderr and an exit code (2: usage, 1: failure)."""
    from bayling_local.errors import BaylingError

    click = _click_exceptions()

    args = list(sys.argv[1:] if argv is None else argv)
    if not args and argv is None and sys.stdin.isatty() and sys.stdout.isatty():
        args = ["tui"]  # a bare `bayling-local` on a terminal opens the TUI; in a pipe it prints help
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        result = typer.main.get_command(app).main(args=args, prog_name="bayling-local", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as done:
        return done.exit_code
    except getattr(click, "NoArgsIsHelpError", ()):
        return 0  # the help was printed
    except click.ClickException as error:
        return _fail(error.format_message(), error.exit_code, debug)
    except (typer.Abort, KeyboardInterrupt):
        print("bayling-local: interrupted", file=sys.stderr)
        return 130
    except BaylingError as error:
        return _fail(str(error), error.exit_code, debug)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing more to say
        return 0
    except Exception as error:  # the last net: a library error we did not translate
        return _fail(f"unexpected {type(error).__name__}: {error} (rerun with --debug for details)", 1, debug)


def _click_exceptions():
    """The click exceptions module typer raises: its vendored copy (typer >= 0.29) or click itself."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer depends on click
        from click import exceptions
    return exceptions


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"bayling-local: error: {first_line}", file=sys.stderr)
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
