"""The fidelity report: tokenization parity on both paths, logit parity, and quantization loss per
language, written as JSON and Markdown beside the artifact (and into the store by `convert --verify`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

from conftest import run_cli, write_tiny_llama
from test_convert_tokenizers import flores_folder

from bayling_local.convert import to_gguf
from bayling_local.convert.verify import verify

LANGUAGES = ["eng_Latn", "zho_Hans", "arb_Arab", "swh_Latn"]


@pytest.fixture(scope="module")
def flores() -> Path:
    folder = flores_folder()
    if folder is None:
        pytest.skip("FLORES-200 is not at ../shared/data (set BAYLING_SHARED_DATA)")
    return folder


@pytest.mark.slow
def test_smollm2_report_shows_kl_growing_from_q8_0_to_q5_0_to_q4_0(smollm2_f32_gguf, smollm2_quantized,
                                                                   smollm2_hf_checkpoint, flores):
    report = verify(smollm2_f32_gguf, smollm2_hf_checkpoint, compare=list(smollm2_quantized.values()), texts=flores,
                    languages=LANGUAGES, tokenization_sentences=10, scored_sentences=1, logit_texts=3, threads=2)
    assert report.tokenization.ours == {} and report.tokenization.sentences == 40
    assert report.logits.max_abs_diff < 1e-3 and report.logits.top1_agreement == 1.0
    kl = {q.quant: q.kl_divergence for q in report.quants}
    assert 0 < kl["Q8_0"] < kl["Q5_0"] < kl["Q4_0"]
    top1 = {q.quant: q.top1_agreement for q in report.quants}
    assert top1["Q8_0"] >= top1["Q4_0"]
    assert all(set(q.per_language) == set(LANGUAGES) for q in report.quants)
    assert report.baseline == str(smollm2_f32_gguf)
    saved = json.loads(smollm2_f32_gguf.with_name("smollm2-f32.fidelity.json").read_text("utf-8"))
    assert [q["quant"] for q in saved["quants"]] == ["Q8_0", "Q5_0", "Q4_0"]
    markdown = smollm2_f32_gguf.with_name("smollm2-f32.fidelity.md").read_text("utf-8")
    assert "| smollm2-q4_0.gguf | llama.cpp | Q4_0 |" in markdown and "llama.cpp's own tokenizer" in markdown


def test_report_counts_llama_cpps_own_tokenizer_separately(tmp_path, sentencepiece_tokenizer_dir):
    checkpoint = write_tiny_llama(tmp_path / "sp", sentencepiece_tokenizer_dir)
    artifact = to_gguf(checkpoint, "f32", out=tmp_path / "sp.gguf").path
    texts = tmp_path / "texts.txt"
    # Leading spaces and text after a special token: llama.cpp's SentencePiece path splits these differently.
    texts.write_text("Plain words here.\n  Two leading spaces.\nAfter <s> x special.\n", "utf-8")
    report = verify(artifact, checkpoint, texts=texts, tokenization_sentences=3, scored_sentences=3)
    assert report.tokenization.path_in_use == "reference"
    assert report.tokenization.ours == {}
    assert report.tokenization.llama_cpp == {"texts": 2}
    assert report.logits.max_abs_diff < 1e-4
    assert report.quants == []  # an f32 artifact and nothing to compare


def test_convert_verify_keeps_the_report_in_the_store_beside_a_quantized_artifact(tmp_path, sentencepiece_tokenizer_dir):
    checkpoint = write_tiny_llama(tmp_path / "k", sentencepiece_tokenizer_dir, hidden=256, ffn=512, heads=4, kv_heads=2)
    env = {"BAYLING_HOME": str(tmp_path / "home")}
    done = run_cli("convert", str(checkpoint), "--quant", "q4_k_m", "--name", "k-q4", "--verify", env=env)
    assert done.returncode == 0, done.stderr.decode()
    entry = tmp_path / "home" / "models" / "k-q4"
    assert sorted(p.name for p in entry.iterdir()) == ["k-q4.fidelity.json", "k-q4.fidelity.md", "k-q4.gguf", "manifest.json"]
    report = json.loads((entry / "k-q4.fidelity.json").read_text("utf-8"))
    assert report["artifact"] == str(entry / "k-q4.gguf")
    assert report["baseline"].startswith("the full-precision GGUF it was quantized from (f32)")
    assert report["logits"]["max_abs_diff"] < 1e-3  # the f32 intermediate against transformers
    (quant,) = report["quants"]
    assert quant["quant"] == "Q4_K_M" and quant["kl_divergence"] > 0 and len(quant["per_language"]) == 10
    again = run_cli("verify", "k-q4", "--scored-sentences", "1", env=env)  # reference found from provenance
    assert again.returncode == 0, again.stderr.decode()
    assert "| k-q4.gguf | llama.cpp | Q4_K_M |" in again.stdout.decode()
