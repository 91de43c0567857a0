"""The generation API every front end uses: open a model by name or path, chat, complete, score.

`open_model` resolves `--model` (store name, path, `BAYLING_MODEL`, the config file, the bundled
default), picks the backend for the artifact's format and the chat format, and returns a `Model`
that renders messages, fits them into the context window and streams the answer. Chat prompts go to
the backend as token ids (`Model.prompt_ids`): only the chat format's markup becomes special tokens.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bayling_local.backends import backend_for_format
from bayling_local.backends.base import (
    Backend,
    ContinuationScore,
    GenerationConfig,
    LoadOptions,
    TextStream,
)
from bayling_local.backends.decoding import resolve_stop_token_ids
from bayling_local.catalog import BUNDLED_MODEL_NAME
from bayling_local.config import load_config
from bayling_local.errors import ContextOverflowError, ModelNotFoundError, UsageError
from bayling_local.prompts import (
    GGUF_CHAT_FORMAT_KEY,
    ChatFormat,
    Message,
    Run,
    detect_chat_format,
    get_chat_format,
    prompt_runs,
    tokenize_run,
    with_leading_bos,
)
from bayling_local.store import StoredModel, get_model

REMOTE_PREFIX = "openai:"
"""`openai:http://HOST:PORT/v1#MODEL`: a model on an OpenAI-compatible server (backends/remote.py)."""


@dataclass(frozen=True)
class ModelSource:
    """Where an artifact is and what it is, before loading."""

    name: str
    path: Path
    format: str
    chat_format: str | None
    address: str | None = None
    """A remote model's `openai:URL#MODEL` spec (`path` folds the URL's `//`)."""


def default_model_name() -> str:
    """`BAYLING_MODEL`, else `model` in the config file, else the bundled demo model."""
    return os.environ.get("BAYLING_MODEL") or load_config().get("model") or BUNDLED_MODEL_NAME


def resolve_model(model: str | None) -> ModelSource:
    """A store name or a path to an artifact (GGUF file, HF checkpoint folder, ONNX folder)."""
    spec = model or default_model_name()
    if spec.startswith(REMOTE_PREFIX):  # served by an OpenAI-compatible server (backends/remote.py)
        name = spec.partition("#")[2] or spec[len(REMOTE_PREFIX) :]
        return ModelSource(name, Path(spec), "openai", None, address=spec)
    path = Path(spec).expanduser()
    if path.exists():
        return ModelSource(path.name, path, artifact_format(path), None)
    if _looks_like_path(spec):
        raise ModelNotFoundError(f"{spec} does not exist")
    stored = get_model(spec)
    return _source_of(stored)


def with_draft_path(options: LoadOptions, model: str | None) -> LoadOptions:
    """`options` with the draft model (`--draft-model NAME|PATH|auto`) resolved to its GGUF file;
    `auto` is the catalog's draft for `model`."""
    speculation = options.speculation
    if speculation is None or not speculation.draft_model or speculation.draft_path:
        return options
    name = speculation.draft_model
    if name == "auto":
        name = _catalog_draft(model)
    source = resolve_model(name)
    if source.format != "gguf":
        raise UsageError(f"the draft model {name} is a {source.format} artifact; a draft must be a GGUF file")
    return replace(options, speculation=replace(speculation, draft_path=str(source.path)))


def _catalog_draft(model: str | None) -> str:
    from bayling_local.catalog import CATALOG

    name = model or default_model_name()
    entry = CATALOG.get(name)
    if entry is None or entry.draft_model is None:
        raise UsageError(f"the catalog names no draft model for {name}; give one with --draft-model NAME|PATH")
    return entry.draft_model


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or spec.endswith((".gguf", ".onnx")) or spec.startswith((".", "~"))


def _source_of(stored: StoredModel) -> ModelSource:
    return ModelSource(stored.name, stored.path, stored.manifest.format, stored.manifest.chat_format)


def artifact_format(path: Path) -> str:
    """`gguf`, `hf` or `onnx`, from what the path holds."""
    if path.is_file():
        return "onnx" if path.suffix == ".onnx" else "gguf"
    if (path / "config.json").is_file():
        return "hf"
    if any(path.glob("*.onnx")):
        return "onnx"
    raise ModelNotFoundError(
        f"{path} is neither a GGUF file, a Hugging Face checkpoint folder (config.json) nor an ONNX folder"
    )


@dataclass
class FittedMessages:
    """Messages that fit the context window, and how many old turns were dropped to get there."""

    messages: list[Message]
    prompt_tokens: int
    dropped_turns: int = 0
    prompt_ids: list[int] = field(default_factory=list)
    """The prompt's token ids (`Model.prompt_ids` of `messages`)."""


@dataclass
class Model:
    """A loaded model with its chat format: the object chat, translate and bench work with."""

    source: ModelSource
    backend: Backend
    chat_format: ChatFormat
    stop_token_ids: tuple[int, ...] = field(default=())
    stop_strings: tuple[str, ...] = field(default=())
    backend_choice: str | None = None
    """Why `--backend auto` (or a forced backend) loaded this artifact of its family; None: no choice."""

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def context_length(self) -> int:
        return self.backend.info.context_length

    def chat_config(self, config: GenerationConfig) -> GenerationConfig:
        """`config` plus the chat format's stops."""
        return replace(
            config,
            stop=tuple(dict.fromkeys(config.stop + self.stop_strings)),
            stop_token_ids=tuple(dict.fromkeys(config.stop_token_ids + self.stop_token_ids)),
        )

    def render(self, messages: Sequence[Message]) -> str:
        """The chat prompt as text, for display and identity; the model is fed `prompt_ids`."""
        return self.chat_format.render(messages)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the chat prompt for `messages`, BOS included where the model wants one.

        The format's markup is tokenized with special-token parsing, message text as plain text: a
        message or a translated document that spells `<|eot_id|>` or `</s>` cannot end a turn.
        """
        info = self.backend.info
        segments = self.chat_format.segments(messages)
        segments = with_leading_bos(segments, info.bos_token if info.add_bos else None)
        return [token for run in prompt_runs(segments, self._spells_special) for token in self._run_ids(run)]

    def _spells_special(self, text: str) -> bool:
        return self.backend.tokenize(text, special=True) != self.backend.tokenize(text, special=False)

    def _run_ids(self, run: Run) -> list[int]:
        return tokenize_run(run, lambda text, special: self.backend.tokenize(text, special=special))

    def fit(self, messages: Sequence[Message], reserve: int) -> FittedMessages:
        """Drop the oldest turns (never the system prompt) until the prompt leaves `reserve` tokens.

        Raises ContextOverflowError when even the last user message alone does not fit.
        """
        system = [m for m in messages[:1] if m["role"] == "system"]
        turns = list(messages[len(system) :])
        dropped = 0
        while True:
            ids = self.prompt_ids(system + turns)
            if len(ids) + reserve <= self.context_length or len(turns) <= 1:
                break
            turns, dropped = _drop_oldest_exchange(turns), dropped + 1
        if len(ids) >= self.context_length:
            raise ContextOverflowError(
                f"the message is {len(ids)} tokens with the chat format; the context window is "
                f"{self.context_length} tokens (shorten it or raise --context)"
            )
        return FittedMessages(system + turns, len(ids), dropped, ids)

    def chat(
        self,
        messages: Sequence[Message],
        config: GenerationConfig,
        cancel: threading.Event | None = None,
    ) -> tuple[TextStream, FittedMessages]:
        """Stream the assistant's answer to `messages`, fitted into the context window."""
        fitted = self.fit(messages, reserve=min(config.max_tokens, self.context_length // 4))
        return self.backend.stream(fitted.prompt_ids, self.chat_config(config), cancel), fitted

    def chat_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig,
        cancel: threading.Event | None = None,
    ):
        """Answers for several independent conversations (batched where the backend can)."""
        prompts = [self.fit(c, reserve=0).prompt_ids for c in conversations]
        return self.backend.generate_batch(prompts, self.chat_config(config), cancel)

    def complete(
        self, prompt: str, config: GenerationConfig, cancel: threading.Event | None = None
    ) -> TextStream:
        """Raw completion of `prompt`: no chat template, only the model's own end tokens stop it."""
        return self.backend.stream(prompt, config, cancel)

    def score(self, prompt: str, continuations: Sequence[str]) -> list[ContinuationScore]:
        """Log-probabilities of `continuations` after a raw prompt (no chat template, as `complete`)."""
        return self.backend.score(prompt, continuations)

    def close(self) -> None:
        self.backend.close()


def _drop_oldest_exchange(turns: list[Message]) -> list[Message]:
    """Remove the oldest user turn and the assistant answer that follows it."""
    rest = turns[1:]
    while rest and rest[0]["role"] != "user" and len(rest) > 1:
        rest = rest[1:]
    return rest


def open_model(
    model: str | None = None,
    *,
    options: LoadOptions | None = None,
    chat_format: str | None = None,
    backend: str | None = None,
) -> Model:
    """Load `model` (store name, artifact path, or the default) ready to chat.

    `backend`: None loads exactly that artifact with its format's backend; `auto` may load the GGUF or ONNX
    conversion of the same checkpoint that decodes faster on this CPU (bayling_local/families.py); a
    backend's name (`llama.cpp`, `onnx`, ...) forces it, taking the family's artifact of its format."""
    options = with_draft_path(options or LoadOptions(), model)
    choice = choose_artifact(model, backend, options)
    spec = backend_for_format(choice.source.format, preferred=choice.backend)
    loaded = spec.load(choice.source.address or choice.source.path, options)
    opened = _with_chat_format(choice.source, loaded, chat_format)
    opened.backend_choice = choice.reason
    return opened


@dataclass(frozen=True)
class ArtifactChoice:
    """The artifact `open_model` loads, the backend it asks for, and why (None: nothing was chosen)."""

    source: ModelSource
    backend: str | None
    reason: str | None = None


def choose_artifact(model: str | None, backend: str | None = None, options: LoadOptions | None = None) -> ArtifactChoice:
    """What `open_model(model, backend=backend)` would load, without loading it."""
    from bayling_local.families import AUTO, backend_name, choose_in_family

    if backend is None:
        return ArtifactChoice(resolve_model(model), None)
    options = options or LoadOptions()
    named = backend_name(backend)
    stored = _stored_entry(model)
    if stored is None:
        return ArtifactChoice(resolve_model(model), None if named == AUTO else named)
    chosen = choose_in_family(stored, named, options.threads, on_cpu=lambda: _runs_on_cpu(options))
    return ArtifactChoice(_source_of(chosen.entry), chosen.backend, chosen.reason)


def _stored_entry(model: str | None) -> StoredModel | None:
    """The store entry `model` names (None for a path or a remote model)."""
    spec = model or default_model_name()
    if spec.startswith(REMOTE_PREFIX) or Path(spec).expanduser().exists() or _looks_like_path(spec):
        return None
    return get_model(spec)


def _runs_on_cpu(options: LoadOptions) -> bool:
    """Whether the model would run on the CPU, where the measured speeds of `--backend auto` hold."""
    if options.device == "cpu":
        return True
    if options.device != "auto":
        return False
    from bayling_local.backends.device import llama_cpp_gpu_backend

    return llama_cpp_gpu_backend() is None


def artifact_chat_format(source: ModelSource) -> str | None:
    """The chat format id an artifact records itself: a GGUF's `bayling.chat_format`, an ONNX export's
    `chat_format` in bayling_onnx.json; None for a checkpoint folder (its template says it)."""
    if source.format == "gguf":
        from bayling_local.gguf_header import read_gguf_header

        found = read_gguf_header(source.path).metadata.get(GGUF_CHAT_FORMAT_KEY)
    elif source.format == "onnx":
        from bayling_local.backends.onnxrt import read_export_config

        folder = source.path if source.path.is_dir() else source.path.parent
        found = read_export_config(folder).get("chat_format")
    else:
        found = None
    return found if isinstance(found, str) and found else None


def _with_chat_format(source: ModelSource, backend: Backend, override: str | None) -> Model:
    info = backend.info
    served_format = getattr(backend, "chat_format_id", None)  # a remote server that says its format
    format_id = (
        override or source.chat_format or artifact_chat_format(source) or served_format
        or detect_chat_format(info.chat_template)
    )
    chat_format = get_chat_format(
        format_id, template=info.chat_template, bos_token=info.bos_token or "", eos_token=info.eos_token or ""
    )
    tokenize = lambda text: backend.tokenize(text, add_bos=False)
    stop_ids, extra_strings = resolve_stop_token_ids(tokenize, chat_format.stop_tokens)
    return Model(
        source,
        backend,
        chat_format,
        stop_token_ids=tuple(sorted(stop_ids)),
        stop_strings=chat_format.stop_strings + extra_strings,
    )
