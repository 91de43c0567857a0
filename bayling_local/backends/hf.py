"""The transformers backend: the reference `Backend` for Llama checkpoints (Hugging Face folders, or
GGUF files that transformers dequantizes), used by tests and to verify converted models.

Correctness over speed: one sequence at a time, a hand-written decoding loop over the KV cache so that
stops and cancellation are exact, sampling on the CPU in float32 so a seed means the same tokens on
any device. Tokens, stops and sampling mean what they mean in the llama.cpp backend.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bayling_local.backends.base import (
    Completion,
    ContinuationScore,
    FinishReason,
    GenerationConfig,
    LoadOptions,
    ModelInfo,
    Prompt,
    TextStream,
    resolve_context_length,
)
from bayling_local.backends.decoding import TextAssembler, prompt_token_ids, stop_token_set
from bayling_local.backends.sampling import Sampler
from bayling_local.backends.tokenizer_info import adds_bos_by_default, tokenizer_chat_template
from bayling_local.errors import (
    BackendUnavailableError,
    ContextOverflowError,
    InvalidModelFileError,
    ModelNotFoundError,
)
from bayling_local.gguf_header import read_gguf_header

SUPPORTED_MODEL_TYPE = "llama"
SUPPORTED_CLASS = "LlamaForCausalLM"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
"""What a decoder shows for an incomplete UTF-8 sequence; held back until the next token completes it."""

# Errors transformers, safetensors and tokenizers raise for a file they cannot read.
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError)


@dataclass(frozen=True)
class _Source:
    """Where from_pretrained finds a checkpoint: a folder, or a GGUF file inside a folder."""

    path: Path
    folder: Path
    gguf_file: str | None = None
    use_safetensors: bool | None = None

    def pretrained_kwargs(self, options: LoadOptions) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": options.trust_remote_code}
        if self.gguf_file is not None:
            kwargs["gguf_file"] = self.gguf_file
        return kwargs


class HFBackend:
    """A Llama model loaded with transformers; implements `bayling_local.backends.base.Backend`."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo):
        self._model = model
        self._tokenizer = tokenizer
        self.info = info
        # transformers 5.x renamed forward's `past_key_values` to `cache` (the old name warns until 5.40).
        forward_parameters = inspect.signature(model.forward).parameters
        self._cache_argument = "cache" if "cache" in forward_parameters else "past_key_values"

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> HFBackend:
        """Load a Hugging Face checkpoint folder or a `.gguf` file of a Llama model."""
        device = select_device(options.device)
        if options.threads:
            torch.set_num_threads(options.threads)  # process-wide: torch has no per-model setting
        source = _find_source(Path(path), options)
        tokenizer = _load_tokenizer(source, options)
        model = _load_model(source, options, device)
        return cls(model, tokenizer, _model_info(model, tokenizer, options, device))

    @property
    def model(self) -> Any:
        """The loaded transformers model, for comparing logits against converted artifacts."""
        return self._model

    def runtime_settings(self) -> dict[str, str]:
        """What this load runs with, for benchmark notes: weight dtype, device, torch's CPU threads."""
        dtype = str(self._model.dtype).removeprefix("torch.")
        return {"dtype": dtype, "device": self.info.device, "torch_threads": str(torch.get_num_threads())}

    # Tokens

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Ids of `text` with special tokens in it parsed (`special=False`: kept as plain text).

        `add_bos` prepends BOS when the model's tokenizer adds one by default (`info.add_bos`) and the
        text does not already start with it, as llama.cpp does; nothing else is added.
        """
        ids = list(self._tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not special))
        bos_text = self.info.bos_token
        if add_bos and self.info.add_bos and not (special and bos_text and text.startswith(bos_text)):
            ids.insert(0, self._tokenizer.bos_token_id)
        return ids

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(
            list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    # Generation

    def stream(
        self, prompt: Prompt, config: GenerationConfig, cancel: threading.Event | None = None
    ) -> TextStream:
        """Text pieces as they are generated; raises ContextOverflowError at once for a too-long prompt."""
        prompt_ids = self._prompt_ids(prompt)
        return TextStream(self._generate(prompt_ids, config, cancel))

    def generate_batch(
        self, prompts: Sequence[Prompt], config: GenerationConfig, cancel: threading.Event | None = None
    ) -> list[Completion]:
        return [self.stream(prompt, config, cancel).collect() for prompt in prompts]

    def _generate(
        self, prompt_ids: list[int], config: GenerationConfig, cancel: threading.Event | None
    ) -> Generator[str, None, Completion]:
        sampler = Sampler(config)
        text = TextAssembler(config.stop)
        stop_ids = stop_token_set(self.info, config)
        budget = min(config.max_tokens, self.info.context_length - len(prompt_ids))
        generated: list[int] = []
        cache, pending = None, prompt_ids
        finish: FinishReason = "length"
        while True:
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            if len(generated) >= budget:
                break
            logits, cache = self._next_token_logits(pending, cache)
            token = sampler.pick(logits, prompt_ids + generated)
            if token in stop_ids:
                finish = "stop"
                break
            generated.append(token)
            pending = [token]
            piece = text.update(self.detokenize(generated))
            if piece:
                yield piece
            if text.stopped:
                finish = "stop"
                break
        piece = text.finish(self.detokenize(generated)) if generated else ""
        if piece:
            yield piece
        return Completion(text.text, generated, len(prompt_ids), finish)

    @torch.inference_mode()
    def _next_token_logits(self, input_ids: list[int], cache: Any) -> tuple[torch.Tensor, Any]:
        ids = torch.tensor([input_ids], device=self._model.device)
        output = self._model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_argument: cache})
        return output.logits[0, -1], _output_cache(output)

    # Scoring

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[ContinuationScore]:
        """Natural-log probability of each continuation's tokens after the prompt (one forward each)."""
        prompt_ids = self._prompt_ids(prompt)
        if isinstance(prompt, str):
            prompt_text, add_bos = prompt, True
        else:  # the decoded ids keep their BOS text, which tokenizes back to BOS
            prompt_text, add_bos = self.detokenize(prompt_ids), False
        scores = []
        for continuation in continuations:
            full = self.tokenize(prompt_text + continuation, add_bos=add_bos)
            if full[: len(prompt_ids)] == prompt_ids:
                continuation_ids = full[len(prompt_ids) :]
            else:  # the continuation merged with the prompt's last token; score it on its own
                continuation_ids = self.tokenize(continuation)
            logprobs = self._continuation_logprobs(prompt_ids, continuation_ids)
            scores.append(ContinuationScore(continuation, tuple(continuation_ids), logprobs))
        return scores

    @torch.inference_mode()
    def _continuation_logprobs(self, prompt_ids: list[int], continuation_ids: list[int]) -> tuple[float, ...]:
        if not continuation_ids:
            return ()
        n_tokens = len(prompt_ids) + len(continuation_ids)
        if n_tokens > self.info.context_length:
            raise ContextOverflowError(
                f"prompt and continuation are {n_tokens} tokens; the context window is "
                f"{self.info.context_length} (shorten them or raise --context)"
            )
        ids = torch.tensor([prompt_ids + continuation_ids], device=self._model.device)
        # The logits at the last prompt position and every continuation position but the last.
        logits = self._model(input_ids=ids, logits_to_keep=len(continuation_ids) + 1).logits[0, :-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        targets = torch.tensor(continuation_ids, device=logprobs.device).unsqueeze(1)
        return tuple(logprobs.gather(1, targets).squeeze(1).tolist())

    # Shared

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        return prompt_token_ids(self, prompt)

    def close(self) -> None:
        on_cuda = self.info.device == "cuda"
        self._model = None
        self._tokenizer = None
        if on_cuda:
            torch.cuda.empty_cache()


# Loading


def select_device(requested: str) -> str:
    """The torch device for a `LoadOptions.device` value; refuses what this backend cannot use."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if torch.cuda.is_available():
            return "cuda"
        raise BackendUnavailableError(
            "device 'cuda' was requested but PyTorch sees no CUDA GPU; install a CUDA build of torch "
            "or use --device cpu"
        )
    raise BackendUnavailableError(
        f"the transformers backend supports devices cpu and cuda, not '{requested}'; "
        "use --device cpu, or the llama.cpp backend for metal"
    )


def _find_source(path: Path, options: LoadOptions) -> _Source:
    if path.is_dir():
        return _folder_source(path, options)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _gguf_source(path)
    if path.exists():
        raise InvalidModelFileError(f"{path} is neither a Hugging Face checkpoint folder nor a .gguf file")
    raise ModelNotFoundError(f"no model file or folder at {path}")


def _gguf_source(path: Path) -> _Source:
    architecture = read_gguf_header(path).architecture
    if architecture != SUPPORTED_MODEL_TYPE:
        raise _unsupported_architecture(path, architecture)
    return _Source(path, path.parent, gguf_file=path.name)


def _folder_source(folder: Path, options: LoadOptions) -> _Source:
    _check_folder_config(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InvalidModelFileError(
            f"{folder} has no tokenizer (tokenizer.json or tokenizer.model); "
            "copy the tokenizer files from the original model into it"
        )
    return _Source(folder, folder, use_safetensors=_use_safetensors(folder, options))


def _check_folder_config(folder: Path) -> None:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidModelFileError(
            f"{folder} has no config.json; the transformers backend loads a Hugging Face checkpoint "
            "folder (config.json, *.safetensors, tokenizer files) or a .gguf file"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelFileError(f"{config_path} is not readable JSON: {_one_line(exc)}") from exc
    if not isinstance(config, dict):
        raise InvalidModelFileError(f"{config_path} is not a JSON object")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or [SUPPORTED_CLASS]
    if model_type != SUPPORTED_MODEL_TYPE or SUPPORTED_CLASS not in architectures:
        found = f"{model_type} ({', '.join(map(str, architectures))})"
        raise _unsupported_architecture(folder, found)


def _unsupported_architecture(path: Path, found: str) -> InvalidModelFileError:
    return InvalidModelFileError(
        f"{path} holds a '{found}' model; the transformers backend supports only Llama ({SUPPORTED_CLASS})"
    )


def _use_safetensors(folder: Path, options: LoadOptions) -> bool:
    """True when the folder has safetensors weights; pickled weights only when the user allowed them."""
    if any(folder.glob("*.safetensors")):
        return True
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise InvalidModelFileError(f"{folder} has no weights; copy the model's *.safetensors files into it")
    if not options.allow_pickle:
        raise InvalidModelFileError(
            f"{folder} has only pickled weights ({pickles[0]}), which can run code when loaded; "
            "convert them to safetensors or pass --allow-pickle"
        )
    return False


def _load_tokenizer(source: _Source, options: LoadOptions) -> Any:
    try:
        return AutoTokenizer.from_pretrained(source.folder, **source.pretrained_kwargs(options))
    except ImportError as exc:
        message = f"loading the tokenizer of {source.path} needs a package: {_one_line(exc)}"
        raise BackendUnavailableError(message) from exc
    except _LOAD_ERRORS as exc:
        message = f"could not load the tokenizer of {source.path}: {_one_line(exc)}"
        raise InvalidModelFileError(message) from exc


def _load_model(source: _Source, options: LoadOptions, device: str) -> Any:
    # float32 on CPU (the reference, and CPUs are slow at half precision); half precision on a GPU so an
    # 8B model fits in 24 GB.
    if device == "cpu":
        dtype = torch.float32
    else:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.folder,
            dtype=dtype,
            use_safetensors=source.use_safetensors,
            **source.pretrained_kwargs(options),
        )
    except ImportError as exc:
        raise BackendUnavailableError(f"loading {source.path} needs a package: {_one_line(exc)}") from exc
    except _LOAD_ERRORS as exc:
        message = f"could not load {source.path} with transformers: {_one_line(exc)}"
        raise InvalidModelFileError(message) from exc
    return model.to(device).eval()


def _model_info(model: Any, tokenizer: Any, options: LoadOptions, device: str) -> ModelInfo:
    config = model.config
    trained = int(getattr(config, "max_position_embeddings", 0) or 0)
    return ModelInfo(
        architecture=SUPPORTED_MODEL_TYPE,
        context_length=resolve_context_length(options.context_length, trained),
        trained_context_length=trained,
        vocab_size=int(config.vocab_size),
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        add_bos=adds_bos_by_default(tokenizer),
        chat_template=tokenizer_chat_template(tokenizer),
        end_of_generation_ids=_end_of_generation_ids(model, tokenizer),
        device=device,
    )


def _end_of_generation_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    generation_config = getattr(model, "generation_config", None)
    candidates = (
        _id_set(model.config.eos_token_id)
        | _id_set(getattr(generation_config, "eos_token_id", None))
        | _id_set(tokenizer.eos_token_id)
    )
    # An eos id that the tokenizer treats as plain text is a stale default, not the model's: a config
    # built with LlamaConfig's default eos_token_id=2 would otherwise stop Llama-3 at every '#'.
    special = set(tokenizer.all_special_ids)
    added = tokenizer.added_tokens_decoder.items()
    special |= {i for i, token in added if getattr(token, "special", False)}
    return frozenset(i for i in candidates if i in special)


def _id_set(value: int | Sequence[int] | None) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(i) for i in value}


def _output_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# Decoding
