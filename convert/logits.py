"""Logits for parity checks: a GGUF through llama.cpp with an f32 KV cache, an ONNX export through ONNX
Runtime, a checkpoint through transformers.

Exactness needs the f32 cache: llama.cpp's default f16 cache alone moves logits by ~1e-2.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

GGML_TYPE_F32 = 0


@contextlib.contextmanager
def llama_for_logits(path: Path, n_ctx: int = 2048, threads: int | None = None) -> Iterator[object]:
    """A llama_cpp.Llama with every position's logits and an f32 KV cache, closed afterwards."""
    from bayling_local.backends.llamacpp import open_llama
    from bayling_local.gguf_header import read_gguf_header

    # Loaded as the backend loads it (the same extra-buffer choice: Q4_1 files on AMX builds crash).
    llm, _ = open_llama(read_gguf_header(path), n_ctx=n_ctx, n_batch=min(512, n_ctx), logits_all=True,
                        type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, flash_attn=False, verbose=False,
                        n_threads=threads, n_threads_batch=threads)
    try:
        yield llm
    finally:
        llm.close()


@contextlib.contextmanager
def artifact_logits(path: Path, n_ctx: int = 2048, threads: int | None = None) -> Iterator[Callable[[Sequence[int]], np.ndarray]]:
    """`logits(ids)` (positions x vocab, float32) of a GGUF file or an ONNX export folder, closed afterwards."""
    from bayling_local.model import artifact_format

    if artifact_format(path) == "onnx":
        from bayling_local.backends.base import LoadOptions
        from bayling_local.backends.onnxrt import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend.load(path, LoadOptions(device="cpu", context_length=n_ctx, threads=threads))
        try:
            yield backend.logits
        finally:
            backend.close()
        return
    with llama_for_logits(path, n_ctx=n_ctx, threads=threads) as llm:
        yield lambda ids: gguf_logits(llm, ids)


def gguf_logits(llm, ids: Sequence[int]) -> np.ndarray:
    """Logits (positions x vocab) of `ids` decoded from an empty cache, on a thread that ends with the
    work (a thread that has decoded keeps an OpenMP team, which slows llama.cpp work on other threads:
    `backends/compute_threads.py`)."""
    from bayling_local.backends.compute_threads import call_on_own_thread

    def decode() -> np.ndarray:
        llm.reset()
        llm.eval(list(ids))
        return np.array(llm.scores[: len(ids)], dtype=np.float32)

    return call_on_own_thread(decode, "llama-logits")


def checkpoint_logits(model, ids: Sequence[int]) -> np.ndarray:
    """Logits (positions x vocab) of a transformers causal LM, in float32."""
    import torch

    with torch.inference_mode():
        return model(torch.tensor([list(ids)], device=model.device)).logits[0].float().cpu().numpy()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def kl_divergence(reference_log_probs: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """KL(reference || candidate) per position, in nats (llama-perplexity's --kl-divergence).

    Takes the reference as log-probabilities (`log_softmax(logits)`, computed once for many candidates)
    and the candidate as logits.
    """
    q_log = log_softmax(candidate)
    return (np.exp(reference_log_probs) * (reference_log_probs - q_log)).sum(axis=-1)
