"""How a Hugging Face `LlamaForCausalLM` maps onto llama.cpp's `llama` architecture: hyper-parameters,
tensor names, expected shapes and the Q/K row permutation, described as data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bayling_local.errors import InvalidModelFileError

# Tensors the converter drops on purpose: rotary caches some old checkpoints saved.
IGNORED_TENSORS = re.compile(r".*\.rotary_emb\.inv_freq$")


@dataclass(frozen=True)
class LlamaHyperParameters:
    """The numbers llama.cpp needs, read from config.json (old and transformers-5 spellings)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    block_count: int
    head_count: int
    head_count_kv: int
    head_dim: int
    context_length: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config: dict) -> LlamaHyperParameters:
        try:
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
            return cls(
                vocab_size=int(config["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(config["intermediate_size"]),
                block_count=int(config["num_hidden_layers"]),
                head_count=heads,
                head_count_kv=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                context_length=int(config.get("max_position_embeddings") or 2048),
                rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0),
                rope_scaling=rope,
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidModelFileError(f"config.json lacks or garbles a Llama hyper-parameter ({error!r})") from error

    @property
    def rope_type(self) -> str:
        return str(self.rope_scaling.get("rope_type") or self.rope_scaling.get("type") or "default")

    def check_supported(self, config: dict) -> None:
        if config.get("attention_bias") or config.get("mlp_bias"):
            raise InvalidModelFileError("config.json sets attention_bias/mlp_bias; convert supports bias-free Llama only")
        if self.rope_type not in ROPE_WRITERS:
            raise InvalidModelFileError(
                f"RoPE scaling '{self.rope_type}' is not supported; convert handles: {', '.join(ROPE_WRITERS)}"
            )
        if self.head_count % self.head_count_kv:
            raise InvalidModelFileError(
                f"config.json has {self.head_count} attention heads, not a multiple of {self.head_count_kv} KV heads"
            )


def _rope_none(writer, hp: LlamaHyperParameters) -> None:
    return None


def _rope_linear(writer, hp: LlamaHyperParameters) -> None:
    import gguf

    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(float(hp.rope_scaling["factor"]))


# rope type -> what it writes besides llama.rope.freq_base. Llama-3.1's `llama3` rope becomes a
# `rope_freqs` tensor (see llama3_rope_factors), the way llama.cpp's own converter writes it.
ROPE_WRITERS = {"default": _rope_none, "linear": _rope_linear, "llama3": _rope_none}


def llama3_rope_factors(hp: LlamaHyperParameters) -> np.ndarray:
    """Per-frequency divisors of Llama-3.1's rope scaling (Meta's reference implementation)."""
    rope = hp.rope_scaling
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    original = int(rope.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim))
    wavelen = 2 * np.pi / freqs
    low_wavelen, high_wavelen = original / low, original / high
    smooth = (original / wavelen - low) / (high - low)
    factors = np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, factor, 1.0 / ((1 - smooth) / factor + smooth)))
    return factors.astype(np.float32)


@dataclass(frozen=True)
class TensorRule:
    """One HF tensor name pattern: its GGUF name, expected shape and row permutation."""

    hf: str
    gguf: str
    shape: Callable[[LlamaHyperParameters], tuple[int, ...]]
    """The shape config.json implies, e.g. `lambda hp: (hp.head_count * hp.head_dim, hp.hidden_size)`."""
    permute_heads: str | None = None
    """`head_count` or `head_count_kv`: the rows are grouped by head and reordered for llama.cpp."""


TENSOR_RULES: tuple[TensorRule, ...] = (
    TensorRule("model.embed_tokens.weight", "token_embd.weight", lambda hp: (hp.vocab_size, hp.hidden_size)),
    TensorRule("model.norm.weight", "output_norm.weight", lambda hp: (hp.hidden_size,)),
    TensorRule("lm_head.weight", "output.weight", lambda hp: (hp.vocab_size, hp.hidden_size)),
    TensorRule("model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight", lambda hp: (hp.hidden_size,)),
    TensorRule("model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q.weight",
               lambda hp: (hp.head_count * hp.head_dim, hp.hidden_size), permute_heads="head_count"),
    TensorRule("model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k.weight",
               lambda hp: (hp.head_count_kv * hp.head_dim, hp.hidden_size), permute_heads="head_count_kv"),
    TensorRule("model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight",
               lambda hp: (hp.head_count_kv * hp.head_dim, hp.hidden_size)),
    TensorRule("model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight",
               lambda hp: (hp.hidden_size, hp.head_count * hp.head_dim)),
    TensorRule("model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight", lambda hp: (hp.hidden_size,)),
    TensorRule("model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight", lambda hp: (hp.intermediate_size, hp.hidden_size)),
    TensorRule("model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight", lambda hp: (hp.intermediate_size, hp.hidden_size)),
    TensorRule("model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight", lambda hp: (hp.hidden_size, hp.intermediate_size)),
)


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: where it comes from and how its rows are ordered."""

    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]
    row_order: np.ndarray | None = None
    """Output row r is input row row_order[r]; None keeps the order."""


def plan_tensors(hp: LlamaHyperParameters, names: set[str], shapes: dict[str, tuple[int, ...]]) -> list[TensorPlan]:
    """Every output tensor in llama.cpp order; refuses unknown, missing or mis-shaped tensors."""
    expected = _expected_tensors(hp, names)
    unknown = sorted(n for n in names - set(expected) if not IGNORED_TENSORS.match(n) and n != "lm_head.weight")
    if unknown:
        raise InvalidModelFileError(
            f"the checkpoint has a tensor '{unknown[0]}' that a {hp.block_count}-layer LlamaForCausalLM "
            "does not; is config.json from the same model?"
        )
    plans = []
    for hf_name, (rule, gguf_name) in expected.items():
        if hf_name not in names:
            raise InvalidModelFileError(f"the checkpoint lacks the tensor '{hf_name}'; a shard may be missing")
        shape = rule.shape(hp)
        if tuple(shapes[hf_name]) != shape:
            raise InvalidModelFileError(
                f"tensor '{hf_name}' has shape {tuple(shapes[hf_name])}, but config.json implies {shape}"
            )
        order = qk_row_order(shape[0], getattr(hp, rule.permute_heads)) if rule.permute_heads else None
        plans.append(TensorPlan(hf_name, gguf_name, shape, order))
    return plans


def _expected_tensors(hp: LlamaHyperParameters, names: set[str]) -> dict[str, tuple[TensorRule, str]]:
    expected: dict[str, tuple[TensorRule, str]] = {}
    for rule in TENSOR_RULES:
        if rule.hf == "lm_head.weight" and hp.tied_embeddings:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        layers = range(hp.block_count) if "{i}" in rule.hf else [None]
        for i in layers:
            expected[rule.hf.format(i=i)] = (rule, rule.gguf.format(i=i))
    return expected


def qk_row_order(rows: int, heads: int) -> np.ndarray:
    """The row permutation llama.cpp expects for Q and K.

    Hugging Face stores each head's rotary pairs as two halves (x0..x63 | x64..x127, `rotate_half`);
    llama.cpp's RoPE rotates interleaved pairs (x0,x1), (x2,x3). Within each head, output row 2j is
    input row j and row 2j+1 is input row j + head_dim/2 (llama.cpp's convert_hf_to_gguf `permute`).
    """
    head_dim = rows // heads
    index = np.arange(rows).reshape(heads, 2, head_dim // 2)
    return index.swapaxes(1, 2).reshape(rows)
