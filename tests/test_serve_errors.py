"""`serve` refuses what it cannot do with OpenAI-style error objects: bad input, unknown model, too long,
too many requests, no key."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from tests.serve_harness import get, post, serving

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def server(smollm2):
    with serving(smollm2, max_body_bytes=64 * 1024) as running:
        yield running


def _error(status_headers_body, status: int) -> dict:
    got, _, body = status_headers_body
    assert got == status, body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
    return body["error"]


def test_bad_json_is_400(server):
    error = _error(post(f"{server.base_url}/chat/completions", b'{"messages": ['), 400)
    assert error["type"] == "invalid_request_error" and "JSON" in error["message"]


def test_a_missing_or_wrong_field_is_400_naming_it(server):
    assert _error(post(f"{server.base_url}/chat/completions", {"max_tokens": 4}), 400)["param"] == "messages"
    wrong = {**CHAT, "temperature": "hot"}
    assert _error(post(f"{server.base_url}/chat/completions", wrong), 400)["param"] == "temperature"
    assert _error(post(f"{server.base_url}/chat/completions", {**CHAT, "n": 2}), 400)["param"] == "n"


def test_logprobs_are_refused_clearly(server):
    error = _error(post(f"{server.base_url}/chat/completions", {**CHAT, "logprobs": True}), 400)
    assert error["param"] == "logprobs" and "not supported" in error["message"]


def test_unknown_fields_are_ignored(server):
    status, _, body = post(f"{server.base_url}/chat/completions", {**CHAT, "frobnicate": {"x": 1}, "user": "u"})
    assert status == 200 and body["object"] == "chat.completion"


def test_an_unknown_model_is_404(server):
    error = _error(post(f"{server.base_url}/chat/completions", {**CHAT, "model": "gpt-9"}), 404)
    assert error["code"] == "model_not_found" and "gpt-9" in error["message"]


def test_a_prompt_longer_than_the_context_is_413(server, smollm2):
    long_text = "word " * (smollm2.context_length + 100)
    chat = {"messages": [{"role": "user", "content": long_text}], "max_tokens": 4}
    assert _error(post(f"{server.base_url}/chat/completions", chat), 413)["code"] == "context_length_exceeded"
    completion = {"prompt": long_text, "max_tokens": 4}
    assert _error(post(f"{server.base_url}/completions", completion), 413)["code"] == "context_length_exceeded"
    ids = {"prompt": [10] * (smollm2.context_length + 1), "max_tokens": 4}
    assert _error(post(f"{server.base_url}/completions", ids), 413)["param"] == "prompt"


def test_a_body_over_the_limit_is_413(server):
    big = {"messages": [{"role": "user", "content": "x" * (70 * 1024)}]}
    assert _error(post(f"{server.base_url}/chat/completions", big), 413)["code"] == "body_too_large"


def test_bad_token_ids_and_unknown_routes(server, smollm2):
    bad = {"tokens": [smollm2.backend.info.vocab_size + 5]}
    assert _error(post(f"{server.root}/detokenize", bad), 400)["param"] == "tokens"
    assert _error(get(f"{server.base_url}/nothing-here"), 404)
    assert _error(post(f"{server.base_url}/translate", {"text": "Hi", "target": "klingonese"}), 400)
    assert _error(post(f"{server.base_url}/translate", {"text": "Hi"}), 400)["param"] == "target"


def test_past_the_queue_bound_a_request_gets_429_with_retry_after(smollm2):
    with serving(smollm2, parallel=1, max_queue=0) as busy:
        client = openai.OpenAI(base_url=busy.base_url, api_key="unused", max_retries=0)
        running = client.chat.completions.create(
            model=smollm2.name,
            messages=[{"role": "user", "content": "Tell a long story."}],
            max_tokens=1000,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        next(iter(running))  # the first request holds the only place
        status, headers, body = post(f"{busy.base_url}/chat/completions", CHAT)
        running.close()
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert body["error"]["code"] == "rate_limit_exceeded"


def test_with_an_api_key_a_request_without_it_is_refused(smollm2):
    with serving(smollm2, api_key="s3cret") as guarded:
        url = f"{guarded.base_url}/chat/completions"
        assert _error(post(url, CHAT), 401)["code"] == "invalid_api_key"
        assert _error(post(url, CHAT, {"Authorization": "Bearer wrong"}), 401)
        assert _error(get(f"{guarded.base_url}/models"), 401)
        assert get(f"{guarded.root}/health")[0] == 200
        status, _, body = post(url, CHAT, {"Authorization": "Bearer s3cret"})
        assert status == 200 and body["choices"][0]["message"]["content"] is not None
        keyed = openai.OpenAI(base_url=guarded.base_url, api_key="s3cret", max_retries=0)
        assert [m.id for m in keyed.models.list()] == [smollm2.name]
