"""In-memory rewrites of a loaded ONNX graph into weight-only blocks (`MatMulNBits`, `GatherBlockQuantized`).

The exporter writes blocks directly as it streams the checkpoint (`onnx_weights.py`); these rewrite a graph
that is already in memory, for small models only: `benchmarks/onnx_avx2_check.py` rebuilds the int8 export
of an older release with them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bayling_local.convert.onnx_weights import (
    ACCURACY_LEVEL,
    EMBEDDING_BITS,
    WEIGHT_ONLY_SYMMETRIC,
    block_names,
    pack_blocks,
)


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
        inputs = [node.input[0], *_add_blocks(proto, tensor.name, bits, *pack_blocks(w, bits, block_size))]
        replaced.add(tensor.name)
        nodes.append(helper.make_node(
            "MatMulNBits", inputs, list(node.output), name=f"{node.name}_Q{bits}", domain="com.microsoft",
            K=k, N=n, bits=bits, block_size=block_size, accuracy_level=accuracy_level,
        ))
    _replace(proto, nodes, replaced)
    return proto


def quantize_embedding(proto: onnx.ModelProto, block_size: int = 32) -> onnx.ModelProto:
    """The token embedding `Gather` of `embed_tokens` as a `GatherBlockQuantized` of 8-bit blocks."""
    weights = {t.name: t for t in proto.graph.initializer}
    table = numpy_helper.to_array(weights["embed_tokens"])  # [vocab, hidden]
    vocab, hidden = table.shape
    if hidden % block_size:
        return proto  # blocks must tile the row for the gather's layout
    packed, scales, zero_points = pack_blocks(table.T, EMBEDDING_BITS, block_size)
    blocks = hidden // block_size
    quantized = _add_blocks(proto, "embed_tokens", EMBEDDING_BITS, packed.reshape(vocab, hidden),
                            scales.reshape(vocab, blocks), zero_points.reshape(vocab, blocks))
    nodes = []
    for node in proto.graph.node:
        if node.op_type == "Gather" and node.input[0] == "embed_tokens":
            node = helper.make_node(
                "GatherBlockQuantized", [quantized[0], node.input[1], *quantized[1:]], list(node.output),
                name=f"{node.name}_Q{EMBEDDING_BITS}", domain="com.microsoft",
                bits=EMBEDDING_BITS, block_size=block_size, gather_axis=0, quantize_axis=1,
            )
        nodes.append(node)
    _replace(proto, nodes, {"embed_tokens"})
    return proto


def _add_blocks(proto: onnx.ModelProto, name: str, bits: int, packed, scales, zero_points) -> list[str]:
    names = block_names(name, bits)
    arrays = [packed, scales] if WEIGHT_ONLY_SYMMETRIC else [packed, scales, zero_points]
    proto.graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(a), n) for a, n in zip(arrays, names))
    return names


def _replace(proto: onnx.ModelProto, nodes: list, dropped_weights: set[str]) -> None:
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    kept = [t for t in proto.graph.initializer if t.name not in dropped_weights]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
