"""Export a Llama checkpoint to an ONNX decoder with a KV cache, and quantize it (fp32/fp16/int8/int4).

Route: the graph is written directly with `onnx.helper` from the checkpoint's config, not traced. The
torch exporters follow transformers' cache classes, which change between releases (optimum-onnx pins
transformers < 4.58), and a trace yields ~50 small ops per layer; writing the graph is shorter than
patching a trace and uses ONNX Runtime's fused kernels directly: `GroupQueryAttention` (rotary, causal
mask, GQA, KV cache appended in place), `SkipSimplifiedLayerNormalization` (residual + RMSNorm) and
`MatMul`s by constant weights, or `MatMulNBits` weight-only 8-bit (int8) or 4-bit (int4) blocks.
One graph serves prompt and next token: `past_key_values.N.key/value` [batch, kv_heads, past, head_dim] in,
`present.N.key/value` out; `attention_mask` says how many tokens each (right-padded) row holds;
`num_logits_to_keep` (0 = all).

Memory: the model is never loaded. Weights stream from the memory-mapped shards a few rows at a time into
`model.onnx.data` (`onnx_weights.py`), transposed or packed into blocks as they go, as the GGUF writer
streams them; an export whose weights fit one protobuf is folded into `model.onnx` at the end.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from bayling_local.backends.onnxrt import CONFIG_FILE, FORMAT_NAME, FORMAT_VERSION
from bayling_local.convert.checkpoint import Checkpoint, open_checkpoint
from bayling_local.convert.llama_layout import LlamaHyperParameters, plan_tensors
from bayling_local.convert.onnx_rewrite import quantize_embedding, quantize_weight_only  # noqa: F401 (benchmarks)
from bayling_local.convert.onnx_weights import (
    ACCURACY_LEVEL,
    EMBEDDING_BITS,
    ExternalData,
    block_names,
    save_inline,
)
from bayling_local.convert.pipeline import checkpoint_provenance, resolve_chat_format
from bayling_local.errors import UsageError
from bayling_local.prompts import folder_chat_template

ONNX_QUANTS = ("fp32", "fp16", "int8", "int4")
QUANT_ALIASES = {"f32": "fp32", "f16": "fp16"}
"""The GGUF spellings of the float types `--quant` also takes."""
BLOCK_SIZES = (32, 64, 128)
OPSET = 17
MODEL_FILE = "model.onnx"
DATA_FILE = MODEL_FILE + ".data"
EXTERNAL_DATA_LIMIT = 1_800_000_000
"""Bytes of weights above which they stay in `model.onnx.data` (protobuf caps one message at 2 GB)."""
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "chat_template.jinja", "added_tokens.json",
)
OUTPUT_BITS = (4, 8)
"""Bits of the output layer (lm_head) an int4 export can take. 4, the default, is what the ONNX Runtime GenAI
builder ships; 8 puts less error on the logits (llama.cpp's Q4_0 keeps `output.weight` at Q6_K for that) and
costs decode time where the vocabulary is a large part of the model. Measured on SmolLM2-135M (49k x 576
output layer, a fifth of its weights), AMD EPYC AVX-512 VNNI, 2 threads, symmetric blocks: 4 bits decode
146 tok/s at KL 0.56 to fp32, 8 bits 136 tok/s at KL 0.49 (the builder's int4: 137 tok/s at KL 0.62).
On an 8B model the output layer is 6% of the weights, so the speed difference shrinks."""
ROTARY_CACHE_LIMIT = 131_072
"""Positions the cos/sin tables cover at most (8 MB per 16k positions at head_dim 128, float32)."""


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

    @classmethod
    def of(cls, hp: LlamaHyperParameters) -> LlamaShape:
        return cls(layers=hp.block_count, hidden=hp.hidden_size, heads=hp.head_count, kv_heads=hp.head_count_kv,
                   head_dim=hp.head_dim, vocab=hp.vocab_size, rms_eps=hp.rms_norm_eps)


@dataclass(frozen=True)
class CheckpointFacts:
    """What the export takes from the checkpoint's configs, read through transformers so that its defaults
    (a Llama config without `eos_token_id` means 2) and its rotary frequencies are the reference's."""

    max_position_embeddings: int
    bos_token_id: int | None
    eos_token_ids: list[int]
    inv_freq: np.ndarray
    """Rotary inverse frequencies, any rope scaling applied (transformers' LlamaRotaryEmbedding)."""
    attention_scaling: float

    @property
    def rotary_positions(self) -> int:
        return min(self.max_position_embeddings or 4096, ROTARY_CACHE_LIMIT)


@dataclass(frozen=True)
class WeightFormat:
    """How the export stores matrices: float (`MatMul`), or weight-only blocks (`MatMulNBits`)."""

    quant: str
    block_size: int
    output_bits: int = 4
    """int4 only: the output layer's bits (`OUTPUT_BITS`)."""

    def matmul_bits(self, name: str) -> int | None:
        """Block bits of the MatMul `name`; None keeps it float."""
        if self.quant == "int8":
            return 8
        if self.quant == "int4":
            return self.output_bits if name == "lm_head" else 4
        return None

    def embedding(self, hidden: int, tied: bool) -> str:
        """`float` (a Gather of the table), `blocks` (its own 8-bit blocks) or `shared` (a tied table read
        from the output layer's 8-bit blocks: one copy on disk, SmolLM2-135M int4 136 -> 103 MB)."""
        if self.matmul_bits("lm_head") is None or hidden % self.block_size:
            return "float"  # blocks must tile the row for the gather's layout
        if tied and self.matmul_bits("lm_head") == EMBEDDING_BITS:
            return "shared"
        return "blocks"


def to_onnx(checkpoint: Path, out: Path, quant: str = "fp32", block_size: int = 32, export_device: str = "cpu",
            chat_format: str | None = None, output_bits: int = 4) -> Path:
    """Write an ONNX decoder folder for the Llama checkpoint `checkpoint` at `quant`; returns `out`.

    `export_device` is where the model will run: `cuda` builds int4 with float16 activations and cache
    (ONNX Runtime's CUDA GroupQueryAttention takes float16/bfloat16 only), `cpu` with float32. The
    export itself reads the weights on the CPU. `chat_format` (default: the catalog's or the one the
    checkpoint's template matches, as for GGUF) is recorded in bayling_onnx.json. `output_bits` (int4
    only) is the output layer's: 4 or 8 (`OUTPUT_BITS`).
    """
    quant = QUANT_ALIASES.get(quant, quant)
    _check_options(quant, block_size, export_device, output_bits)
    checkpoint, out = Path(checkpoint), Path(out)
    source, hp = _open_source(checkpoint)
    format_id = resolve_chat_format(chat_format, out.name, checkpoint, source)
    facts = read_checkpoint_facts(checkpoint)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        graph_dtype = "fp16" if quant == "fp16" or export_device == "cuda" else "fp32"
        with ExternalData(staging / DATA_FILE) as data:
            proto = build_decoder(source, hp, facts, data, graph_dtype, WeightFormat(quant, block_size, output_bits))
        save_streamed_model(proto, staging / MODEL_FILE, data)
        for file in _tokenizer_files(checkpoint):
            shutil.copy(file, staging / file.name)
        _write_config(staging, facts, LlamaShape.of(hp), quant, block_size, graph_dtype, export_device,
                      quantization_record(proto), format_id, export_provenance(source, quant))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def _check_options(quant: str, block_size: int, export_device: str, output_bits: int = 4) -> None:
    if quant not in ONNX_QUANTS:
        raise UsageError(f"--quant {quant} is not an ONNX precision; use one of {', '.join(ONNX_QUANTS)}")
    if output_bits not in OUTPUT_BITS:
        raise UsageError(f"--output-bits must be one of {OUTPUT_BITS}, not {output_bits}")
    if output_bits != 4 and quant != "int4":
        raise UsageError(f"--output-bits applies to --quant int4 only (--quant {quant} sets every layer's type)")
    if block_size not in BLOCK_SIZES:
        raise UsageError(f"--block-size must be one of {BLOCK_SIZES}, not {block_size}")
    if export_device not in ("cpu", "cuda"):
        raise UsageError(f"--export-device must be cpu or cuda, not {export_device}")
    if export_device == "cuda" and quant in ("fp32", "int8"):
        raise UsageError(
            f"--quant {quant} is a CPU format (float32 activations; CUDA attention needs float16); "
            "for --export-device cuda use fp16 or int4"
        )


def _open_source(checkpoint: Path) -> tuple[Checkpoint, LlamaHyperParameters]:
    """The checkpoint, checked before anything is written with the GGUF converter's own checks (files,
    architecture, bias, RoPE type, every tensor's name and shape): the graph bakes the rotary tables at
    export, so a `dynamic` RoPE, which rescales with the sequence length, would be silently wrong. Pickled
    weights are allowed: they are read as transformers reads them, with `weights_only`."""
    source = open_checkpoint(checkpoint, allow_pickle=True)
    hp = LlamaHyperParameters.from_config(source.config)
    hp.check_supported(source.config)
    plan_tensors(hp, set(source.tensors), {name: t.shape for name, t in source.tensors.items()})
    return source, hp


def read_checkpoint_facts(checkpoint: Path) -> CheckpointFacts:
    """The config values and rotary frequencies of the checkpoint, as transformers would load them."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig.from_pretrained(checkpoint, local_files_only=True)
    rotary = LlamaRotaryEmbedding(config)  # a few hundred floats; the model itself is never built
    generation = checkpoint / "generation_config.json"
    generation_eos = json.loads(generation.read_text("utf-8")).get("eos_token_id") if generation.is_file() else None
    return CheckpointFacts(
        max_position_embeddings=int(config.max_position_embeddings or 0),
        bos_token_id=config.bos_token_id,
        eos_token_ids=sorted({*_as_list(config.eos_token_id), *_as_list(generation_eos)}),
        inv_freq=rotary.inv_freq.detach().double().numpy(),
        attention_scaling=float(getattr(rotary, "attention_scaling", 1.0)),
    )


def export_provenance(source: Checkpoint, quant: str) -> dict:
    """Where an export came from, as a GGUF records it (`general.source.sha256`, quantized_by, date)."""
    origin = checkpoint_provenance(source)
    return {
        "checkpoint": origin.source, "sha256": origin.sha256, "tool": origin.tool, "quant": quant,
        "date": origin.date, "exporter": "bayling-local convert/onnx.py", "opset": OPSET,
    }


def _tokenizer_files(checkpoint: Path) -> list[Path]:
    return [checkpoint / n for n in TOKENIZER_FILES if (checkpoint / n).is_file()]


# Graph


class _Builder:
    """Collects nodes with unique names; initializers go to the external data as they are made."""

    def __init__(self, float_type: int, data: ExternalData, weights: WeightFormat):
        self.nodes: list[onnx.NodeProto] = []
        self.data = data
        self.weights = weights
        self.float_type = float_type
        self.np_float = np.float16 if float_type == TensorProto.FLOAT16 else np.float32
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, inputs: list[str], name_hint: str = "", outputs: int | list[str] = 1, **attrs):
        base = self.name(name_hint or op_type)
        names = outputs if isinstance(outputs, list) else [f"{base}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=base, **attrs))
        return names[0] if len(names) == 1 else names

    def weight(self, name: str, array: np.ndarray, as_float: bool = True) -> str:
        """A small array computed here (norm weights, rotary tables, constants)."""
        return self.data.add(name, array.astype(self.np_float) if as_float else array)

    def const(self, values, dtype=np.int64) -> str:
        self._count += 1
        return self.weight(f"const_{self._count}", np.asarray(values, dtype=dtype), as_float=False)


def build_decoder(source: Checkpoint, hp: LlamaHyperParameters, facts: CheckpointFacts, data: ExternalData,
                  dtype: str = "fp32", weights: WeightFormat = WeightFormat("fp32", 32)) -> onnx.ModelProto:
    """The ONNX graph of the checkpoint's LlamaForCausalLM, its weights streamed into `data`.

    Per layer: packed QKV MatMul -> `GroupQueryAttention` (rotary, causal mask, GQA and the KV cache in one
    kernel) -> o_proj -> `SkipSimplifiedLayerNormalization` (residual add + RMSNorm) -> SwiGLU MLP (gate and
    up packed in one MatMul) -> the next layer's fused residual + norm. About 12 nodes per layer instead of
    ~50 unfused ones.
    """
    shape = LlamaShape.of(hp)
    float_type = TensorProto.FLOAT16 if dtype == "fp16" else TensorProto.FLOAT
    b = _Builder(float_type, data, weights)
    inputs, outputs = _io(shape, float_type)
    embed = source.tensors["model.embed_tokens.weight"]
    # llama.cpp and transformers read a tied output layer from the embedding table
    lm_head = embed if hp.tied_embeddings else source.tensors["lm_head.weight"]
    x = _embedding(b, embed, shape.hidden, tied=hp.tied_embeddings)
    lengths = _sequence_lengths(b)
    rotary = _rotary_caches(b, facts)
    norms = [f"model.layers.{i}.input_layernorm.weight" for i in range(shape.layers)] + ["model.norm.weight"]
    h = b.op("SimplifiedLayerNormalization", [x, b.weight(norms[0], _read(source, norms[0]))], "input_norm_0",
             axis=-1, epsilon=shape.rms_eps, stash_type=1)
    for i in range(shape.layers):
        h, x = _layer(b, source, shape, i, h, x, lengths, rotary, norms[i + 1])
    # Logits of the last `num_logits_to_keep` positions (0: all): a prompt's next token needs one row,
    # and the [sequence, vocab] product for the rest is most of a long prompt's cost.
    h = b.op("Slice", [h, b.op("Neg", ["num_logits_to_keep"]), b.const([np.iinfo(np.int64).max]), b.const([1])],
             "keep_last")
    logits = _matmul(b, h, "lm_head", "lm_head", [lm_head])
    if float_type != TensorProto.FLOAT:
        logits = b.op("Cast", [logits], "logits_cast", to=TensorProto.FLOAT)
    b.op("Identity", [logits], outputs=["logits"])
    graph = helper.make_graph(b.nodes, "llama_decoder", inputs, outputs, data.initializers)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="bayling-local",
    )
    proto.ir_version = 8
    return proto


def _read(source: Checkpoint, name: str) -> np.ndarray:
    return source.tensors[name].read()


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


def _embedding(b: _Builder, table, hidden: int, tied: bool) -> str:
    """The token embeddings of `input_ids`: a Gather of the float table, or a `GatherBlockQuantized` of
    8-bit blocks (its own, or a tied table's view of the output layer's)."""
    mode = b.weights.embedding(hidden, tied)
    base = b.name("embed")
    output = f"{base}_out0"
    if mode == "float":
        b.nodes.append(helper.make_node("Gather", [b.data.add_rows("embed_tokens", table, b.np_float), "input_ids"],
                                        [output], name=base))
        return output
    if mode == "blocks":
        blocks = b.data.add_blocks("embed_tokens", [table], b.np_float, EMBEDDING_BITS, b.weights.block_size,
                                   gather_layout=True)
    else:
        blocks = _output_layer_views(b, table.rows, hidden)
    b.nodes.append(helper.make_node(
        "GatherBlockQuantized", [blocks[0], "input_ids", *blocks[1:]], [output],
        name=f"{base}_Q{EMBEDDING_BITS}" + ("_tied" if mode == "shared" else ""), domain="com.microsoft",
        bits=EMBEDDING_BITS, block_size=b.weights.block_size, gather_axis=0, quantize_axis=1,
    ))
    return output


def _output_layer_views(b: _Builder, vocab: int, hidden: int) -> list[str]:
    # MatMulNBits keeps B as [N, blocks, block bytes] and scales / zero points flat; GatherBlockQuantized
    # wants [vocab, hidden bytes] and [vocab, blocks]: Reshape views of the same initializers (written
    # with the output layer at the end of the graph).
    blocks = hidden // b.weights.block_size
    shapes = [[vocab, hidden * EMBEDDING_BITS // 8], [vocab, blocks], [vocab, (blocks * EMBEDDING_BITS + 7) // 8]]
    views = []
    for index, (name, shape) in enumerate(zip(block_names("lm_head", EMBEDDING_BITS), shapes)):
        target = b.data.add(f"embed_tokens_shape_{index}", np.array(shape, dtype=np.int64))
        views.append(f"embed_tokens_from_{name}")
        b.nodes.append(helper.make_node("Reshape", [name, target], [views[-1]], name=f"embed_tokens_view_{index}"))
    return views


def _matmul(b: _Builder, x: str, weight: str, hint: str, parts: list) -> str:
    """x times the [K, N] weight made of the checkpoint tensors `parts` ([n_i, K] each, side by side):
    a float `MatMul`, or a weight-only `MatMulNBits` when the format puts this weight in blocks."""
    bits = b.weights.matmul_bits(hint)
    base = b.name(hint)
    output = f"{base}_out0"
    if bits is None:
        b.nodes.append(helper.make_node("MatMul", [x, b.data.add_transposed(weight, parts, b.np_float)], [output],
                                        name=base))
        return output
    k, n = parts[0].row_width, sum(p.rows for p in parts)
    blocks = b.data.add_blocks(weight, parts, b.np_float, bits, b.weights.block_size)
    b.nodes.append(helper.make_node(
        "MatMulNBits", [x, *blocks], [output], name=f"{base}_Q{bits}", domain="com.microsoft",
        K=k, N=n, bits=bits, block_size=b.weights.block_size, accuracy_level=ACCURACY_LEVEL,
    ))
    return output


def _sequence_lengths(b: _Builder) -> tuple[str, str]:
    """GroupQueryAttention's `seqlens_k` (each row's valid tokens - 1) and `total_sequence_length` from the
    attention mask: row b's cache holds sum(mask[b]) tokens after this step, right-padded."""
    valid = b.op("ReduceSum", ["attention_mask", b.const([1])], "valid_tokens", keepdims=0)
    seqlens_k = b.op("Cast", [b.op("Sub", [valid, b.const(1)])], "seqlens_k", to=TensorProto.INT32)
    total = b.op("Gather", [b.op("Shape", ["attention_mask"]), b.const(1)])
    return seqlens_k, b.op("Cast", [total], "total_sequence_length", to=TensorProto.INT32)


def _rotary_caches(b: _Builder, facts: CheckpointFacts) -> tuple[str, str]:
    """cos and sin tables [positions, head_dim / 2] from the checkpoint's own inv_freq (any rope scaling
    transformers applies is in it) and attention scaling."""
    # float32 products, as transformers computes them, so the angles round the same way
    angles = np.outer(np.arange(facts.rotary_positions, dtype=np.float32), facts.inv_freq.astype(np.float32))
    cos = (np.cos(angles.astype(np.float32)) * facts.attention_scaling).astype(np.float32)
    sin = (np.sin(angles.astype(np.float32)) * facts.attention_scaling).astype(np.float32)
    return b.weight("cos_cache", cos), b.weight("sin_cache", sin)


def _linear(b: _Builder, x: str, source: Checkpoint, key: str) -> str:
    return _matmul(b, x, key, key.replace(".", "_"), [source.tensors[key + ".weight"]])


def _residual_norm(b: _Builder, x: str, residual: str, weight: np.ndarray, key: str, eps: float) -> tuple[str, str]:
    """(RMSNorm(x + residual), x + residual) in one SkipSimplifiedLayerNormalization."""
    out, total = f"{key}_normed", f"{key}_residual"
    b.nodes.append(helper.make_node(
        "SkipSimplifiedLayerNormalization", [x, residual, b.weight(key, weight)], [out, "", "", total],
        name=f"{key}_skip_norm", domain="com.microsoft", epsilon=eps,
    ))
    return out, total


def _layer(b: _Builder, source: Checkpoint, shape: LlamaShape, i: int, h: str, x: str, lengths, rotary,
           next_norm: str):
    """One decoder layer from its normed input `h` and residual stream `x`; returns the next pair."""
    p = f"model.layers.{i}"
    # One MatMul by [hidden, (heads + 2 kv_heads) * head_dim] feeds GroupQueryAttention's packed input.
    qkv_parts = [source.tensors[f"{p}.self_attn.{n}_proj.weight"] for n in ("q", "k", "v")]
    qkv = _matmul(b, h, f"{p}.self_attn.qkv_proj", f"{p}_qkv_proj", qkv_parts)
    attn = b.op(
        "GroupQueryAttention",
        [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", *lengths, *rotary],
        f"{p}_attention", outputs=[f"{p}_attention_out", f"present.{i}.key", f"present.{i}.value"],
        domain="com.microsoft", num_heads=shape.heads, kv_num_heads=shape.kv_heads, do_rotary=1,
        rotary_interleaved=0, scale=float(1.0 / np.sqrt(shape.head_dim)),
    )[0]
    o = _linear(b, attn, source, f"{p}.self_attn.o_proj")
    key = f"{p}.post_attention_layernorm.weight"
    h, x = _residual_norm(b, o, x, _read(source, key), key, shape.rms_eps)
    # gate and up as one MatMul by [hidden, 2 * intermediate], split after: one kernel launch fewer per
    # layer, the same logits (SmolLM2-135M int4: 2-3% faster decode at 2 threads, nothing at 1;
    # `benchmarks/onnx_int4_profile.py --variants shipped,apart`).
    gate_up_parts = [source.tensors[f"{p}.mlp.{n}_proj.weight"] for n in ("gate", "up")]
    gate_up = _matmul(b, h, f"{p}.mlp.gate_up_proj", f"{p}_gate_up_proj", gate_up_parts)
    sizes = b.const([part.rows for part in gate_up_parts])
    gate, up = b.op("Split", [gate_up, sizes], f"{p}_gate_up_split", outputs=2, axis=-1)
    act = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
    down = _linear(b, act, source, f"{p}.mlp.down_proj")
    return _residual_norm(b, down, x, _read(source, next_norm), next_norm, shape.rms_eps)


# Files


def save_streamed_model(proto: onnx.ModelProto, path: Path, data: ExternalData) -> None:
    """Save the graph beside its external data; weights small enough for one protobuf are copied into it
    chunk by chunk (one file, as before streaming) and the data file is removed."""
    if data.size > EXTERNAL_DATA_LIMIT:
        onnx.save_model(proto, path)
        return
    save_inline(proto, path, data.path)
    data.path.unlink()


def save_model(proto: onnx.ModelProto, path: Path) -> None:
    """Save a graph held in memory; weights go to `<name>.data` beside it when too big for one protobuf."""
    if sum(len(t.raw_data) for t in proto.graph.initializer) > EXTERNAL_DATA_LIMIT:
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


def _write_config(folder: Path, facts: CheckpointFacts, shape: LlamaShape, quant: str, block_size: int,
                  graph_dtype: str, export_device: str, quantization: dict | None, chat_format: str,
                  provenance: dict) -> None:
    config = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "architecture": "llama", "model_file": MODEL_FILE,
        "layers": shape.layers, "hidden_size": shape.hidden, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads, "head_dim": shape.head_dim, "vocab_size": shape.vocab,
        "max_position_embeddings": facts.max_position_embeddings,
        "kv_layout": {"past": "past_key_values.{layer}.{key|value}", "present": "present.{layer}.{key|value}",
                      "shape": "batch, kv_heads, sequence, head_dim",
                      "padding": "right; row b holds sum(attention_mask[b]) tokens after a step",
                      "shared_buffer": "bind past and present to one [batch, kv_heads, capacity, head_dim] "
                                       "buffer to append in place; or feed present back as past to grow it"},
        "rotary_positions": facts.rotary_positions,
        "precision": quant, "kv_dtype": "float16" if graph_dtype == "fp16" else "float32",
        "export_device": export_device,
        "block_size": block_size if quant in ("int4", "int8") else None,
        "accuracy_level": quantization["accuracy_level"] if quantization else None,
        "quantization": quantization,
        "bos_token_id": facts.bos_token_id, "eos_token_ids": facts.eos_token_ids,
        "chat_template": folder_chat_template(folder), "chat_format": chat_format,
        "provenance": provenance,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False), "utf-8")


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
