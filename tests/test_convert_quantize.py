"""Quantization through llama.cpp: every type on a tiny Llama whose widths fit 256-wide blocks, the
mixes, the importance-matrix plumbing and refusals, and SmolLM2 at q8_0, q5_0 and q4_0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

from conftest import run_cli, write_tiny_llama

from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.convert import to_gguf
from bayling_local.convert.logits import gguf_logits, llama_for_logits
from bayling_local.convert.quantize import (
    QUANT_TYPES,
    QuantizeError,
    ggml_type_name,
    quantize_gguf,
    read_gguf_bits_per_weight,
    run_llama_quantizer,
)
from bayling_local.errors import UsageError
from bayling_local.gguf_header import read_gguf_header
from bayling_local.model import open_model

IDS = [1, 40, 41, 42, 300, 301, 7, 8]


@pytest.fixture(scope="module")
def k_llama(tmp_path_factory, sentencepiece_tokenizer_dir) -> tuple[Path, Path]:
    """A tiny Llama 256 wide (FFN 512, head 64) so K- and IQ-quant blocks fit; (checkpoint, f16 GGUF)."""
    root = tmp_path_factory.mktemp("k-llama")
    checkpoint = write_tiny_llama(root / "checkpoint", sentencepiece_tokenizer_dir, hidden=256, ffn=512, heads=4,
                                  kv_heads=2, seed=11)
    return checkpoint, to_gguf(checkpoint, "f16", out=root / "k-llama-f16.gguf").path


def tensor_types(path: Path) -> dict[str, str]:
    return {t.name: ggml_type_name(t.type_id) for t in read_gguf_header(path).tensors}


def imatrix_for(path: Path, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """An importance value per input column of every matrix llama.cpp multiplies (all but token_embd)."""
    matrices = [t for t in read_gguf_header(path).tensors if len(t.shape) == 2 and t.name != "token_embd.weight"]
    return {t.name: (rng.gamma(0.5, size=t.shape[0]) if rng else np.ones(t.shape[0])).astype(np.float32)
            for t in matrices}


@pytest.mark.parametrize("quant", list(QUANT_TYPES))
def test_every_type_quantizes_the_tiny_llama_and_runs(quant, k_llama, tmp_path):
    _, f16 = k_llama
    target = QUANT_TYPES[quant]
    imatrix = imatrix_for(f16) if target.requires_imatrix else None
    out = quantize_gguf(f16, tmp_path / f"{quant}.gguf", quant, imatrix=imatrix)
    header = read_gguf_header(out)
    assert header.metadata["general.file_type"] == target.file_type
    assert tensor_types(out)["blk.0.ffn_up.weight"] == target.weight_type
    with llama_for_logits(out, n_ctx=64, threads=2) as llm:
        assert np.isfinite(gguf_logits(llm, IDS)).all()


def test_medium_and_large_mixes_keep_sensitive_tensors_at_higher_precision(k_llama, tmp_path):
    _, f16 = k_llama
    types = {q: tensor_types(quantize_gguf(f16, tmp_path / f"{q}.gguf", q)) for q in ("q4_k_s", "q4_k_m", "q3_k_s", "q3_k_l")}
    assert (types["q4_k_s"]["blk.1.ffn_down.weight"], types["q4_k_m"]["blk.1.ffn_down.weight"]) == ("Q4_K", "Q6_K")
    assert (types["q3_k_s"]["blk.0.attn_v.weight"], types["q3_k_l"]["blk.0.attn_v.weight"]) == ("Q3_K", "Q5_K")
    assert all(t["output.weight"] == "Q6_K" for t in types.values())


def test_bits_per_weight_fall_with_the_type(k_llama, tmp_path):
    _, f16 = k_llama
    bits = [read_gguf_bits_per_weight(quantize_gguf(f16, tmp_path / f"{q}.gguf", q)) for q in ("q8_0", "q6_k", "q4_k_m", "q3_k_m")]
    assert bits == sorted(bits, reverse=True)
    assert 8.4 < bits[0] < 8.6


def test_an_importance_matrix_reaches_llama_cpps_quantizer(k_llama, tmp_path):
    _, f16 = k_llama
    plain = quantize_gguf(f16, tmp_path / "plain.gguf", "q4_k_m")
    uniform = quantize_gguf(f16, tmp_path / "uniform.gguf", "q4_k_m", imatrix=imatrix_for(f16))
    skewed = quantize_gguf(f16, tmp_path / "skewed.gguf", "q4_k_m", imatrix=imatrix_for(f16, np.random.default_rng(0)))
    assert plain.read_bytes() != skewed.read_bytes()
    assert uniform.read_bytes() != skewed.read_bytes()


def test_a_wrong_sized_importance_matrix_is_refused_with_llama_cpps_reason(k_llama, tmp_path):
    _, f16 = k_llama
    imatrix = {name: values[:-1] for name, values in imatrix_for(f16).items()}
    with pytest.raises(Exception, match="could not quantize k-llama-f16.gguf to iq2_xxs: "):
        quantize_gguf(f16, tmp_path / "bad.gguf", "iq2_xxs", imatrix=imatrix)
    assert list(tmp_path.iterdir()) == []


def test_types_that_require_an_importance_matrix_are_refused_without_one(k_llama, tmp_path):
    checkpoint, f16 = k_llama
    with pytest.raises(UsageError, match="iq2_xxs needs an importance matrix"):
        quantize_gguf(f16, tmp_path / "x.gguf", "iq2_xxs")
    done = run_cli("convert", str(checkpoint), "--quant", "iq1_m", "--out", str(tmp_path / "x.gguf"))
    assert done.returncode == 2 and "iq1_m needs an importance matrix" in done.stderr.decode()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("quant", list(QUANT_TYPES))
def test_requires_imatrix_marks_exactly_the_types_libllama_refuses_without_one(quant, k_llama, tmp_path):
    # Straight to libllama, past our own check: the table must say what llama.cpp does, no more, no less.
    _, f16 = k_llama
    target = QUANT_TYPES[quant]
    try:
        run_llama_quantizer(f16, tmp_path / f"{quant}.gguf", target)
        refused = False
    except QuantizeError as error:
        assert "requires an imatrix" in str(error), str(error)
        refused = True
    assert refused == target.requires_imatrix
    assert refused == (not (tmp_path / f"{quant}.gguf").exists())


def test_convert_to_a_k_quant_goes_into_the_store_through_an_intermediate(k_llama, tmp_path, monkeypatch):
    checkpoint, _ = k_llama
    env = {"BAYLING_HOME": str(tmp_path / "home")}
    done = run_cli("convert", str(checkpoint), "--quant", "q4_k_m", "--name", "k-q4", env=env)
    assert done.returncode == 0, done.stderr.decode()
    entry = tmp_path / "home" / "models" / "k-q4"
    assert sorted(p.name for p in entry.iterdir()) == ["k-q4.gguf", "manifest.json"]  # no intermediate left
    header = read_gguf_header(entry / "k-q4.gguf")
    assert header.quant == "Q4_K_M"
    assert header.metadata["general.source.url"] == str(checkpoint.resolve())
    assert "bayling.tokenizer_json" in header.metadata


def test_smollm2_quantizes_to_q8_0_q5_0_and_q4_0_and_runs(smollm2_quantized):
    # How much each type loses is measured by the fidelity report (test_convert_verify.py).
    bits = {quant: read_gguf_bits_per_weight(path) for quant, path in smollm2_quantized.items()}
    assert bits["q8_0"] > bits["q5_0"] > bits["q4_0"]
    assert [read_gguf_header(p).quant for p in smollm2_quantized.values()] == ["Q8_0", "Q5_0", "Q4_0"]
    for path in smollm2_quantized.values():
        model = open_model(str(path), options=LoadOptions(device="cpu", context_length=512), backend="llama.cpp")
        try:
            answer = model.chat([{"role": "user", "content": "What is the capital of France?"}],
                                GenerationConfig(max_tokens=12))[0].collect()
            assert answer.text.strip() and answer.finish_reason in ("stop", "length")
        finally:
            model.close()
