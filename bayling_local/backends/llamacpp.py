"""llama.cpp backend (GGUF) through llama-cpp-python: CPU, CUDA and Metal builds.

Generation uses llama-cpp-python's `Llama.generate` (its sampler chain and KV-cache prefix reuse, so a
growing chat only evaluates the new turn); stops, cancellation and UTF-8 assembly are ours. Scoring
decodes continuations with logits for every position through the context object.

Tokenization: a GGUF made by `bayling-local convert` carries its reference tokenizer (tokenizer.json
under `bayling.tokenizer_json`); when it is there, text is tokenized with the `tokenizers` library and
the ids are fed to llama.cpp, because llama.cpp's re-implemented pre-tokenizers drift from the reference
in many scripts. Other GGUFs use llama.cpp's own tokenizer.
"""

from __future__ import annotations

import contextlib
import ctypes
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bayling_local.backends.base import (
    Completion,
    ContinuationScore,
    GenerationConfig,
    LoadOptions,
    ModelInfo,
    Prompt,
    TextStream,
    resolve_context_length,
)
from bayling_local.backends.decoding import TextAssembler, continuation_ids, prompt_token_ids, stop_token_set
from bayling_local.backends.device import llama_cpp_gpu_backend, llama_cpp_has_amx
from bayling_local.errors import (
    BackendUnavailableError,
    ContextOverflowError,
    InvalidModelFileError,
)
from bayling_local.gguf_header import read_gguf_header

BATCH_SIZE = 512
TOKENIZER_JSON_KEY = "bayling.tokenizer_json"


class LlamaCppBackend:
    name = "llama.cpp"

    def __init__(self, llm, info: ModelInfo, reference_tokenizer=None):
        from bayling_local.backends.llamacpp_batch import BatchDecoder

        self._llm = llm
        self.info = info
        self._reference_tokenizer = reference_tokenizer
        self._lock = threading.Lock()  # one llama context serves one generation at a time
        self._batch_decoder = BatchDecoder(self)

    @property
    def llm(self):
        """The llama_cpp.Llama object (for the batch decoder and benchmarks)."""
        return self._llm

    @property
    def vocab(self):
        return self._llm._model.vocab

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> LlamaCppBackend:
        import llama_cpp

        header = read_gguf_header(path)
        n_ctx = resolve_context_length(options.context_length, header.context_length)
        device, gpu_layers = _gpu_layers(options.device)
        try:
            with _model_params_override(use_extra_bufts=not llama_cpp_has_amx()):
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_batch=min(BATCH_SIZE, n_ctx),
                    n_gpu_layers=gpu_layers,
                    n_threads=options.threads,
                    n_threads_batch=options.threads,
                    verbose=False,
                )
        except ValueError as error:
            raise InvalidModelFileError(
                f"llama.cpp could not load {path} ({header.architecture} architecture): {error}"
            ) from error
        return cls(llm, _model_info(llm, header, n_ctx, device), _reference_tokenizer(header))

    # --- tokens --------------------------------------------------------------------------------

    @property
    def tokenizer_source(self) -> str:
        """`reference` (the tokenizer.json carried in the GGUF) or `llama.cpp` (its own tokenizer)."""
        return "reference" if self._reference_tokenizer is not None else "llama.cpp"

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        bos = self.info.bos_token
        add = add_bos and self.info.add_bos and not (bos and text.startswith(bos))
        if self._reference_tokenizer is None:
            return self._llm.tokenize(text.encode("utf-8"), add_bos=add, special=True)
        ids = self._reference_tokenizer.encode(text, add_special_tokens=False).ids
        return [self._llm._model.token_bos(), *ids] if add else ids

    def tokenize_with_llama_cpp(self, text: str, *, add_bos: bool = False) -> list[int]:
        """llama.cpp's own tokenization, whatever the GGUF carries (for parity reports)."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._llm.detokenize(list(token_ids), special=True).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token as generated text (special tokens hidden, like llama.cpp's server)."""
        import llama_cpp

        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self._llm._model.vocab, token, buffer, 64, 0, False)
        if size < 0:  # a longer piece: the negative size says how long
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._llm._model.vocab, token, buffer, -size, 0, False)
        return buffer.raw[:size]

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        return prompt_token_ids(self, prompt)

    def stream(
        self, prompt: Prompt, config: GenerationConfig, cancel: threading.Event | None = None
    ) -> TextStream:
        return TextStream(self._generate(self._prompt_ids(prompt), config, cancel))

    def _generate(self, prompt_ids: list[int], config: GenerationConfig, cancel: threading.Event | None):
        import llama_cpp

        budget = min(config.max_tokens, self.info.context_length - len(prompt_ids))
        stop_ids = stop_token_set(self.info, config)
        assembler, generated, reason = TextAssembler(config.stop), [], "length"
        vocab = self._llm._model.vocab
        with self._lock:
            self._llm.set_seed(config.seed if config.seed is not None else random.randrange(2**31))
            tokens = self._llm.generate(prompt_ids, reset=True, **sampling_arguments(config))
            for token in tokens if budget > 0 else ():
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    break
                if token in stop_ids or (not config.ignore_eos and llama_cpp.llama_vocab_is_eog(vocab, token)):
                    reason = "stop"
                    break
                generated.append(token)
                piece = assembler.feed(self.token_bytes(token))
                if piece:
                    yield piece
                if assembler.stopped:
                    reason = "stop"
                    break
                if len(generated) >= budget:
                    break
            tokens.close()
        tail = assembler.finish()
        if tail:
            yield tail
        return Completion(assembler.text, generated, len(prompt_ids), reason)

    def generate_batch(
        self, prompts: Sequence[Prompt], config: GenerationConfig, cancel: threading.Event | None = None
    ) -> list[Completion]:
        if len(prompts) <= 1:
            return [self.stream(prompt, config, cancel).collect() for prompt in prompts]
        return self._batch_decoder.generate([self._prompt_ids(p) for p in prompts], config, cancel)

    # --- scoring -------------------------------------------------------------------------------

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[ContinuationScore]:
        prompt_ids = self._prompt_ids(prompt)
        with self._lock:
            self._llm.reset()
            self._decode(prompt_ids[:-1], start=0, want_logits=False)
            scores = [self._score_one(prompt, prompt_ids, text) for text in continuations]
            self._llm.reset()  # the next generate() re-evaluates from a clean cache
        return scores

    def _score_one(self, prompt: Prompt, prompt_ids: list[int], text: str) -> ContinuationScore:
        ids = continuation_ids(self, prompt, prompt_ids, text)
        if len(prompt_ids) + len(ids) > self.info.context_length:
            raise ContextOverflowError(
                f"prompt and continuation are {len(prompt_ids) + len(ids)} tokens; the context window "
                f"is {self.info.context_length}"
            )
        # Re-decode from the prompt's last token: its logits predict the continuation's first token.
        logits = self._decode([prompt_ids[-1], *ids], start=len(prompt_ids) - 1, want_logits=True)
        logprobs = _log_softmax(logits[: len(ids)])
        picked = tuple(float(logprobs[i, token]) for i, token in enumerate(ids))
        return ContinuationScore(text, tuple(ids), picked)

    def _decode(self, ids: list[int], *, start: int, want_logits: bool) -> np.ndarray:
        """Decode `ids` at positions start.. in sequence 0; the logits of every position when wanted."""
        context, batch, rows = self._llm._ctx, self._llm._batch, []
        context.kv_cache_seq_rm(-1, start, -1)
        for offset in range(0, len(ids), BATCH_SIZE):
            chunk = ids[offset : offset + BATCH_SIZE]
            batch.set_batch(batch=chunk, n_past=start + offset, logits_all=want_logits)
            context.decode(batch)
            if want_logits:
                n_vocab = self.info.vocab_size
                rows.append(np.ctypeslib.as_array(context.get_logits(), shape=(len(chunk), n_vocab)).copy())
        return np.concatenate(rows) if rows else np.zeros((0, self.info.vocab_size), np.float32)

    # --- introspection for benchmarks -----------------------------------------------------------

    def perf_counters(self) -> dict[str, float]:
        """llama.cpp's own timing counters since the last `reset_perf_counters` (prompt and generation)."""
        import llama_cpp

        data = llama_cpp.llama_perf_context(self._llm._ctx.ctx)
        return {
            "prompt_ms": data.t_p_eval_ms,
            "prompt_tokens": data.n_p_eval,
            "generation_ms": data.t_eval_ms,
            "generation_tokens": data.n_eval,
        }

    def reset_perf_counters(self) -> None:
        import llama_cpp

        llama_cpp.llama_perf_context_reset(self._llm._ctx.ctx)

    def build_info(self) -> dict[str, str]:
        """What a benchmark report names: the bindings' version, the GPU backend, CPU features."""
        from bayling_local.backends.device import llama_cpp_report

        report = llama_cpp_report()
        return {"backend": self.name, "version": report.version or "", "devices": ",".join(report.devices), "build": report.note}

    def close(self) -> None:
        if self._llm is not None:
            self._batch_decoder.close()
            self._llm.close()
            self._llm = None


@contextlib.contextmanager
def _model_params_override(**fields):
    """Set llama_model_params fields that `Llama(...)` has no argument for, during one load."""
    import llama_cpp.llama_cpp as low_level

    original = low_level.llama_model_default_params

    def patched():
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    with _PARAMS_LOCK:
        low_level.llama_model_default_params = patched
        try:
            yield
        finally:
            low_level.llama_model_default_params = original


_PARAMS_LOCK = threading.Lock()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sampling_arguments(config: GenerationConfig) -> dict:
    # min_p is off so that top_k/top_p/temperature mean what they mean on the other backends.
    return {
        "temp": max(0.0, config.temperature),
        "top_k": config.top_k,
        "top_p": config.top_p,
        "min_p": 0.0,
        "repeat_penalty": config.repeat_penalty,
    }


def _gpu_layers(device: str) -> tuple[str, int]:
    """(device in use, layers to offload) for a requested device."""
    gpu = llama_cpp_gpu_backend()
    if device == "cpu":
        return "cpu", 0
    if device == "auto":
        return (gpu, -1) if gpu else ("cpu", 0)
    if device in ("cuda", "metal") and gpu == device:
        return device, -1
    flag = {"cuda": "GGML_CUDA", "metal": "GGML_METAL"}.get(device)
    if flag is None:
        raise BackendUnavailableError(f"llama.cpp cannot use device '{device}'; choose auto, cpu, cuda or metal")
    raise BackendUnavailableError(
        f"this llama.cpp build has no {device} support (it has: {gpu or 'cpu only'}); reinstall with "
        f"CMAKE_ARGS=\"-D{flag}=on\" pip install --force-reinstall --no-cache-dir llama-cpp-python"
    )


def _reference_tokenizer(header):
    """The carried reference tokenizer, or None (no key, or the `tokenizers` library is missing)."""
    text = header.metadata.get(TOKENIZER_JSON_KEY)
    if not isinstance(text, str):
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        import warnings

        warnings.warn(
            f"{header.path.name} carries its reference tokenizer but the `tokenizers` package is missing; "
            "using llama.cpp's tokenizer, which differs in some scripts (pip install tokenizers)",
            stacklevel=3,
        )
        return None
    try:
        return Tokenizer.from_str(text)
    except Exception as error:  # tokenizers raises a bare Exception for malformed JSON
        raise InvalidModelFileError(f"{header.path} carries a corrupt {TOKENIZER_JSON_KEY}: {error}") from error


def _model_info(llm, header, n_ctx: int, device: str) -> ModelInfo:
    model = llm._model
    bos, eos, eot = model.token_bos(), model.token_eos(), model.token_eot()

    def text_of(token: int) -> str | None:
        return model.token_get_text(token) if token >= 0 else None

    return ModelInfo(
        architecture=header.architecture,
        context_length=n_ctx,
        trained_context_length=header.context_length,
        vocab_size=model.n_vocab(),
        bos_token=text_of(bos),
        eos_token=text_of(eos),
        add_bos=bool(model.add_bos_token()),
        chat_template=header.chat_template,
        end_of_generation_ids=frozenset(t for t in (eos, eot) if t >= 0),
        device=device,
    )
