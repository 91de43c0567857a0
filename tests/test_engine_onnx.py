"""The ONNX Runtime engine on a real ONNX export of the bundled model: cache rows freed and refilled,
greedy results as alone, prompts in chunks, prefix reuse, cancel while queued and while running,
per-request stops, seeds and budgets.

Scheduling is asserted through the engine's step counters (`admitted_step`, `finished_step`, stats),
never through time.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.engine import create_engine
from bayling_local.engine.onnx_rows import OnnxRowsEngine
from bayling_local.errors import ContextOverflowError, InputTextError, UsageError
from bayling_local.languages import resolve
from bayling_local.translate import translation_messages

QUESTIONS = (
    "Name a fruit.",
    "Count to three.",
    "What is the capital of France?",
    "Say hello in Spanish.",
    "Write a haiku about rain.",
    "Who wrote Hamlet?",
)
SENTENCES = (
    "The cat sat on the mat.",
    "It is raining in the city today.",
    "She bought three apples at the market.",
    "The train leaves at noon.",
    "We will meet again next week.",
    "My brother plays the violin badly.",
)
GREEDY = GenerationConfig(max_tokens=24)
LONG = GenerationConfig(max_tokens=400, ignore_eos=True)


@pytest.fixture(scope="module")
def onnx_model(smollm2_hf_checkpoint, tmp_path_factory):
    """The bundled SmolLM2 exported once to ONNX (fp32) by our converter and loaded with ONNX Runtime."""
    from bayling_local.convert.onnx import to_onnx
    from bayling_local.model import open_model

    export = to_onnx(smollm2_hf_checkpoint, tmp_path_factory.mktemp("onnx-engine") / "fp32", "fp32")
    model = open_model(str(export), options=LoadOptions(device="cpu", threads=2, context_length=1024))
    assert model.backend.name == "onnxruntime"
    yield model
    model.close()


@pytest.fixture
def engine_of(onnx_model, closing):
    """`engine_of(parallel, **options)`: an engine over the exported model's backend, closed after the test."""
    return lambda parallel, **options: closing(OnnxRowsEngine(onnx_model.backend, parallel, **options))


def chat_ids(model, question: str) -> list[int]:
    return model.prompt_ids([{"role": "user", "content": question}])


def translation_ids(model, sentence: str) -> list[int]:
    return model.prompt_ids(translation_messages(sentence, resolve("swh_Latn")))


def alone(model, prompt: list[int], config: GenerationConfig):
    return model.backend.stream(prompt, config).collect()


def summary_ids(model) -> list[int]:
    """A raw-text prompt longer than the translation prompts' shared start, sharing none of it."""
    return model.backend.tokenize("Summarise: " + " ".join(SENTENCES) + " Summary:")


def same_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_greedy_results_at_parallel_three_match_each_prompt_alone_and_rows_are_refilled(onnx_model, engine_of):
    config = onnx_model.chat_config(GREEDY)
    prompts = [chat_ids(onnx_model, q) for q in QUESTIONS]
    engine = engine_of(3)
    handles = [engine.submit(p, config) for p in prompts]
    streamed = ["".join(h) for h in handles]
    together = [h.result(timeout=600) for h in handles]
    lone = [alone(onnx_model, p, config) for p in prompts]
    identical = sum(a.token_ids == b.token_ids for a, b in zip(lone, together))
    # A prompt runs alone in its row exactly as in a lone run, and fp32 decode runs give each row the logits
    # it gets alone, bit for bit (seen: 6 of 6). An int4 export would flip near-ties (its MatMulNBits takes
    # another kernel path for several rows; the arg-max differs at ~6% of decode steps, same KL to fp32).
    print(f"greedy identical to alone: {identical}/{len(prompts)}")
    assert identical == len(prompts)
    assert streamed == [c.text for c in together] == [c.text for c in lone]
    assert all(c.prompt_tokens == len(p) for c, p in zip(together, prompts))
    stats = engine.stats
    assert stats.finished == stats.submitted == len(prompts) and stats.active == stats.queued == 0
    # The three that joined later got the chat template's system prompt copied (the first two taught it).
    assert stats.prefill_tokens_saved > 0
    assert stats.prefill_tokens + stats.prefill_tokens_saved == sum(map(len, prompts))
    # Three rows for six requests: the last three each took a row the moment one was freed.
    # (The first three got rows without waiting for one to be freed; the first may start a step before
    # the other two are submitted, as the engine's thread starts with the first request.)
    first, later = handles[:3], handles[3:]
    freed = sorted(h.finished_step for h in handles)
    assert max(h.admitted_step for h in first) < freed[0]
    assert all(h.admitted_step in freed for h in later)
    assert stats.steps < sum(len(c.token_ids) for c in together), "requests did not decode together"


def test_a_freed_row_is_refilled_in_the_same_step_while_a_long_request_keeps_decoding(onnx_model, engine_of):
    engine = engine_of(2)
    long = engine.submit(chat_ids(onnx_model, "Tell a long story."), GenerationConfig(max_tokens=40, ignore_eos=True))
    short = engine.submit(chat_ids(onnx_model, "Name a fruit."), GenerationConfig(max_tokens=4, ignore_eos=True))
    late = engine.submit(chat_ids(onnx_model, "Say hi."), GenerationConfig(max_tokens=4, ignore_eos=True))
    assert [len(h.result(timeout=600).token_ids) for h in (long, short, late)] == [40, 4, 4]
    assert late.admitted_step == short.finished_step > 0
    assert late.finished_step < long.finished_step, "the queued request waited for the long one"
    assert engine.stats.steps == long.finished_step
    # One token per row per pass (no drafts here): `bench speed`'s tokens/pass reads 1.0.
    assert engine.stats.generated_tokens == engine.stats.sampling_passes == 48
    assert engine.stats.tokens_per_pass == 1.0


def test_cancelling_a_queued_request_ends_it_without_a_row(onnx_model, engine_of):
    engine = engine_of(1)
    first = engine.submit(chat_ids(onnx_model, "Tell a long story."), GenerationConfig(max_tokens=20, ignore_eos=True))
    queued = engine.submit(chat_ids(onnx_model, "Name a fruit."), GenerationConfig(max_tokens=20))
    queued.cancel()
    assert queued.result(timeout=600).finish_reason == "cancelled" and queued.result().token_ids == []
    assert list(queued) == []
    assert first.result(timeout=600).finish_reason == "length"
    assert queued.admitted_step is None
    assert engine.stats.finished == 2 and engine.stats.prefill_tokens == len(first.prompt_ids)


def test_cancelling_a_running_request_frees_its_row_for_the_queued_one_within_a_step(onnx_model, engine_of):
    engine = engine_of(1)
    running = engine.submit(chat_ids(onnx_model, "Tell a long story."), LONG)
    next(iter(running))  # it is decoding
    waiting = engine.submit(chat_ids(onnx_model, "Name a fruit."), GenerationConfig(max_tokens=3, ignore_eos=True))
    assert engine.stats.queued == 1 and engine.stats.active == 1
    running.cancel()
    cancelled = running.result(timeout=600)
    assert cancelled.finish_reason == "cancelled" and len(cancelled.token_ids) < LONG.max_tokens
    assert waiting.result(timeout=600).finish_reason == "length"
    assert waiting.admitted_step == running.finished_step
    assert engine.stats.active == 0 and engine.stats.queued == 0


def test_stop_strings_stop_tokens_and_max_tokens_hold_per_request(onnx_model, engine_of):
    prompt = chat_ids(onnx_model, "Count from one to ten in words.")
    config = onnx_model.chat_config(GenerationConfig(max_tokens=40))
    full = alone(onnx_model, prompt, config)
    cut = full.text.split()[2]
    stop_token = full.token_ids[5]
    engine = engine_of(4)
    handles = [
        engine.submit(prompt, replace(config, stop=(cut,))),
        engine.submit(prompt, replace(config, stop_token_ids=(stop_token,))),
        engine.submit(prompt, replace(config, max_tokens=3)),
        engine.submit(prompt, config),
    ]
    streamed_by_string = "".join(handles[0])
    by_string, by_token, by_length, unchanged = (h.result(timeout=600) for h in handles)
    assert by_string.finish_reason == "stop" and cut not in by_string.text and full.text.startswith(by_string.text)
    assert streamed_by_string == by_string.text
    assert by_string.text == alone(onnx_model, prompt, replace(config, stop=(cut,))).text
    assert by_token.finish_reason == "stop" and by_token.token_ids == full.token_ids[:5]
    assert by_length.finish_reason == "length" and by_length.token_ids == full.token_ids[:3]
    assert unchanged.token_ids == full.token_ids and unchanged.finish_reason == full.finish_reason


def test_a_seeded_sampled_request_picks_the_tokens_it_picks_alone_beside_others(onnx_model, engine_of):
    sampled = onnx_model.chat_config(GenerationConfig(max_tokens=20, temperature=0.9, top_p=0.95, seed=11))
    prompt = chat_ids(onnx_model, "Write a haiku about rain.")
    engine = engine_of(3)
    neighbours = [engine.submit(chat_ids(onnx_model, q), onnx_model.chat_config(GREEDY)) for q in QUESTIONS[:2]]
    handle = engine.submit(prompt, sampled)
    other_seed = engine.submit(prompt, replace(sampled, seed=12))
    assert handle.result(timeout=600).token_ids == alone(onnx_model, prompt, sampled).token_ids
    assert other_seed.result(timeout=600).token_ids == alone(onnx_model, prompt, replace(sampled, seed=12)).token_ids
    assert all(n.result(timeout=600).finish_reason in ("stop", "length") for n in neighbours)


def test_a_prompt_longer_than_a_step_goes_in_chunks_below_a_row_that_decodes(onnx_model, engine_of):
    # Sampled with a seed: it picks the lone run's tokens only from the lone run's logits, and greedy
    # would hide a small change (a wrong key at position 0 moved logits by 1.5 and kept every arg-max).
    config = GenerationConfig(max_tokens=32, temperature=1.0, top_k=0, top_p=1.0, seed=5, ignore_eos=True)
    # Raw text: its first token is a word, unlike the padding a decode run could write over it.
    long_prompt = onnx_model.backend.tokenize("Summarise: " + " ".join(SENTENCES) + " Summary:")
    engine = engine_of(2, step_tokens=16)
    brief = engine.submit(chat_ids(onnx_model, "Name a fruit."), GenerationConfig(max_tokens=2, ignore_eos=True))
    decoding = engine.submit(
        chat_ids(onnx_model, "Tell a long story."), GenerationConfig(max_tokens=60, ignore_eos=True)
    )
    # Queued: it takes row 0 when `brief` leaves it, and its chunks go in while row 1 decodes, so each
    # decode run pads row 0 (where the next chunk will overwrite it, not over the chunks already in).
    chunked = engine.submit(long_prompt, config)
    result = chunked.result(timeout=600)
    chunks = -(-len(long_prompt) // 16)
    assert len(long_prompt) > 3 * 16
    assert chunked.admitted_step == brief.finished_step
    assert chunked.finished_step - chunked.admitted_step >= chunks  # at most one chunk per step
    assert decoding.result(timeout=600).finish_reason == "length" and decoding.finished_step > chunked.finished_step
    assert engine.stats.prefill_tokens == sum(len(h.prompt_ids) for h in (brief, decoding, chunked))
    # Chunks run other MatMul shapes than one prompt run; with fp32 the logits are still the lone run's (seen).
    assert result.token_ids == alone(onnx_model, long_prompt, config).token_ids


def test_create_engine_gives_the_onnx_backend_cache_rows(onnx_model):
    engine = create_engine(onnx_model, parallel=2)
    try:
        assert isinstance(engine, OnnxRowsEngine) and engine.stats.slots == 2
        handle = engine.submit(chat_ids(onnx_model, "Name a fruit."), onnx_model.chat_config(GREEDY))
        assert handle.result(timeout=600).text
    finally:
        engine.close()


def test_bad_requests_are_refused_with_one_typed_error(onnx_model, engine_of):
    engine = engine_of(1, capacity=64)
    with pytest.raises(InputTextError, match="empty"):
        engine.submit([], GREEDY)
    with pytest.raises(InputTextError, match="outside this model's vocabulary"):
        engine.submit([1, onnx_model.backend.info.vocab_size], GREEDY)
    with pytest.raises(ContextOverflowError, match="holds 64"):
        engine.submit([1] * 64, GREEDY)
    with pytest.raises(UsageError, match="at least 1"):
        OnnxRowsEngine(onnx_model.backend, 0)
    assert engine.stats.submitted == 0


def test_a_request_gets_at_most_the_room_left_in_its_row(onnx_model, engine_of):
    engine = engine_of(1, capacity=64)
    prompt = chat_ids(onnx_model, "Tell a long story.")
    result = engine.submit(prompt, GenerationConfig(max_tokens=200, ignore_eos=True)).result(timeout=600)
    assert result.finish_reason == "length" and len(result.token_ids) == 64 - len(prompt)


def test_close_cancels_what_is_queued_or_running_and_later_requests(onnx_model, engine_of):
    engine = OnnxRowsEngine(onnx_model.backend, 1)
    handles = [engine.submit(chat_ids(onnx_model, f"Story {i}."), LONG) for i in range(3)]
    engine.close()
    assert all(h.result(timeout=120).finish_reason == "cancelled" for h in handles[1:])
    assert handles[0].result(timeout=120).finish_reason in ("cancelled", "length")
    late = engine.submit(chat_ids(onnx_model, "Late."), LONG)
    assert late.result(timeout=5).finish_reason == "cancelled"


def test_prefix_reuse_copies_the_shared_translation_prompt_start_and_keeps_greedy_output(onnx_model, engine_of):
    translations = [translation_ids(onnx_model, s) for s in SENTENCES[:5]]
    other = summary_ids(onnx_model)
    shared = same_prefix_length(translations[0], translations[1])
    # One at a time, so every request takes row 0: the first two teach the engine the prefix, and before each
    # later one `other` writes its own keys over the prefix's positions in that row.
    prompts = [translations[0], translations[1]]
    for later in translations[2:]:
        prompts += [other, later]
    config = onnx_model.chat_config(GREEDY)

    def one_at_a_time(engine):
        return [engine.submit(p, config).result(timeout=600) for p in prompts]

    reused_engine, plain_engine = engine_of(2), engine_of(2, prefix_reuse=False)
    reused, plain = one_at_a_time(reused_engine), one_at_a_time(plain_engine)
    assert shared >= 16 and len(other) > shared and same_prefix_length(other, translations[0]) < 16
    assert reused_engine.stats.prefill_tokens_saved == shared * (len(translations) - 2)
    assert reused_engine.stats.prefill_tokens + reused_engine.stats.prefill_tokens_saved == sum(map(len, prompts))
    assert plain_engine.stats.prefill_tokens_saved == 0
    # fp32: keys and values copied are the numbers the prompt run computed, and the rest of the prompt
    # attends over them as a later chunk would (seen: identical token for token).
    assert [c.token_ids for c in reused] == [c.token_ids for c in plain]


def test_prefix_reuse_beside_decoding_rows_and_not_for_a_prompt_that_shares_nothing(onnx_model, engine_of):
    config = onnx_model.chat_config(GREEDY)
    translations = [translation_ids(onnx_model, s) for s in SENTENCES[:5]]
    other = summary_ids(onnx_model)
    unrelated = onnx_model.backend.tokenize("Say: the train leaves at noon.")
    # Three rows. `other` ends first (2 tokens) and leaves row 0 to the third translation, which gets the
    # prefix the first two taught over `other`'s keys; `unrelated` comes after the prefix is kept and must
    # not get it; the last two translations reuse it while other rows decode.
    requests = [(other, GenerationConfig(max_tokens=2, ignore_eos=True)), *((t, config) for t in translations[:3])]
    requests += [(unrelated, config), *((t, config) for t in translations[3:])]
    engine = engine_of(3)
    handles = [engine.submit(p, c) for p, c in requests]
    together = [h.result(timeout=600) for h in handles]
    lone = [alone(onnx_model, p, c) for p, c in requests]
    shared = same_prefix_length(translations[0], translations[1])
    assert handles[3].admitted_step == handles[0].finished_step and handles[4].admitted_step > 0
    assert [c.token_ids for c in together] == [c.token_ids for c in lone]
    assert engine.stats.prefill_tokens_saved == shared * 3
    assert engine.stats.prefill_tokens + engine.stats.prefill_tokens_saved == sum(len(p) for p, _ in requests)
