"""Prefill and decode tokens/s of ONNX int4/int8 (ONNX Runtime, CPU) vs llama.cpp Q4_0/Q4_K_M/Q8_0 for one
checkpoint at one thread count, plus batched throughput (generated tokens/s at batch 1, 4 and 8).

    .venv/bin/python benchmarks/onnx_vs_gguf.py CHECKPOINT [--threads N] [--tokens 128] [--repeats 3]
        [--work DIR] [--json PATH]

CHECKPOINT is a Hugging Face Llama folder. It is exported with `bayling_local.convert.to_onnx` (int4, int8)
and converted with our own converter, `bayling_local.convert.to_gguf(..., "f32")` then
`convert.quantize.quantize_gguf` (q4_0, q4_k_m, q8_0, no importance matrix); the artifacts are cached in
--work/<checkpoint folder name>, ONNX folders named by export format version (onnx-v2-int4).

Both runtimes get the same prompt token ids (tokenized once by the ONNX backend, cut to PROMPT_TOKENS).
Prefill is cold on every run (llama-cpp-python's prefix cache is reset): prompt tokens / time to first
token. Decode is (tokens - 1) / time after the first token. Each figure is the median of --repeats runs
after a warm-up. End-of-text never ends a run early: every run generates the full --tokens budget.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.errors import BaylingError

PROMPT_TOKENS = 128
PROMPT = (
    "Translate the following paragraph into French. The weather was pleasant this morning, so we walked along "
    "the river to the old market, where farmers sell bread, cheese, apples and fresh flowers. We bought a loaf "
    "of rye bread, two kinds of goat cheese and a bunch of tulips for my grandmother, who turns ninety next "
    "week. On the way home it started to rain, and we waited under the bridge with a fisherman who told us "
    "about the floods of 1953, when the water reached the church steps and the whole village rowed to school."
)
BATCH_PROMPTS = (
    "The capital of France is", "Le petit chat dort sur", "我们明天早上去", "Der alte Mann liest",
    "Once upon a time", "Los niños juegan en", "The weather today is", "My favourite food is",
)
BATCH_SIZES = (1, 4, 8)
WARMUP_TOKENS = 8
CONTEXT_LENGTH = 2048
GREEDY = {"temperature": 0.0, "top_k": 1, "ignore_eos": True}
"""Greedy, and through end-of-text: every run spends its whole token budget."""


@dataclass(frozen=True)
class Artifact:
    """One row of the table: a runtime and a quantization of the checkpoint."""

    label: str
    runtime: str
    """`onnx` (ONNX Runtime) or `gguf` (llama.cpp)."""
    quant: str
    """The converter's name for the type (`int4`, `q4_k_m`)."""

    def path(self, work: Path) -> Path:
        from bayling_local.backends.onnxrt import FORMAT_VERSION

        return work / (f"onnx-v{FORMAT_VERSION}-{self.quant}" if self.runtime == "onnx" else f"{self.quant}.gguf")


ARTIFACTS = (
    Artifact("onnx int4", "onnx", "int4"),
    Artifact("onnx int8", "onnx", "int8"),
    Artifact("llama.cpp Q4_0", "gguf", "q4_0"),
    Artifact("llama.cpp Q4_K_M", "gguf", "q4_k_m"),
    Artifact("llama.cpp Q8_0", "gguf", "q8_0"),
)
DECODE_RATIOS = (
    ("onnx int4", "llama.cpp Q4_0"),
    ("onnx int4", "llama.cpp Q4_K_M"),
    ("onnx int8", "llama.cpp Q8_0"),
)
REFERENCE_TOKENIZER = "onnx int4"


@dataclass
class Row:
    """Every figure measured for one artifact (runs kept for the JSON)."""

    artifact: Artifact
    path: Path
    size_bytes: int
    prefill_tps: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    batch_tps: dict[int, list[float]] = field(default_factory=dict)
    batch_generated: dict[int, list[int]] = field(default_factory=dict)
    """Tokens generate_batch actually returned per run (expected: batch x --tokens)."""

    def as_json(self) -> dict:
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "prefill_tps": statistics.median(self.prefill_tps),
            "decode_tps": statistics.median(self.decode_tps),
            "batch_tps": {b: statistics.median(runs) for b, runs in self.batch_tps.items()},
            "runs": {
                "prefill_tps": self.prefill_tps,
                "decode_tps": self.decode_tps,
                "batch_tps": self.batch_tps,
                "batch_generated": self.batch_generated,
            },
        }


# --- artifacts ------------------------------------------------------------------------------------------


def build_artifact(artifact: Artifact, checkpoint: Path, work: Path) -> Path:
    """The artifact's path in `work`, exported or converted first unless a complete one is there."""
    path = artifact.path(work)
    if artifact.runtime == "onnx":
        if not _readable_export(path):
            _progress(f"exporting {artifact.label} to {path}")
            from bayling_local.convert import to_onnx

            to_onnx(checkpoint, path, artifact.quant)
        return path
    if not path.is_file():
        from bayling_local.convert.quantize import quantize_gguf

        f32 = _f32_gguf(checkpoint, work)
        _progress(f"quantizing {f32.name} to {artifact.quant}")
        quantize_gguf(f32, path, artifact.quant)
    return path


def _f32_gguf(checkpoint: Path, work: Path) -> Path:
    path = work / "f32.gguf"
    if not path.is_file():  # the converter writes a temporary file and renames it: a file here is whole
        from bayling_local.convert import to_gguf

        _progress(f"converting {checkpoint} to {path}")
        to_gguf(checkpoint, "f32", out=path, imatrix="none")
    return path


def _readable_export(folder: Path) -> bool:
    """Whether `folder` holds an export this bayling-local reads (else it is exported again)."""
    from bayling_local.backends.onnxrt import read_export_config

    try:
        read_export_config(folder)
    except BaylingError:
        return False
    return True


def artifact_size(path: Path) -> int:
    files = path.iterdir() if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.suffix in (".gguf", ".onnx", ".data"))


# --- loading and prompts ----------------------------------------------------------------------------------


def load(artifact: Artifact, path: Path, threads: int):
    options = LoadOptions(device="cpu", threads=threads, context_length=CONTEXT_LENGTH)
    if artifact.runtime == "gguf":
        from bayling_local.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend.load(path, options)
    from bayling_local.backends.onnxrt import OnnxRuntimeBackend

    return OnnxRuntimeBackend.load(path, options)


@dataclass(frozen=True)
class Prompts:
    """Token ids every backend is given: one for prefill/decode, one per batch row."""

    main: list[int]
    batch: list[list[int]]


def reference_prompts(artifact: Artifact, path: Path, threads: int) -> Prompts:
    backend = load(artifact, path, threads)
    try:
        ids = backend.tokenize(PROMPT, add_bos=True)
        main = list(itertools.islice(itertools.cycle(ids), PROMPT_TOKENS))
        return Prompts(main, [backend.tokenize(p, add_bos=True) for p in BATCH_PROMPTS])
    finally:
        backend.close()


def forget_previous_prompt(backend) -> None:
    """Make the next llama.cpp `generate` evaluate its whole prompt.

    llama-cpp-python's `Llama.generate(reset=True)` keeps the prefix it shares with the previous call's
    tokens; `reset()` sets its token count to 0, so nothing matches.
    """
    if backend.name == "llama.cpp":
        backend.llm.reset()


# --- measuring ------------------------------------------------------------------------------------------------


def token_steps(backend, ids: list[int], tokens: int) -> Iterator[int]:
    """Greedy next tokens from the backend's own decode loop (no detokenizing), through end-of-text."""
    config = GenerationConfig(max_tokens=tokens, **GREEDY)
    if backend.name == "onnxruntime":
        return (step[0] for step in backend._decode([ids], config, None))
    from bayling_local.backends.llamacpp import sampling_arguments

    forget_previous_prompt(backend)
    return backend.llm.generate(ids, reset=True, **sampling_arguments(config))


def prefill_and_decode(backend, ids: list[int], tokens: int) -> tuple[float, float]:
    """(prompt tokens / time to first token, (tokens - 1) / time from the first token to the last)."""
    steps = token_steps(backend, ids, tokens)
    start = time.perf_counter()
    first = None
    count = 0
    for _ in steps:
        count += 1
        first = first or time.perf_counter()
        if count >= tokens:
            break
    end = time.perf_counter()
    steps.close()
    if count < tokens:
        raise RuntimeError(f"{backend.name} stopped after {count} of {tokens} tokens")
    return len(ids) / (first - start), (count - 1) / (end - first)


def batch_throughput(backend, prompts: list[list[int]], tokens: int) -> tuple[float, int]:
    """(generated tokens / wall time of one generate_batch call, tokens generated)."""
    config = GenerationConfig(max_tokens=tokens, **GREEDY)
    forget_previous_prompt(backend)  # batch 1 goes through llama.cpp's single-prompt path
    start = time.perf_counter()
    completions = backend.generate_batch(prompts, config)
    elapsed = time.perf_counter() - start
    generated = sum(len(c.token_ids) for c in completions)
    return generated / elapsed, generated


def measure(row: Row, backend, prompts: Prompts, tokens: int, repeats: int) -> None:
    prefill_and_decode(backend, prompts.main, WARMUP_TOKENS)
    # The widest batch first: llama.cpp's batch context is then made for 8 sequences outside the timing.
    backend.generate_batch(prompts.batch[: max(BATCH_SIZES)], GenerationConfig(max_tokens=WARMUP_TOKENS, **GREEDY))
    for _ in range(repeats):
        prefill, decode = prefill_and_decode(backend, prompts.main, tokens)
        row.prefill_tps.append(prefill)
        row.decode_tps.append(decode)
    for batch in BATCH_SIZES:
        for _ in range(repeats):
            tps, generated = batch_throughput(backend, prompts.batch[:batch], tokens)
            row.batch_tps.setdefault(batch, []).append(tps)
            row.batch_generated.setdefault(batch, []).append(generated)


# --- reporting ------------------------------------------------------------------------------------------------


def environment(args: argparse.Namespace) -> dict:
    import llama_cpp
    import onnxruntime

    config = json.loads((args.checkpoint / "config.json").read_text("utf-8"))
    return {
        "checkpoint": str(args.checkpoint),
        "model": {k: config.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")},
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "prompt_tokens": PROMPT_TOKENS,
        "decode_tokens": args.tokens,
        "repeats": args.repeats,
        "onnxruntime": onnxruntime.__version__,
        "llama_cpp_python": llama_cpp.__version__,
        "load_average_start": os.getloadavg(),
    }


def print_header(env: dict) -> None:
    load = ", ".join(f"{x:.2f}" for x in env["load_average_start"])
    print(f"model: {env['checkpoint']} ({env['model']})")
    print(f"onnxruntime {env['onnxruntime']}, llama-cpp-python {env['llama_cpp_python']}")
    print(
        f"threads={env['threads']} (of {env['cpu_count']} CPUs), load average {load}; prompt {env['prompt_tokens']} "
        f"tokens, decode {env['decode_tokens']} tokens, median of {env['repeats']} after a warm-up"
    )
    batches = "".join(f"{f'b={b} tok/s':>13}" for b in BATCH_SIZES)
    print(f"{'artifact':<18}{'MiB':>7}{'prefill tok/s':>15}{'decode tok/s':>14}{batches}")


def print_row(row: Row, tokens: int) -> None:
    figures = row.as_json()
    batches = "".join(f"{figures['batch_tps'][b]:>13.1f}" for b in BATCH_SIZES)
    print(
        f"{row.artifact.label:<18}{row.size_bytes / 2**20:>7.0f}{figures['prefill_tps']:>15.1f}"
        f"{figures['decode_tps']:>14.1f}{batches}",
        flush=True,
    )
    short = {b: n for b, runs in row.batch_generated.items() for n in runs if n != b * tokens}
    if short:
        print(f"  note: generate_batch returned fewer tokens than batch x {tokens}: {short}", flush=True)


def decode_ratios(rows: dict[str, Row]) -> dict[str, float]:
    return {
        f"{ours} / {theirs}": rows[ours].as_json()["decode_tps"] / rows[theirs].as_json()["decode_tps"]
        for ours, theirs in DECODE_RATIOS
    }


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- entry ----------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    work = args.work.expanduser() / args.checkpoint.name
    work.mkdir(parents=True, exist_ok=True)
    paths = {a.label: build_artifact(a, args.checkpoint, work) for a in ARTIFACTS}
    reference = next(a for a in ARTIFACTS if a.label == REFERENCE_TOKENIZER)
    prompts = reference_prompts(reference, paths[reference.label], args.threads)
    env = environment(args)
    print_header(env)
    rows = {}
    for artifact in ARTIFACTS:
        path = paths[artifact.label]
        row = rows[artifact.label] = Row(artifact, path, artifact_size(path))
        backend = load(artifact, path, args.threads)
        try:
            measure(row, backend, prompts, args.tokens, args.repeats)
        finally:
            backend.close()
        print_row(row, args.tokens)
    ratios = decode_ratios(rows)
    for name, ratio in ratios.items():
        print(f"decode ratio {name}: {ratio:.2f}x")
    env["load_average_end"] = os.getloadavg()
    print("load average at the end: " + ", ".join(f"{x:.2f}" for x in env["load_average_end"]))
    return {**env, "rows": {label: row.as_json() for label, row in rows.items()}, "decode_ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="Hugging Face Llama checkpoint folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both runtimes")
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate per run and per batch row")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (the median is shown)")
    parser.add_argument(
        "--work", type=Path, default=Path.home() / ".cache" / "bayling-local-bench" / "onnx_vs_gguf",
        help="where converted artifacts are cached",
    )
    parser.add_argument("--json", type=Path, help="also write every figure and run to this file")
    args = parser.parse_args()
    if args.tokens < 2 or args.repeats < 1 or args.threads < 1:
        parser.error("--tokens must be at least 2, --repeats and --threads at least 1")
    try:
        figures = run(args)
    except BaylingError as error:
        sys.exit(f"error: {error}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
