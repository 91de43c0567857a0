"""The multilingual importance matrix: llama.cpp's statistic, its file format, resuming, the
language-balanced calibration sample, and `--imatrix auto|FILE|none` in conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

from conftest import run_cli, write_tiny_llama
from test_convert_tokenizers import flores_folder

from bayling_local.convert import to_gguf
from bayling_local.convert.imatrix import calibration_texts, compute_imatrix, load_imatrix
from bayling_local.errors import UsageError
from bayling_local.gguf_header import read_gguf_header

# Calibration text written for these tests, in two languages.
CALIBRATION = {
    "en": ["The river runs past the old mill and under the stone bridge.", "Children count 1, 2, 3 and laugh."] * 6,
    "fr": ["La rivière passe devant le vieux moulin et sous le pont de pierre.", "Les enfants comptent et rient."] * 6,
}


@pytest.fixture(scope="module")
def k_checkpoint(tmp_path_factory, sentencepiece_tokenizer_dir) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("imatrix") / "k", sentencepiece_tokenizer_dir, hidden=256, ffn=512,
                            heads=4, kv_heads=2, seed=2)


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    for language, lines in CALIBRATION.items():
        (folder / f"{language}.txt").write_text("\n".join(lines) + "\n", "utf-8")
    return folder


def test_imatrix_is_the_mean_squared_input_of_each_matrix(k_checkpoint, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    matrix = compute_imatrix(k_checkpoint, CALIBRATION, tmp_path / "m.gguf", chunk_tokens=64)
    values = matrix.values()
    assert set(values) == {f"blk.{i}.{n}.weight" for i in (0, 1) for n in
                           ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")} | {"output.weight"}
    # Layer 0's Q projection reads RMSNorm(embedding): recompute that from the weights alone.
    tokenizer = AutoTokenizer.from_pretrained(k_checkpoint)
    weights = {k: v.float().numpy() for k, v in load_file(str(k_checkpoint / "model.safetensors")).items()}
    from bayling_local.convert.imatrix import calibration_chunks

    ids = np.concatenate([np.asarray(c) for c in calibration_chunks(tokenizer, CALIBRATION, 64)])
    x = weights["model.embed_tokens.weight"][ids].astype(np.float64)
    normed = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * weights["model.layers.0.input_layernorm.weight"]
    assert np.allclose(values["blk.0.attn_q.weight"], (normed * normed).mean(0), rtol=1e-4)
    assert np.array_equal(values["blk.0.attn_q.weight"], values["blk.0.attn_v.weight"])
    assert values["blk.0.ffn_down.weight"].shape == (512,)


def test_imatrix_file_is_llama_cpps_gguf_format_and_round_trips(k_checkpoint, tmp_path):
    matrix = compute_imatrix(k_checkpoint, CALIBRATION, tmp_path / "m.imatrix.gguf", chunk_tokens=64)
    header = read_gguf_header(tmp_path / "m.imatrix.gguf")
    assert header.metadata["general.type"] == "imatrix"
    assert header.metadata["imatrix.chunk_count"] == matrix.chunks > 1
    names = {t.name for t in header.tensors}
    assert {"blk.1.ffn_down.weight.in_sum2", "blk.1.ffn_down.weight.counts"} <= names
    reloaded = load_imatrix(tmp_path / "m.imatrix.gguf")
    for name, values in matrix.values().items():
        assert np.allclose(reloaded.values()[name], values, rtol=1e-6)


def test_imatrix_chunk_size_is_the_length_of_the_chunks_it_was_computed_on(k_checkpoint, tmp_path):
    # llama-imatrix writes n_ctx / n_parallel, the tokens per chunk, as imatrix.chunk_size.
    from transformers import AutoTokenizer

    from bayling_local.convert.imatrix import calibration_chunks

    chunks = calibration_chunks(AutoTokenizer.from_pretrained(k_checkpoint), CALIBRATION, 48)
    assert max(len(chunk) for chunk in chunks) == 48
    matrix = compute_imatrix(k_checkpoint, CALIBRATION, tmp_path / "m.imatrix.gguf", chunk_tokens=48)
    assert read_gguf_header(tmp_path / "m.imatrix.gguf").metadata["imatrix.chunk_size"] == 48
    assert matrix.chunks == len(chunks)
    assert load_imatrix(tmp_path / "m.imatrix.gguf").chunk_size == 48


def test_an_interrupted_imatrix_run_resumes_after_its_last_save(k_checkpoint, tmp_path):
    uninterrupted = compute_imatrix(k_checkpoint, CALIBRATION, tmp_path / "whole.gguf", chunk_tokens=32)
    total = uninterrupted.chunks
    assert total >= 6

    def stop_after_five(done, _total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_imatrix(k_checkpoint, CALIBRATION, tmp_path / "resumed.gguf", chunk_tokens=32, save_every=2,
                        progress=stop_after_five)
    assert load_imatrix(tmp_path / "resumed.gguf").chunks == 4
    seen = []
    resumed = compute_imatrix(k_checkpoint, CALIBRATION, tmp_path / "resumed.gguf", chunk_tokens=32, save_every=2,
                              progress=lambda done, _: seen.append(done))
    assert seen == list(range(5, total + 1))
    for name, values in uninterrupted.values().items():
        assert np.allclose(resumed.values()[name], values, rtol=1e-5)


def test_calibration_sample_is_balanced_over_all_204_languages():
    folder = flores_folder()
    if folder is None:
        pytest.skip("FLORES-200 is not at ../shared/data (set BAYLING_SHARED_DATA)")
    from bayling_local.evaldata import flores_parallel

    sample = calibration_texts(folder, per_language=3)
    assert len(sample) == 204 and {len(lines) for lines in sample.values()} == {3}
    assert sample == calibration_texts(folder, per_language=3)  # the same sample every run
    dev = flores_parallel(folder, ["eng_Latn", "fra_Latn"], "dev")
    picked = {code: [dev[code].index(line) for line in sample[code]] for code in dev}
    assert picked["eng_Latn"] != picked["fra_Latn"]  # different sentences per language: more content covered


def test_convert_auto_computes_the_matrix_for_types_that_need_it_and_keeps_it(k_checkpoint, calibration_folder, tmp_path):
    env = {"BAYLING_HOME": str(tmp_path / "home")}
    done = run_cli("convert", str(k_checkpoint), "--quant", "iq2_xxs", "--calibration", str(calibration_folder),
                   "--name", "k-iq2", env=env)
    assert done.returncode == 0, done.stderr.decode()
    entry = tmp_path / "home" / "models" / "k-iq2"
    assert sorted(p.name for p in entry.iterdir()) == ["k-iq2.gguf", "k-iq2.imatrix.gguf", "manifest.json"]
    assert read_gguf_header(entry / "k-iq2.gguf").quant == "IQ2_XXS"
    assert read_gguf_header(entry / "k-iq2.imatrix.gguf").metadata["imatrix.datasets"] == ["en", "fr"]
    reused = run_cli("convert", str(k_checkpoint), "--quant", "iq1_m", "--imatrix", str(entry / "k-iq2.imatrix.gguf"),
                     "--out", str(tmp_path / "iq1.gguf"), env=env)
    assert reused.returncode == 0, reused.stderr.decode()
    assert read_gguf_header(tmp_path / "iq1.gguf").quant == "IQ1_M"


def test_auto_skips_types_that_gain_nothing_and_none_refuses_types_that_need_one(k_checkpoint, calibration_folder, tmp_path):
    result = to_gguf(k_checkpoint, "q6_k", calibration=calibration_folder, out=tmp_path / "q6.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q6.gguf"]  # no matrix computed for q6_k
    assert result.quant == "q6_k"
    with pytest.raises(UsageError, match="iq2_xs needs an importance matrix: pass --calibration PATH"):
        to_gguf(k_checkpoint, "iq2_xs", imatrix="none", calibration=calibration_folder, out=tmp_path / "x.gguf")
