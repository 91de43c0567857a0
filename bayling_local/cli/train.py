"""`bayling-local train`: build the instruction mix (`data build`), run SFT (`sft`), list recipe keys."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

app = typer.Typer(help="Language-alignment data and DeepSpeed instruction tuning.", no_args_is_help=True)
data_app = typer.Typer(help="Build the instruction mix.", no_args_is_help=True)
app.add_typer(data_app, name="data")

RecipeArgument = Annotated[str, typer.Argument(help="Recipe YAML (see training/recipes/).")]


@data_app.command("build")
def data_build(recipe: RecipeArgument) -> None:
    """Build the mix the recipe's `data:` section describes (JSONL + stats JSON/Markdown)."""
    from bayling_local.training.config import load_recipe
    from bayling_local.training.data import build_mix

    result = build_mix(load_recipe(recipe))
    stats = result.stats
    print(
        f"wrote {stats['train_examples']} train examples to {result.paths.train}"
        + (f" and {stats['eval_examples']} eval examples to {result.paths.eval}" if stats["eval_examples"] else ""),
        file=sys.stderr,
    )
    print(f"stats: {result.paths.stats_json}, {result.paths.stats_markdown}", file=sys.stderr)


@app.command()
def sft(
    recipe: RecipeArgument,
    gpus: Annotated[int | None, typer.Option("--gpus", help="Processes (GPUs) per node; launches a distributed run.")] = None,
    hostfile: Annotated[str | None, typer.Option("--hostfile", help="DeepSpeed hostfile for a multi-node run.")] = None,
    launcher: Annotated[str, typer.Option("--launcher", help="auto, deepspeed or torchrun.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in train.output_dir.")] = False,
    stop_after: Annotated[int | None, typer.Option("--stop-after", help="Stop after this step with a checkpoint; --resume continues.")] = None,
    print_command: Annotated[bool, typer.Option("--print-command", help="Print the launch command and exit.")] = False,
) -> None:
    """Full-parameter SFT: in this process, or under deepspeed/torchrun with --gpus/--hostfile."""
    from bayling_local.training.config import load_recipe
    from bayling_local.training.launch import launch_command, run_launch

    loaded = load_recipe(recipe)  # validate before anything starts
    command = launch_command(
        recipe, gpus=gpus, hostfile=hostfile, launcher=launcher, resume=resume, stop_after=stop_after
    )
    if print_command:
        print(" ".join(command))
        return
    if gpus is None and hostfile is None and launcher == "auto":
        from bayling_local.training.sft import run_sft

        final = run_sft(loaded, resume=resume, stop_after=stop_after)
        if final is not None:
            print(f"final model: {final}", file=sys.stderr)
        return
    code = run_launch(command)
    if code:
        raise typer.Exit(code)


@app.command()
def keys() -> None:
    """Every recipe key with its default and help."""
    from bayling_local.cli.output import print_table
    from bayling_local.training.config import recipe_reference

    print_table(("key", "default", "help"), recipe_reference())
