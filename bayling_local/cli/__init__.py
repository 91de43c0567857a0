"""The `bayling-local` command: one small module per verb, one error layer (`main`).

Verbs are registered by name and import path (`VERBS`): printing the root `--help` imports none of them,
only typer; a verb's module is imported when it runs or shows its own help, and each verb imports the heavy
runtime it needs when it runs.
"""

from __future__ import annotations

import sys

import typer

from bayling_local import __version__
from bayling_local.cli.lazy import LazyVerbGroup, Verb

VERBS = (
    Verb("chat", "bayling_local.cli.chat:chat", "Chat with a model, streaming each answer as it is written."),
    Verb(
        "translate",
        "bayling_local.cli.translate:translate",
        "Translate TEXT (or each stdin line, or a file with -i) into every --to language.",
    ),
    Verb(
        "tm",
        "bayling_local.cli.tm:app",
        "Translation memory: import TMX and reviewed XLIFF/PO, export TMX 1.4, show counts.",
    ),
    Verb(
        "generate",
        "bayling_local.cli.generate:generate",
        "Continue PROMPT as raw text; only the model's own end-of-text tokens stop it.",
    ),
    Verb(
        "serve",
        "bayling_local.cli.serve:serve",
        "Serve a model over the OpenAI HTTP API (chat, completions, models) plus /v1/translate.",
    ),
    Verb(
        "languages",
        "bayling_local.cli.languages:languages",
        "List languages; with QUERY, every row it could mean (the default variant first).",
    ),
    Verb(
        "doctor", "bayling_local.cli.doctor:doctor", "Report backends, devices, the model store and the default model."
    ),
    Verb(
        "convert",
        "bayling_local.cli.convert:convert",
        "Convert CHECKPOINT to a GGUF or ONNX; the result is imported into the model store unless --out is given.",
    ),
    Verb(
        "verify",
        "bayling_local.cli.verify:verify",
        "Check tokenization, logits and quantization loss of ARTIFACT; writes JSON and Markdown beside it.",
    ),
    Verb(
        "tui",
        "bayling_local.cli.tui:tui",
        "Open the terminal UI: chat (F1), translate (F2), bench (F3), models (F4); ctrl+p lists every action.",
    ),
    Verb("models", "bayling_local.cli.models:app", "Manage the local model store ($BAYLING_HOME/models)."),
    Verb(
        "bundle",
        "bayling_local.cli.bundle:app",
        "Offline bundles: wheels, models and a lock to install bayling-local on a machine with no network.",
    ),
    Verb("train", "bayling_local.cli.train:app", "Language-alignment data and DeepSpeed instruction tuning."),
    Verb(
        "bench",
        "bayling_local.cli.bench:app",
        "Benchmarks: speed (tokens/s, memory), translation (BLEU, chrF++), multiple choice, reports.",
    ),
)
"""Every verb, in the order the root help lists them; each summary is the first paragraph of the verb's own
help (tests/test_cli.py checks they agree)."""


class RootGroup(LazyVerbGroup):
    verbs = VERBS


app = typer.Typer(
    name="bayling-local",
    help="Offline multilingual LLMs: chat, translate and manage models (BayLing and friends). "
    "Add --debug anywhere to see tracebacks.",
    cls=RootGroup,
    # Plain click help for the root: typer's rich help imports rich and markdown-it and builds every verb
    # to list it, which took longer than importing the CLI (benchmarks/startup.py). Each verb keeps typer's
    # rich help for its own `--help`.
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    except getattr(click, "NoArgsIsHelpError", ()) as shown:
        if shown.format_message():  # plain help comes back as the message; rich help was printed already
            print(shown.format_message())
        return 0
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
