"""A backend over any OpenAI-compatible server: our own `serve`, llama.cpp's llama-server, vLLM, SGLang.

`--model openai:http://HOST:PORT/v1#MODEL` (`#MODEL` may be left out when the server serves one model).
The runtime renders chat formats locally and hands backends token ids, so generation goes to
`/v1/completions` with the prompt as token ids (llama-server, vLLM and ours accept them): the server runs
exactly the prompt a local model would, and translate's batches, journal and resume stay the same.
Tokenization uses the server's `/tokenize` and `/detokenize` (llama-server's shapes; vLLM's field names
are sent too); `/props` gives the context window and the chat template where the server has it.
Scoring needs prompt log-probabilities that these servers do not all expose, so it is refused.
An API key comes from `$BAYLING_REMOTE_API_KEY` (else `$OPENAI_API_KEY`).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from bayling_local.backends.base import (
    DEFAULT_CONTEXT_CAP,
    Completion,
    ContinuationScore,
    GenerationConfig,
    LoadOptions,
    ModelInfo,
    Prompt,
    TextStream,
)
from bayling_local.errors import BackendUnavailableError, ModelNotFoundError

PREFIX = "openai:"
MAX_CONCURRENT = 16
"""Most requests one `generate_batch` keeps open at a time."""
HTTP_TIMEOUT_SECONDS = 600.0
FINISH_REASONS = {"stop": "stop", "length": "length"}


@dataclass(frozen=True)
class RemoteAddress:
    base_url: str
    """The OpenAI API root, e.g. http://127.0.0.1:8000/v1."""
    model: str | None

    @property
    def server_root(self) -> str:
        """Where llama-server's own routes (/tokenize, /props) live: the API root without `/v1`."""
        return self.base_url.removesuffix("/v1")


def is_remote_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse_remote_spec(spec: str) -> RemoteAddress:
    url, _, model = spec[len(PREFIX) :].partition("#")
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ModelNotFoundError(f"'{spec}' is not a remote model; write openai:http://HOST:PORT/v1#MODEL")
    return RemoteAddress(url, model or None)


class RemoteBackend:
    """Generation on a remote server; tokenization through its /tokenize (cached: chat prompts ask often)."""

    name = "remote"

    def __init__(self, address: RemoteAddress, client, info: ModelInfo, props: dict):
        self.address = address
        self.model_id = address.model
        self.info = info
        self.chat_format_id = props.get("chat_format")
        """The chat format the server renders with (ours says it), so prompts match a local run."""
        self._client = client
        self._tokenize_cached = lru_cache(maxsize=4096)(self._tokenize_remote)

    @classmethod
    def load(cls, path, options: LoadOptions) -> RemoteBackend:
        import openai

        address = parse_remote_spec(str(path))
        client = openai.OpenAI(
            base_url=address.base_url, api_key=_api_key() or "none", timeout=HTTP_TIMEOUT_SECONDS, max_retries=2
        )
        address = RemoteAddress(address.base_url, address.model or _only_model(client, address))
        props = _get_json(f"{address.server_root}/props") or {}
        return cls(address, client, _model_info(props, options), props)

    # --- tokens ------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return list(self._tokenize_cached(text, add_bos, special))

    def _tokenize_remote(self, text: str, add_bos: bool, special: bool) -> tuple[int, ...]:
        body = {
            "content": text,
            "add_special": add_bos,
            "parse_special": special,
            "prompt": text,  # vLLM's names for the same fields
            "add_special_tokens": add_bos,
            "model": self.model_id,
        }
        answer = self._post_route("/tokenize", body)
        return tuple(int(t["id"]) if isinstance(t, dict) else int(t) for t in answer["tokens"])

    def detokenize(self, token_ids: Sequence[int]) -> str:
        answer = self._post_route("/detokenize", {"tokens": list(token_ids), "model": self.model_id})
        return answer.get("content", answer.get("prompt", ""))

    def _post_route(self, route: str, body: dict) -> dict:
        url = f"{self.address.server_root}{route}"
        found = _post_json(url, body)
        if found is None:
            raise BackendUnavailableError(
                f"the server at {self.address.base_url} has no {route}; the remote backend needs a server that "
                "tokenizes (bayling-local serve, llama-server, vLLM)"
            )
        return found

    # --- generation --------------------------------------------------------------------------------

    def stream(self, prompt: Prompt, config: GenerationConfig, cancel: threading.Event | None = None) -> TextStream:
        ids = self.tokenize(prompt, add_bos=self.info.add_bos) if isinstance(prompt, str) else list(prompt)
        return TextStream(self._generate(ids, config, cancel))

    def _generate(self, prompt_ids: list[int], config: GenerationConfig, cancel: threading.Event | None):
        chunks = self._open(prompt_ids, config)
        pieces, token_ids, reason, counted = [], [], "length", None
        with chunks:
            for chunk in chunks:
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"  # leaving the `with` closes the connection: the server cancels
                    break
                counted = chunk.usage.completion_tokens if chunk.usage else counted
                for choice in chunk.choices:
                    token_ids += getattr(choice, "token_ids", None) or (choice.model_extra or {}).get("token_ids") or []
                    if choice.text:
                        pieces.append(choice.text)
                        yield choice.text
                    if choice.finish_reason:
                        reason = FINISH_REASONS.get(choice.finish_reason, "cancelled")
        text = "".join(pieces)
        if not token_ids and text:
            token_ids = self.tokenize(text, special=False)  # a server that sends text only: re-tokenized
        return Completion(text, token_ids, len(prompt_ids), reason)

    def _open(self, prompt_ids: list[int], config: GenerationConfig):
        import openai

        try:
            return self._client.completions.create(**self._request(prompt_ids, config))
        except openai.APIStatusError as error:
            raise BackendUnavailableError(f"{self.address.base_url}: HTTP {error.status_code}: {_api_message(error)}") from None
        except openai.APIError as error:
            raise BackendUnavailableError(f"{self.address.base_url}: {error}") from None

    def _request(self, prompt_ids: list[int], config: GenerationConfig) -> dict:
        return {
            "model": self.model_id,
            "prompt": prompt_ids,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": config.max_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": config.seed,
            "stop": list(config.stop) or None,
            # llama-server's and vLLM's extensions, so a remote model samples and stops as a local one
            "extra_body": {
                "top_k": config.top_k,
                "repeat_penalty": config.repeat_penalty,
                "stop_token_ids": list(config.stop_token_ids),
                "ignore_eos": config.ignore_eos,
                "return_token_ids": True,
            },
        }

    def generate_batch(
        self, prompts: Sequence[Prompt], config: GenerationConfig, cancel: threading.Event | None = None
    ) -> list[Completion]:
        """One request per prompt, up to MAX_CONCURRENT at a time: the server batches them."""
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(len(prompts), MAX_CONCURRENT)) as pool:
            return list(pool.map(lambda p: self.stream(p, config, cancel).collect(), prompts))

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[ContinuationScore]:
        raise BackendUnavailableError(
            "scoring (multiple choice) needs prompt log-probabilities that OpenAI-compatible servers do not all "
            "expose; run it on a local model"
        )

    def runtime_settings(self) -> dict[str, str]:
        return {"server": self.address.base_url, "model": str(self.model_id)}

    def close(self) -> None:
        self._client.close()


def _api_key() -> str | None:
    return os.environ.get("BAYLING_REMOTE_API_KEY") or os.environ.get("OPENAI_API_KEY")


def _only_model(client, address: RemoteAddress) -> str:
    import openai

    try:
        served = [m.id for m in client.models.list()]
    except openai.OpenAIError as error:
        raise BackendUnavailableError(f"cannot list the models of {address.base_url}: {error}") from None
    if len(served) != 1:
        raise ModelNotFoundError(
            f"{address.base_url} serves {len(served)} models ({', '.join(served[:5])}); name one: "
            f"openai:{address.base_url}#MODEL"
        )
    return served[0]


def _model_info(props: dict, options: LoadOptions) -> ModelInfo:
    settings = props.get("default_generation_settings") or {}
    context = props.get("n_ctx") or settings.get("n_ctx") or options.context_length or DEFAULT_CONTEXT_CAP
    return ModelInfo(
        architecture=props.get("architecture", "remote"),
        context_length=int(context),
        trained_context_length=int(props.get("n_ctx_train") or context),
        vocab_size=int(props.get("n_vocab") or 0),
        bos_token=props.get("bos_token") or None,
        eos_token=props.get("eos_token") or None,
        add_bos=bool(props.get("add_bos_token", False)),
        chat_template=props.get("chat_template") or None,
        end_of_generation_ids=frozenset(props.get("end_of_generation_ids") or ()),
        device="remote",
    )


def _api_message(error) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    found = body.get("error", body) if isinstance(body, dict) else {}
    return (found.get("message") if isinstance(found, dict) else None) or str(error)


def _headers() -> dict[str, str]:
    key = _api_key()
    return {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}


def _get_json(url: str) -> dict | None:
    return _fetch(urllib.request.Request(url, headers=_headers()))


def _post_json(url: str, body: dict) -> dict | None:
    return _fetch(urllib.request.Request(url, data=json.dumps(body).encode(), headers=_headers(), method="POST"))


def _fetch(request: urllib.request.Request) -> dict | None:
    """The JSON answer; None when the route does not exist (404/405/501)."""
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        if error.code in (404, 405, 501):
            return None
        raise BackendUnavailableError(f"{request.full_url}: HTTP {error.code} {_error_message(error)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise BackendUnavailableError(f"cannot reach {request.full_url}: {reason}") from None


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read())["error"]["message"]
    except Exception:
        return error.reason or ""
