"""The remote backend (`--model openai:URL#MODEL`) against our own `serve`: same prompts, same tokens, same
translations as a local run; scoring refused in one line."""

from __future__ import annotations

import pytest

pytest.importorskip("openai")
pytest.importorskip("fastapi")

from bayling_local.backends.base import GenerationConfig
from bayling_local.errors import BackendUnavailableError
from tests.serve_harness import serving

LINES = ["Good morning.", "The weather is nice today.", "Where is the train station?", "Thank you!"]


@pytest.fixture(scope="module")
def server(smollm2):
    with serving(smollm2) as running:
        yield running


@pytest.fixture(scope="module")
def remote(server, smollm2):
    from bayling_local.model import open_model

    model = open_model(f"openai:{server.base_url}#{smollm2.name}")
    yield model
    model.close()


def _forget_cache(model) -> None:
    """A raw prompt sharing no prefix with chat prompts: llama.cpp re-evaluates the next prompt whole, as
    a freshly started process does (see tests/test_serve.py `_prime`)."""
    model.backend.stream("Zebras", GenerationConfig(max_tokens=1)).collect()


def test_remote_model_renders_and_tokenizes_as_the_local_one(remote, smollm2):
    assert remote.chat_format.id == smollm2.chat_format.id
    assert remote.stop_token_ids == smollm2.stop_token_ids
    assert remote.context_length == smollm2.context_length
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say <|im_end|> twice."}]
    assert remote.prompt_ids(messages) == smollm2.prompt_ids(messages)
    for special in (True, False):
        assert remote.backend.tokenize("a <|im_end|> b", special=special) == smollm2.backend.tokenize(
            "a <|im_end|> b", special=special
        )
    ids = smollm2.backend.tokenize("Grüße, 世界")
    assert remote.backend.detokenize(ids) == smollm2.backend.detokenize(ids)


def test_remote_stream_gives_the_local_text_and_token_ids(remote, smollm2):
    messages = [{"role": "user", "content": "Name a colour."}]
    config = GenerationConfig(max_tokens=16, temperature=0.0)
    _forget_cache(smollm2)
    remote_stream, _ = remote.chat(messages, config)
    pieces = list(remote_stream)
    _forget_cache(smollm2)
    local = smollm2.chat(messages, config)[0].collect()
    assert "".join(pieces) == remote_stream.completion.text == local.text
    assert remote_stream.completion.token_ids == local.token_ids
    assert remote_stream.completion.finish_reason == local.finish_reason


def test_generate_batch_sends_every_prompt_to_the_server(remote, server):
    before = server.engine.stats.submitted
    prompts = [remote.prompt_ids([{"role": "user", "content": f"Say {w}."}]) for w in ("one", "two", "three")]
    completions = remote.backend.generate_batch(prompts, GenerationConfig(max_tokens=6, temperature=0.0))
    assert len(completions) == 3 and all(c.token_ids for c in completions)
    assert server.engine.stats.submitted - before == 3


def test_scoring_is_refused_in_one_line(remote):
    with pytest.raises(BackendUnavailableError, match="log-probabilities") as refused:
        remote.score("The sky is", [" blue", " green"])
    assert "\n" not in str(refused.value)


def test_translate_file_through_serve_is_byte_identical_to_the_local_run(server, smollm2, cli, tmp_path):
    source = tmp_path / "lines.txt"
    source.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    # --no-tm: the server, not the translation memory the local run fills, must answer the remote run.
    flags = ["--to", "fr", "--batch-size", "1", "--context", str(smollm2.context_length), "--no-tm"]
    local = cli("translate", "-i", str(source), "-o", str(tmp_path / "local.txt"), *flags)
    assert local.returncode == 0, local.stderr.decode()
    _forget_cache(smollm2)
    remote_spec = f"openai:{server.base_url}#{smollm2.name}"
    remote = cli("translate", "-i", str(source), "-o", str(tmp_path / "remote.txt"), "--model", remote_spec, *flags)
    assert remote.returncode == 0, remote.stderr.decode()
    local_bytes = (tmp_path / "local.txt").read_bytes()
    assert local_bytes.count(b"\n") == len(LINES)
    assert (tmp_path / "remote.txt").read_bytes() == local_bytes


def test_an_unreachable_server_is_one_line(cli):
    done = cli("translate", "hello", "--to", "fr", "--model", "openai:http://127.0.0.1:9/v1#x")
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot reach" in lines[0], lines
