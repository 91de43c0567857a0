"""The continuous-batching engine on the real bundled model through real llama.cpp: greedy results as
alone, requests joining and leaving between steps, cancel freeing a slot, prefix reuse, per-request stops.

Scheduling is asserted through the engine's step counters (`admitted_step`, `finished_step`, stats),
never through time.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from bayling_local.backends.base import GenerationConfig
from bayling_local.engine.continuous import ContinuousEngine
from bayling_local.errors import ContextOverflowError, InputTextError
from bayling_local.languages import resolve
from bayling_local.translate import translation_messages
from tests.processes import wait_until

QUESTIONS = (
    "Name a fruit.",
    "Count to three.",
    "What is the capital of France?",
    "Say hello in Spanish.",
    "Write a haiku about rain.",
    "What is 2+2?",
    "Name three colors.",
    "Who wrote Hamlet?",
)
SENTENCES = (
    "The cat sat on the mat.",
    "It is raining in the city today.",
    "She bought three apples at the market.",
    "The train leaves at noon.",
    "We will meet again next week.",
)


@pytest.fixture
def engine_of(smollm2, closing):
    """`engine_of(parallel, **options)`: an engine over the bundled model's backend, closed after the test."""
    return lambda parallel, **options: closing(ContinuousEngine(smollm2.backend, parallel, **options))


def chat_ids(model, question: str) -> list[int]:
    return model.prompt_ids([{"role": "user", "content": question}])


def same_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_greedy_results_at_parallel_four_match_each_prompt_alone(smollm2, engine_of):
    config = smollm2.chat_config(GenerationConfig(max_tokens=24))
    prompts = [chat_ids(smollm2, q) for q in QUESTIONS]
    engine = engine_of(4)
    handles = [engine.submit(p, config) for p in prompts]
    together = [h.result(timeout=600) for h in handles]
    alone = [smollm2.backend.stream(p, config).collect() for p in prompts]
    identical = sum(a.token_ids == b.token_ids for a, b in zip(alone, together))
    # llama.cpp's multi-token kernels may flip a near-tie that one-token decoding resolves the other
    # way (seen: 1 of these 8, "Spanish"/"English" at the 4th token); more than one is a bug.
    print(f"greedy identical to alone: {identical}/{len(prompts)}")
    assert identical >= len(prompts) - 1
    assert all(c.prompt_tokens == len(p) for c, p in zip(together, prompts))
    assert engine.stats.finished == len(prompts) and engine.stats.active == engine.stats.queued == 0


def test_a_request_submitted_while_others_run_joins_without_waiting_for_them(smollm2, engine_of):
    engine = engine_of(2)
    long = engine.submit(chat_ids(smollm2, "Tell a long story."), GenerationConfig(max_tokens=60, ignore_eos=True))
    next(iter(long))  # the long one is decoding
    late = engine.submit(chat_ids(smollm2, "Name a fruit."), GenerationConfig(max_tokens=4, ignore_eos=True))
    assert len(late.result(timeout=600).token_ids) == 4
    assert len(long.result(timeout=600).token_ids) == 60
    assert late.admitted_step > long.admitted_step
    assert late.finished_step < long.finished_step, "the late request waited for the long one"


def test_cancelling_a_running_request_frees_its_slot_for_the_next_queued_one_within_a_step(smollm2, engine_of):
    engine = engine_of(1)
    running = engine.submit(chat_ids(smollm2, "Tell a long story."), GenerationConfig(max_tokens=400, ignore_eos=True))
    next(iter(running))
    waiting = engine.submit(chat_ids(smollm2, "Name a fruit."), GenerationConfig(max_tokens=3, ignore_eos=True))
    assert engine.stats.queued == 1 and engine.stats.active == 1
    running.cancel()
    cancelled = running.result(timeout=600)
    assert cancelled.finish_reason == "cancelled" and len(cancelled.token_ids) < 400
    assert waiting.result(timeout=600).finish_reason == "length"
    # The slot was freed in the step that saw the cancel, and the queued request took it in that step.
    assert waiting.admitted_step - running.finished_step <= 1
    assert engine.stats.active == 0 and engine.stats.queued == 0


def test_cancelling_a_queued_request_ends_it_without_a_slot(smollm2, engine_of):
    engine = engine_of(1)
    first = engine.submit(chat_ids(smollm2, "Tell a long story."), GenerationConfig(max_tokens=20, ignore_eos=True))
    queued = engine.submit(chat_ids(smollm2, "Name a fruit."), GenerationConfig(max_tokens=20))
    queued.cancel()
    assert queued.result(timeout=600).finish_reason == "cancelled" and queued.result().token_ids == []
    assert first.result(timeout=600).finish_reason == "length"
    assert queued.admitted_step is None and queued.finished_step is not None
    assert engine.stats.finished == engine.stats.submitted == 2, "a request cancelled in the queue ends too"


def test_prefix_reuse_copies_the_shared_translation_prompt_start_and_keeps_greedy_text(smollm2, engine_of):
    target = resolve("swh_Latn")
    prompts = [smollm2.prompt_ids(translation_messages(s, target)) for s in SENTENCES]
    shared = same_prefix_length(prompts[0], prompts[1])
    config = smollm2.chat_config(GenerationConfig(max_tokens=24))

    def run(engine):
        # One at a time: the first two prompts teach the engine the prefix, the rest reuse it.
        return [engine.submit(p, config).result(timeout=600) for p in prompts]

    reused_engine, plain_engine = engine_of(2), engine_of(2, prefix_reuse=False)
    reused, plain = run(reused_engine), run(plain_engine)
    assert shared >= 16
    assert reused_engine.stats.prefill_tokens_saved == shared * (len(prompts) - 2)
    assert reused_engine.stats.prefill_tokens + reused_engine.stats.prefill_tokens_saved == sum(map(len, prompts))
    assert plain_engine.stats.prefill_tokens_saved == 0
    assert [c.text for c in reused] == [c.text for c in plain]


def test_stop_strings_stop_tokens_and_max_tokens_hold_per_request(smollm2, engine_of):
    prompt = chat_ids(smollm2, "Count from one to ten in words.")
    config = smollm2.chat_config(GenerationConfig(max_tokens=40))
    full = smollm2.backend.stream(prompt, config).collect()
    cut = full.text.split()[2]
    stop_token = full.token_ids[5]
    engine = engine_of(4)
    handles = [
        engine.submit(prompt, replace(config, stop=(cut,))),
        engine.submit(prompt, replace(config, stop_token_ids=(stop_token,))),
        engine.submit(prompt, replace(config, max_tokens=3)),
        engine.submit(prompt, config),
    ]
    by_string, by_token, by_length, unchanged = (h.result(timeout=600) for h in handles)
    assert by_string.finish_reason == "stop" and cut not in by_string.text and full.text.startswith(by_string.text)
    assert by_token.finish_reason == "stop" and by_token.token_ids == full.token_ids[:5]
    assert by_length.finish_reason == "length" and by_length.token_ids == full.token_ids[:3]
    assert unchanged.token_ids == full.token_ids


def test_pieces_stream_per_request_and_join_to_the_completion_text(smollm2, engine_of):
    engine = engine_of(2)
    config = smollm2.chat_config(GenerationConfig(max_tokens=16))
    handles = [engine.submit(chat_ids(smollm2, q), config) for q in ("Write 你好 twice.", "Name a city.")]
    for handle in handles:
        assert "".join(handle) == handle.result().text


def test_seeded_sampling_in_the_engine_repeats(smollm2, engine_of):
    engine = engine_of(2)
    config = smollm2.chat_config(GenerationConfig(max_tokens=12, temperature=1.0, top_k=0, top_p=1.0, seed=7))
    prompt = chat_ids(smollm2, "Tell a joke.")
    first, second = (engine.submit(prompt, config).result(timeout=600) for _ in range(2))
    assert first.token_ids == second.token_ids


def test_bad_prompts_are_one_line_errors_and_a_closed_engine_cancels(smollm2, engine_of):
    engine = engine_of(1)
    with pytest.raises(InputTextError):
        engine.submit([], GenerationConfig())
    with pytest.raises(ContextOverflowError, match="2048"):
        engine.submit([1] * 3000, GenerationConfig())
    # llama.cpp would refuse the whole batch, failing every request in it with this one.
    with pytest.raises(InputTextError, match="outside this model's vocabulary"):
        engine.submit([1, smollm2.backend.info.vocab_size], GenerationConfig())
    assert engine.stats.submitted == 0
    engine.close()
    assert engine.submit([1, 2, 3], GenerationConfig()).result(timeout=60).finish_reason == "cancelled"


def os_threads() -> int:
    """Threads of this process as the kernel counts them: Python's and native ones (libgomp's team)."""
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux /proc")
def test_the_engine_thread_ends_when_idle_taking_its_openmp_team_and_the_next_request_starts_another(
    smollm2, engine_of
):
    """An idle engine thread kept its libgomp team alive; more OpenMP threads than cores make libgomp
    throttle spin-waiting for every team, and plain decoding on the caller's thread ran about 1.6x slower
    after a batch. The thread now ends when nothing runs or waits."""
    config = smollm2.chat_config(GenerationConfig(max_tokens=8))
    prompts = [chat_ids(smollm2, q) for q in QUESTIONS[:3]]
    alone = [smollm2.backend.stream(p, config).collect().token_ids for p in prompts]
    before = os_threads()
    engine = engine_of(2)
    results = [h.result(timeout=600).token_ids for h in [engine.submit(p, config) for p in prompts[:2]]]
    wait_until(lambda: os_threads() <= before, what=f"the engine's threads to end ({os_threads()} vs {before})")
    assert not [t for t in threading.enumerate() if t.name == "llama-engine"]
    results.append(engine.submit(prompts[2], config).result(timeout=600).token_ids)  # a new thread serves it
    assert results == alone
    wait_until(lambda: os_threads() <= before, what="the second engine thread to end")
    assert engine.stats.submitted == engine.stats.finished == 3
