"""Multi-turn chat: history, context fitting (oldest turns dropped, system kept), translation API."""

from __future__ import annotations

import pytest

from bayling_local.backends.base import GenerationConfig
from bayling_local.chat import ChatSession
from bayling_local.errors import ContextOverflowError
from bayling_local.languages import resolve
from bayling_local.translate import translate_lines, translate_text

SHORT = GenerationConfig(max_tokens=16)


def test_session_records_both_turns_and_sends_history(smollm2):
    session = ChatSession(smollm2, SHORT)
    first = session.send("My name is Amina.")
    text = "".join(first)
    assert text and session.turns[-1] == {"role": "assistant", "content": first.completion.text.strip()}
    pending = session.send("What is my name?")  # not consumed yet: the answer is not recorded
    assert pending.completion is None and len(session.turns) == 3
    session.reset()
    assert session.turns == []


def test_fit_drops_oldest_exchanges_but_never_the_system_prompt(smollm2):
    system = {"role": "system", "content": "You are terse."}
    long_turn = "tell me about rivers " * 60
    turns = []
    for i in range(8):
        turns += [{"role": "user", "content": f"{i} {long_turn}"}, {"role": "assistant", "content": long_turn}]
    turns.append({"role": "user", "content": "last question"})
    fitted = smollm2.fit([system, *turns], reserve=256)
    assert fitted.dropped_turns > 0
    assert fitted.messages[0] == system
    assert fitted.messages[-1]["content"] == "last question"
    assert fitted.messages[1]["role"] == "user"
    assert fitted.prompt_tokens + 256 <= smollm2.context_length


def test_a_single_message_longer_than_the_window_is_an_error_and_history_is_unchanged(smollm2):
    session = ChatSession(smollm2, SHORT)
    with pytest.raises(ContextOverflowError, match="2048"):
        session.send("river " * 4000)
    assert session.turns == []


def test_session_reports_dropped_turns_once(smollm2):
    session = ChatSession(smollm2, GenerationConfig(max_tokens=8))
    filler = "lake " * 500
    for _ in range(3):
        session.turns += [{"role": "user", "content": filler}, {"role": "assistant", "content": filler}]
    reply = session.send("short question")
    "".join(reply)
    assert reply.dropped_turns > 0
    again = session.send("another")
    "".join(again)
    assert again.dropped_turns == 0


def test_translate_lines_gives_one_result_per_line_and_target_in_order(smollm2):
    targets = [resolve("sw"), resolve("fr"), resolve("zh")]
    lines = ["Good morning.", "", "Thank you very much."]
    results = list(translate_lines(smollm2, lines, targets, max_tokens=12))
    assert [(r.index, r.target.code) for r in results] == [
        (i, t.code) for i in range(3) for t in targets
    ]
    assert all("\n" not in r.text for r in results)
    assert [r.text for r in results if r.index == 1] == ["", "", ""]
    assert all(r.text.strip() for r in results if r.index != 1)


def test_text_already_in_the_target_language_passes_through(smollm2):
    english = resolve("en")
    assert translate_text(smollm2, "Hello there", english, source=english) == "Hello there"


def test_translate_lines_batched_equals_one_at_a_time_and_cancel_stops(smollm2):
    import threading

    targets = [resolve("fr"), resolve("sw")]
    lines = ["Good morning.", "The river is long.", "I like tea."]
    one = [r.text for r in translate_lines(smollm2, lines, targets, max_tokens=10, batch_size=1)]
    batched = [r.text for r in translate_lines(smollm2, lines, targets, max_tokens=10, batch_size=4)]
    assert one == batched
    cancel = threading.Event()
    cancel.set()
    assert list(translate_lines(smollm2, lines, targets, max_tokens=10, cancel=cancel)) == []
