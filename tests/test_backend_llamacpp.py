"""The real bundled model through the real llama.cpp: streaming, stops, scoring, cancel, batches."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import pytest

from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.errors import BackendUnavailableError, ContextOverflowError

GREEDY = GenerationConfig(max_tokens=48, temperature=0.0)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_turn_streams_text_and_stops_on_the_templates_end_token(smollm2):
    stream, _ = smollm2.chat([{"role": "user", "content": "Say hello."}], GenerationConfig(max_tokens=200))
    pieces = list(stream)
    completion = stream.completion
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert completion.finish_reason == "stop"
    assert "<|im_end|>" not in completion.text
    im_end = smollm2.backend.tokenize("<|im_end|>")
    assert im_end == [2] and 2 in smollm2.stop_token_ids


def test_greedy_generation_is_deterministic(smollm2):
    first = smollm2.chat(QUESTION, GREEDY)[0].collect()
    second = smollm2.chat(QUESTION, GREEDY)[0].collect()
    assert first.text == second.text and first.token_ids == second.token_ids


def test_seeded_sampling_repeats_and_different_seeds_differ(smollm2):
    def sample(seed):
        config = GenerationConfig(max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, seed=seed)
        return smollm2.chat(QUESTION, config)[0].collect().token_ids

    assert sample(11) == sample(11)
    assert sample(11) != sample(12) or sample(13) != sample(11)


def test_logprobs_are_finite_and_favour_the_models_own_greedy_continuation(smollm2):
    prompt = smollm2.render(QUESTION)
    greedy = smollm2.backend.stream(prompt, smollm2.chat_config(GenerationConfig(max_tokens=12))).collect()
    own, other = smollm2.score(prompt, [greedy.text, "Purple bananas sing loudly at dawn."])
    assert all(math.isfinite(x) and x <= 0 for x in own.token_logprobs + other.token_logprobs)
    assert own.token_ids == tuple(greedy.token_ids)
    assert own.mean_logprob > other.mean_logprob
    # The greedy token is the arg-max, so each of its log-probabilities is at least log(1/2)-ish high.
    assert own.mean_logprob > -1.5


def test_score_matches_across_calls_and_after_generation(smollm2):
    prompt = smollm2.render(QUESTION)
    before = smollm2.score(prompt, ["Paris."])[0].logprob
    smollm2.chat(QUESTION, GREEDY)[0].collect()
    after = smollm2.score(prompt, ["Paris."])[0].logprob
    assert before == pytest.approx(after, abs=1e-4)


def test_stop_string_ends_generation_and_is_not_returned(smollm2):
    text = smollm2.chat(QUESTION, GREEDY)[0].collect().text
    cut = text.split()[2]
    stopped = smollm2.chat(QUESTION, GenerationConfig(max_tokens=48, stop=(cut,)))[0].collect()
    assert stopped.finish_reason == "stop"
    assert cut not in stopped.text
    assert text.startswith(stopped.text)


def test_max_tokens_cuts_with_finish_reason_length(smollm2):
    completion = smollm2.complete("Once upon a time", GenerationConfig(max_tokens=5)).collect()
    assert len(completion.token_ids) == 5 and completion.finish_reason == "length"


def test_cancel_event_stops_generation_between_tokens(smollm2):
    cancel = threading.Event()
    stream = smollm2.complete("Once upon a time", GenerationConfig(max_tokens=200), cancel)
    for _ in stream:
        cancel.set()
    assert stream.completion.finish_reason == "cancelled"
    assert len(stream.completion.token_ids) <= 2


def test_batch_generation_matches_one_at_a_time(smollm2):
    prompts = [smollm2.render([{"role": "user", "content": q}]) for q in ("Name a fruit.", "Count to three.")]
    config = smollm2.chat_config(GenerationConfig(max_tokens=24))
    batch = smollm2.backend.generate_batch(prompts, config)
    single = [smollm2.backend.stream(p, config).collect() for p in prompts]
    assert [c.text for c in batch] == [c.text for c in single]


def test_prompt_longer_than_the_context_is_an_error_naming_the_limit(smollm2):
    with pytest.raises(ContextOverflowError, match="2048"):
        smollm2.complete("word " * 3000, GREEDY).collect()


def test_requesting_a_gpu_the_build_lacks_names_the_reinstall(bundled_gguf):
    from bayling_local.backends.device import llama_cpp_gpu_backend
    from bayling_local.backends.llamacpp import LlamaCppBackend

    if llama_cpp_gpu_backend() == "cuda":
        pytest.skip("this llama.cpp build has CUDA")
    with pytest.raises(BackendUnavailableError, match="GGML_CUDA"):
        LlamaCppBackend.load(bundled_gguf, LoadOptions(device="cuda"))


def test_multibyte_text_streams_without_broken_characters(smollm2):
    stream = smollm2.chat([{"role": "user", "content": "Write 你好 and 😀 three times."}], GREEDY)[0]
    text = "".join(stream)
    assert "\ufffd" not in text


def test_batches_larger_than_one_context_group_keep_prompt_order(smollm2):
    from bayling_local.engine.batches import MAX_SEQUENCES

    questions = [f"Say the number {n}." for n in range(MAX_SEQUENCES + 2)]
    prompts = [smollm2.render([{"role": "user", "content": q}]) for q in questions]
    config = smollm2.chat_config(GenerationConfig(max_tokens=4))
    batch = smollm2.backend.generate_batch(prompts, config)
    single = [smollm2.backend.stream(p, config).collect() for p in prompts]
    assert [c.token_ids for c in batch] == [c.token_ids for c in single]
    assert all(c.prompt_tokens == len(smollm2.backend.tokenize(p)) for c, p in zip(batch, prompts))


def test_batched_sampling_with_a_seed_repeats(smollm2):
    prompts = [smollm2.render([{"role": "user", "content": q}]) for q in ("Tell a joke.", "Name a city.")]
    config = smollm2.chat_config(GenerationConfig(max_tokens=16, temperature=1.0, top_k=0, top_p=1.0, seed=5))
    first = [c.token_ids for c in smollm2.backend.generate_batch(prompts, config)]
    assert first == [c.token_ids for c in smollm2.backend.generate_batch(prompts, config)]


def test_batched_generation_honours_stop_strings_and_cancel(smollm2):
    prompts = [smollm2.render([{"role": "user", "content": "Count from one to ten in words."}])] * 2
    config = smollm2.chat_config(GenerationConfig(max_tokens=48))
    full = smollm2.backend.generate_batch(prompts, config)[0].text
    cut = full.split()[1]
    stopped = smollm2.backend.generate_batch(prompts, replace(config, stop=(cut,)))
    assert all(c.finish_reason == "stop" and cut not in c.text and full.startswith(c.text) for c in stopped)
    cancel = threading.Event()
    cancel.set()
    cancelled = smollm2.backend.generate_batch(prompts, config, cancel)
    assert [c.finish_reason for c in cancelled] == ["cancelled", "cancelled"]


def test_ignore_eos_generates_to_max_tokens_alone_and_in_batches(smollm2):
    prompt = smollm2.render([{"role": "user", "content": "Say hello."}])
    ends = smollm2.backend.stream(prompt, GenerationConfig(max_tokens=64)).collect()
    assert ends.finish_reason == "stop" and len(ends.token_ids) < 64
    through = GenerationConfig(max_tokens=64, ignore_eos=True)
    assert len(smollm2.backend.stream(prompt, through).collect().token_ids) == 64
    assert [len(c.token_ids) for c in smollm2.backend.generate_batch([prompt] * 2, through)] == [64, 64]


def test_default_threads_are_one_per_physical_core_for_decode_and_prompts(bundled_gguf):
    """llama-cpp-python alone would decode on half the logical CPUs: one core of two on a machine
    without SMT."""
    from bayling_local.backends.device import physical_cores
    from bayling_local.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend.load(bundled_gguf, LoadOptions(device="cpu", context_length=256))
    try:
        settings = backend.runtime_settings()
        assert settings["threads"] == settings["batch_threads"] == str(physical_cores())
    finally:
        backend.close()


def test_physical_cores_follow_the_cpu_affinity():
    """Cores the process may not run on are not counted: a `taskset -c 0` run decodes on one thread."""
    import os
    import subprocess
    import sys

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from bayling_local.backends.device import physical_cores; print(physical_cores())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
