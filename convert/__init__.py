"""Checkpoint conversion (`import bayling_local.convert`): Hugging Face Llama checkpoint -> GGUF, every
llama.cpp quantization type, a multilingual importance matrix, and a fidelity report.

    to_gguf(checkpoint, quant="f16", *, out=None, name=None, imatrix="auto", calibration=None, verify=False)
    verify(artifact, reference, *, compare=(), texts=None)

Modules, in the order data flows through them:
- `checkpoint`: a checkpoint folder checked and read lazily (memory-mapped safetensors, shards, `.bin` only
  with allow_pickle); `llama_layout`: hyper-parameters, tensor names, shapes and the Q/K permutation.
- `vocab`: the tokenizer as GGUF metadata (byte-level BPE or SentencePiece), with the reference
  tokenizer.json carried under `bayling.tokenizer_json` for exact tokenization.
- `gguf`: the writer (f32/f16/bf16/q8_0, streamed a few rows at a time, temp file + rename).
- `quantize`: every llama.cpp type as data; quantization through `llama_cpp.llama_model_quantize`.
- `imatrix`: importance matrix from language-balanced calibration text, in llama.cpp's file format, resumable.
- `logits`, `verify`: logit/KL helpers and the fidelity report (JSON + Markdown beside the artifact).
- `pipeline`: `to_gguf`, free-disk check, store import with a manifest.
- `onnx`: `to_onnx`, an ONNX decoder with KV cache written with onnx.helper (fp32/fp16/int8/int4);
  `onnx_weights`: its weights streamed from the checkpoint into `model.onnx.data` (transposed or packed
  into MatMulNBits blocks per row chunk); `onnx_rewrite`: block rewrites of a graph held in memory.
"""

from bayling_local.convert.onnx import to_onnx
from bayling_local.convert.pipeline import ConvertResult, to_gguf
from bayling_local.convert.verify import FidelityReport, verify

__all__ = ["ConvertResult", "FidelityReport", "to_gguf", "to_onnx", "verify"]
