"""`bayling-local generate`: raw completion of a prompt, no chat template."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bayling_local.cli.loading import open_model_for_cli
from bayling_local.cli.options import (
    BackendOption,
    ContextOption,
    DeviceOption,
    DraftModelOption,
    DraftTokensOption,
    LookupNgramOption,
    MaxTokensOption,
    ModelOption,
    SeedOption,
    TemperatureOption,
    ThreadsOption,
    TopKOption,
    TopPOption,
    generation_config,
    speculation_options,
)


def generate(
    prompt: Annotated[str, typer.Argument(help="Text to continue (special tokens such as <|eot_id|> are parsed).")],
    model: ModelOption = None,
    device: DeviceOption = "auto",
    backend: BackendOption = "auto",
    threads: ThreadsOption = None,
    context: ContextOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = 0.0,
    top_p: TopPOption = 0.95,
    top_k: TopKOption = 40,
    seed: SeedOption = None,
    draft_model: DraftModelOption = None,
    draft_tokens: DraftTokensOption = 8,
    lookup_ngram: LookupNgramOption = 0,
) -> None:
    """Continue PROMPT as raw text; only the model's own end-of-text tokens stop it."""
    speculation = speculation_options(draft_model, draft_tokens, lookup_ngram)
    loaded = open_model_for_cli(model, device, threads, context, None, backend, speculation)
    config = generation_config(max_tokens, temperature, top_p, top_k, seed, default_max=128)
    for piece in loaded.complete(prompt, config):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
