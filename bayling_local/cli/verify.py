"""`bayling-local verify`: the fidelity report of a GGUF or ONNX export against the checkpoint it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def verify(
    artifact: Annotated[str, typer.Argument(help="A GGUF file, an ONNX export folder, or a store name.")],
    reference: Annotated[
        str | None,
        typer.Option("--reference", "-r", help="The Hugging Face checkpoint folder it came from (default: the one "
                     "recorded in the GGUF's general.source.url or the ONNX export's bayling_onnx.json)."),
    ] = None,
    compare: Annotated[
        list[str] | None,
        typer.Option("--compare", help="More artifacts of the same model (other quants, GGUF or ONNX) to score."),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Full-precision GGUF or ONNX export to measure KL divergence against.")
    ] = None,
    texts: Annotated[
        str | None, typer.Option("--texts", help="FLORES-200 folder or archive (all 204 languages), or a text file.")
    ] = None,
    languages: Annotated[str | None, typer.Option("--languages", help="Comma-separated FLORES codes (default: all).")] = None,
    sentences: Annotated[int, typer.Option("--sentences", min=1, help="Sentences per language for tokenization.")] = 20,
    scored: Annotated[int, typer.Option("--scored-sentences", min=1, help="Sentences per language for logits and KL.")] = 2,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for llama.cpp / ONNX Runtime.")] = None,
) -> None:
    """Check tokenization, logits and quantization loss of ARTIFACT; writes JSON and Markdown beside it."""
    from bayling_local.convert.verify import render_markdown, report_path
    from bayling_local.convert.verify import verify as run_verify

    path = _artifact_path(artifact)
    report = run_verify(
        path, _reference(path, reference), compare=[_artifact_path(c) for c in compare or ()],
        baseline=_artifact_path(baseline) if baseline else None, texts=texts,
        languages=[code.strip() for code in languages.split(",")] if languages else None,
        tokenization_sentences=sentences, scored_sentences=scored, threads=threads,
    )
    print(render_markdown(report))
    print(f"report: {report_path(path)} (and .md)")


def _artifact_path(artifact: str) -> Path:
    from bayling_local.backends.onnxrt import CONFIG_FILE
    from bayling_local.errors import UsageError

    path = Path(artifact).expanduser()
    if path.is_file() or (path / CONFIG_FILE).is_file():
        return path
    if path.is_dir():
        raise UsageError(f"{path} is a folder without {CONFIG_FILE}; verify checks GGUF files and ONNX exports")
    from bayling_local.store import get_model

    stored = get_model(artifact)
    if stored.manifest.format not in ("gguf", "onnx"):
        raise UsageError(f"'{artifact}' is a {stored.manifest.format} model; verify checks GGUF files and ONNX exports")
    return stored.path


def _reference(path: Path, reference: str | None) -> Path:
    from bayling_local.errors import UsageError

    if reference:
        return Path(reference).expanduser()
    source = _recorded_source(path)
    if source and (Path(source) / "config.json").is_file():
        return Path(source)
    raise UsageError(f"name the checkpoint {path.name} was converted from with --reference FOLDER")


def _recorded_source(path: Path) -> str | None:
    """The checkpoint folder the converter recorded in the artifact, if any."""
    if path.is_dir() or path.suffix == ".onnx":
        from bayling_local.backends.onnxrt import read_export_config

        provenance = read_export_config(path if path.is_dir() else path.parent).get("provenance")
        return provenance.get("checkpoint") if isinstance(provenance, dict) else None
    from bayling_local.gguf_header import read_gguf_header

    source = read_gguf_header(path).metadata.get("general.source.url")
    return source if isinstance(source, str) else None
