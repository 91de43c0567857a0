"""Options shared by every verb that loads a model or generates: defined once, same meaning everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

from bayling_local.backends.base import DEVICES, GenerationConfig, LoadOptions, SpeculationOptions

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", "-m",
        help="Store name or path to an artifact (GGUF file). Default: $BAYLING_MODEL, the config file, "
        "else the bundled smollm2-135m-instruct.",
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help=f"Where to run: {', '.join(DEVICES)}. auto uses a GPU when the build has one.")
]
BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        help="auto: of a store model's GGUF and ONNX conversions (same checkpoint, same weight width), the one "
        "that decodes faster on this CPU (`bayling-local doctor` says which and why); llama.cpp or onnx forces one.",
    ),
]
ThreadsOption = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads (default: one per physical core).")]
ContextOption = Annotated[
    int | None, typer.Option("--context", min=64, help="Context window in tokens (default: the model's, at most 8192).")
]
ChatFormatOption = Annotated[
    str | None,
    typer.Option("--chat-format", help="Override the artifact's chat format: bayling-2, bayling-3, chatml, template."),
]
MaxTokensOption = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Most tokens to generate.")]
TemperatureOption = Annotated[float, typer.Option("--temperature", min=0.0, help="0 is greedy (deterministic).")]
TopPOption = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold.")]
TopKOption = Annotated[int, typer.Option("--top-k", min=0, help="Sample from the k most likely tokens (0: all).")]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Sampling seed, for repeatable output.")]
DraftModelOption = Annotated[
    str | None,
    typer.Option(
        "--draft-model",
        help="Speculative decoding: a smaller model with the same tokenizer drafts tokens that the model "
        "checks several at a time (store name, GGUF path, or auto: the catalog's draft for the model). "
        "Greedy output stays token-for-token the same. llama.cpp only.",
    ),
]
DraftTokensOption = Annotated[
    int,
    typer.Option("--draft-tokens", min=1, max=32, help="Most tokens drafted ahead (it adapts to how many are kept)."),
]
LookupNgramOption = Annotated[
    int,
    typer.Option(
        "--lookup-ngram",
        min=0,
        max=8,
        help="Speculative decoding without a draft model: guess the next tokens from an earlier match of "
        "the last 2..N tokens in the prompt or the output (copied markup, names, code). 0: off.",
    ),
]


def speculation_options(draft_model: str | None, draft_tokens: int, lookup_ngram: int) -> SpeculationOptions | None:
    from bayling_local.errors import UsageError

    if draft_model and lookup_ngram:
        raise UsageError("give --draft-model or --lookup-ngram, not both (each drafts on its own)")
    options = SpeculationOptions(draft_model=draft_model, draft_tokens=draft_tokens, lookup_ngram=lookup_ngram)
    return options if options.enabled else None


def load_options(
    device: str, threads: int | None, context: int | None, speculation: SpeculationOptions | None = None
) -> LoadOptions:
    from bayling_local.config import load_config
    from bayling_local.errors import UsageError

    config = load_config()
    device = device if device != "auto" else str(config.get("device", "auto"))
    if device not in DEVICES:
        raise UsageError(f"unknown device '{device}'; choose one of: {', '.join(DEVICES)}")
    return LoadOptions(
        device=device,
        threads=threads or config.get("threads"),
        context_length=context or config.get("context"),
        huge_pages=config.get("huge_pages", True),
        speculation=speculation,
    )


def generation_config(
    max_tokens: int | None, temperature: float, top_p: float, top_k: int, seed: int | None, default_max: int = 512
) -> GenerationConfig:
    return GenerationConfig(
        max_tokens=max_tokens or default_max, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed
    )
