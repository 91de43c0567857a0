"""Prefill and decode tokens/s of ONNX int4/int8 (ONNX Runtime, CPU) vs llama.cpp Q4_0/Q8_0, same model and
thread count, plus batched throughput at batch 1/4/8.

    .venv/bin/python benchmarks/onnx_vs_gguf.py CHECKPOINT [--threads N] [--tokens 64] [--work DIR]

CHECKPOINT is a Hugging Face Llama folder; it is exported with `bayling_local.convert.onnx.to_onnx` and
converted with `bayling_local.convert.to_gguf` + llama.cpp's quantizer (cached in --work).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bayling_local.backends.base import GenerationConfig, LoadOptions

PROMPT = (
    "Translate the following paragraph into French. The weather was pleasant this morning, so we walked "
    "along the river to the old market, where farmers sell bread, cheese, apples and fresh flowers. "
) * 2
BATCH_PROMPTS = [
    "The capital of France is", "Le petit chat dort sur", "我们明天早上去", "Der alte Mann liest",
    "Once upon a time", "Los niños juegan en", "The weather today is", "My favourite food is",
]


def build_artifacts(checkpoint: Path, work: Path) -> dict[str, Path]:
    from bayling_local.convert import to_gguf
    from bayling_local.convert.onnx import to_onnx
    from bayling_local.convert.quantize import quantize_gguf

    work.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    for quant in ("int4", "int8"):
        folder = work / f"onnx-{quant}"
        artifacts[f"onnx {quant}"] = folder if (folder / "model.onnx").is_file() else to_onnx(checkpoint, folder, quant)
    f32 = work / "model-f32.gguf"
    try:
        if not f32.is_file():
            to_gguf(checkpoint, "f32", out=f32)
        make = lambda target, quant: quantize_gguf(f32, target, quant)
    except Exception as error:
        print(f"bayling-local convert failed ({type(error).__name__}: {error}); the llama.cpp baselines are "
              "requantized from the bundled Q4_1 GGUF (same speed profile, not the same quality)")
        make = _requantize_bundled
    for quant in ("q4_0", "q8_0"):
        target = work / f"model-{quant}.gguf"
        artifacts[f"llama.cpp {quant.upper()}"] = target if target.is_file() else make(target, quant)
    return artifacts


def _requantize_bundled(target: Path, quant: str) -> Path:
    import llama_cpp

    from bayling_local.catalog import bundled_model_path

    file_types = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_types[quant]
    params.allow_requantize = True
    status = llama_cpp.llama_model_quantize(str(bundled_model_path()).encode(), str(target).encode(), params)
    if status != 0:
        raise RuntimeError(f"llama.cpp could not requantize the bundled model to {quant}")
    return target


def load(path: Path, threads: int):
    if path.suffix == ".gguf":
        from bayling_local.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend.load(path, LoadOptions(device="cpu", threads=threads, context_length=2048))
    from bayling_local.backends.onnxrt import OnnxRuntimeBackend

    return OnnxRuntimeBackend.load(path, LoadOptions(device="cpu", threads=threads, context_length=2048))


def token_stream(backend, ids: list[int], tokens: int):
    """Greedy next tokens straight from the backend's loop (no detokenizing), ignoring end-of-text."""
    config = GenerationConfig(max_tokens=tokens)
    if backend.name == "onnxruntime":
        backend.info = _without_eos(backend.info)
        return (step[0] for step in backend._decode([ids], config, None))
    from bayling_local.backends.llamacpp import sampling_arguments

    return backend.llm.generate(ids, reset=True, **sampling_arguments(config))


def _without_eos(info):
    from dataclasses import replace

    return replace(info, end_of_generation_ids=frozenset())


def prefill_and_decode(backend, tokens: int) -> tuple[float, float]:
    ids = backend.tokenize(PROMPT, add_bos=True)
    start = time.perf_counter()
    first = None
    count = 0
    for _ in token_stream(backend, ids, tokens):
        count += 1
        if first is None:
            first = time.perf_counter()
        if count >= tokens:
            break
    end = time.perf_counter()
    return len(ids) / (first - start), (count - 1) / (end - first)


def batched_throughput(backend, batch: int, tokens: int) -> float:
    config = GenerationConfig(max_tokens=tokens)
    prompts = BATCH_PROMPTS[:batch]
    start = time.perf_counter()
    completions = backend.generate_batch(prompts, config)
    return sum(len(c.token_ids) for c in completions) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "bayling-local-bench" / "onnx_vs_gguf")
    args = parser.parse_args()
    artifacts = build_artifacts(args.checkpoint, args.work)
    results = {}
    print(f"threads={args.threads}, decode tokens={args.tokens}, prompt={len(PROMPT)} chars")
    print(f"{'artifact':<18}{'prefill tok/s':>15}{'decode tok/s':>14}{'b=1':>9}{'b=4':>9}{'b=8':>9}")
    for label, path in artifacts.items():
        backend = load(path, args.threads)
        prefill_and_decode(backend, 4)  # warm-up
        prefill, decode = prefill_and_decode(backend, args.tokens)
        batched = [batched_throughput(backend, b, 32) for b in (1, 4, 8)]
        results[label] = decode
        print(f"{label:<18}{prefill:>15.1f}{decode:>14.1f}" + "".join(f"{t:>9.1f}" for t in batched), flush=True)
        backend.close()
    for ours, theirs in (("onnx int4", "llama.cpp Q4_0"), ("onnx int8", "llama.cpp Q8_0")):
        print(f"decode ratio {ours} / {theirs}: {results[ours] / results[theirs]:.2f}x")


if __name__ == "__main__":
    main()
