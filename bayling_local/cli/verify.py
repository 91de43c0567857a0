"""`bayling-local verify`: the fidelity report of a GGUF against the checkpoint it was converted from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def verify(
    artifact: Annotated[str, typer.Argument(help="A GGUF file or store name.")],
    reference: Annotated[
        str | None,
        typer.Option("--reference", "-r", help="The Hugging Face checkpoint folder it came from (default: the one "
                     "named in the GGUF's general.source.url)."),
    ] = None,
    compare: Annotated[list[str] | None, typer.Option("--compare", help="More GGUFs of the same model (other quants) to score.")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Full-precision GGUF to measure KL divergence against.")] = None,
    texts: Annotated[
        str | None, typer.Option("--texts", help="FLORES-200 folder or archive (all 204 languages), or a text file.")
    ] = None,
    languages: Annotated[str | None, typer.Option("--languages", help="Comma-separated FLORES codes (default: all).")] = None,
    sentences: Annotated[int, typer.Option("--sentences", min=1, help="Sentences per language for tokenization.")] = 20,
    scored: Annotated[int, typer.Option("--scored-sentences", min=1, help="Sentences per language for logits and KL.")] = 2,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for llama.cpp.")] = None,
) -> None:
    """Check tokenization, logits and quantization loss of ARTIFACT; writes JSON and Markdown beside it."""
    from bayling_local.convert.verify import render_markdown
    from bayling_local.convert.verify import verify as run_verify

    path = _artifact_path(artifact)
    report = run_verify(
        path, _reference(path, reference), compare=compare or (), baseline=baseline, texts=texts,
        languages=[code.strip() for code in languages.split(",")] if languages else None,
        tokenization_sentences=sentences, scored_sentences=scored, threads=threads,
    )
    print(render_markdown(report))
    print(f"report: {path.with_name(path.stem + '.fidelity.json')} (and .md)")


def _artifact_path(artifact: str) -> Path:
    path = Path(artifact).expanduser()
    if path.is_file():
        return path
    from bayling_local.errors import UsageError
    from bayling_local.store import get_model

    stored = get_model(artifact)
    if stored.manifest.format != "gguf":
        raise UsageError(f"'{artifact}' is a {stored.manifest.format} model; verify checks GGUF files")
    return stored.path


def _reference(path: Path, reference: str | None) -> Path:
    from bayling_local.errors import UsageError
    from bayling_local.gguf_header import read_gguf_header

    if reference:
        return Path(reference).expanduser()
    source = read_gguf_header(path).metadata.get("general.source.url")
    if isinstance(source, str) and (Path(source) / "config.json").is_file():
        return Path(source)
    raise UsageError(f"name the checkpoint {path.name} was converted from with --reference FOLDER")
