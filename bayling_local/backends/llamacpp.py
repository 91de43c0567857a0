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

import ctypes
import functools
import random
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bayling_local.backends.base import (
    Completion,
    ContinuationScore,
    GenerationConfig,
    LoadOptions,
    ModelInfo,
    Prompt,
    SpeculationOptions,
    TextStream,
    resolve_context_length,
)
from bayling_local.backends.compute_threads import call_on_own_thread, stream_on_own_thread
from bayling_local.backends.decoding import (
    TextAssembler,
    continuation_ids,
    encode_with_tokenizers,
    prompt_token_ids,
    stop_token_set,
)
from bayling_local.backends.device import (
    available_memory_bytes,
    llama_cpp_cpu_features,
    llama_cpp_gpu_backend,
    llama_cpp_has_amx,
    physical_cores,
)
from bayling_local.errors import (
    BackendUnavailableError,
    ContextOverflowError,
    InvalidModelFileError,
    UsageError,
)
from bayling_local.gguf_header import GGML_TYPES, GGUFHeader, read_gguf_header

BATCH_SIZE = 512
TOKENIZER_JSON_KEY = "bayling.tokenizer_json"


class LlamaCppBackend:
    name = "llama.cpp"

    def __init__(
        self,
        llm,
        info: ModelInfo,
        reference_tokenizer=None,
        extra_buffers: ExtraBuffers | None = None,
        speculation: SpeculationOptions | None = None,
        draft_llm=None,
    ):
        from bayling_local.engine.batches import BatchGenerator

        self.speculation = speculation if speculation is not None and speculation.enabled else None
        """Speculative decoding settings: every generation then runs in the engine, which drafts."""
        self.draft_llm = draft_llm
        self._llm = llm
        self.info = info
        self._reference_tokenizer = reference_tokenizer
        self._extra_buffers = extra_buffers
        self._lock = threading.Lock()  # one llama context serves one generation at a time
        self._batches = BatchGenerator(self)  # continuous batching in its own llama context

    @property
    def llm(self):
        """The llama_cpp.Llama object (for the engine and benchmarks)."""
        return self._llm

    @property
    def vocab(self):
        return self._llm._model.vocab

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> LlamaCppBackend:
        header = read_gguf_header(path)
        n_ctx = resolve_context_length(options.context_length, header.context_length)
        device, gpu_layers = _gpu_layers(options.device)
        try:
            llm, extra_buffers = open_llama(
                header,
                extra_buffers=options.extra_buffers,
                n_ctx=n_ctx,
                n_batch=min(BATCH_SIZE, n_ctx),
                n_gpu_layers=gpu_layers,
                n_threads=threads_for(options),
                n_threads_batch=threads_for(options),
                verbose=False,
            )
        except ValueError as error:
            raise InvalidModelFileError(
                f"llama.cpp could not load {path} ({header.architecture} architecture): {error}"
            ) from error
        info = _model_info(llm, header, n_ctx, device)
        draft_llm = open_draft(llm, options, gpu_layers)
        return cls(llm, info, _reference_tokenizer(header), extra_buffers, options.speculation, draft_llm)

    # --- tokens --------------------------------------------------------------------------------

    @property
    def tokenizer_source(self) -> str:
        """`reference` (the tokenizer.json carried in the GGUF) or `llama.cpp` (its own tokenizer)."""
        return "reference" if self._reference_tokenizer is not None else "llama.cpp"

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Ids of `text`; `special=False` keeps special-token texts such as `<|eot_id|>` as plain text."""
        bos = self.info.bos_token
        add = add_bos and self.info.add_bos and not (special and bos and text.startswith(bos))
        if self._reference_tokenizer is None:
            return self._llm.tokenize(text.encode("utf-8"), add_bos=add, special=special)
        ids = encode_with_tokenizers(self._reference_tokenizer, text, special=special)
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
        if self.speculation is not None:  # drafting and verifying live in the engine
            return TextStream(self._batches.stream(self._prompt_ids(prompt), config, cancel))
        # On a thread that ends with the stream: an idle thread that has decoded keeps an OpenMP team
        # and slows every later decode in the process (`compute_threads.py`).
        return TextStream(stream_on_own_thread(self._generate(self._prompt_ids(prompt), config, cancel), "llama-stream"))

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
        return self._batches.generate([self._prompt_ids(p) for p in prompts], config, cancel)

    @property
    def batch_stats(self):
        """The batch engine's EngineStats (None before the first batch): steps, prefill tokens saved."""
        return self._batches.stats

    # --- scoring -------------------------------------------------------------------------------

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[ContinuationScore]:
        prompt_ids = self._prompt_ids(prompt)
        return call_on_own_thread(lambda: self._score(prompt, prompt_ids, continuations), "llama-score")

    def _score(self, prompt: Prompt, prompt_ids: list[int], continuations: Sequence[str]) -> list[ContinuationScore]:
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

    def runtime_settings(self) -> dict[str, str]:
        """What this load runs with, for benchmark notes: threads, attention, KV cache, weight buffers."""
        llm = self._llm
        context, model = llm.context_params, llm.model_params
        gpu_layers = model.n_gpu_layers
        return {
            "threads": str(llm.n_threads),
            "batch_threads": str(llm.n_threads_batch),
            "flash_attention": _flash_attention_setting(context.flash_attn_type),
            "type_k": _ggml_type_name(context.type_k),
            "type_v": _ggml_type_name(context.type_v),
            "extra_buffers": self._extra_buffers.describe() if self._extra_buffers else _on_off(model.use_extra_bufts),
            "n_gpu_layers": "all" if gpu_layers >= ALL_LAYERS else str(gpu_layers),
            "n_batch": str(context.n_batch),
            "n_ubatch": str(context.n_ubatch),
            "cpu_features": " ".join(llama_cpp_cpu_features()) or "baseline",
            **({"speculation": describe_speculation(self.speculation)} if self.speculation else {}),
        }

    def close(self) -> None:
        if self._llm is not None:
            self._batches.close()
            self._llm.close()
            self._llm = None
        if self.draft_llm is not None:
            self.draft_llm.close()
            self.draft_llm = None


# --- speculative decoding's draft model -----------------------------------------------------------

VOCAB_SIZE_SLACK = 128
"""Vocabularies may differ in size by padding rows (llama.cpp allows 128); the tokens in use may not."""
FIRST_COMPARED_TOKEN = 5
"""Ids below this are control tokens some conversions renumber (llama.cpp skips them as well)."""
DRAFT_OWN_CONTEXT = 256
"""The draft's Llama object needs a context of its own; the engine drafts in contexts it makes."""


def describe_speculation(options: SpeculationOptions) -> str:
    """`draft=NAME tokens<=8 adaptive` or `lookup=2..3-gram tokens<=8 adaptive`, for benchmark notes."""
    source = f"draft={options.draft_model or Path(options.draft_path or '').name}" if options.draft_path else (
        f"lookup=2..{options.lookup_ngram}-gram"
    )
    return f"{source} tokens<={options.draft_tokens} {'fixed' if options.fixed else 'adaptive'}"


def threads_for(options: LoadOptions) -> int:
    """`--threads`, or one per physical core (llama.cpp's default) for decode and prompts alike."""
    return options.threads or physical_cores()


def open_draft(llm, options: LoadOptions, gpu_layers: int):
    speculation = options.speculation
    if speculation is None or not speculation.draft_path:
        return None
    path = Path(speculation.draft_path)
    try:
        draft, _ = open_llama(
            read_gguf_header(path),
            n_ctx=DRAFT_OWN_CONTEXT,
            n_batch=DRAFT_OWN_CONTEXT,
            n_gpu_layers=gpu_layers,
            n_threads=threads_for(options),
            n_threads_batch=threads_for(options),
            verbose=False,
        )
    except ValueError as error:
        raise InvalidModelFileError(f"llama.cpp could not load the draft model {path}: {error}") from error
    try:
        check_same_vocabulary(llm, draft, speculation.draft_model or path.name)
    except UsageError:
        draft.close()
        raise
    return draft


def check_same_vocabulary(target_llm, draft_llm, draft_name: str) -> None:
    """Refuse a draft whose tokens mean something else than the target's (a Llama-2 model cannot draft
    for a Llama-3 one): same tokenizer kind, same BOS/EOS, same text for every token both have."""
    import llama_cpp

    target, draft = target_llm._model.vocab, draft_llm._model.vocab
    sizes = llama_cpp.llama_vocab_n_tokens(target), llama_cpp.llama_vocab_n_tokens(draft)

    def refuse(why: str) -> UsageError:
        return UsageError(
            f"the draft model {draft_name} cannot draft for this model: {why}; a draft must share the model's tokenizer"
        )

    if llama_cpp.llama_vocab_type(target) != llama_cpp.llama_vocab_type(draft):
        raise refuse("its tokenizer is of another kind")
    if abs(sizes[0] - sizes[1]) > VOCAB_SIZE_SLACK:
        raise refuse(f"its vocabulary has {sizes[1]:,} tokens, the model's {sizes[0]:,}")
    for name in ("bos", "eos"):
        ids = [getattr(llama_cpp, f"llama_vocab_{name}")(v) for v in (target, draft)]
        if ids[0] != ids[1]:
            raise refuse(f"its {name.upper()} token is {ids[1]}, the model's {ids[0]}")
    for token in range(FIRST_COMPARED_TOKEN, min(sizes)):
        texts = [llama_cpp.llama_vocab_get_text(v, token) for v in (target, draft)]
        if texts[0] != texts[1]:
            shown = [t.decode("utf-8", "replace") for t in texts]
            raise refuse(f"token {token} is {shown[1]!r} there and {shown[0]!r} here")


# --- loading with llama_model_params that Llama(...) has no argument for -----------------------------

# llama.cpp's AMX matmul (llama-cpp-python 0.3.36) segfaults: on Q4_1 weights on Sapphire Rapids, and on
# every type it has AMX kernels for (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS) on a 2026 Xeon with
# AMX; a Q5_0 file crashes too, through its Q8_0 embedding. F16 weights go to AMX too and run (F32 stays
# off it). Files with the crashing types lose the extra buffer types whole: a tensor_buft_overrides
# entry cannot steer tensors off AMX alone, because an override to the CPU buffer type re-selects among
# the extra types and picks AMX again (llama.cpp src/llama-model-loader.cpp, "when overriding to a CPU
# buffer, consider the extra buffer types"), and CPU_REPACK, the only other x86 extra type, has no
# kernels for most of these types (so pinning such a tensor to it crashes in its repack). On an AMX
# build quantized files therefore run without weight repacking, correct but slower than llama.cpp's
# repacked Q4_0.
AMX_KERNEL_TYPES = frozenset({"Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"})
ALL_LAYERS = 0x7FFFFFFF  # what Llama(n_gpu_layers=-1) stores: "every layer"


@dataclass(frozen=True)
class ExtraBuffers:
    """Whether llama.cpp may put weights in its extra CPU buffer types (CPU_REPACK, AMX), and why."""

    enabled: bool
    reason: str

    def describe(self) -> str:
        return f"{_on_off(self.enabled)} ({self.reason})"


MEMORY_FOR_EXTRA_BUFFERS = 0.85
"""Extra buffer types copy the weights they take out of the mapped file into allocated memory. A file
larger than this share of the memory available then fails to load (a BayLing-2-13B f16 GGUF, 26 GB, on a
24 GiB machine with AMX: "Failed to load model"); without them llama.cpp maps the file and pages it."""


def choose_extra_buffers(
    tensor_types: Collection[str],
    *,
    has_amx: bool,
    requested: bool | None = None,
    weights_bytes: int | None = None,
    available_bytes: int | None = None,
) -> ExtraBuffers:
    """llama.cpp's default (on: repacked weights, its fastest CPU kernels) unless asked otherwise; unless
    the build has AMX and the file has tensors of a type its AMX kernels take (they crash); or unless the
    weights would not fit in the memory available once copied out of the mapped file."""
    if requested is not None:
        return ExtraBuffers(requested, "asked for")
    crashing = sorted(AMX_KERNEL_TYPES.intersection(tensor_types))
    if has_amx and crashing:
        return ExtraBuffers(False, f"{', '.join(crashing)} weights on an AMX build: llama.cpp's AMX kernels crash")
    if weights_bytes and available_bytes and weights_bytes > MEMORY_FOR_EXTRA_BUFFERS * available_bytes:
        return ExtraBuffers(
            False,
            f"the weights ({weights_bytes / 1e9:.1f} GB) would not fit in the memory available "
            f"({available_bytes / 1e9:.1f} GB) once copied out of the file; llama.cpp maps the file instead",
        )
    return ExtraBuffers(True, "llama.cpp's default")


def open_llama(header: GGUFHeader, *, extra_buffers: bool | None = None, **llama_arguments):
    """(llama_cpp.Llama, ExtraBuffers): the GGUF `header` describes, loaded with `llama_arguments`
    (Llama's own keywords) and the extra-buffer choice for this file on this build."""
    choice = choose_extra_buffers(
        header.tensor_types(),
        has_amx=llama_cpp_has_amx(),
        requested=extra_buffers,
        weights_bytes=header.file_size,
        available_bytes=available_memory_bytes() if _on_cpu(llama_arguments) else None,
    )
    llama_class = _llama_with_model_params()
    llm = llama_class(str(header.path), model_params_fields={"use_extra_bufts": choice.enabled}, **llama_arguments)
    return llm, choice


@functools.lru_cache(maxsize=1)
def _llama_with_model_params():
    """llama_cpp.Llama taking `model_params_fields`: llama_model_params fields set before the model loads.

    Llama.__init__ has no argument for them; it assigns `self.model_params =
    llama_cpp.llama_model_default_params()` and then loads from it (llama-cpp-python 0.3.36 llama.py,
    under "# Model Params"). This subclass catches that assignment for its own instance, so no module
    global is patched and concurrent loads do not see each other's fields.
    """
    import llama_cpp

    class LlamaWithModelParams(llama_cpp.Llama):
        def __init__(self, *args, model_params_fields: dict, **kwargs):
            self._model_params_fields = dict(model_params_fields)
            super().__init__(*args, **kwargs)

        @property
        def model_params(self):
            return self._model_params

        @model_params.setter
        def model_params(self, params) -> None:
            for name, value in self._model_params_fields.items():
                setattr(params, name, value)
            self._model_params = params

    return LlamaWithModelParams


def _on_cpu(llama_arguments: dict) -> bool:
    """Whether the weights stay in host memory (no layer offloaded to a GPU)."""
    return not llama_arguments.get("n_gpu_layers")


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"


def _ggml_type_name(type_id: int) -> str:
    entry = GGML_TYPES.get(int(type_id))
    return entry[0].lower() if entry else f"type{type_id}"


def _flash_attention_setting(flash_attn_type: int) -> str:
    # Llama(...) turns flash attention off unless asked, while llama.cpp's own tools default to auto.
    names = {-1: "auto", 0: "off (llama-cpp-python's default; llama.cpp's own is auto)", 1: "on"}
    return names.get(int(flash_attn_type), str(flash_attn_type))


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
