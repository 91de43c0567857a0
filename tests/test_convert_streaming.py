"""The GGUF path at full size: the shortcuts that make an 8B conversion fast and small give the bytes of the
plain way (every bf16 value, quantizer slabs), and a checkpoint hash still running when the header is
written is filled in after the tensors."""

from __future__ import annotations

import shutil
from concurrent.futures import Future

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from bayling_local.convert.checkpoint import as_float32, open_checkpoint
from bayling_local.convert.gguf import Provenance, encode_rows, plan_gguf, write_gguf
from bayling_local.convert.vocab import build_vocab
from bayling_local.errors import InvalidModelFileError
from bayling_local.gguf_header import read_gguf_header
from tests.conftest import write_tiny_llama

EVERY_BF16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).reshape(1, -1)


def _float32_way(bits: np.ndarray, ggml_type: str) -> np.ndarray:
    """What the writer did before the shortcuts: widen to float32, then gguf's own rounding / numpy's cast."""
    return np.asarray(encode_rows(as_float32(bits), ggml_type)).view(np.uint8)


def test_every_bf16_value_is_written_as_f16_exactly_as_through_float32():
    magnitude = as_float32(EVERY_BF16)
    fits = EVERY_BF16[(np.abs(magnitude) <= 65504) | np.isnan(magnitude)].reshape(1, -1)  # NaNs too
    assert np.array_equal(np.asarray(encode_rows(fits, "F16")).view(np.uint8), _float32_way(fits, "F16"))
    for too_large in (0x4780, 0xC780, 0x7F80):  # 65536, -65536, infinity
        with pytest.raises(InvalidModelFileError, match="does not fit in f16"):
            encode_rows(np.array([[0x3F80, too_large]], dtype=np.uint16), "F16")


def test_every_bf16_value_is_copied_to_bf16_as_gguf_rounds_it():
    # gguf.quants' bf16 rounding of an exact bf16 value is the value, except that NaNs get their quiet bit
    assert np.array_equal(np.asarray(encode_rows(EVERY_BF16, "BF16")).view(np.uint8), _float32_way(EVERY_BF16, "BF16"))


def test_f16_rows_are_written_as_they_are():
    rows = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float16)
    assert np.array_equal(np.asarray(encode_rows(rows, "F16")).view(np.uint8), _float32_way(rows, "F16"))


@pytest.fixture(scope="module")
def tiny_bf16_checkpoint(tmp_path_factory, llama3_tokenizer_path):
    root = tmp_path_factory.mktemp("tiny-bf16")
    (root / "tok").mkdir()
    shutil.copy(llama3_tokenizer_path, root / "tok" / "tokenizer.json")
    return write_tiny_llama(root / "ckpt", root / "tok", dtype="bfloat16")


def test_a_checkpoint_hash_still_running_is_filled_into_the_header_after_the_tensors(tiny_bf16_checkpoint, tmp_path):
    model = open_checkpoint(tiny_bf16_checkpoint)
    plan = plan_gguf(model, "f16")
    vocab = build_vocab(tiny_bf16_checkpoint, plan.hp.vocab_size, model.config, None)
    digest: Future = Future()
    written = []

    def finish_hash_with_the_last_tensor(done: int, total: int) -> None:
        written.append(done)
        if done == total and not digest.done():  # the header was written long before
            digest.set_result(model.provenance_sha256())

    path = write_gguf(model, plan, vocab, tmp_path / "tiny.gguf", name="tiny",
                      provenance=Provenance("source", digest, "tool", "date"), progress=finish_hash_with_the_last_tensor)
    assert len(written) > 1
    metadata = read_gguf_header(path).metadata
    assert metadata["general.source.sha256"] == model.provenance_sha256() == digest.result()
    reader = gguf.GGUFReader(path)  # llama.cpp's own reader: header and tensors intact
    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight")
    expected = model.tensors["model.embed_tokens.weight"].read().astype(np.float16)
    assert np.array_equal(np.asarray(embedding.data).reshape(expected.shape), expected)


def test_the_background_hash_is_the_checkpoint_hash(tiny_bf16_checkpoint):
    model = open_checkpoint(tiny_bf16_checkpoint)
    assert model.provenance_sha256_in_background().result(timeout=60) == model.provenance_sha256()
    stopped = model.provenance_sha256_in_background()
    stopped.cancel()
    assert stopped.cancelled()


def test_the_quantizer_in_small_slabs_writes_the_bytes_of_one_pass(tiny_bf16_checkpoint, tmp_path, monkeypatch):
    # libllama's default slab (8 GiB) held Llama-3-8B's whole embedding table in float32; a small one gives
    # the same file, because rows are quantized independently.
    pytest.importorskip("llama_cpp")
    import bayling_local.convert.quantize as quantize
    from bayling_local.convert import to_gguf

    bf16 = to_gguf(tiny_bf16_checkpoint, "bf16", out=tmp_path / "tiny-bf16.gguf").path
    monkeypatch.setattr(quantize, "QUANTIZER_BUFFER_BYTES", 0)  # libllama's default: everything at once
    whole = quantize.quantize_gguf(bf16, tmp_path / "whole.gguf", "q4_k_m")
    monkeypatch.setattr(quantize, "QUANTIZER_BUFFER_BYTES", 4096)  # a few rows per slab
    slabs = quantize.quantize_gguf(bf16, tmp_path / "slabs.gguf", "q4_k_m")
    assert whole.read_bytes() == slabs.read_bytes()
