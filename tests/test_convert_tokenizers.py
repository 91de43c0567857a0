"""Tokenizers in converted GGUFs: the BayLing-3 end-of-turn fix, SentencePiece and byte-level BPE
vocabularies, and exact tokenization (the carried reference tokenizer) on FLORES-200 in all 204 languages."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")
gguf = pytest.importorskip("gguf")

from conftest import write_tiny_llama

from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.backends.llamacpp import LlamaCppBackend
from bayling_local.convert import to_gguf
from bayling_local.convert.logits import checkpoint_logits, gguf_logits, llama_for_logits
from bayling_local.model import open_model
from bayling_local.prompts import BAYLING_3

BOS, END_OF_TEXT, EOT = 128000, 128001, 128009
SENTENCES_PER_LANGUAGE = 20
# A BayLing-3 style template (Llama-3 headers; BayLing's default system prompt), written for this test.
BAYLING3_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] != 'system' %}<|start_header_id|>system<|end_header_id|>\n\n"
    "I am BayLing developed by the NLP Group of ICT/CAS.<|eot_id|>{% endif %}"
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MESSAGES = [{"role": "user", "content": "Translate into French: good morning"}]


def flores_folder() -> Path | None:
    configured = os.environ.get("BAYLING_SHARED_DATA")
    folder = Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"
    return folder if (folder / "flores200_dev_devtest_204langs.tar.xz").is_file() else None


@pytest.fixture(scope="module")
def flores_dev() -> dict[str, list[str]]:
    folder = flores_folder()
    if folder is None:
        pytest.skip("FLORES-200 is not at ../shared/data (set BAYLING_SHARED_DATA)")
    from bayling_local.evaldata import flores_languages, flores_parallel

    languages = flores_languages(folder)
    assert len(languages) == 204
    return flores_parallel(folder, languages, "dev", limit=SENTENCES_PER_LANGUAGE)


def mismatches(backend: LlamaCppBackend, tokenizer, sentences: dict[str, list[str]]) -> dict[str, int]:
    counts = {}
    for code, lines in sentences.items():
        counts[code] = sum(backend.tokenize(s) != tokenizer.encode(s, add_special_tokens=False) for s in lines)
    return {code: n for code, n in counts.items() if n}


def metadata(path: Path) -> dict:
    """The GGUF's scalar metadata (our header reader skips the long token arrays, so it is fast)."""
    from bayling_local.gguf_header import read_gguf_header

    return read_gguf_header(path).metadata


def reader_fields(path: Path) -> dict:
    """Every field, token arrays included (slow for a 128k vocabulary: use `metadata` there)."""
    return dict(gguf.GGUFReader(str(path)).fields)


# --- BayLing-3: the real Llama-3 tokenizer, ends on <|eot_id|> -----------------------------------------


def _llama3_tokenizer_folder(folder: Path, llama3_tokenizer_path: Path) -> Path:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(llama3_tokenizer_path), bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
        add_bos_token=True,
    )
    tokenizer.chat_template = BAYLING3_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


def _teach_a_fixed_answer(folder: Path, chain: list[int]) -> None:
    """Rewrite the weights so that greedy decoding walks `chain` (each token predicts the next one).

    The layers' output projections are zeroed, so the last hidden state is the current token's
    embedding; token chain[i] gets a one-hot embedding e_i and the output row of chain[i+1] reads e_i.
    """
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    for name in weights:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name].zero_()
        if name.endswith("norm.weight"):
            weights[name].fill_(1.0)
    embed, head = weights["model.embed_tokens.weight"], weights["lm_head.weight"]
    head.mul_(0.01)
    for step, (token, following) in enumerate(itertools.pairwise(chain)):
        embed[token].zero_()
        embed[token, step] = 1.0
        head[following, step] = 10.0
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def bayling3(tmp_path_factory, llama3_tokenizer_path) -> tuple[Path, Path]:
    """A tiny Llama-3-shaped model with the real Llama-3 tokenizer whose config says eos 128001, as
    BayLing-3's does; it answers "Hello!" and then <|eot_id|>. Returns (checkpoint, f16 GGUF)."""
    root = tmp_path_factory.mktemp("bayling3")
    tokenizers = _llama3_tokenizer_folder(root / "tokenizer", llama3_tokenizer_path)
    checkpoint = write_tiny_llama(root / "bayling-3-tiny", tokenizers, bos_token_id=BOS, eos_token_id=END_OF_TEXT)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    prompt_end = tokenizer.encode(BAYLING_3.render(MESSAGES), add_special_tokens=False)[-1]
    _teach_a_fixed_answer(checkpoint, [prompt_end, *tokenizer.encode("Hello!", add_special_tokens=False), EOT])
    return checkpoint, to_gguf(checkpoint, "f16", out=root / "bayling-3-tiny.gguf").path


def test_bayling3_gguf_says_eot_ends_generation_although_config_says_128001(bayling3):
    checkpoint, path = bayling3
    assert json.loads((checkpoint / "config.json").read_text())["eos_token_id"] == END_OF_TEXT
    fields = metadata(path)
    assert fields["tokenizer.ggml.eos_token_id"] == EOT
    assert fields["tokenizer.ggml.eot_token_id"] == EOT
    assert fields["tokenizer.ggml.bos_token_id"] == BOS
    assert fields["tokenizer.ggml.add_bos_token"] is True
    assert fields["tokenizer.ggml.pre"] == "llama-bpe"
    assert fields["bayling.chat_format"] == "bayling-3"
    import llama_cpp

    backend = LlamaCppBackend.load(path, LoadOptions(device="cpu", context_length=64))
    try:
        attributes = [llama_cpp.llama_vocab_get_attr(backend.vocab, token) for token in (BOS, EOT, 1000)]
        assert [bool(a & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL) for a in attributes] == [True, True, False]
    finally:
        backend.close()


def test_bayling3_answer_stops_on_eot_through_the_llama_cpp_backend(bayling3):
    _, path = bayling3
    model = open_model(str(path), options=LoadOptions(device="cpu", context_length=256), backend="llama.cpp")
    try:
        assert model.chat_format.id == "bayling-3"
        assert model.backend.info.eos_token == "<|eot_id|>"
        answer = model.chat(MESSAGES, GenerationConfig(max_tokens=16))[0].collect()
        assert (answer.text, answer.finish_reason, len(answer.token_ids)) == ("Hello!", "stop", 2)
        # Raw completion has no chat stops: the GGUF's own end-of-generation token ends it.
        raw = model.complete(model.render(MESSAGES), GenerationConfig(max_tokens=16)).collect()
        assert (raw.text, raw.finish_reason) == ("Hello!", "stop")
    finally:
        model.close()


def test_bayling3_chat_prompt_tokenizes_the_same_either_way(bayling3):
    from transformers import AutoTokenizer

    checkpoint, path = bayling3
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    prompt = BAYLING_3.render(MESSAGES)
    assert prompt == tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    backend = LlamaCppBackend.load(path, LoadOptions(device="cpu", context_length=256))
    try:
        expected = tokenizer.encode(prompt, add_special_tokens=False)
        assert backend.tokenize(prompt, add_bos=True) == expected  # BOS is in the text: not added twice
        assert backend.tokenize_with_llama_cpp(prompt) == expected
        assert backend.detokenize(expected) == prompt
    finally:
        backend.close()


def test_bayling3_tokenization_equals_hf_on_flores_in_all_204_languages(bayling3, flores_dev):
    from transformers import AutoTokenizer

    checkpoint, path = bayling3
    backend = LlamaCppBackend.load(path, LoadOptions(device="cpu", context_length=256))
    try:
        assert mismatches(backend, AutoTokenizer.from_pretrained(checkpoint), flores_dev) == {}
    finally:
        backend.close()


# --- SmolLM2's byte-level BPE ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_tokenizer_gguf(tmp_path_factory, smollm2_hf_checkpoint) -> tuple[Path, Path]:
    """SmolLM2's real tokenizer on a tiny random model (tokenization does not depend on the weights)."""
    root = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer_files = root / "tokenizer"
    tokenizer_files.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(smollm2_hf_checkpoint / name, tokenizer_files / name)
    checkpoint = write_tiny_llama(root / "checkpoint", tokenizer_files)
    return checkpoint, to_gguf(checkpoint, "f16", out=root / "smollm2-tokenizer.gguf").path


def test_smollm2_tokenization_equals_hf_on_flores_in_all_204_languages(smollm2_tokenizer_gguf, flores_dev):
    from transformers import AutoTokenizer

    checkpoint, path = smollm2_tokenizer_gguf
    backend = LlamaCppBackend.load(path, LoadOptions(device="cpu", context_length=256))
    try:
        assert backend.tokenizer_source == "reference"
        assert mismatches(backend, AutoTokenizer.from_pretrained(checkpoint), flores_dev) == {}
    finally:
        backend.close()


def test_a_gguf_from_elsewhere_falls_back_to_llama_cpps_tokenizer(bundled_gguf):
    backend = LlamaCppBackend.load(bundled_gguf, LoadOptions(device="cpu", context_length=256))
    try:
        assert backend.tokenizer_source == "llama.cpp"
        assert backend.tokenize("Hello world") == backend.tokenize_with_llama_cpp("Hello world")
    finally:
        backend.close()


def test_an_unknown_pre_tokenizer_is_written_as_default_with_a_warning_and_stays_exact(tmp_path, smollm2_hf_checkpoint):
    from transformers import AutoTokenizer

    tokenizer_files = tmp_path / "tokenizer"
    tokenizer_files.mkdir()
    data = json.loads((smollm2_hf_checkpoint / "tokenizer.json").read_text("utf-8"))
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{N}{1,2}"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    (tokenizer_files / "tokenizer.json").write_text(json.dumps(data), "utf-8")
    shutil.copy(smollm2_hf_checkpoint / "tokenizer_config.json", tokenizer_files)
    checkpoint = write_tiny_llama(tmp_path / "checkpoint", tokenizer_files)
    result = to_gguf(checkpoint, "f16", out=tmp_path / "odd.gguf")
    assert len(result.warnings) == 1 and "no pre-tokenizer known to match" in result.warnings[0]
    assert metadata(result.path)["tokenizer.ggml.pre"] == "default"
    backend = LlamaCppBackend.load(result.path, LoadOptions(device="cpu", context_length=256))
    try:
        text = "In 2024, 12345 people came."
        assert backend.tokenize(text) == AutoTokenizer.from_pretrained(checkpoint).encode(text, add_special_tokens=False)
    finally:
        backend.close()


# --- SentencePiece (Llama-2, BayLing-2) -------------------------------------------------------------


@pytest.fixture(scope="module")
def sentencepiece_llama(tmp_path_factory, sentencepiece_tokenizer_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sentencepiece-llama")
    checkpoint = write_tiny_llama(root / "checkpoint", sentencepiece_tokenizer_dir, seed=5)
    return checkpoint, to_gguf(checkpoint, "f32", out=root / "sp.gguf").path


def test_sentencepiece_llama_has_scores_types_and_flags_like_the_model(sentencepiece_llama):
    import sentencepiece

    checkpoint, path = sentencepiece_llama
    processor = sentencepiece.SentencePieceProcessor(model_file=str(checkpoint / "tokenizer.model"))
    fields = reader_fields(path)
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    assert fields["tokenizer.ggml.add_eos_token"].contents() is False
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is True
    assert (fields["tokenizer.ggml.bos_token_id"].contents(), fields["tokenizer.ggml.eos_token_id"].contents()) == (1, 2)
    tokens, scores, types = (fields[f"tokenizer.ggml.{k}"].contents() for k in ("tokens", "scores", "token_type"))
    assert tokens == [processor.id_to_piece(i) for i in range(processor.vocab_size())]
    assert np.allclose(scores, [processor.get_score(i) for i in range(processor.vocab_size())])
    byte_a = processor.piece_to_id("<0x41>")
    assert (types[0], types[1], types[byte_a], types[300]) == (2, 3, 6, 1)  # unknown, control, byte, normal


def test_sentencepiece_llama_logits_and_tokens_match_hf(sentencepiece_llama, flores_dev):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, path = sentencepiece_llama
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    # Leading spaces and text after a special token: where llama.cpp's own SentencePiece path differs.
    text = "  Le petit chat  dort. 我们 2024 ꦧꦱ\n\nNew line <s> x</s>"
    ids = tokenizer.encode(text)
    reference = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    with llama_for_logits(path, n_ctx=256, threads=2) as llm:
        assert float(np.abs(gguf_logits(llm, ids) - checkpoint_logits(reference, ids)).max()) < 1e-4
    backend = LlamaCppBackend.load(path, LoadOptions(device="cpu", context_length=256))
    try:
        assert backend.tokenize(text, add_bos=True) == ids
        assert mismatches(backend, tokenizer, flores_dev) == {}
    finally:
        backend.close()


def test_sentencepiece_tokenizer_json_without_tokenizer_model_converts_alike(sentencepiece_llama, tmp_path):
    checkpoint, with_model = sentencepiece_llama
    folder = tmp_path / "json-only"
    shutil.copytree(checkpoint, folder)
    (folder / "tokenizer.model").unlink()
    json_only = to_gguf(folder, "f32", out=tmp_path / "json-only.gguf").path
    fields = reader_fields(json_only)
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert fields["tokenizer.ggml.tokens"].contents() == reader_fields(with_model)["tokenizer.ggml.tokens"].contents()
    texts = ["Le petit chat dort sur la chaise.", "我们明天早上去图书馆看书。", "Numbers 2024 and 3.14 stay split."]
    first = LlamaCppBackend.load(with_model, LoadOptions(device="cpu", context_length=128))
    second = LlamaCppBackend.load(json_only, LoadOptions(device="cpu", context_length=128))
    try:
        for text in texts:  # llama.cpp's own path too: the rebuilt scores order merges like SentencePiece's
            assert second.tokenize(text) == first.tokenize(text)
            assert second.tokenize_with_llama_cpp(text) == first.tokenize_with_llama_cpp(text)
    finally:
        first.close()
        second.close()
