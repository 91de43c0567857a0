"""ONNX conversion straight into the model store: `convert --to onnx` in the CLI and the TUI.

The store only stages and commits the entry (`bayling_local.store.add_onnx_export`); the export itself
lives here, so the runtime never imports the converter.
"""

from __future__ import annotations

from pathlib import Path

from bayling_local.store import StoredModel, add_onnx_export, name_from_path


def onnx_conversion_name(checkpoint: str | Path, precision: str) -> str:
    """The default store name of an ONNX conversion: `<checkpoint folder name>-onnx-<precision>`."""
    return name_from_path(Path(f"{Path(checkpoint).expanduser().resolve().name}-onnx-{precision}"))


def to_onnx_entry(
    checkpoint: str | Path,
    precision: str = "fp16",
    *,
    name: str | None = None,
    chat_format: str | None = None,
    force: bool = False,
    block_size: int = 32,
    export_device: str = "cpu",
    output_bits: int = 4,
) -> StoredModel:
    """Export a Llama checkpoint (folder or `hf` store name) to ONNX at `precision` as a new store entry
    (default name: `onnx_conversion_name`), written once inside the entry's staging folder."""
    from bayling_local.convert.onnx import QUANT_ALIASES, to_onnx
    from bayling_local.convert.pipeline import resolve_checkpoint

    folder = resolve_checkpoint(checkpoint)
    precision = QUANT_ALIASES.get(precision, precision)
    return add_onnx_export(
        name or onnx_conversion_name(checkpoint, precision),
        lambda out: to_onnx(folder, out, precision, block_size, export_device, chat_format, output_bits),
        source=str(folder.resolve()),
        chat_format=chat_format,
        force=force,
    )
