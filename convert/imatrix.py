"""A multilingual importance matrix: which input columns of each weight matrix matter, measured on
calibration text in many languages, for llama.cpp's quantizer.

llama.cpp's `imatrix` tool is usually run on English text, and low-resource languages pay for it; here
the calibration set is a language-balanced sample (FLORES-200 `dev`, all 204 languages, or any text
files). The statistic is llama.cpp's: for every matrix multiplication, the sum over tokens of each input
column's squared activation, divided by the token count. It is computed with transformers forward
hooks on the reference checkpoint, saved in llama.cpp's GGUF imatrix format (`<name>.in_sum2`,
`<name>.counts`; `llama-quantize --imatrix` reads it too) every few chunks, and resumed from there
after an interruption.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bayling_local.errors import UsageError

CHUNK_TOKENS = 512
"""Tokens per calibration chunk (llama.cpp's imatrix default context)."""
SAVE_EVERY = 8
"""Chunks between saves of the running sums (what a resumed run starts from)."""
CALIBRATION_PER_LANGUAGE = 4

Progress = Callable[[int, int], None]


@dataclass
class ImportanceMatrix:
    """Running sums of squared activations per input column, by GGUF weight name."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    """Calibration chunks already processed."""
    fingerprint: str = ""
    """sha256 of the calibration chunks and the model: a saved matrix resumes only the same run."""
    datasets: list[str] = field(default_factory=list)
    chunk_size: int = CHUNK_TOKENS
    """Tokens per calibration chunk (the last chunk of each language may be shorter): llama-imatrix writes
    its context length, n_ctx / n_parallel, as `imatrix.chunk_size`, and so do we."""

    def values(self) -> dict[str, np.ndarray]:
        """Mean squared activation per input column: what the quantizer weighs its rounding errors by."""
        return {name: (self.sums[name] / max(1, self.counts[name])).astype(np.float32) for name in sorted(self.sums)}

    def add(self, name: str, squares: np.ndarray, tokens: int) -> None:
        if name in self.sums:
            self.sums[name] += squares
        else:
            self.sums[name] = squares.astype(np.float64)
        self.counts[name] = self.counts.get(name, 0) + tokens


# --- calibration text ---------------------------------------------------------------------------------


def calibration_texts(
    source: str | Path, *, languages: list[str] | None = None, per_language: int = CALIBRATION_PER_LANGUAGE,
    seed: int = 0,
) -> dict[str, list[str]]:
    """A language-balanced sample: `per_language` FLORES-200 `dev` sentences of every language (different
    sentences in each language, so the sample covers more content), or the lines of text files."""
    path = Path(source).expanduser()
    if not path.exists():
        raise UsageError(f"calibration text not found: {path}")
    if path.is_file() and path.suffix == ".txt":
        return _text_files([path])
    from bayling_local.evaldata import EvalDataError, flores_languages, flores_parallel

    try:
        available = flores_languages(path)
    except EvalDataError:
        available = []
    if not available:
        if path.is_dir() and any(path.glob("*.txt")):
            return _text_files(sorted(path.glob("*.txt")))
        raise UsageError(f"{path} is neither FLORES-200 data (folder or archive) nor a .txt file or folder of them")
    sentences = flores_parallel(path, languages or available, "dev")
    rng = random.Random(seed)
    return {code: [lines[i] for i in sorted(rng.sample(range(len(lines)), min(per_language, len(lines))))]
            for code, lines in sentences.items()}


def _text_files(files: list[Path]) -> dict[str, list[str]]:
    return {f.stem: [line for line in f.read_text("utf-8").splitlines() if line.strip()] for f in files}


def calibration_chunks(tokenizer, texts: dict[str, list[str]], chunk_tokens: int = CHUNK_TOKENS) -> list[list[int]]:
    """Each language's sentences joined into running text and cut into chunks (BOS first when the model uses it)."""
    bos = tokenizer.encode("a", add_special_tokens=True)[:-len(tokenizer.encode("a", add_special_tokens=False))]
    chunks = []
    for lines in texts.values():
        ids = tokenizer.encode("\n".join(lines), add_special_tokens=False)
        step = chunk_tokens - len(bos)
        chunks += [bos + ids[start : start + step] for start in range(0, len(ids), step)]
    return chunks


def _fingerprint(model_id: str, chunks: list[list[int]]) -> str:
    digest = hashlib.sha256(model_id.encode("utf-8"))
    for chunk in chunks:
        digest.update(np.asarray(chunk, dtype=np.int64).tobytes())
    return digest.hexdigest()


# --- computing ----------------------------------------------------------------------------------------


def compute_imatrix(
    checkpoint: str | Path,
    texts: dict[str, list[str]],
    save_to: str | Path,
    *,
    chunk_tokens: int = CHUNK_TOKENS,
    save_every: int = SAVE_EVERY,
    threads: int | None = None,
    progress: Progress | None = None,
) -> ImportanceMatrix:
    """The importance matrix of `checkpoint` on `texts`, saved to `save_to` as it grows.

    If `save_to` holds an unfinished matrix of the same model and calibration chunks, computing resumes
    after its last saved chunk; a finished one is returned as it is.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bayling_local.convert.checkpoint import read_config
    from bayling_local.convert.llama_layout import LlamaHyperParameters

    folder, save_to = Path(checkpoint), Path(save_to)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    chunks = calibration_chunks(tokenizer, texts, chunk_tokens)
    if not chunks:
        raise UsageError("the calibration text is empty")
    fingerprint = _fingerprint(str(folder.resolve()), chunks)
    matrix = _resumable(save_to, fingerprint) or ImportanceMatrix(
        fingerprint=fingerprint, datasets=sorted(texts), chunk_size=chunk_tokens
    )
    if matrix.chunks >= len(chunks):
        return matrix
    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=_compute_dtype(folder)).eval()
    tied = LlamaHyperParameters.from_config(read_config(folder)).tied_embeddings
    hooks = _attach_hooks(model, matrix, tied)
    try:
        with torch.inference_mode():
            for index in range(matrix.chunks, len(chunks)):
                model(torch.tensor([chunks[index]]), use_cache=False)
                matrix.chunks = index + 1
                if matrix.chunks % save_every == 0 or matrix.chunks == len(chunks):
                    save_imatrix(matrix, save_to)
                if progress:
                    progress(matrix.chunks, len(chunks))
    finally:
        for hook in hooks:
            hook.remove()
    return matrix


def _compute_dtype(folder: Path):
    """float32, unless the checkpoint is stored in 16 bits and big: then its own dtype (half the memory)."""
    import torch

    from bayling_local.convert.checkpoint import open_checkpoint

    model = open_checkpoint(folder)
    if model.parameter_count() > 2_000_000_000 and model.source_dtype == "BF16":
        return torch.bfloat16
    return torch.float32


def _attach_hooks(model, matrix: ImportanceMatrix, tied: bool) -> list:
    """A forward pre-hook on every Linear that llama.cpp quantizes, keyed by its GGUF tensor name."""
    names = _gguf_names(model, tied)

    def hook_for(name: str):
        def record(module, inputs):
            activations = inputs[0].detach().float()
            flat = activations.reshape(-1, activations.shape[-1])
            matrix.add(name, (flat * flat).sum(dim=0).double().numpy(), flat.shape[0])

        return record

    return [module.register_forward_pre_hook(hook_for(names[path])) for path, module in model.named_modules()
            if path in names]


def _gguf_names(model, tied: bool) -> dict[str, str]:
    """Module path (`model.layers.0.mlp.down_proj`) -> GGUF tensor name (`blk.0.ffn_down.weight`)."""
    import re

    from bayling_local.convert.llama_layout import TENSOR_RULES

    names = {}
    for path, module in model.named_modules():
        if not hasattr(module, "weight") or module.weight.dim() != 2 or path.endswith("embed_tokens"):
            continue
        for rule in TENSOR_RULES:
            pattern = "^" + re.escape(rule.hf.removesuffix(".weight")).replace(r"\{i\}", r"(\d+)") + "$"
            found = re.match(pattern, path)
            if found:
                gguf_name = rule.gguf.format(i=found.group(1) if found.groups() else None)
                # A tied output matrix is token_embd in the GGUF; llama.cpp records it under that name.
                names[path] = "token_embd.weight" if gguf_name == "output.weight" and tied else gguf_name
    return names


# --- llama.cpp's GGUF imatrix format ---------------------------------------------------------------


def save_imatrix(matrix: ImportanceMatrix, path: str | Path) -> Path:
    """Write `matrix` in llama.cpp's GGUF imatrix format, atomically."""
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    writer = gguf.GGUFWriter(temporary, arch="imatrix")
    try:
        writer.add_type("imatrix")
        writer.add_uint32("imatrix.chunk_count", matrix.chunks)
        writer.add_uint32("imatrix.chunk_size", matrix.chunk_size)
        writer.add_array("imatrix.datasets", matrix.datasets or ["calibration"])
        writer.add_string("bayling.imatrix.fingerprint", matrix.fingerprint)
        for name in sorted(matrix.sums):
            writer.add_tensor(f"{name}.in_sum2", matrix.sums[name].astype(np.float32).reshape(1, -1))
            writer.add_tensor(f"{name}.counts", np.array([[matrix.counts[name]]], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


def load_imatrix(path: str | Path) -> ImportanceMatrix:
    """Read a GGUF imatrix (ours or llama-imatrix's)."""
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} is not a GGUF importance matrix ({error}); make one with --calibration") from error
    fields = reader.fields
    matrix = ImportanceMatrix(
        chunks=int(fields["imatrix.chunk_count"].contents()) if "imatrix.chunk_count" in fields else 0,
        fingerprint=fields["bayling.imatrix.fingerprint"].contents() if "bayling.imatrix.fingerprint" in fields else "",
        datasets=list(fields["imatrix.datasets"].contents()) if "imatrix.datasets" in fields else [],
        chunk_size=int(fields["imatrix.chunk_size"].contents()) if "imatrix.chunk_size" in fields else CHUNK_TOKENS,
    )
    tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}
    for name, values in tensors.items():
        if name.endswith(".in_sum2"):
            base = name.removesuffix(".in_sum2")
            matrix.sums[base] = values.reshape(-1)
            matrix.counts[base] = int(tensors[f"{base}.counts"].reshape(-1)[0])
    if not matrix.sums:
        raise UsageError(f"{path} holds no importance data (no *.in_sum2 tensors)")
    return matrix


def _resumable(path: Path, fingerprint: str) -> ImportanceMatrix | None:
    if not path.is_file():
        return None
    saved = load_imatrix(path)
    return saved if saved.fingerprint == fingerprint else None
