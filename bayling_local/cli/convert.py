"""`bayling-local convert`: a Hugging Face checkpoint to GGUF (any llama.cpp type) or ONNX, into the store or
to --out."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated

import typer

from bayling_local.cli.options import ChatFormatOption
from bayling_local.cli.output import print_table
from bayling_local.units import human_size

FORMAT_ONLY_OPTIONS = {
    "gguf": ("allow_pickle", "imatrix", "calibration", "verify", "texts"),
    "onnx": ("block_size", "export_device", "output_bits"),
}
"""Options that only one --to format reads: given with the other, they are refused rather than dropped."""


def convert(
    ctx: typer.Context,
    checkpoint: Annotated[
        str | None, typer.Argument(help="Hugging Face checkpoint folder (config.json, safetensors, tokenizer) or store name.")
    ] = None,
    to: Annotated[str, typer.Option("--to", help="Output format: gguf (llama.cpp) or onnx (ONNX Runtime).")] = "gguf",
    quant: Annotated[str, typer.Option("--quant", "-q", help="Output type, e.g. f16, q8_0, q4_k_m (see --list-quants).")] = "f16",
    out: Annotated[str | None, typer.Option("--out", "-o", help="Write to this file or folder instead of the store.")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Store name (default: folder name and quant).")] = None,
    chat_format: ChatFormatOption = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickled .bin weights (pickle can run code).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing store entry or output file.")] = False,
    imatrix: Annotated[
        str, typer.Option("--imatrix", help="auto (compute from --calibration for types that gain from it), none, "
                          "or an importance-matrix file.")
    ] = "auto",
    calibration: Annotated[
        str | None, typer.Option("--calibration", help="Calibration text for the importance matrix: a FLORES-200 "
                                 "folder or archive (language-balanced dev sample), or .txt files.")
    ] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Write the fidelity report (tokenization, logits, KL) beside the result.")] = False,
    texts: Annotated[
        str | None, typer.Option("--texts", help="With --verify: FLORES-200 folder or archive, or a text file.")
    ] = None,
    list_quants: Annotated[bool, typer.Option("--list-quants", help="List the output types with their bits per weight.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --list-quants: print JSON.")] = False,
    block_size: Annotated[int, typer.Option("--block-size", help="With --to onnx --quant int4: 32, 64 or 128.")] = 32,
    export_device: Annotated[str, typer.Option("--export-device", help="With --to onnx: cpu or cuda.")] = "cpu",
    output_bits: Annotated[
        int, typer.Option("--output-bits", help="With --to onnx --quant int4: the output layer's bits, 4 (faster) "
                          "or 8 (closer logits).")
    ] = 4,
) -> None:
    """Convert CHECKPOINT to a GGUF or ONNX; the result is imported into the model store unless --out is given."""
    from bayling_local.errors import UsageError

    if list_quants:
        _print_quants(as_json)
        return
    if checkpoint is None:
        raise UsageError("name a checkpoint folder or store name to convert (or pass --list-quants)")
    if to not in FORMAT_ONLY_OPTIONS:
        raise UsageError(f"unknown output format '{to}'; convert writes: {', '.join(FORMAT_ONLY_OPTIONS)}")
    _refuse_options_of_other_formats(ctx, to)
    if to == "onnx":
        _to_onnx(checkpoint, quant, out, name, chat_format, force, block_size, export_device, output_bits)
        return
    from bayling_local.convert import to_gguf

    with _progress() as progress:
        result = to_gguf(checkpoint, quant, out=out, name=name, chat_format=chat_format,
                         allow_pickle=allow_pickle, force=force, imatrix=imatrix, calibration=calibration,
                         verify=verify, verify_texts=texts,
                         progress=progress)
    for warning in result.warnings:
        print(f"bayling-local: warning: {warning}", file=sys.stderr)
    what = f"{result.quant}, {human_size(result.size)}, chat format {result.chat_format}"
    if result.store_name:
        print(f"imported '{result.store_name}' ({what}) into {result.path.parent}")
    else:
        print(f"wrote {result.path} ({what})")
    if result.report:
        print(f"fidelity report: {result.report} (and .md)")


def _refuse_options_of_other_formats(ctx: typer.Context, to: str) -> None:
    """Refuse options that --to `to` would ignore, when the command line (or the environment) gave them;
    a default value is not "given", so `--to onnx` alone never trips over --imatrix's default."""
    from bayling_local.errors import UsageError

    foreign = {name for fmt, names in FORMAT_ONLY_OPTIONS.items() if fmt != to for name in names}
    given = [p.opts[0] for p in ctx.command.params if p.name in foreign and _given(ctx, p.name)]
    if given:
        other = " or ".join(f"--to {fmt}" for fmt in FORMAT_ONLY_OPTIONS if fmt != to)
        raise UsageError(f"{', '.join(given)} only with {other}, not with --to {to}; "
                         f"drop {'it' if len(given) == 1 else 'them'} or change --to")


def _given(ctx: typer.Context, name: str) -> bool:
    # By name: recent typer ships its own copy of click, whose ParameterSource is not click.core's.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _to_onnx(checkpoint: str, quant: str, out: str | None, name: str | None, chat_format: str | None,
             force: bool, block_size: int, export_device: str, output_bits: int = 4) -> None:
    """ONNX goes into the store (default name `<checkpoint>-onnx-<precision>`), or to the folder --out."""
    if out is None:
        from bayling_local.convert.onnx_store import to_onnx_entry

        model = to_onnx_entry(checkpoint, quant, name=name, chat_format=chat_format, force=force,
                              block_size=block_size, export_device=export_device, output_bits=output_bits)
        what = f"ONNX {model.manifest.quant}, {human_size(model.manifest.size)}, chat format {model.manifest.chat_format}"
        print(f"imported '{model.name}' ({what}) into {model.path.parent.parent}")
        return
    from pathlib import Path

    from bayling_local.convert import to_onnx
    from bayling_local.convert.pipeline import resolve_checkpoint
    from bayling_local.errors import UsageError

    target = Path(out).expanduser()
    if target.exists() and not force:
        raise UsageError(f"{target} exists; pass --force to replace it")
    written = to_onnx(resolve_checkpoint(checkpoint), target, quant, block_size, export_device, chat_format,
                      output_bits)
    print(f"wrote {written} (ONNX); run it with `bayling-local chat --model {written}`")


def _print_quants(as_json: bool) -> None:
    from bayling_local.convert.quantize import quant_table

    rows = quant_table()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print_table(
        ("type", "bits/weight", "weights", "imatrix", "description"),
        [(r["name"], f"{r['bits_per_weight']:.4g}", r["weight_type"], r["imatrix"], r["description"]) for r in rows],
    )


@contextlib.contextmanager
def _progress():
    """A rich progress bar per stage on a terminal; silent in a pipe."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update
