"""The ONNX export streams its weights (`convert/onnx_weights.py`): weights written in row chunks are what
onnx and ONNX Runtime read, and an export never holds a whole weight matrix in memory."""

from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bayling_local.backends.base import LoadOptions
from bayling_local.backends.onnxrt import OnnxRuntimeBackend
from bayling_local.convert.checkpoint import open_checkpoint
from bayling_local.convert.onnx import to_onnx
from bayling_local.convert.onnx_weights import ExternalData, pack_blocks
from tests.conftest import write_tiny_llama


@pytest.fixture(scope="module")
def llama3_tokenizer_dir(tmp_path_factory, llama3_tokenizer_path):
    folder = tmp_path_factory.mktemp("llama3-tok")
    shutil.copy(llama3_tokenizer_path, folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def wide_vocab_checkpoint(tmp_path_factory, llama3_tokenizer_dir):
    """A 2-layer Llama with Llama-3's 128,256-token vocabulary at hidden 128: each of the embedding table
    and the output layer is 66 MB of float32, larger than anything the export may hold at once."""
    return write_tiny_llama(tmp_path_factory.mktemp("wide") / "ckpt", llama3_tokenizer_dir, hidden=128, ffn=256)


def _initializers(model_file) -> dict[str, np.ndarray]:
    """Every initializer as onnx itself reads it (external data resolved beside the model)."""
    graph = onnx.load(str(model_file)).graph
    return {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}


def _save(data: ExternalData, folder):
    from onnx import TensorProto, helper

    graph = helper.make_graph([], "weights", [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              data.initializers)
    onnx.save_model(helper.make_model(graph), folder / "weights.onnx")
    return folder / "weights.onnx"


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_transposed_weights_written_in_row_chunks_read_back_as_the_whole_transpose(
        wide_vocab_checkpoint, tmp_path, monkeypatch, dtype):
    import bayling_local.convert.onnx_weights as weights

    monkeypatch.setattr(weights, "CHUNK_BYTES", 1 << 16)  # many chunks per tensor, and chunks of 1 row
    source = open_checkpoint(wide_vocab_checkpoint)
    parts = [source.tensors[f"model.layers.0.self_attn.{n}_proj.weight"] for n in ("q", "k", "v")]
    head = source.tensors["lm_head.weight"]
    with ExternalData(tmp_path / "weights.onnx.data") as data:
        data.add_transposed("qkv", parts, dtype)
        data.add_transposed("lm_head", [head], dtype)
        data.add("small", np.arange(4, dtype=np.float32))  # stays in the protobuf
    read = _initializers(_save(data, tmp_path))
    expected_qkv = np.concatenate([p.read() for p in parts]).T.astype(dtype)
    assert read["qkv"].dtype == dtype and np.array_equal(read["qkv"], expected_qkv)
    assert np.array_equal(read["lm_head"], head.read().T.astype(dtype))
    assert np.array_equal(read["small"], np.arange(4, dtype=np.float32))
    offsets = [int(e.value) for t in data.initializers for e in t.external_data if e.key == "offset"]
    assert all(offset % 16 == 0 for offset in offsets)


@pytest.mark.parametrize("bits", [4, 8])
def test_blocks_packed_chunk_by_chunk_equal_onnxruntime_packing_the_whole_weight(
        wide_vocab_checkpoint, tmp_path, monkeypatch, bits):
    import bayling_local.convert.onnx_weights as weights

    monkeypatch.setattr(weights, "CHUNK_BYTES", 1 << 20)
    head = open_checkpoint(wide_vocab_checkpoint).tensors["lm_head.weight"]
    with ExternalData(tmp_path / "weights.onnx.data") as data:
        names = data.add_blocks("lm_head", [head], np.float32, bits, 32)
    read = _initializers(_save(data, tmp_path))
    whole = pack_blocks(head.read().T, bits, 32)  # [K, N] in one call, as the in-memory quantizer did
    for name, expected in zip(names, whole):
        assert np.array_equal(read[name].reshape(expected.shape), expected), name


@pytest.mark.parametrize("quant,layout", [("fp32", "external"), ("int4", "external"), ("fp32", "one file")])
def test_export_never_holds_a_whole_weight_matrix(wide_vocab_checkpoint, tmp_path, monkeypatch, quant, layout,
                                                  reference_logits):
    import bayling_local.convert.onnx as exporter
    import bayling_local.convert.onnx_weights as weights

    monkeypatch.setattr(weights, "CHUNK_BYTES", 1 << 22)
    if layout == "external":
        monkeypatch.setattr(exporter, "EXTERNAL_DATA_LIMIT", 0)  # as for a model over 2 GB
    largest = 128_256 * 128 * 4
    tracemalloc.start()
    try:
        out = to_onnx(wide_vocab_checkpoint, tmp_path / quant, quant)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The in-memory exporter held the float32 state dict and the protobuf copies (> 4x `largest`); a
    # streamed export holds a 4 MB chunk and its converted copies (13-17 MB here), whatever the model's size,
    # and copies the weights into a single-file model chunk by chunk too.
    assert peak < largest / 3, f"peak Python allocation {peak / 1e6:.0f} MB for a {largest / 1e6:.0f} MB weight"
    files = sorted(p.name for p in out.glob("model.onnx*"))
    assert files == (["model.onnx", "model.onnx.data"] if layout == "external" else ["model.onnx"])
    backend = OnnxRuntimeBackend.load(out, LoadOptions(device="cpu", threads=2))
    ids, expected = reference_logits
    logits = backend.logits(ids)
    if quant == "fp32":
        assert np.abs(logits - expected).max() < 1e-3
    else:  # 4-bit blocks of a random model: close, not equal
        assert np.corrcoef(logits.ravel(), expected.ravel())[0, 1] > 0.9  # 0.945 here
    backend.close()


def test_a_single_file_export_reads_as_the_same_model_in_onnx(wide_vocab_checkpoint, tmp_path, monkeypatch):
    # The single file is the graph plus one merged record per initializer; onnx parses it as one model.
    import bayling_local.convert.onnx as exporter

    single = to_onnx(wide_vocab_checkpoint, tmp_path / "single", "int8")
    monkeypatch.setattr(exporter, "EXTERNAL_DATA_LIMIT", 0)
    split = to_onnx(wide_vocab_checkpoint, tmp_path / "split", "int8")
    one, two = onnx.load(str(single / "model.onnx")), onnx.load(str(split / "model.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in one.graph.initializer)
    assert one.graph.node == two.graph.node and one.graph.input == two.graph.input
    inline, external = _initializers(single / "model.onnx"), _initializers(split / "model.onnx")
    assert inline.keys() == external.keys()
    for name, values in inline.items():
        assert values.dtype == external[name].dtype and np.array_equal(values, external[name]), name


@pytest.fixture(scope="module")
def reference_logits(wide_vocab_checkpoint):
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    ids = AutoTokenizer.from_pretrained(wide_vocab_checkpoint).encode("Watoto wanacheza mpira uwanjani")
    with torch.inference_mode():
        logits = LlamaForCausalLM.from_pretrained(wide_vocab_checkpoint)(torch.tensor([ids])).logits[0].numpy()
    return ids, logits
