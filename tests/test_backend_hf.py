"""The transformers reference backend on a tiny random Llama with the real Llama-3 tokenizer."""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from bayling_local.backends import backend_for_format
from bayling_local.backends.base import Backend, GenerationConfig, LoadOptions
from bayling_local.backends.hf import HFBackend
from bayling_local.errors import (
    BackendUnavailableError,
    ContextOverflowError,
    InvalidModelFileError,
)

BOS, EOT, END_OF_TEXT, HASH = 128000, 128009, 128001, 2
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
GREEDY = GenerationConfig(max_tokens=8, temperature=0.0)


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, llama3_tokenizer_path: Path) -> Path:
    """A random 2-layer, 64-wide Llama with the real Llama-3 tokenizer, saved as safetensors."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(llama3_tokenizer_path),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        add_bos_token=True,  # as Meta's Llama-3 tokenizer does
    )
    tokenizer.chat_template = LLAMA3_TEMPLATE
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=BOS,
        eos_token_id=[END_OF_TEXT, EOT],
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama3")
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend(tiny_llama_dir: Path) -> HFBackend:
    """Shared by the tests that do not change the model."""
    return HFBackend.load(tiny_llama_dir, LoadOptions(device="cpu"))


@pytest.fixture
def patchable_backend(backend: HFBackend):
    """The shared backend, for a test that replaces the model's output layer (restored afterwards)."""
    original_head = backend.model.lm_head
    yield backend
    backend.model.lm_head = original_head


@pytest.fixture(scope="module")
def small_context_backend(tiny_llama_dir: Path) -> HFBackend:
    return HFBackend.load(tiny_llama_dir, LoadOptions(device="cpu", context_length=16))


def _force_token(backend: HFBackend, token_id: int, runners_up: dict[int, float] | None = None) -> None:
    """Make greedy decoding emit `token_id` forever: a zero-weight head whose bias favours it (100).

    `runners_up` gives other tokens fixed logits below that (the rest stay at 0).
    """
    hidden, vocab = backend.model.config.hidden_size, backend.model.config.vocab_size
    head = nn.Linear(hidden, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token_id] = 100.0
        for other, logit in (runners_up or {}).items():
            head.bias[other] = logit
    backend.model.lm_head = head


class _ScriptedHead(nn.Module):
    """An output layer whose n-th call favours script[n]: greedy decoding then emits the script."""

    def __init__(self, script: list[int], vocab: int):
        super().__init__()
        self.script, self.vocab, self.calls = script, vocab, 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*hidden.shape[:-1], self.vocab)
        logits[..., self.script[min(self.calls, len(self.script) - 1)]] = 100.0
        self.calls += 1
        return logits


def _script(backend: HFBackend, token_ids: list[int]) -> None:
    backend.model.lm_head = _ScriptedHead(token_ids, backend.model.config.vocab_size)


# Tokens and model info


def test_registry_loads_hf_folders_through_this_backend(tiny_llama_dir: Path) -> None:
    loaded = backend_for_format("hf", preferred="transformers").load(tiny_llama_dir, LoadOptions())
    assert isinstance(loaded, HFBackend) and isinstance(loaded, Backend)
    assert loaded.info.device == ("cuda" if torch.cuda.is_available() else "cpu")  # device "auto"


def test_llama3_special_tokens_tokenize_to_their_ids(backend: HFBackend) -> None:
    assert backend.tokenize("<|eot_id|>") == [EOT]
    assert backend.tokenize("<|end_of_text|>") == [END_OF_TEXT]
    assert backend.tokenize("#") == [HASH]
    assert backend.detokenize([BOS, 9906, EOT]) == "<|begin_of_text|>Hello<|eot_id|>"


def test_bos_is_added_once_and_only_when_asked(backend: HFBackend) -> None:
    assert backend.info.add_bos  # this tokenizer adds BOS by default, so add_bos=True adds it
    assert backend.tokenize("Hello") == [9906]
    assert backend.tokenize("Hello", add_bos=True) == [BOS, 9906]
    assert backend.tokenize("<|begin_of_text|>Hello", add_bos=True) == [BOS, 9906]


def test_model_info_reads_eos_ids_context_and_template(backend: HFBackend) -> None:
    info = backend.info
    assert info.architecture == "llama"
    assert (info.context_length, info.trained_context_length) == (256, 256)
    assert info.vocab_size == 128256
    assert (info.bos_token, info.eos_token, info.add_bos) == ("<|begin_of_text|>", "<|eot_id|>", True)
    assert info.end_of_generation_ids == {END_OF_TEXT, EOT}
    assert info.chat_template == LLAMA3_TEMPLATE
    assert info.device == "cpu"


def test_stale_default_eos_id_that_is_plain_text_is_ignored(tiny_llama_dir: Path, tmp_path: Path) -> None:
    # LlamaConfig's defaults (bos 1, eos 2) left in a Llama-3 config would stop output at every '#'.
    folder = tmp_path / "stale-eos"
    shutil.copytree(tiny_llama_dir, folder)
    for name in ("config.json", "generation_config.json"):
        data = json.loads((folder / name).read_text())
        data.update(bos_token_id=1, eos_token_id=2)
        (folder / name).write_text(json.dumps(data))
    loaded = HFBackend.load(folder, LoadOptions(device="cpu"))
    assert loaded.info.end_of_generation_ids == {EOT}


# Generation and stops


def test_generation_does_not_stop_on_token_id_2_but_stops_on_eot(patchable_backend: HFBackend) -> None:
    config = GenerationConfig(max_tokens=8, temperature=0.0, stop_token_ids=(EOT, END_OF_TEXT))
    _force_token(patchable_backend, HASH)
    completion = patchable_backend.stream("Hello", config).collect()
    assert completion.token_ids == [HASH] * 8
    assert (completion.text, completion.finish_reason) == ("########", "length")

    _force_token(patchable_backend, EOT)
    completion = patchable_backend.stream("Hello", config).collect()
    assert (completion.text, completion.token_ids, completion.finish_reason) == ("", [], "stop")


def test_model_end_of_generation_token_stops_without_being_emitted(patchable_backend: HFBackend) -> None:
    _script(patchable_backend, [832, 1403, END_OF_TEXT, 2380])  # " one two" then <|end_of_text|>
    completion = patchable_backend.stream("Hello", GREEDY).collect()
    assert (completion.text, completion.finish_reason) == (" one two", "stop")
    assert completion.token_ids == [832, 1403]


def test_stop_string_ends_text_before_it_and_nothing_after_leaks(patchable_backend: HFBackend) -> None:
    # " one two three four": the stop string starts inside " two", so " two" must be held back.
    _script(patchable_backend, [832, 1403, 2380, 3116])
    stream = patchable_backend.stream("Hello", GenerationConfig(max_tokens=8, stop=("two three",)))
    pieces = list(stream)
    assert "".join(pieces) == stream.completion.text == " one "
    assert stream.completion.finish_reason == "stop"


def test_stop_string_matching_from_the_first_token_emits_nothing(patchable_backend: HFBackend) -> None:
    _force_token(patchable_backend, HASH)
    stream = patchable_backend.stream("Hello", GenerationConfig(max_tokens=8, stop=("###",)))
    assert list(stream) == []
    assert (stream.completion.text, stream.completion.finish_reason) == ("", "stop")
    assert stream.completion.token_ids == [HASH] * 3


def test_multibyte_character_split_across_tokens_streams_whole(patchable_backend: HFBackend) -> None:
    _script(patchable_backend, [76460, 222, EOT])  # the two byte-level tokens of "😀"
    stream = patchable_backend.stream("Hello", GREEDY)
    assert list(stream) == ["😀"]
    assert stream.completion.text == "😀"


def test_cancel_event_stops_generation(patchable_backend: HFBackend) -> None:
    _force_token(patchable_backend, HASH)
    cancel = threading.Event()
    stream = patchable_backend.stream("Hello", GenerationConfig(max_tokens=50), cancel)
    pieces = []
    for piece in stream:
        pieces.append(piece)
        cancel.set()
    assert pieces == ["#"]
    assert (stream.completion.token_ids, stream.completion.finish_reason) == ([HASH], "cancelled")


def test_generate_batch_returns_one_completion_per_prompt(patchable_backend: HFBackend) -> None:
    _force_token(patchable_backend, HASH)
    prompts = ["Hello", [BOS, 9906, 1917]]
    completions = patchable_backend.generate_batch(prompts, GenerationConfig(max_tokens=3))
    assert [c.text for c in completions] == ["###", "###"]
    assert [c.prompt_tokens for c in completions] == [2, 3]


def test_repeat_penalty_demotes_tokens_already_in_the_prompt(patchable_backend: HFBackend) -> None:
    _force_token(patchable_backend, HASH, runners_up={9906: 80.0})  # '#' at 100, 'Hello' at 80
    prompt = [BOS, HASH]
    assert patchable_backend.stream(prompt, GenerationConfig(max_tokens=1)).collect().token_ids == [HASH]
    penalized = GenerationConfig(max_tokens=1, repeat_penalty=1.5)  # 100 / 1.5 < 80
    assert patchable_backend.stream(prompt, penalized).collect().token_ids == [9906]


def test_top_k_1_or_tiny_top_p_sampling_equals_greedy(backend: HFBackend) -> None:
    greedy = backend.stream("Hello", GREEDY).collect().token_ids
    for config in (
        GenerationConfig(max_tokens=8, temperature=5.0, top_k=1, seed=1),
        GenerationConfig(max_tokens=8, temperature=5.0, top_k=0, top_p=1e-9, seed=1),
    ):
        assert backend.stream("Hello", config).collect().token_ids == greedy


def test_seeded_sampling_is_reproducible(backend: HFBackend) -> None:
    def sample(seed: int) -> list[int]:
        config = GenerationConfig(max_tokens=8, temperature=0.8, seed=seed)
        return backend.stream("Hello", config).collect().token_ids

    assert sample(123) == sample(123)
    assert sample(123) != sample(124)


def test_greedy_matches_transformers_generate(backend: HFBackend) -> None:
    prompt_ids = backend.tokenize("The capital of France is", add_bos=True)
    completion = backend.stream(prompt_ids, GenerationConfig(max_tokens=10)).collect()
    expected = backend.model.generate(
        torch.tensor([prompt_ids]), max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0
    )[0, len(prompt_ids) :].tolist()
    assert completion.token_ids == expected
    assert completion.prompt_tokens == len(prompt_ids)


# Scoring


def test_score_matches_manual_log_softmax(backend: HFBackend) -> None:
    prompt = "The capital of France is"
    scores = backend.score(prompt, [" Paris", " a big city"])
    prompt_ids = backend.tokenize(prompt, add_bos=True)
    for score in scores:
        joined = backend.tokenize(prompt + score.continuation, add_bos=True)
        assert list(score.token_ids) == joined[len(prompt_ids) :]
        ids = prompt_ids + list(score.token_ids)
        with torch.no_grad():
            logprobs = torch.log_softmax(backend.model(torch.tensor([ids])).logits[0].float(), dim=-1)
        expected = [logprobs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(score.token_ids)]
        assert score.token_logprobs == pytest.approx(expected, abs=1e-4)
        assert all(lp < 0 and lp == lp for lp in score.token_logprobs)  # finite, not NaN
    assert len(scores[1].token_ids) == 3


# Limits and bad input


def test_prompt_longer_than_context_raises_context_overflow(small_context_backend: HFBackend) -> None:
    assert small_context_backend.info.context_length == 16
    prompt = "Hello" * 19  # BOS + 19 tokens
    with pytest.raises(ContextOverflowError, match=r"20 tokens.*16"):
        small_context_backend.stream(prompt, GREEDY)
    with pytest.raises(ContextOverflowError, match=r"20 tokens.*16"):
        small_context_backend.score(prompt, [" Paris"])
    with pytest.raises(ContextOverflowError, match=r"17 tokens.*16"):
        small_context_backend.score("Hello", [" Paris" * 15])


def test_generation_ends_with_length_when_context_is_full(small_context_backend: HFBackend) -> None:
    completion = small_context_backend.stream([BOS] + [9906] * 13, GenerationConfig(max_tokens=10)).collect()
    assert (len(completion.token_ids), completion.finish_reason) == (2, "length")


def _model_folder(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return folder


NO_TOKENIZER = "has no tokenizer (tokenizer.json or tokenizer.model)"
LLAMA_CONFIG = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"model.safetensors": b"", "tokenizer.json": "{}"}, "has no config.json"),
        ({"config.json": LLAMA_CONFIG, "pytorch_model.bin": b"", "tokenizer.json": "{}"}, "--allow-pickle"),
        (
            {"config.json": json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})},
            re.escape("'gpt2 (GPT2LMHeadModel)'"),
        ),
        ({"config.json": LLAMA_CONFIG, "model.safetensors": b""}, re.escape(NO_TOKENIZER)),
        ({"config.json": LLAMA_CONFIG, "tokenizer.json": "{}"}, "has no weights"),
    ],
    ids=["no-config", "pickle-only", "gpt2", "no-tokenizer", "no-weights"],
)
def test_unusable_folder_is_refused_with_one_line_message(tmp_path: Path, files: dict, message: str) -> None:
    folder = _model_folder(tmp_path, files)
    with pytest.raises(InvalidModelFileError, match=message) as caught:
        HFBackend.load(folder, LoadOptions(device="cpu"))
    assert "\n" not in str(caught.value)


def test_pickled_weights_load_when_allowed(tiny_llama_dir: Path, tmp_path: Path, backend: HFBackend) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_llama_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(backend.model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(InvalidModelFileError):
        HFBackend.load(folder, LoadOptions(device="cpu"))
    loaded = HFBackend.load(folder, LoadOptions(device="cpu", allow_pickle=True))
    config = GenerationConfig(max_tokens=5)
    expected = backend.stream("Hello", config).collect().token_ids
    assert loaded.stream("Hello", config).collect().token_ids == expected


@pytest.mark.parametrize("device", ["metal", "coreml"])
def test_devices_other_than_cpu_and_cuda_are_refused(tiny_llama_dir: Path, device: str) -> None:
    with pytest.raises(BackendUnavailableError, match="supports devices cpu and cuda"):
        HFBackend.load(tiny_llama_dir, LoadOptions(device=device))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused(tiny_llama_dir: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        HFBackend.load(tiny_llama_dir, LoadOptions(device="cuda"))


# The real bundled model


@pytest.fixture(scope="module")
def hf_smollm2(bundled_gguf: Path):
    backend = HFBackend.load(bundled_gguf, LoadOptions(device="cpu"))
    yield backend
    backend.close()


@pytest.mark.slow  # transformers parses and dequantizes the 135M GGUF: ~15-20 s
def test_bundled_gguf_loads_dequantized_and_answers(hf_smollm2) -> None:
    smollm2 = hf_smollm2
    assert smollm2.info.architecture == "llama"
    assert smollm2.info.chat_template and "<|im_start|>" in smollm2.info.chat_template
    assert not smollm2.info.add_bos  # SmolLM2 adds no BOS, so add_bos=True adds none
    assert smollm2.tokenize("Hi", add_bos=True) == smollm2.tokenize("Hi")
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    completion = smollm2.stream(prompt, GenerationConfig(max_tokens=12)).collect()
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop"  # <|im_end|>, the GGUF's eos


@pytest.mark.slow
def test_llama_cpp_agrees_with_the_transformers_reference_on_the_bundled_model(hf_smollm2, smollm2) -> None:
    """The same GGUF through both backends: same tokens, same greedy start, close log-probabilities."""
    prompt = smollm2.render([{"role": "user", "content": "Name three rivers in Africa."}])
    assert hf_smollm2.tokenize(prompt, add_bos=True) == smollm2.backend.tokenize(prompt, add_bos=True)
    config = smollm2.chat_config(GenerationConfig(max_tokens=6))
    reference = hf_smollm2.stream(prompt, config).collect()
    ours = smollm2.backend.stream(prompt, config).collect()
    # llama.cpp multiplies Q4_1 weights with 8-bit activations; transformers dequantizes to float32.
    # The first tokens must agree; later ones may drift on near-ties.
    assert ours.token_ids[:3] == reference.token_ids[:3]
    (ref_score,) = hf_smollm2.score(prompt, [reference.text])
    (our_score,) = smollm2.backend.score(prompt, [reference.text])
    assert ref_score.token_ids == our_score.token_ids
    for ref, got in zip(ref_score.token_logprobs, our_score.token_logprobs):
        assert abs(ref - got) < 0.35, (ref_score.token_logprobs, our_score.token_logprobs)


# BayLing-3 end to end: catalog chat format + real Llama-3 vocabulary + the model layer


def test_bayling3_chat_stops_on_eot_and_never_on_id_2(tiny_llama_dir: Path) -> None:
    from bayling_local.model import open_model

    model = open_model(str(tiny_llama_dir), chat_format="bayling-3", backend="transformers")
    assert set(model.stop_token_ids) == {EOT, END_OF_TEXT} and 2 not in model.stop_token_ids
    prompt_ids = model.backend.tokenize(model.render([{"role": "user", "content": "Hi"}]), add_bos=True)
    assert prompt_ids[0] == BOS and prompt_ids.count(BOS) == 1  # the template's BOS, not doubled

    _force_token(model.backend, 2)  # '#' forever: must run to max_tokens
    stream, _ = model.chat([{"role": "user", "content": "Hi"}], GenerationConfig(max_tokens=5))
    hashes = stream.collect()
    assert hashes.text == "#####" and hashes.finish_reason == "length"

    _force_token(model.backend, EOT)
    eot = model.chat([{"role": "user", "content": "Hi"}], GenerationConfig(max_tokens=5))[0].collect()
    assert eot.text == "" and eot.finish_reason == "stop"
