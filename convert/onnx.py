"""Export a Llama checkpoint to an ONNX decoder with a KV cache, and quantize it (fp32/fp16/int8/int4).

Route: the graph is written directly with `onnx.helper` from the checkpoint's weights, not traced. The
torch exporters follow transformers' cache classes, which change between releases (optimum-onnx pins
transformers < 4.58), and a trace yields ~50 small ops per layer; writing the graph is shorter than
patching a trace, works with any transformers that loads the weights, and uses ONNX Runtime's fused
kernels directly: `GroupQueryAttention` (rotary, causal mask, GQA, KV cache appended in place),
`SkipSimplifiedLayerNormalization` (residual + RMSNorm) and plain `MatMul`s by constant weights, which
our `MatMulNBits` packer rewrites to weight-only 8-bit (int8) or 4-bit (int4) blocks. One graph serves prompt and
next token: `past_key_values.N.key/value` [batch, kv_heads, past, head_dim] in, `present.N.key/value` out;
`attention_mask` says how many tokens each (right-padded) row holds; `num_logits_to_keep` (0 = all).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bayling_local.backends.onnxrt import CONFIG_FILE, FORMAT_NAME, FORMAT_VERSION
from bayling_local.convert.checkpoint import Checkpoint, open_checkpoint
from bayling_local.convert.llama_layout import LlamaHyperParameters
from bayling_local.convert.pipeline import checkpoint_provenance, resolve_chat_format
from bayling_local.errors import UsageError
from bayling_local.prompts import folder_chat_template

ONNX_QUANTS = ("fp32", "fp16", "int8", "int4")
QUANT_ALIASES = {"f32": "fp32", "f16": "fp16"}
"""The GGUF spellings of the float types `--quant` also takes."""
BLOCK_SIZES = (32, 64, 128)
OPSET = 17
MODEL_FILE = "model.onnx"
EXTERNAL_DATA_LIMIT = 1_800_000_000
"""Bytes of weights above which they go to `model.onnx.data` (protobuf caps one message at 2 GB)."""
WEIGHT_ONLY_SYMMETRIC = False
"""Weight-only blocks carry a zero point (like llama.cpp's Q4_1, not Q4_0): KL to fp32 on SmolLM2 int4
0.51 -> 0.44 at the same speed."""
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "chat_template.jinja", "added_tokens.json",
)


@dataclass(frozen=True)
class LlamaShape:
    """The dimensions of a Llama decoder that the graph is built from."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float


def to_onnx(checkpoint: Path, out: Path, quant: str = "fp32", block_size: int = 32, export_device: str = "cpu",
            chat_format: str | None = None) -> Path:
    """Write an ONNX decoder folder for the Llama checkpoint `checkpoint` at `quant`; returns `out`.

    `export_device` is where the model will run: `cuda` builds int4 with float16 activations and cache
    (ONNX Runtime's CUDA GroupQueryAttention takes float16/bfloat16 only), `cpu` with float32. The
    export itself reads the weights on the CPU. `chat_format` (default: the catalog's or the one the
    checkpoint's template matches, as for GGUF) is recorded in bayling_onnx.json.
    """
    quant = QUANT_ALIASES.get(quant, quant)
    if quant not in ONNX_QUANTS:
        raise UsageError(f"--quant {quant} is not an ONNX precision; use one of {', '.join(ONNX_QUANTS)}")
    if block_size not in BLOCK_SIZES:
        raise UsageError(f"--block-size must be one of {BLOCK_SIZES}, not {block_size}")
    if export_device not in ("cpu", "cuda"):
        raise UsageError(f"--export-device must be cpu or cuda, not {export_device}")
    if export_device == "cuda" and quant in ("fp32", "int8"):
        raise UsageError(
            f"--quant {quant} is a CPU format (float32 activations; CUDA attention needs float16); "
            "for --export-device cuda use fp16 or int4"
        )
    checkpoint, out = Path(checkpoint), Path(out)
    source = _open_source(checkpoint)
    format_id = resolve_chat_format(chat_format, out.name, checkpoint, source)
    model, tokenizer_files = _load_checkpoint(checkpoint)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    graph_dtype = "fp16" if quant == "fp16" or export_device == "cuda" else "fp32"
    proto, shape = build_decoder(model, graph_dtype)
    if quant in ("int8", "int4"):
        quantize = quantize_int8 if quant == "int8" else quantize_int4
        proto = quantize_embedding(quantize(proto, block_size), block_size, tied=_tied_embeddings(model))
    save_model(proto, staging / MODEL_FILE)
    for file in tokenizer_files:
        shutil.copy(file, staging / file.name)
    _write_config(staging, model, shape, quant, block_size, graph_dtype, export_device, quantization_record(proto),
                  format_id, export_provenance(source, quant))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def _open_source(checkpoint: Path) -> Checkpoint:
    """The checkpoint, checked before anything is written with the GGUF converter's own checks (files,
    architecture, bias, RoPE type): the graph bakes the rotary tables at export, so a `dynamic` RoPE,
    which rescales with the sequence length, would be silently wrong. Pickled weights are allowed: the
    export loads them as transformers does, with `weights_only`."""
    source = open_checkpoint(checkpoint, allow_pickle=True)
    LlamaHyperParameters.from_config(source.config).check_supported(source.config)
    return source


def export_provenance(source: Checkpoint, quant: str) -> dict:
    """Where an export came from, as a GGUF records it (`general.source.sha256`, quantized_by, date)."""
    origin = checkpoint_provenance(source)
    return {
        "checkpoint": origin.source, "sha256": origin.sha256, "tool": origin.tool, "quant": quant,
        "date": origin.date, "exporter": "bayling-local convert/onnx.py", "opset": OPSET,
    }


def _load_checkpoint(checkpoint: Path):
    tokenizer_files = [checkpoint / n for n in TOKENIZER_FILES if (checkpoint / n).is_file()]
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, local_files_only=True)
    return model.eval(), tokenizer_files


def _tied_embeddings(model) -> bool:
    """Whether the output layer is the token embedding table (SmolLM2, Llama-3.2-1B/3B)."""
    import torch

    return torch.equal(model.get_input_embeddings().weight, model.get_output_embeddings().weight)


# Graph


class _Builder:
    """Collects nodes and initializers with unique names."""

    def __init__(self, float_type: int):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.float_type = float_type
        self.np_float = np.float16 if float_type == TensorProto.FLOAT16 else np.float32
        self._count = 0

    def op(self, op_type: str, inputs: list[str], name_hint: str = "", outputs: int | list[str] = 1, **attrs):
        self._count += 1
        base = f"{name_hint or op_type}_{self._count}"
        names = outputs if isinstance(outputs, list) else [f"{base}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=base, **attrs))
        return names[0] if len(names) == 1 else names

    def weight(self, name: str, array: np.ndarray, as_float: bool = True) -> str:
        if as_float:
            array = array.astype(self.np_float)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, values, dtype=np.int64) -> str:
        self._count += 1
        return self.weight(f"const_{self._count}", np.asarray(values, dtype=dtype), as_float=False)


def _llama_shape(model) -> LlamaShape:
    c = model.config
    heads = c.num_attention_heads
    return LlamaShape(
        layers=c.num_hidden_layers, hidden=c.hidden_size, heads=heads,
        kv_heads=c.num_key_value_heads or heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
        vocab=c.vocab_size, rms_eps=float(c.rms_norm_eps),
    )


def build_decoder(model, dtype: str = "fp32") -> tuple[onnx.ModelProto, LlamaShape]:
    """The ONNX graph of a transformers LlamaForCausalLM (weights copied, no tracing).

    Per layer: packed QKV MatMul -> `GroupQueryAttention` (rotary, causal mask, GQA and the KV cache in one
    kernel) -> o_proj -> `SkipSimplifiedLayerNormalization` (residual add + RMSNorm) -> SwiGLU MLP -> the
    next layer's fused residual + norm. About 12 nodes per layer instead of ~50 unfused ones.
    """
    shape = _llama_shape(model)
    float_type = TensorProto.FLOAT16 if dtype == "fp16" else TensorProto.FLOAT
    b = _Builder(float_type)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    inputs, outputs = _io(shape, float_type)
    x = b.op("Gather", [b.weight("embed_tokens", state["model.embed_tokens.weight"]), "input_ids"], "embed")
    lengths = _sequence_lengths(b)
    rotary = _rotary_caches(b, model, shape)
    norms = [f"model.layers.{i}.input_layernorm.weight" for i in range(shape.layers)] + ["model.norm.weight"]
    h = b.op("SimplifiedLayerNormalization", [x, b.weight(norms[0], state[norms[0]])], "input_norm_0",
             axis=-1, epsilon=shape.rms_eps, stash_type=1)
    for i in range(shape.layers):
        h, x = _layer(b, state, shape, i, h, x, lengths, rotary, norms[i + 1])
    # Logits of the last `num_logits_to_keep` positions (0: all): a prompt's next token needs one row,
    # and the [sequence, vocab] product for the rest is most of a long prompt's cost.
    h = b.op("Slice", [h, b.op("Neg", ["num_logits_to_keep"]), b.const([np.iinfo(np.int64).max]), b.const([1])],
             "keep_last")
    lm_head = state.get("lm_head.weight", state["model.embed_tokens.weight"])
    logits = b.op("MatMul", [h, b.weight("lm_head", lm_head.T)], "lm_head")
    if float_type != TensorProto.FLOAT:
        logits = b.op("Cast", [logits], "logits_cast", to=TensorProto.FLOAT)
    b.op("Identity", [logits], outputs=["logits"])
    graph = helper.make_graph(b.nodes, "llama_decoder", inputs, outputs, b.initializers)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="bayling-local",
    )
    proto.ir_version = 8
    return proto, shape


def _io(shape: LlamaShape, float_type: int):
    kv = ["batch", shape.kv_heads, "past_sequence", shape.head_dim]
    present = ["batch", shape.kv_heads, "present_sequence", shape.head_dim]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_sequence"]),
        helper.make_tensor_value_info("num_logits_to_keep", TensorProto.INT64, [1]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "kept", shape.vocab])]
    for i in range(shape.layers):
        for part in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{part}", float_type, kv))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{part}", float_type, present))
    return inputs, outputs


def _sequence_lengths(b: _Builder) -> tuple[str, str]:
    """GroupQueryAttention's `seqlens_k` (each row's valid tokens - 1) and `total_sequence_length` from the
    attention mask: row b's cache holds sum(mask[b]) tokens after this step, right-padded."""
    valid = b.op("ReduceSum", ["attention_mask", b.const([1])], "valid_tokens", keepdims=0)
    seqlens_k = b.op("Cast", [b.op("Sub", [valid, b.const(1)])], "seqlens_k", to=TensorProto.INT32)
    total = b.op("Gather", [b.op("Shape", ["attention_mask"]), b.const(1)])
    return seqlens_k, b.op("Cast", [total], "total_sequence_length", to=TensorProto.INT32)


ROTARY_CACHE_LIMIT = 131_072
"""Positions the cos/sin tables cover at most (8 MB per 16k positions at head_dim 128, float32)."""


def _rotary_caches(b: _Builder, model, shape: LlamaShape) -> tuple[str, str]:
    """cos and sin tables [positions, head_dim / 2] from the checkpoint's own inv_freq (any rope scaling
    transformers applied is in it) and attention scaling, computed in float64 then rounded."""
    rotary = model.model.rotary_emb
    inv_freq = rotary.inv_freq.detach().double().numpy()
    scaling = float(getattr(rotary, "attention_scaling", 1.0))
    positions = min(int(model.config.max_position_embeddings or 4096), ROTARY_CACHE_LIMIT)
    # float32 products, as transformers computes them, so the angles round the same way
    angles = np.outer(np.arange(positions, dtype=np.float32), inv_freq.astype(np.float32)).astype(np.float32)
    cos = (np.cos(angles) * scaling).astype(np.float32)
    sin = (np.sin(angles) * scaling).astype(np.float32)
    return b.weight("cos_cache", cos), b.weight("sin_cache", sin)


def _packed_qkv(state: dict, p: str) -> np.ndarray:
    """[hidden, (heads + 2 kv_heads) * head_dim]: one MatMul feeds GroupQueryAttention's packed input."""
    return np.concatenate([state[f"{p}.self_attn.{n}_proj.weight"].T for n in ("q", "k", "v")], axis=1)


def _linear(b: _Builder, x: str, state: dict, key: str) -> str:
    # MatMul by the transposed weight: the form both quantizers recognise.
    return b.op("MatMul", [x, b.weight(key, state[key + ".weight"].T)], key.replace(".", "_"))


def _residual_norm(b: _Builder, x: str, residual: str, weight: np.ndarray, key: str, eps: float) -> tuple[str, str]:
    """(RMSNorm(x + residual), x + residual) in one SkipSimplifiedLayerNormalization."""
    out, total = f"{key}_normed", f"{key}_residual"
    b.nodes.append(helper.make_node(
        "SkipSimplifiedLayerNormalization", [x, residual, b.weight(key, weight)], [out, "", "", total],
        name=f"{key}_skip_norm", domain="com.microsoft", epsilon=eps,
    ))
    return out, total


def _layer(b: _Builder, state: dict, shape: LlamaShape, i: int, h: str, x: str, lengths, rotary, next_norm: str):
    """One decoder layer from its normed input `h` and residual stream `x`; returns the next pair."""
    p = f"model.layers.{i}"
    qkv = b.op("MatMul", [h, b.weight(f"{p}.self_attn.qkv_proj", _packed_qkv(state, p))], f"{p}_qkv_proj")
    attn = b.op(
        "GroupQueryAttention",
        [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", *lengths, *rotary],
        f"{p}_attention", outputs=[f"{p}_attention_out", f"present.{i}.key", f"present.{i}.value"],
        domain="com.microsoft", num_heads=shape.heads, kv_num_heads=shape.kv_heads, do_rotary=1,
        rotary_interleaved=0, scale=float(1.0 / np.sqrt(shape.head_dim)),
    )[0]
    o = _linear(b, attn, state, f"{p}.self_attn.o_proj")
    key = f"{p}.post_attention_layernorm.weight"
    h, x = _residual_norm(b, o, x, state[key], key, shape.rms_eps)
    gate = _linear(b, h, state, f"{p}.mlp.gate_proj")
    up = _linear(b, h, state, f"{p}.mlp.up_proj")
    act = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
    down = _linear(b, act, state, f"{p}.mlp.down_proj")
    return _residual_norm(b, down, x, state[next_norm], next_norm, shape.rms_eps)


# Quantization


# MatMulNBits `accuracy_level` (ONNX Runtime contrib_ops/cpu/quantization/matmul_nbits.cc): 0/1 compute in
# float32 (weights dequantized block by block), 4 quantizes the activations to int8 per block and runs MLAS's
# integer kernels (onnxruntime/core/mlas/lib/qnbitgemm.cpp: `MlasIsQNBitGemmAvailable`, SQNBIT_CompInt8).
#
# Why level 4 is right for 8-bit weights on AVX2 CPUs without VNNI too (read in ONNX Runtime 1.32's MLAS):
# CompInt8 quantizes each block of activations symmetrically to [-127, 127] (`QuantizeARow_CompInt8_avx2`,
# sqnbitgemm_kernel_avx2.cpp) and keeps the weights unsigned, folding the zero point in through block sums.
# Without VNNI the product is VPMADDUBSW (u8 x s8, each pair summed into a saturating int16):
#   - 4-bit weights are 0..15: a pair is at most 2 x 15 x 127 = 3810 (sqnbitgemm_kernel_avx2_int8_blklen*.h,
#     `accumulate_blklen*_avx2<vnni=false>`);
#   - 8-bit weights are 0..255, where a pair could reach 64770; the 8-bit kernels mask even and odd bytes
#     into two VPMADDUBSW ("2 x i8 x i8 may be larger than i16", `accumulate_q8_blklen64_*_avx2<vnni=false>`
#     in sqnbitgemm_kernel_avx2_int8_blklen64.h), so each int16 holds one product (<= 32385).
# VNNI CPUs use VPDPBUSDS (sqnbitgemm_kernel_avx2vnni.cpp, the avx512vnni files), which adds in int32.
# ONNX Runtime's *dynamic* quantization (MatMulInteger / DynamicQuantizeMatMul; QgemmU8S8KernelAvx2.asm)
# feeds full-range u8 activations and s8 weights to VPMADDUBSW unmasked: that broke our previous int8 on an
# AVX2-only EPYC (top-1 0.27 / KL 5.7 in English), and is why int8 is weight-only MatMulNBits now.
# Measured, not only read (benchmarks/onnx_avx2_check.py under `QEMU_CPU=Haswell qemu-x86_64`, whose CPUID has no
# AVX-512/VNNI so MLAS takes its AVX2 kernels; top-1 / KL against fp32, en de fr zh, block size 32):
#   previous dynamic int8   0.30/3.89  0.17/4.52  0.15/4.89  0.39/1.32   (native AVX-512 VNNI: KL 0.10-0.14)
#   8-bit MatMulNBits, 4    1.00/0.007 0.92/0.013 0.89/0.012 0.96/0.010  (native: 0.97/0.007 0.92/0.014 0.95/0.013 0.96/0.009)
#   int4, level 4           0.57/0.56  0.37/0.90  0.36/0.74  0.51/0.57   (native: the same within 0.03)
ACCURACY_LEVEL = 4
"""MatMulNBits `accuracy_level` of every int8/int4 export (recorded in bayling_onnx.json): int8 activations,
the fastest CPU kernel (8x the decode speed of level 0 for int4 on SmolLM2; KL to fp32 0.51 vs 0.49)."""


def quantize_int8(proto: onnx.ModelProto, block_size: int = 32) -> onnx.ModelProto:
    """Weight-only 8-bit `MatMulNBits` blocks for every MatMul by a constant weight (activations stay float
    and are quantized per block inside the kernel; see the note on `ACCURACY_LEVEL`)."""
    return quantize_weight_only(proto, bits=8, block_size=block_size)


INT4_KEPT_AT_8BIT = ("lm_head",)
"""MatMuls that int4 quantizes to 8 bits instead: the output projection, whose error lands directly on the
logits (llama.cpp's Q4_0 keeps `output.weight` at Q6_K for the same reason)."""


def quantize_int4(proto: onnx.ModelProto, block_size: int = 32) -> onnx.ModelProto:
    """Weight-only `MatMulNBits` for every MatMul by a constant weight: 4-bit, except
    `INT4_KEPT_AT_8BIT` at 8-bit."""
    kept = lambda name: any(part in name for part in INT4_KEPT_AT_8BIT)
    proto = quantize_weight_only(proto, bits=8, block_size=block_size, select=kept)
    return quantize_weight_only(proto, bits=4, block_size=block_size, select=lambda name: not kept(name))


def quantize_weight_only(proto: onnx.ModelProto, bits: int, block_size: int = 32, select=lambda name: True,
                         accuracy_level: int = ACCURACY_LEVEL) -> onnx.ModelProto:
    """Replace each selected MatMul by a constant [K, N] weight with a block-quantized `MatMulNBits` (weight-only)."""
    weights = {t.name: t for t in proto.graph.initializer}
    nodes, replaced = [], set()
    for node in proto.graph.node:
        is_candidate = node.op_type == "MatMul" and len(node.input) == 2 and select(node.name)
        tensor = weights.get(node.input[1]) if is_candidate else None
        if tensor is None or len(tensor.dims) != 2:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(tensor)
        k, n = w.shape
        packed, scales, zero_points = _pack_blocks(w, bits, block_size)
        inputs = [node.input[0], *_add_blocks(proto, tensor.name, bits, packed, scales, zero_points)]
        replaced.add(tensor.name)
        nodes.append(helper.make_node(
            "MatMulNBits", inputs, list(node.output), name=f"{node.name}_Q{bits}", domain="com.microsoft",
            K=k, N=n, bits=bits, block_size=block_size, accuracy_level=accuracy_level,
        ))
    _replace(proto, nodes, replaced)
    return proto


EMBEDDING_BITS = 8
"""The token embedding table in int8/int4 exports: 8-bit blocks read by `GatherBlockQuantized`, a quarter
of its float32 size (Llama-3-8B's 128k x 4096 table: 2.1 GB -> 0.5 GB)."""


def quantize_embedding(proto: onnx.ModelProto, block_size: int = 32, tied: bool = False) -> onnx.ModelProto:
    """The token embedding `Gather` as a `GatherBlockQuantized` of EMBEDDING_BITS-bit blocks. With `tied`
    embeddings and an output layer already in such blocks, it reads the output layer's blocks (the same
    rows, blocked the same way along the hidden size) instead of a second copy: SmolLM2-135M int4 136 -> 103
    MB, logits unchanged."""
    shared = _output_layer_blocks(proto, block_size) if tied else None
    if shared is not None:
        return _gather_from_output_layer(proto, *shared, block_size)
    weights = {t.name: t for t in proto.graph.initializer}
    table = numpy_helper.to_array(weights["embed_tokens"])  # [vocab, hidden]
    vocab, hidden = table.shape
    if hidden % block_size:
        return proto  # blocks must tile the row for the gather's layout
    packed, scales, zero_points = _pack_blocks(table.T, EMBEDDING_BITS, block_size)
    blocks = hidden // block_size
    quantized = _add_blocks(  # packed, scales[, zero points]: GatherBlockQuantized's inputs 0, 2, 3
        proto, "embed_tokens", EMBEDDING_BITS, packed.reshape(vocab, hidden), scales.reshape(vocab, blocks),
        zero_points.reshape(vocab, blocks),
    )
    return _gather_blocks(proto, quantized, block_size, f"_Q{EMBEDDING_BITS}")


def _output_layer_blocks(proto: onnx.ModelProto, block_size: int) -> tuple[onnx.NodeProto, int, int] | None:
    """(the output layer's MatMulNBits, vocab, hidden) when its blocks are what the gather needs."""
    for node in proto.graph.node:
        if node.op_type == "MatMulNBits" and node.name.startswith("lm_head"):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs["bits"] == EMBEDDING_BITS and attrs["block_size"] == block_size and attrs["K"] % block_size == 0:
                return node, int(attrs["N"]), int(attrs["K"])
    return None


def _gather_from_output_layer(proto: onnx.ModelProto, lm_head: onnx.NodeProto, vocab: int, hidden: int,
                              block_size: int) -> onnx.ModelProto:
    # MatMulNBits keeps B as [N, blocks, block bytes] and scales / zero points flat; GatherBlockQuantized
    # wants [vocab, hidden bytes] and [vocab, blocks]: Reshape views of the same initializers.
    blocks = hidden // block_size
    shapes = [[vocab, hidden * EMBEDDING_BITS // 8], [vocab, blocks], [vocab, (blocks * EMBEDDING_BITS + 7) // 8]]
    reshapes, inputs = [], []
    for index, (name, shape) in enumerate(zip(lm_head.input[1:], shapes)):
        target = numpy_helper.from_array(np.array(shape, dtype=np.int64), f"embed_tokens_shape_{index}")
        proto.graph.initializer.append(target)
        inputs.append(f"embed_tokens_from_{name}")
        reshapes.append(helper.make_node("Reshape", [name, target.name], [inputs[-1]], name=f"embed_tokens_view_{index}"))
    return _gather_blocks(proto, inputs, block_size, f"_Q{EMBEDDING_BITS}_tied", before=reshapes)


def _gather_blocks(proto: onnx.ModelProto, blocks: list[str], block_size: int, suffix: str,
                   before: list[onnx.NodeProto] = ()) -> onnx.ModelProto:
    """The embedding `Gather` replaced by a `GatherBlockQuantized` reading `blocks` (packed, scales[, zero
    points]), after the nodes `before` that produce them; the float table is dropped."""
    nodes = []
    for node in proto.graph.node:
        if node.op_type == "Gather" and node.input[0] == "embed_tokens":
            nodes.extend(before)
            node = helper.make_node(
                "GatherBlockQuantized", [blocks[0], node.input[1], *blocks[1:]], list(node.output),
                name=f"{node.name}{suffix}", domain="com.microsoft",
                bits=EMBEDDING_BITS, block_size=block_size, gather_axis=0, quantize_axis=1,
            )
        nodes.append(node)
    _replace(proto, nodes, {"embed_tokens"})
    return proto


def _pack_blocks(w: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(packed [N, blocks, block bytes], scales [N * blocks], zero points) of a [K, N] weight, blocks along K.

    Packs with ONNX Runtime's own kernel helpers (`quantize_matmul_4bits/8bits`), the ones its
    MatMulNBitsQuantizer calls; that class needs the `onnx_ir` package, which is not a dependency here.
    """
    from onnxruntime.capi import _pybind_state

    k, n = w.shape
    blocks = (k + block_size - 1) // block_size
    packed = np.zeros((n, blocks, block_size * bits // 8), dtype=np.uint8)
    scales = np.zeros(n * blocks, dtype=w.dtype)
    zero_points = np.zeros(n * ((blocks * bits + 7) // 8), dtype=np.uint8)
    pack = getattr(_pybind_state, f"quantize_matmul_{bits}bits")
    pack(packed, np.ascontiguousarray(w), scales, zero_points, block_size, n, k, WEIGHT_ONLY_SYMMETRIC)
    return packed, scales, zero_points


def _add_blocks(proto: onnx.ModelProto, name: str, bits: int, packed, scales, zero_points) -> list[str]:
    """Add the quantized initializers; the names to feed (packed, scales[, zero points])."""
    names = [f"{name}_Q{bits}", f"{name}_scales"]
    proto.graph.initializer.extend([numpy_helper.from_array(packed, names[0]), numpy_helper.from_array(scales, names[1])])
    if not WEIGHT_ONLY_SYMMETRIC:
        names.append(f"{name}_zero_points")
        proto.graph.initializer.append(numpy_helper.from_array(zero_points, names[2]))
    return names


def _replace(proto: onnx.ModelProto, nodes: list, dropped_weights: set[str]) -> None:
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    kept = [t for t in proto.graph.initializer if t.name not in dropped_weights]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)


# Files


def _weight_bytes(proto: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in proto.graph.initializer)


def save_model(proto: onnx.ModelProto, path: Path) -> None:
    """Save; weights go to `<name>.data` beside it when the model is too big for one protobuf."""
    if _weight_bytes(proto) > EXTERNAL_DATA_LIMIT:
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, path)


def quantization_record(proto: onnx.ModelProto) -> dict | None:
    """What the quantized graph holds, read from its nodes (None for fp32/fp16): bits of the layers' MatMuls,
    of the output layer and of the embedding table, the block size, zero points, MatMulNBits accuracy level."""
    nodes = [n for n in proto.graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")]
    if not nodes:
        return None
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    role = lambda n: "embedding" if n.op_type == "GatherBlockQuantized" else "lm_head" if "lm_head" in n.name else "layers"
    bits = {}
    for node, attr in zip(nodes, attrs):
        bits.setdefault(role(node), set()).add(int(attr["bits"]))
    levels = {int(a["accuracy_level"]) for n, a in zip(nodes, attrs) if n.op_type == "MatMulNBits"}
    return {
        "scheme": "weight-only blocks (MatMulNBits, GatherBlockQuantized)",
        "bits": {name: min(values) if len(values) == 1 else sorted(values) for name, values in bits.items()},
        "block_size": int(attrs[0]["block_size"]),
        "zero_points": all(len(n.input) > 3 and n.input[3] for n in nodes),
        "embedding_shares_output_layer": any(n.name.endswith("_tied") for n in nodes),
        "accuracy_level": levels.pop() if len(levels) == 1 else sorted(levels),
    }


def _write_config(folder: Path, model, shape: LlamaShape, quant: str, block_size: int, graph_dtype: str,
                  export_device: str, quantization: dict | None, chat_format: str, provenance: dict) -> None:
    generation = getattr(model, "generation_config", None)
    eos = model.config.eos_token_id
    eos_ids = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []),
                      *_as_list(getattr(generation, "eos_token_id", None))})
    config = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "architecture": "llama", "model_file": MODEL_FILE,
        "layers": shape.layers, "hidden_size": shape.hidden, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads, "head_dim": shape.head_dim, "vocab_size": shape.vocab,
        "max_position_embeddings": int(model.config.max_position_embeddings or 0),
        "kv_layout": {"past": "past_key_values.{layer}.{key|value}", "present": "present.{layer}.{key|value}",
                      "shape": "batch, kv_heads, sequence, head_dim",
                      "padding": "right; row b holds sum(attention_mask[b]) tokens after a step",
                      "shared_buffer": "bind past and present to one [batch, kv_heads, capacity, head_dim] "
                                       "buffer to append in place; or feed present back as past to grow it"},
        "rotary_positions": min(int(model.config.max_position_embeddings or 4096), ROTARY_CACHE_LIMIT),
        "precision": quant, "kv_dtype": "float16" if graph_dtype == "fp16" else "float32",
        "export_device": export_device,
        "block_size": block_size if quant in ("int4", "int8") else None,
        "accuracy_level": quantization["accuracy_level"] if quantization else None,
        "quantization": quantization,
        "bos_token_id": model.config.bos_token_id, "eos_token_ids": eos_ids,
        "chat_template": folder_chat_template(folder), "chat_format": chat_format,
        "provenance": provenance,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False), "utf-8")


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
