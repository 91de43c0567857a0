"""`serve` under real uvicorn on loopback, driven by the official `openai` client, over the bundled model."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from bayling_local.backends.base import GenerationConfig
from tests.processes import wait_until
from tests.serve_harness import get, post, serving

QUESTIONS = [
    "Name a colour.",
    "What is two plus two?",
    "Say hello in French.",
    "Give me a fruit.",
    "Where is Rome?",
    "List two animals.",
    "Count to three.",
    "Bid me goodbye.",
]
"""Distinct first words: any two share only the chat template's prefix (see `_prime`)."""


@pytest.fixture(scope="module")
def server(smollm2):
    with serving(smollm2) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _prime(model) -> None:
    """Leave the same prompt in llama.cpp's cache before each compared run.

    llama-cpp-python reuses the cached prefix a new prompt shares with the last one, and a prompt
    evaluated in two parts can flip a greedy near-tie on this 135M Q4_1 model (measured: "Name a colour."
    answers differently fresh and right after itself). Runs compared with each other therefore start from
    this same cache state: a chat prompt whose first word no compared prompt begins with."""
    model.backend.stream(model.prompt_ids(_messages("Okay.")), GenerationConfig(max_tokens=1)).collect()


def _local_chat(model, text: str, max_tokens: int):
    _prime(model)
    stream, fitted = model.chat(_messages(text), GenerationConfig(max_tokens=max_tokens, temperature=0.0))
    return stream.collect(), fitted


def test_models_lists_the_served_model(client, smollm2):
    assert [m.id for m in client.models.list()] == [smollm2.name]


def test_chat_answer_and_usage_match_a_local_run(client, smollm2):
    _prime(smollm2)
    answer = client.chat.completions.create(
        model=smollm2.name, messages=_messages("Name a colour."), max_tokens=20, temperature=0
    )
    local, fitted = _local_chat(smollm2, "Name a colour.", 20)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == local.text
    assert answer.choices[0].finish_reason == local.finish_reason
    assert answer.usage.prompt_tokens == len(fitted.prompt_ids)
    assert answer.usage.completion_tokens == len(local.token_ids)
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_streamed_chat_joins_to_the_whole_answer_and_reports_usage_last(client, smollm2):
    _prime(smollm2)
    chunks = list(
        client.chat.completions.create(
            model=smollm2.name,
            messages=_messages("Say hello in French."),
            max_completion_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    local, fitted = _local_chat(smollm2, "Say hello in French.", 24)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == local.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == local.finish_reason
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == len(fitted.prompt_ids)
    assert chunks[-1].usage.completion_tokens == len(local.token_ids)
    assert all(c.usage is None for c in chunks[:-1])


def test_a_raw_stream_ends_with_done(server, smollm2):
    body = b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": true}'
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = [line for line in answer.read().decode().splitlines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"


def test_stop_strings_and_seeded_sampling(client, smollm2):
    def ask(**settings):
        _prime(smollm2)
        return client.chat.completions.create(
            model=smollm2.name, messages=_messages("Count from one to ten."), max_tokens=30, **settings
        ).choices[0]

    whole = ask(temperature=0).message.content
    word = whole.split()[2]
    stopped = ask(temperature=0, stop=[word])
    assert stopped.message.content == whole[: whole.index(word)]
    assert stopped.finish_reason == "stop"
    first, again = ask(temperature=0.9, top_p=0.9, seed=7), ask(temperature=0.9, top_p=0.9, seed=7)
    assert first.message.content == again.message.content


def test_completion_of_text_and_of_token_ids(client, smollm2):
    config = GenerationConfig(max_tokens=12, temperature=0.0)
    _prime(smollm2)
    local = smollm2.complete("The capital of France is", config).collect()
    _prime(smollm2)
    answer = client.completions.create(model=smollm2.name, prompt="The capital of France is", max_tokens=12, temperature=0)
    assert answer.object == "text_completion"
    assert answer.choices[0].text == local.text
    assert answer.usage.prompt_tokens == local.prompt_tokens
    assert answer.usage.completion_tokens == len(local.token_ids)
    ids = smollm2.backend.tokenize("The capital of France is", add_bos=True)
    _prime(smollm2)
    by_ids = client.completions.create(model=smollm2.name, prompt=ids, max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == local.text
    _prime(smollm2)
    streamed = client.completions.create(
        model=smollm2.name, prompt=ids, max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == local.text


def test_eight_concurrent_clients_get_the_sequential_greedy_texts(client, smollm2):
    def ask(question: str) -> str:
        answer = client.chat.completions.create(
            model=smollm2.name, messages=_messages(question), max_tokens=24, temperature=0
        )
        return answer.choices[0].message.content

    _prime(smollm2)
    sequential = [ask(q) for q in QUESTIONS]
    _prime(smollm2)
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(ask, QUESTIONS))
    assert concurrent == sequential


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(client, server, smollm2):
    stats = server.engine.stats
    before_steps, before_finished = stats.steps, stats.finished
    limit = 1500
    stream = client.chat.completions.create(
        model=smollm2.name,
        messages=_messages("Tell a very long story."),
        max_tokens=limit,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    _wait_for(lambda: stats.finished == before_finished + 1 and stats.active == 0)
    assert stats.steps - before_steps < limit // 2  # a request that ran on would have taken `limit` steps
    follow_up = client.chat.completions.create(
        model=smollm2.name, messages=_messages("Say hi."), max_tokens=4, temperature=0
    )
    assert follow_up.choices[0].message.content


def test_tokenize_and_detokenize_use_llama_servers_shapes(server, smollm2):
    status, _, body = post(f"{server.root}/tokenize", {"content": "Hello world", "unknown": 1})
    assert status == 200 and body == {"tokens": smollm2.backend.tokenize("Hello world")}
    status, _, pieces = post(f"{server.root}/tokenize", {"content": "Hello world", "with_pieces": True})
    assert [p["id"] for p in pieces["tokens"]] == body["tokens"]
    assert "".join(p["piece"] for p in pieces["tokens"]) == "Hello world"
    status, _, text = post(f"{server.root}/detokenize", {"tokens": body["tokens"]})
    assert status == 200 and text == {"content": "Hello world"}


def test_translate_returns_translations_in_input_order(server, smollm2):
    from bayling_local.languages import resolve
    from bayling_local.translate import translate_text

    texts, targets = ["Good morning.", "Thank you very much.", "42"], ["fr", "de"]
    _prime(smollm2)
    status, _, body = post(f"{server.base_url}/translate", {"texts": texts, "targets": targets, "source": "en"})
    assert status == 200
    got = [(t["index"], t["target"], t["text"]) for t in body["translations"]]
    _prime(smollm2)
    expected = [
        (i, resolve(code).code, translate_text(smollm2, text, resolve(code), source=resolve("en")))
        for i, text in enumerate(texts)
        for code in targets
    ]
    assert got == expected
    _prime(smollm2)
    status, _, one = post(f"{server.base_url}/translate", {"text": "Good morning.", "target": "fr"})
    assert one["translations"][0]["text"] == expected[0][2]


def test_health_answers_503_while_the_model_loads():
    with serving(None) as loading:
        status, _, body = get(f"{loading.root}/health")
        assert (status, body) == (503, {"status": "loading"})
        status, _, error = get(f"{loading.base_url}/models")
        assert status == 503 and error["error"]["type"] == "unavailable_error"


def _wait_for(condition, timeout: float = 120.0) -> None:
    """A hang detector for engine-side effects, not a timing assertion."""
    wait_until(condition, what="the engine to get there", timeout=timeout, interval=0.05)
