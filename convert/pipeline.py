"""`to_gguf`: a checkpoint folder (or store name) to a GGUF of any type, into the store or a file.

The steps: check the checkpoint, decide the chat format and the output, check free disk space, write
the GGUF (f32/f16/bf16/q8_0 directly; other types from an intermediate through llama.cpp's quantizer),
then import it into the store with a manifest, or leave it at `--out`. Every file appears under its
final name only when it is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bayling_local import __version__
from bayling_local.convert.checkpoint import Checkpoint, open_checkpoint
from bayling_local.convert.gguf import WRITTEN_TYPES, GGUFPlan, Provenance, plan_gguf, write_gguf
from bayling_local.convert.vocab import GGUFVocab, build_vocab
from bayling_local.errors import StoreError, UsageError
from bayling_local.store import file_sha256

Progress = Callable[[str, int, int], None]
"""(stage, done, total): stage is `hash`, `write` or `quantize`."""

METADATA_ALLOWANCE = 64 << 20
"""Bytes reserved beyond the tensors for the header (a 128k-token vocabulary and its tokenizer.json)."""


@dataclass
class ConvertResult:
    """What `to_gguf` made."""

    path: Path
    quant: str
    size: int
    sha256: str
    chat_format: str
    store_name: str | None = None
    warnings: list[str] = field(default_factory=list)
    report: Path | None = None
    """The fidelity report (JSON), when verification ran."""


def to_gguf(
    checkpoint: str | Path,
    quant: str = "f16",
    *,
    out: str | Path | None = None,
    name: str | None = None,
    chat_format: str | None = None,
    allow_pickle: bool = False,
    force: bool = False,
    imatrix: str | Path | None = "auto",
    calibration: str | Path | None = None,
    verify: bool = False,
    verify_texts: str | Path | None = None,
    progress: Progress | None = None,
) -> ConvertResult:
    """Convert a Hugging Face LlamaForCausalLM checkpoint to GGUF of type `quant`.

    `checkpoint` is a folder or a store name (an `hf` entry). Without `out` the result is imported into
    the store as `name` (default: the folder's name and the quant); with `out` it is written there (a
    file path, or a folder to put `<name>.gguf` in).

    `imatrix` is `auto` (compute an importance matrix from `calibration` -- a FLORES-200 folder or
    archive, or text files -- when the type benefits from one; kept beside the result), `none`, or a
    saved matrix file. With `verify`, the fidelity report (`convert/verify.py`) is written beside the
    result, on `verify_texts` (a FLORES-200 folder or archive, a text file, or None for a small built-in
    sample); a quantized result is compared with the full-precision GGUF it was made from.
    """
    from bayling_local.convert.quantize import quant_type

    target = quant_type(quant)
    importance = ImatrixRequest.decide(target, imatrix, calibration)
    folder = resolve_checkpoint(checkpoint)
    model = open_checkpoint(folder, allow_pickle=allow_pickle)
    name = _artifact_name(name, folder, target.name)
    destination = _Destination.for_output(out, name, force)
    written = target.name if target.name in WRITTEN_TYPES else intermediate_type(model)
    plan = plan_gguf(model, written)
    check_free_space(destination.folder, expected_bytes(plan, target))
    format_id = resolve_chat_format(chat_format, name, folder, model)
    vocab = build_vocab(folder, plan.hp.vocab_size, model.config, end_of_turn_token(format_id))
    with destination as staging:
        artifact = staging / destination.artifact_name
        provenance = _provenance(model, progress)
        with _make_artifact(model, plan, vocab, target, artifact, name, provenance, format_id, importance,
                            progress) as baseline:
            result = ConvertResult(artifact, target.name, artifact.stat().st_size, file_sha256(artifact), format_id,
                                   warnings=list(vocab.warnings))
            if verify:
                result.report = _verify(artifact, folder, baseline, verify_texts, destination.final_path, progress)
        if destination.in_store:
            _write_manifest(staging, result, name, folder, plan)
    if result.report is not None:
        result.report = destination.folder / result.report.name
    result.path = destination.final_path
    result.store_name = name if destination.in_store else None
    return result


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A checkpoint folder, given as a path or as the name of an `hf` entry in the store."""
    path = Path(checkpoint).expanduser()
    if path.exists():
        return path
    from bayling_local.store import get_model

    stored = get_model(str(checkpoint))
    if stored.manifest.format != "hf":
        raise UsageError(f"'{checkpoint}' is a {stored.manifest.format} model; convert takes a Hugging Face checkpoint")
    return stored.path


def intermediate_type(model: Checkpoint) -> str:
    """The lossless type to write before llama.cpp quantizes: the checkpoint's own float type."""
    return {"BF16": "bf16", "F16": "f16"}.get(model.source_dtype, "f32")


def _artifact_name(name: str | None, folder: Path, quant: str) -> str:
    from bayling_local.store import validate_name

    if name:
        return validate_name(name)
    stem = re.sub(r"[^a-z0-9._-]+", "-", folder.resolve().name.lower()).strip("-.") or "model"
    return validate_name(f"{stem}-{quant}")


# --- chat format ----------------------------------------------------------------------------------


def resolve_chat_format(explicit: str | None, name: str, folder: Path, model: Checkpoint) -> str:
    """The chat format id: as given, else the catalog's for this model, else detected from the template."""
    from bayling_local.catalog import CATALOG, catalog_entry
    from bayling_local.prompts import CHAT_FORMAT_IDS, detect_chat_format, folder_chat_template

    if explicit:
        if explicit not in CHAT_FORMAT_IDS:
            raise UsageError(f"unknown chat format '{explicit}'; choose one of: {', '.join(CHAT_FORMAT_IDS)}")
        return explicit
    entry = catalog_entry(name) or next(
        (e for e in CATALOG.values() if e.hub_id and e.hub_id.split("/")[-1].lower() == folder.resolve().name.lower()),
        None,
    )
    if entry:
        return entry.chat_format
    return detect_chat_format(folder_chat_template(folder))


def end_of_turn_token(format_id: str) -> str | None:
    """The special token that ends an assistant turn in a built-in chat format (e.g. `<|eot_id|>`)."""
    from bayling_local.prompts import BUILTIN_FORMATS

    chat_format = BUILTIN_FORMATS.get(format_id)
    return chat_format.stop_tokens[0] if chat_format and chat_format.stop_tokens else None


# --- sizes and disk -------------------------------------------------------------------------------


def expected_bytes(plan: GGUFPlan, target) -> int:
    """Disk the conversion needs at its peak: the written file, plus the quantized one when quantizing."""
    written = plan.tensor_bytes() + METADATA_ALLOWANCE
    if target.name in WRITTEN_TYPES:
        return written
    parameters = sum(t.rows * t.row_width for t in plan.tensors)
    return written + int(parameters * target.bits_per_weight / 8) + METADATA_ALLOWANCE


def check_free_space(folder: Path, needed: int) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise StoreError(
            f"not enough disk space in {probe}: the conversion needs about {needed / 1e9:.2f} GB and "
            f"{free / 1e9:.2f} GB are free; free some space or choose another place with --out"
        )


# --- writing ----------------------------------------------------------------------------------------


def _provenance(model: Checkpoint, progress: Progress | None) -> Provenance:
    if progress:
        progress("hash", 0, 1)
    return checkpoint_provenance(model, background=True)


def checkpoint_provenance(model: Checkpoint, *, background: bool = False) -> Provenance:
    """Where an artifact comes from (the source checkpoint and its hash, this tool, when); GGUF metadata
    and ONNX export configs record the same. With `background` the hash is computed while the caller goes
    on (the GGUF writer fills it in after the tensors)."""
    digest = model.provenance_sha256_in_background() if background else model.provenance_sha256()
    return Provenance(
        source=str(model.path.resolve()),
        digest=digest,
        tool=f"bayling-local {__version__}",
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


@contextlib.contextmanager
def _make_artifact(model: Checkpoint, plan: GGUFPlan, vocab: GGUFVocab, target, artifact: Path, name: str,
                   provenance: Provenance, format_id: str, importance: ImatrixRequest,
                   progress: Progress | None) -> Iterator[Path | None]:
    """Write the artifact; yields the full-precision intermediate it was quantized from (removed after)."""
    from bayling_local.convert.quantize import quantize_gguf

    def on_write(done: int, total: int) -> None:
        if progress:
            progress("write", done, total)

    if target.name in WRITTEN_TYPES:
        write_gguf(model, plan, vocab, artifact, name=name, provenance=provenance, chat_format=format_id,
                   progress=on_write)
        yield None
        return
    intermediate = artifact.with_name(f".{artifact.stem}.{plan.output.name}.gguf")
    try:
        write_gguf(model, plan, vocab, intermediate, name=name, provenance=provenance, chat_format=format_id,
                   progress=on_write)
        values = importance.values(model, provenance, artifact, progress)
        if progress:
            progress("quantize", 0, 1)
        quantize_gguf(intermediate, artifact, target.name, imatrix=values)
        if progress:
            progress("quantize", 1, 1)
        yield intermediate
    finally:
        intermediate.unlink(missing_ok=True)


@dataclass(frozen=True)
class ImatrixRequest:
    """Where the importance matrix for one conversion comes from: nowhere, a file, or calibration text."""

    mode: str
    """`none`, `file` or `compute`."""
    path: Path | None = None
    calibration: Path | None = None

    @classmethod
    def decide(cls, target, imatrix: str | Path | None, calibration: str | Path | None) -> ImatrixRequest:
        """Check the combination before any work; a type that needs a matrix and gets none is refused."""
        choice = "none" if imatrix is None else str(imatrix)
        if choice not in ("auto", "none"):
            path = Path(choice).expanduser()
            if not path.is_file():
                raise UsageError(f"importance matrix {path} not found")
            return cls("file", path=path)
        if choice == "auto" and calibration is not None and target.benefits_from_imatrix:
            return cls("compute", calibration=Path(calibration).expanduser())
        if target.requires_imatrix:
            raise UsageError(
                f"{target.name} needs an importance matrix: pass --calibration PATH (a FLORES-200 folder or "
                "archive, or text files) with --imatrix auto, or --imatrix FILE"
            )
        return cls("none")

    def values(self, model: Checkpoint, provenance: Provenance, artifact: Path, progress: Progress | None):
        """The per-tensor importance for the quantizer (computing and saving it beside the artifact), or None."""
        from bayling_local.convert.imatrix import calibration_texts, compute_imatrix, load_imatrix, save_imatrix

        if self.mode == "none":
            return None
        if self.mode == "file":
            return load_imatrix(self.path).values()
        # Computed under $BAYLING_HOME, keyed by checkpoint and calibration, so an interrupted run resumes.
        from bayling_local.store import bayling_home

        key = hashlib.sha256(f"{provenance.sha256}:{self.calibration.resolve()}".encode()).hexdigest()[:16]
        working = bayling_home() / "imatrix" / f"{key}.imatrix.gguf"
        on_chunk = (lambda done, total: progress("imatrix", done, total)) if progress else None
        matrix = compute_imatrix(model.path, calibration_texts(self.calibration), working, progress=on_chunk)
        save_imatrix(matrix, artifact.with_name(f"{artifact.stem}.imatrix.gguf"))
        return matrix.values()


def _verify(artifact: Path, checkpoint: Path, baseline: Path | None, texts, final_path: Path,
            progress: Progress | None) -> Path:
    """Run the fidelity report on the fresh artifact; saved beside it under the artifact's final name."""
    from bayling_local.convert.verify import verify

    if progress:
        progress("verify", 0, 1)
    report = verify(artifact, checkpoint, baseline=baseline, texts=texts, save=False)
    report.artifact = str(final_path)
    if baseline is not None and report.baseline == str(baseline):  # a temporary file, gone after conversion
        report.baseline = f"the full-precision GGUF it was quantized from ({baseline.name.split('.')[-2]})"
    json_path, _ = report.save(folder=artifact.parent)
    if progress:
        progress("verify", 1, 1)
    return json_path


class _Destination:
    """Where the artifact goes: a store entry (staged in a hidden folder) or a file path."""

    def __init__(self, folder: Path, artifact_name: str, in_store: bool, replace: bool):
        self.folder, self.artifact_name, self.in_store, self.replace = folder, artifact_name, in_store, replace
        self._staging: Path | None = None

    @classmethod
    def for_output(cls, out: str | Path | None, name: str, force: bool) -> _Destination:
        if out is None:
            from bayling_local.store import models_dir

            entry = models_dir() / name
            if entry.exists() and not force:
                raise StoreError(f"a model named '{name}' is already in the store; pass --force or choose --name")
            return cls(entry, f"{name}.gguf", True, force)
        path = Path(out).expanduser()
        if path.is_dir():
            path = path / f"{name}.gguf"
        if path.exists() and not force:
            raise UsageError(f"{path} exists; pass --force to replace it")
        return cls(path.parent, path.name, False, force)

    @property
    def final_path(self) -> Path:
        return self.folder / self.artifact_name

    def __enter__(self) -> Path:
        parent = self.folder.parent if self.in_store else self.folder
        parent.mkdir(parents=True, exist_ok=True)
        if not self.in_store:
            return self.folder  # the writer itself writes a temporary file and renames it
        self._staging = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", dir=parent))
        return self._staging

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._staging is None:
            return
        if exc_type is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            return
        if self.folder.exists() and self.replace:
            shutil.rmtree(self.folder)
        os.replace(self._staging, self.folder)


def _write_manifest(staging: Path, result: ConvertResult, name: str, folder: Path, plan: GGUFPlan) -> None:
    from bayling_local.catalog import catalog_entry
    from bayling_local.convert.quantize import quant_type
    from bayling_local.gguf_header import FILE_TYPES
    from bayling_local.store import MANIFEST_NAME, Manifest, write_json_atomic

    entry = catalog_entry(name)
    manifest = Manifest(
        name=name,
        format="gguf",
        artifact=result.path.name,
        size=result.size,
        sha256=result.sha256,
        source=str(folder.resolve()),
        chat_format=result.chat_format,
        architecture="llama",
        quant=FILE_TYPES.get(quant_type(result.quant).file_type, result.quant.upper()),
        context_length=plan.hp.context_length,
        languages=entry.languages if entry else "",
    )
    write_json_atomic(staging / MANIFEST_NAME, asdict(manifest))


