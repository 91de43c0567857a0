"""SerialEngine: one request at a time over a backend's stream, each with its own pieces and Completion."""

from __future__ import annotations

from bayling_local.backends.base import GenerationConfig
from bayling_local.engine import SerialEngine, create_engine

GREEDY = GenerationConfig(max_tokens=24, temperature=0.0)


def _prompt(smollm2, text: str) -> list[int]:
    return smollm2.prompt_ids([{"role": "user", "content": text}])


def test_each_request_streams_its_own_text_equal_to_a_lone_run(smollm2):
    engine = SerialEngine(smollm2.backend)
    try:
        prompts = [_prompt(smollm2, "Name a colour."), _prompt(smollm2, "Count to three.")]
        handles = [engine.submit(p, smollm2.chat_config(GREEDY)) for p in prompts]
        streamed = ["".join(handle) for handle in handles]
        for prompt, handle, text in zip(prompts, handles, streamed):
            alone = smollm2.backend.stream(prompt, smollm2.chat_config(GREEDY)).collect()
            assert text == handle.result().text == alone.text
            assert handle.result().token_ids == alone.token_ids
        assert engine.stats.submitted == engine.stats.finished == 2
        assert engine.stats.prefill_tokens == sum(len(p) for p in prompts)
    finally:
        engine.close()


def test_a_request_cancelled_while_queued_ends_without_generating(smollm2):
    engine = create_engine(smollm2)
    try:
        long = GenerationConfig(max_tokens=200, temperature=0.0, ignore_eos=True)
        first = engine.submit(_prompt(smollm2, "Tell a story."), long)
        queued = engine.submit(_prompt(smollm2, "Say hi."), long)
        queued.cancel()
        first.cancel()
        assert queued.result(timeout=120).finish_reason == "cancelled"
        assert queued.result().token_ids == []
        assert first.result(timeout=120).finish_reason in ("cancelled", "length")
        assert engine.stats.active == 0 and engine.stats.queued == 0
    finally:
        engine.close()


def test_close_cancels_what_is_queued_and_refuses_nothing_silently(smollm2):
    engine = create_engine(smollm2)
    long = GenerationConfig(max_tokens=500, temperature=0.0, ignore_eos=True)
    handles = [engine.submit(_prompt(smollm2, f"Story {i}."), long) for i in range(3)]
    engine.close()
    assert all(h.result(timeout=120).finish_reason == "cancelled" for h in handles[1:])
    late = engine.submit(_prompt(smollm2, "Late."), long)
    assert late.result(timeout=5).finish_reason == "cancelled"
