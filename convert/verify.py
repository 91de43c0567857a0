"""The fidelity report of a converted artifact (a GGUF file or an ONNX export) against its Hugging Face
checkpoint.

Three questions, answered per language on a text set in many scripts (FLORES-200 `dev`: all 204
languages when given): does our backend tokenize exactly like the reference tokenizer (it must), and, for
a GGUF, how often does llama.cpp's own tokenizer differ (what users of other runtimes lose); do a
full-precision artifact's logits (GGUF f32/f16/bf16, ONNX fp32/fp16) match transformers' (max abs diff,
top-1 agreement); and for each quantized artifact, GGUF and ONNX alike, its size, bits per weight, and KL
divergence and top-1 agreement against a full-precision baseline. Written as JSON and Markdown beside the
artifact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bayling_local import __version__
from bayling_local.errors import UsageError

FULL_PRECISION = ("F32", "F16", "BF16", "fp32", "fp16")
"""GGUF file types and ONNX precisions whose logits are compared with transformers directly."""
MAX_TOKENS = 256
"""Longest scored text, in tokens (a FLORES sentence is 20-80)."""

# Used when no FLORES-200 data is given: short sentences in several scripts, written for this report.
SAMPLE_TEXTS: dict[str, list[str]] = {
    "eng_Latn": ["The library opens at nine and closes when the last reader leaves."],
    "fra_Latn": ["La bibliothèque ouvre à neuf heures et ferme quand le dernier lecteur part."],
    "deu_Latn": ["Die Bibliothek öffnet um neun und schließt, wenn der letzte Leser geht."],
    "rus_Cyrl": ["Библиотека открывается в девять и закрывается, когда уходит последний читатель."],
    "zho_Hans": ["图书馆九点开门，最后一位读者离开时关门。"],
    "jpn_Jpan": ["図書館は九時に開き、最後の読者が帰ると閉まります。"],
    "arb_Arab": ["تفتح المكتبة في التاسعة وتغلق عندما يغادر آخر قارئ."],
    "hin_Deva": ["पुस्तकालय नौ बजे खुलता है और आख़िरी पाठक के जाने पर बंद होता है।"],
    "swh_Latn": ["Maktaba hufunguliwa saa tatu na hufungwa msomaji wa mwisho anapoondoka."],
    "mya_Mymr": ["စာကြည့်တိုက်သည် ကိုးနာရီတွင် ဖွင့်သည်။"],
}


@dataclass
class TokenizationParity:
    """Sentences tokenized differently from the reference, per language, on each path."""

    sentences: int
    languages: int
    ours: dict[str, int]
    """Our backend (the tokenizer carried in the GGUF); must be empty."""
    llama_cpp: dict[str, int] | None
    """llama.cpp's own tokenizer (other runtimes); None for an ONNX artifact."""
    path_in_use: str
    """What our backend used for this artifact: `reference` or `llama.cpp`."""


@dataclass
class LogitParity:
    """A full-precision artifact's logits against transformers' on the same ids (f32 KV cache for GGUF)."""

    artifact: str
    texts: int
    positions: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    kv_cache: str = "f32"
    runtime: str = "llama.cpp"


@dataclass
class QuantQuality:
    """One quantized artifact against the baseline."""

    path: str
    quant: str
    size: int
    bits_per_weight: float
    """For ONNX: file bytes x 8 / the checkpoint's parameters (a tied embedding table is stored once)."""
    kl_divergence: float
    """Mean over every scored position, in nats."""
    top1_agreement: float
    per_language: dict[str, dict[str, float]] = field(default_factory=dict)
    """language -> {kl_divergence, top1_agreement, positions}."""
    runtime: str = "llama.cpp"


@dataclass
class FidelityReport:
    artifact: str
    reference: str
    baseline: str
    """What KL divergence is measured against."""
    texts: str
    created: str
    tool: str
    tokenization: TokenizationParity | None = None
    logits: LogitParity | None = None
    quants: list[QuantQuality] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def save(self, folder: Path | None = None) -> tuple[Path, Path]:
        """Write `report_path(artifact)` and its `.md` (or the same names into `folder`)."""
        from bayling_local.store import write_json_atomic

        json_path = report_path(Path(self.artifact))
        if folder is not None:
            json_path = folder / json_path.name
        markdown_path = json_path.with_suffix(".md")
        write_json_atomic(json_path, asdict(self))
        temporary = markdown_path.with_suffix(".md.tmp")
        temporary.write_text(render_markdown(self), "utf-8")
        temporary.replace(markdown_path)
        return json_path, markdown_path


def report_path(artifact: Path) -> Path:
    """`<name>.fidelity.json` beside a GGUF, or inside an ONNX export folder (the `.md` goes with it)."""
    if artifact.is_dir() or artifact.suffix == ".onnx":
        folder = artifact if artifact.is_dir() else artifact.parent
        return folder / f"{display_name(artifact)}.fidelity.json"
    return artifact.with_name(f"{artifact.stem}.fidelity.json")


def display_name(artifact: Path) -> str:
    """A GGUF's file name; an ONNX export's folder name, or its store entry's name when it is one."""
    if not (artifact.is_dir() or artifact.suffix == ".onnx"):
        return artifact.name
    from bayling_local.store import MANIFEST_NAME

    folder = artifact if artifact.is_dir() else artifact.parent
    return folder.parent.name if (folder.parent / MANIFEST_NAME).is_file() else folder.name


# --- the text set -----------------------------------------------------------------------------------


def load_texts(source: str | Path | None, languages: Sequence[str] | None, per_language: int) -> dict[str, list[str]]:
    """Sentences per language: a FLORES-200 folder/archive (`dev`), a text file (one per line), or the sample."""
    if source is None:
        return {code: lines[:per_language] for code, lines in SAMPLE_TEXTS.items()
                if not languages or code in languages}
    path = Path(source).expanduser()
    if path.is_file() and path.suffix in (".txt", ".text"):
        lines = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
        return {path.stem: lines[:per_language]}
    from bayling_local.evaldata import flores_languages, flores_parallel

    codes = list(languages) if languages else flores_languages(path)
    return flores_parallel(path, codes, "dev", limit=per_language)


# --- the checks ---------------------------------------------------------------------------------------


def tokenization_parity(backend, tokenizer, texts: dict[str, list[str]]) -> TokenizationParity:
    """`backend` is a llama.cpp or ONNX Runtime backend; only a GGUF has llama.cpp's own tokenizer to count."""
    with_llama_cpp = hasattr(backend, "tokenize_with_llama_cpp")
    ours, theirs = {}, {}
    for code, lines in texts.items():
        expected = [tokenizer.encode(line, add_special_tokens=False) for line in lines]
        ours[code] = sum(backend.tokenize(line) != ids for line, ids in zip(lines, expected))
        if with_llama_cpp:
            theirs[code] = sum(backend.tokenize_with_llama_cpp(line) != ids for line, ids in zip(lines, expected))
    return TokenizationParity(
        sentences=sum(len(lines) for lines in texts.values()),
        languages=len(texts),
        ours={code: n for code, n in ours.items() if n},
        llama_cpp={code: n for code, n in theirs.items() if n} if with_llama_cpp else None,
        path_in_use=getattr(backend, "tokenizer_source", "reference"),
    )


def logit_parity(path: Path, logits, model, id_lists: list[list[int]]) -> LogitParity:
    """`logits(ids)` is the artifact's (see `convert.logits.artifact_logits`)."""
    from bayling_local.convert.logits import checkpoint_logits

    diffs, agree, positions, worst = 0.0, 0, 0, 0.0
    for ids in id_lists:
        ours, theirs = logits(ids), checkpoint_logits(model, ids)
        delta = np.abs(ours - theirs)
        worst = max(worst, float(delta.max()))
        diffs += float(delta.mean(axis=-1).sum())
        agree += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
        positions += len(ids)
    onnx = _runtime(path) == "onnxruntime"
    return LogitParity(str(path), len(id_lists), positions, worst, diffs / max(1, positions),
                       agree / max(1, positions), kv_cache=_precision(path) if onnx else "f32", runtime=_runtime(path))


def quant_quality(baseline_logits, candidates: dict[str, object], ids_by_language: dict[str, list[list[int]]]) -> dict[str, dict]:
    """KL and top-1 agreement of each candidate's `logits(ids)` against `baseline_logits(ids)`, per language."""
    from bayling_local.convert.logits import kl_divergence, log_softmax

    totals = {name: {} for name in candidates}
    for code, id_lists in ids_by_language.items():
        for ids in id_lists:
            base = baseline_logits(ids)
            base_log_probs = log_softmax(base)
            for name, candidate_logits in candidates.items():
                logits = candidate_logits(ids)
                kl = kl_divergence(base_log_probs, logits)
                entry = totals[name].setdefault(code, [0.0, 0, 0])
                entry[0] += float(kl.sum())
                entry[1] += int((logits.argmax(-1) == base.argmax(-1)).sum())
                entry[2] += len(ids)
    return totals


def _summarize(path: Path, sums: dict[str, list], parameters: int) -> QuantQuality:
    kl_sum = sum(v[0] for v in sums.values())
    agree = sum(v[1] for v in sums.values())
    positions = sum(v[2] for v in sums.values()) or 1
    return QuantQuality(
        path=str(path),
        quant=_precision(path),
        size=_size(path),
        bits_per_weight=round(_bits_per_weight(path, parameters), 4),
        kl_divergence=kl_sum / positions,
        top1_agreement=agree / positions,
        per_language={
            code: {"kl_divergence": v[0] / v[2], "top1_agreement": v[1] / v[2], "positions": v[2]}
            for code, v in sums.items()
        },
        runtime=_runtime(path),
    )


def _runtime(path: Path) -> str:
    from bayling_local.model import artifact_format

    return "onnxruntime" if artifact_format(path) == "onnx" else "llama.cpp"


def _onnx_folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _precision(path: Path) -> str:
    """The GGUF's file type (Q4_K_M, F16, ...) or the ONNX export's precision (int4, fp32, ...)."""
    if _runtime(path) == "onnxruntime":
        from bayling_local.backends.onnxrt import read_export_config

        return str(read_export_config(_onnx_folder(path)).get("precision", "unknown"))
    from bayling_local.gguf_header import read_gguf_header

    return read_gguf_header(path).quant


def _size(path: Path) -> int:
    if _runtime(path) == "onnxruntime":
        return sum(f.stat().st_size for f in _onnx_folder(path).glob("*.onnx*"))
    return path.stat().st_size


def _bits_per_weight(path: Path, parameters: int) -> float:
    if _runtime(path) == "onnxruntime":
        return _size(path) * 8 / max(1, parameters)
    from bayling_local.convert.quantize import read_gguf_bits_per_weight

    return read_gguf_bits_per_weight(path)


# --- the report ---------------------------------------------------------------------------------------


def verify(
    artifact: str | Path,
    reference: str | Path,
    *,
    compare: Sequence[str | Path] = (),
    baseline: str | Path | None = None,
    texts: str | Path | None = None,
    languages: Sequence[str] | None = None,
    tokenization_sentences: int = 20,
    scored_sentences: int = 2,
    logit_texts: int = 8,
    threads: int | None = None,
    save: bool = True,
) -> FidelityReport:
    """Check `artifact` (a GGUF file or ONNX export folder) against `reference` (its checkpoint folder) and
    write the report.

    `compare` adds more artifacts of the same model (other quants, GGUF or ONNX) to the quality table. KL
    divergence is measured against `baseline` (a full-precision GGUF or ONNX export), else the artifact
    when it is full precision, else transformers running the reference checkpoint. `texts` is a FLORES-200 folder or archive (all
    its languages unless `languages` narrows them), a text file, or None for a small built-in sample.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bayling_local.convert.logits import artifact_logits

    artifact, reference = Path(artifact), Path(reference)
    if not (reference / "config.json").is_file():
        raise UsageError(f"{reference} is not a Hugging Face checkpoint folder (no config.json); pass the source checkpoint")
    tokenizer = AutoTokenizer.from_pretrained(reference)
    tokenization_texts = load_texts(texts, languages, tokenization_sentences)
    backend = _load_backend(artifact, threads)
    try:
        tokenization = tokenization_parity(backend, tokenizer, tokenization_texts)
    finally:
        backend.close()

    scored = {code: lines[:scored_sentences] for code, lines in tokenization_texts.items()}
    ids_by_language = {code: [_ids(tokenizer, line) for line in lines] for code, lines in scored.items()}
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the report is the output; no loading bars in it
    model = AutoModelForCausalLM.from_pretrained(reference, dtype="float32").eval()
    full_precision = _full_precision(artifact) or (_full_precision(Path(baseline)) if baseline else None)
    report = FidelityReport(
        artifact=str(artifact), reference=str(reference), baseline="", texts=_describe(texts, tokenization_texts),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), tool=f"bayling-local {__version__}",
        tokenization=tokenization,
    )
    logit_ids = [ids[0] for ids in ids_by_language.values() if ids][:logit_texts]
    if full_precision is not None:
        with artifact_logits(full_precision, n_ctx=MAX_TOKENS + 8, threads=threads) as logits:
            report.logits = logit_parity(full_precision, logits, model, logit_ids)

    quantized = [Path(p) for p in compare] + ([] if _full_precision(artifact) else [artifact])
    if quantized:
        base_path = full_precision
        report.baseline = str(base_path) if base_path else f"transformers ({reference})"
        report.quants = _score_quants(quantized, base_path, model, ids_by_language, threads)
    if save:
        report.save()
    return report


def _score_quants(paths: list[Path], base_path: Path | None, model, ids_by_language, threads) -> list[QuantQuality]:
    import contextlib

    from bayling_local.convert.logits import artifact_logits, checkpoint_logits

    with contextlib.ExitStack() as stack:
        candidates = {str(p): stack.enter_context(artifact_logits(p, n_ctx=MAX_TOKENS + 8, threads=threads)) for p in paths}
        if base_path is not None:
            baseline_logits = stack.enter_context(artifact_logits(base_path, n_ctx=MAX_TOKENS + 8, threads=threads))
        else:
            baseline_logits = lambda ids: checkpoint_logits(model, ids)
        sums = quant_quality(baseline_logits, candidates, ids_by_language)
    parameters = model.num_parameters()
    return [_summarize(Path(name), per_language, parameters) for name, per_language in sums.items()]


def _load_backend(artifact: Path, threads: int | None):
    from bayling_local.backends.base import LoadOptions

    options = LoadOptions(device="cpu", context_length=MAX_TOKENS + 8, threads=threads)
    if _runtime(artifact) == "onnxruntime":
        from bayling_local.backends.onnxrt import OnnxRuntimeBackend

        return OnnxRuntimeBackend.load(artifact, options)
    from bayling_local.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend.load(artifact, options)


def _full_precision(path: Path) -> Path | None:
    return path if _precision(path) in FULL_PRECISION else None


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=True)[:MAX_TOKENS]


def _describe(source, texts: dict[str, list[str]]) -> str:
    where = str(source) if source else "built-in sample"
    return f"{where}: {len(texts)} languages, {sum(len(v) for v in texts.values())} sentences"


def render_markdown(report: FidelityReport) -> str:
    lines = [f"# Fidelity of {display_name(Path(report.artifact))}", "",
             f"Reference: `{report.reference}`; texts: {report.texts}; {report.tool}, {report.created}.", ""]
    if report.tokenization:
        t = report.tokenization
        lines += ["## Tokenization", "",
                  "| path | sentences differing from the reference | languages affected |", "| --- | --- | --- |",
                  f"| bayling-local ({t.path_in_use}) | {sum(t.ours.values())} of {t.sentences} | {len(t.ours)} of {t.languages} |"]
        if t.llama_cpp is not None:
            lines.append(f"| llama.cpp's own tokenizer | {sum(t.llama_cpp.values())} of {t.sentences} | "
                         f"{len(t.llama_cpp)} of {t.languages} |")
        lines.append("")
        worst = sorted((t.llama_cpp or {}).items(), key=lambda kv: -kv[1])[:15]
        if worst:
            lines += ["llama.cpp's tokenizer differs most in: " + ", ".join(f"{c} ({n})" for c, n in worst), ""]
    if report.logits:
        g = report.logits
        lines += [f"## Logits of {display_name(Path(g.artifact))} ({g.runtime}) against transformers", "",
                  "| texts | positions | max abs diff | mean abs diff | top-1 agreement | KV cache |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| {g.texts} | {g.positions} | {g.max_abs_diff:.2e} | {g.mean_abs_diff:.2e} | {g.top1_agreement:.2%} | {g.kv_cache} |", ""]
    if report.quants:
        lines += [f"## Quantization (against {report.baseline})", "",
                  "| file | runtime | type | size | bits/weight | KL divergence | top-1 agreement | worst language (KL) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for q in report.quants:
            worst_code, worst = max(q.per_language.items(), key=lambda kv: kv[1]["kl_divergence"], default=("-", {"kl_divergence": 0}))
            lines.append(f"| {display_name(Path(q.path))} | {q.runtime} | {q.quant} | {q.size / 1e6:.1f} MB | {q.bits_per_weight:.2f} | "
                         f"{q.kl_divergence:.4f} | {q.top1_agreement:.2%} | {worst_code} ({worst['kl_divergence']:.4f}) |")
        lines.append("")
    return "\n".join(lines)
