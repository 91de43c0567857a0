"""The ONNX Runtime backend: runs decoders written by `convert/onnx.py` (`bayling-local convert --to onnx`).

One graph serves prompt and next token. The KV cache is preallocated once per request and bound (I/O
binding) as both `past_key_values.*` and `present.*`, so GroupQueryAttention appends each step's keys and
values in place; the attention mask tells it each row's length. Several prompts decode as one batch, each
row at its own length. On CUDA the cache stays on the GPU; only the last position's logits come back.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
from bayling_local.backends.huge_pages import Collapse, collapse_dense_memory
from bayling_local.errors import (
    BackendUnavailableError,
    ContextOverflowError,
    InvalidModelFileError,
    ModelNotFoundError,
)

CONFIG_FILE = "bayling_onnx.json"
FORMAT_NAME = "bayling-onnx-decoder"
"""`format` in CONFIG_FILE: what `convert/onnx.py` writes and this backend reads."""
FORMAT_VERSION = 2
"""Version 2: GroupQueryAttention graph with an in-place cache and `num_logits_to_keep` (version 1 had
unfused attention and a growing cache)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
PROVIDER_FOR_DEVICE = {
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("cuda", "coreml", "cpu")
"""`--device auto` takes the first of these the installed onnxruntime offers."""


def select_provider(requested: str, available: Sequence[str]) -> tuple[str, list[str]]:
    """(device, ONNX Runtime providers in priority order) for a `LoadOptions.device` value."""
    if requested == "auto":
        requested = next(d for d in AUTO_ORDER if PROVIDER_FOR_DEVICE[d] in available)
    if requested == "metal":
        raise BackendUnavailableError(
            "ONNX Runtime has no Metal provider; use --device coreml, or the GGUF model with llama.cpp "
            "for GPU speed on Apple"
        )
    if requested not in PROVIDER_FOR_DEVICE:
        raise BackendUnavailableError(f"the onnxruntime backend supports cpu, cuda and coreml, not '{requested}'")
    provider = PROVIDER_FOR_DEVICE[requested]
    if provider not in available:
        hint = {"cuda": "install onnxruntime-gpu", "coreml": "CoreML needs macOS"}.get(requested, "")
        raise BackendUnavailableError(
            f"device '{requested}' needs onnxruntime's {provider}, which this install lacks "
            f"(has: {', '.join(available)}); {hint} or use --device cpu"
        )
    if requested == "coreml":
        warnings.warn(
            "CoreML runs only the nodes it supports; the rest fall back to the CPU, node by node",
            stacklevel=2,
        )
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    return requested, providers


class OnnxRuntimeBackend:
    """A decoder exported by `convert/onnx.py`; implements `bayling_local.backends.base.Backend`."""

    name = "onnxruntime"

    def __init__(self, session: Any, tokenizer: Any, config: dict, info: ModelInfo, huge_pages: Collapse | None = None):
        self._session = session
        self._huge_pages = huge_pages
        self._tokenizer = tokenizer
        self._config = config
        self.info = info
        self._layers = int(config["layers"])
        self._kv_device = "cuda" if info.device == "cuda" else "cpu"
        """Where the KV cache lives between steps (CoreML nodes read it from the CPU)."""
        self._pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> OnnxRuntimeBackend:
        """Load an ONNX decoder folder (or its `model.onnx`) with its tokenizer and `bayling_onnx.json`."""
        import onnxruntime

        folder, model_file = _find_model(Path(path))
        config = read_export_config(folder)
        tokenizer = _load_tokenizer(folder)
        device, providers = select_provider(options.device, onnxruntime.get_available_providers())
        if device == "cuda" and config.get("kv_dtype") != "float16":
            warnings.warn(
                f"{folder.name} was exported for the CPU (float32): on CUDA its attention falls back to the CPU; "
                "export it with --export-device cuda (int4) or --quant fp16 for GPU speed",
                stacklevel=2,
            )
        _warn_if_saturating_int8(config, folder)
        session = _open_session(model_file, providers, options)
        _check_graph(session, config, model_file)
        huge_pages = collapse_dense_memory() if device == "cpu" and options.huge_pages else None
        info = _model_info(config, tokenizer, options, device)
        return cls(session, tokenizer, config, info, huge_pages)

    @property
    def huge_pages(self) -> Collapse | None:
        """The collapse of this model's weights into 2 MiB pages (None when not asked for); `done` is set
        once the kernel has answered."""
        return self._huge_pages

    def runtime_settings(self) -> dict[str, str]:
        """What ONNX Runtime runs this model with, for `doctor`, `bench speed` and benchmark headers."""
        threads = self._session.get_session_options().intra_op_num_threads
        level = self._config.get("accuracy_level")
        return {
            "provider": self._session.get_providers()[0],
            "intra_op_threads": str(threads) if threads else "default (one per physical core)",
            "huge_pages": self._huge_pages.describe() if self._huge_pages else "off",
            "precision": str(self._config.get("precision", "unknown")),
            "matmulnbits_accuracy_level": str(level) if level is not None else _legacy_level(self._config),
            "block_size": str(self._config.get("block_size") or "-"),
        }

    # Tokens

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Ids of `text` with special tokens in it parsed (`special=False`: kept as plain text)."""
        ids = list(self._tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not special))
        bos_text = self.info.bos_token
        if add_bos and self.info.add_bos and not (special and bos_text and text.startswith(bos_text)):
            ids.insert(0, self._tokenizer.bos_token_id)
        return ids

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # Generation

    def stream(self, prompt: Prompt, config: GenerationConfig, cancel: threading.Event | None = None) -> TextStream:
        prompt_ids = self._prompt_ids(prompt)
        return TextStream(self._stream_one(prompt_ids, config, cancel))

    def _stream_one(self, prompt_ids: list[int], config: GenerationConfig, cancel) -> Generator[str, None, Completion]:
        text = TextAssembler(config.stop)
        generated: list[int] = []
        finish: FinishReason = "length"
        for step in self._decode([prompt_ids], config, cancel):
            if step is None:
                finish = "cancelled"
                break
            token = step[0]
            if token is None:
                finish = "stop"
                break
            generated.append(token)
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

    def generate_batch(
        self, prompts: Sequence[Prompt], config: GenerationConfig, cancel: threading.Event | None = None
    ) -> list[Completion]:
        """All prompts in one batch (left-padded); each ends at its own stop, the batch at the last one."""
        all_ids = [self._prompt_ids(p) for p in prompts]
        if not all_ids:
            return []
        assemblers = [TextAssembler(config.stop) for _ in all_ids]
        generated: list[list[int]] = [[] for _ in all_ids]
        finish: list[FinishReason | None] = [None] * len(all_ids)
        for step in self._decode(all_ids, config, cancel, finished=finish):
            if step is None:
                finish = [f or "cancelled" for f in finish]
                break
            for i, token in enumerate(step):
                if finish[i] is not None:
                    continue
                if token is None:
                    finish[i] = "stop"
                    continue
                generated[i].append(token)
                assemblers[i].update(self.detokenize(generated[i]))
                if assemblers[i].stopped:
                    finish[i] = "stop"
        results = []
        for i, ids in enumerate(all_ids):
            assemblers[i].finish(self.detokenize(generated[i]))
            results.append(Completion(assemblers[i].text, generated[i], len(ids), finish[i] or "length"))
        return results

    def _decode(self, prompts: list[list[int]], config: GenerationConfig, cancel, finished: list | None = None):
        """Yield, per step, each sequence's next token (None once it picked a stop token); None if cancelled.

        Each prompt is prefilled on its own into its row of one preallocated cache (no padding to attend
        over), then all rows decode together, each at its own length. `finished` (shared with the caller)
        lets a caller end a sequence early (stop strings); the loop ends when all are finished or the
        token budget is spent.
        """
        from bayling_local.backends.sampling import Sampler

        samplers = [Sampler(config) for _ in prompts]
        stop_ids = stop_token_set(self.info, config)
        budget = min(config.max_tokens, self.info.context_length - max(len(p) for p in prompts))
        if budget <= 0:
            return
        histories = [list(p) for p in prompts]
        done = [False] * len(prompts)
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        cache = self._new_cache(len(prompts), int(lengths.max()) + budget)
        logits = np.stack([self._prefill(cache, row, ids) for row, ids in enumerate(prompts)])
        step_binding = self._binding(cache, rows=range(len(prompts)))
        inputs = _StepInputs(len(prompts), cache.shape[2])
        step: list[int | None] = []
        for index in range(budget):
            if cancel is not None and cancel.is_set():
                yield None
                return
            if index:  # feed the tokens just picked; each row appends at its own length
                inputs.ids[:, 0] = [t if t is not None else self._pad_id for t in step]
                lengths += 1
                logits = self._run(step_binding, inputs.ids, inputs.mask(lengths))[:, -1]
            step = []
            for i, sampler in enumerate(samplers):
                if done[i] or (finished is not None and finished[i] is not None):
                    done[i] = True
                    step.append(None)
                    continue
                token = sampler.pick(logits[i], histories[i])
                if token in stop_ids:
                    done[i] = True
                    step.append(None)
                else:
                    histories[i].append(token)
                    step.append(token)
            yield step
            if all(done) or (finished is not None and all(f is not None for f in finished)):
                return

    def cache_rows(self, rows: int, capacity: int) -> CacheRows:
        """A preallocated cache of `rows` sequences of `capacity` tokens that the caller fills and decodes
        row by row (the engine's continuous batching, `bayling_local/engine/onnx_rows.py`)."""
        return CacheRows(self, rows, capacity)

    def _new_cache(self, batch: int, capacity: int) -> _KVCache:
        dtype = np.float16 if self._config.get("kv_dtype") == "float16" else np.float32
        shape = (batch, int(self._config["num_key_value_heads"]), capacity, int(self._config["head_dim"]))
        return _KVCache(shape, 2 * self._layers, dtype, self._kv_device)

    def _prefill(self, cache: _KVCache, row: int, ids: list[int]) -> np.ndarray:
        """Run one prompt into row `row` of the cache; its last position's logits."""
        binding = self._binding(cache, rows=range(row, row + 1))
        prompt = np.array([ids], dtype=np.int64)
        return self._run(binding, prompt, np.ones_like(prompt))[0, -1]

    def _binding(self, cache: _KVCache, rows: range, last_logits: bool = True) -> _Binding:
        """(The caller keeps `cache` alive while the binding is used: it holds raw pointers.)

        An I/O binding whose past and present of each layer are the same cache rows, so
        GroupQueryAttention appends in place: nothing is copied between steps (on CUDA nothing leaves
        the GPU but the logits). With `last_logits` (each row's last position only), the logits land in
        one host buffer the binding owns, which saves ONNX Runtime an allocation and us a copy per step
        (70 us of a 7 ms SmolLM2 step)."""
        binding = self._session.io_binding()
        logits = None
        if last_logits:
            logits = np.empty((len(rows), 1, self.info.vocab_size), dtype=np.float32)
            binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        else:
            binding.bind_output("logits", "cpu")
        binding.bind_cpu_input("num_logits_to_keep", _LAST_ONLY if last_logits else _EVERY_POSITION)
        past, present = self._past_names()
        for index, (past_name, present_name) in enumerate(zip(past, present)):
            cache.bind(binding, index, rows, past_name, present_name)
        return _Binding(binding, logits)

    def _run(self, bound: _Binding, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Logits of one run: [rows, 1, vocab] in the binding's own buffer (valid until its next run), or
        [rows, sequence, vocab] for a binding made without `last_logits`."""
        binding = bound.binding
        binding.bind_cpu_input("input_ids", input_ids)
        binding.bind_cpu_input("attention_mask", mask)
        self._session.run_with_iobinding(binding)
        return bound.logits if bound.logits is not None else binding.get_outputs()[0].numpy()

    def _past_names(self) -> tuple[list[str], list[str]]:
        past, present = [], []
        for i in range(self._layers):
            for part in ("key", "value"):
                past.append(f"past_key_values.{i}.{part}")
                present.append(f"present.{i}.{part}")
        return past, present

    # Scoring

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[ContinuationScore]:
        """Natural-log probability of each continuation's tokens after the prompt (one forward each)."""
        from bayling_local.backends.decoding import continuation_ids

        prompt_ids = self._prompt_ids(prompt)
        scores = []
        for continuation in continuations:
            ids = continuation_ids(self, prompt, prompt_ids, continuation)
            scores.append(ContinuationScore(continuation, tuple(ids), self._logprobs(prompt_ids, ids)))
        return scores

    def _logprobs(self, prompt_ids: list[int], ids: list[int]) -> tuple[float, ...]:
        if not ids:
            return ()
        full = prompt_ids + ids
        if len(full) > self.info.context_length:
            raise ContextOverflowError(
                f"prompt and continuation are {len(full)} tokens; the context window is "
                f"{self.info.context_length} (shorten them or raise --context)"
            )
        logits = self.logits(full)[len(prompt_ids) - 1 : -1].astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        logprobs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        return tuple(float(logprobs[i, t]) for i, t in enumerate(ids))

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits [len(token_ids), vocab] for one sequence in one forward (scoring, parity checks)."""
        ids = np.array([list(token_ids)], dtype=np.int64)
        cache = self._new_cache(1, ids.shape[1])  # held here: the binding points into its buffers
        return self._run(self._binding(cache, rows=range(1), last_logits=False), ids, np.ones_like(ids))[0]

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        return prompt_token_ids(self, prompt)

    def close(self) -> None:
        self._session = None
        self._tokenizer = None


class CacheRows:
    """KV cache rows that outlive any one request: a prompt (or a chunk of one) runs into one row alone, and
    one token runs for each of the first rows together, each row at its own length.

    The graph takes one `sequence` length for every row of a run, and GroupQueryAttention takes a row's
    past as (its mask sum - sequence), so every input token of a row counts as real: prompts cannot share
    a run with one-token decodes. A prompt run binds its row alone (by pointer offset), as `_prefill` does.

    A kept prefix (`keep_prefix`) is a copy of one row's first positions, outside the rows: copied into a row,
    it stands for running those prompt tokens again, the same numbers.
    """

    def __init__(self, backend: OnnxRuntimeBackend, rows: int, capacity: int):
        self.rows, self.capacity = rows, capacity
        self._backend = backend
        self._cache = backend._new_cache(rows, capacity)
        self._decode_bindings: dict[int, Any] = {}  # rows in a decode run -> its binding (points into _cache)
        self._prefix: list[np.ndarray] = []  # per layer and part: [kv_heads, kept positions, head_dim]

    @property
    def keeps_prefixes(self) -> bool:
        """Whether `keep_prefix` and `copy_prefix` work: the cache is in host memory. A CUDA cache is one
        OrtValue per layer and part, and onnxruntime's Python API copies whole OrtValues (`copy_tensors`),
        not some positions of one row into another."""
        return self._cache.device == "cpu"

    def keep_prefix(self, row: int, length: int) -> None:
        """Keep the keys and values of the first `length` positions of `row` (replacing any kept before)."""
        self._prefix = self._cache.read_positions(row, length)

    def copy_prefix(self, row: int, length: int) -> None:
        """Write the first `length` kept positions into `row`; its prompt then runs from position `length`."""
        self._cache.write_positions(row, self._prefix, length)

    def prefill(self, row: int, ids: Sequence[int], start: int = 0) -> np.ndarray:
        """Run prompt tokens `ids` into `row` after the `start` tokens it holds; the last token's logits."""
        binding = self._backend._binding(self._cache, rows=range(row, row + 1))
        prompt = np.array([list(ids)], dtype=np.int64)
        mask = np.ones((1, start + prompt.shape[1]), dtype=np.int64)
        return self._backend._run(binding, prompt, mask)[0, -1]

    def decode(self, tokens: Sequence[int | None], lengths: Sequence[int]) -> np.ndarray:
        """One token into each of rows 0..len(tokens)-1 (None: an idle row, fed padding); `lengths[b]` is
        what row b holds after it. Logits [rows, vocab]; an idle row's are meaningless."""
        count = len(tokens)
        if count not in self._decode_bindings:
            self._decode_bindings[count] = self._backend._binding(self._cache, rows=range(count))
        pad = self._backend._pad_id
        input_ids = np.array([[pad if t is None else t] for t in tokens], dtype=np.int64)
        mask = _right_padded_mask(np.asarray(lengths, dtype=np.int64))
        return self._backend._run(self._decode_bindings[count], input_ids, mask)[:, -1]


_LAST_ONLY = np.array([1], dtype=np.int64)
_EVERY_POSITION = np.array([0], dtype=np.int64)
"""`num_logits_to_keep` values."""


@dataclass(frozen=True)
class _Binding:
    """An I/O binding and, when it keeps only each row's last logits, the host buffer they are written to."""

    binding: Any
    logits: np.ndarray | None


class _StepInputs:
    """A decode step's `input_ids` and attention mask, in arrays reused from step to step.

    Python work between two runs is slow: each run evicts the interpreter's data from the caches (an
    arg-max over SmolLM2's logits takes 3 us in a loop, 35 us right after a run), so a step allocates
    nothing it can reuse.
    """

    def __init__(self, rows: int, capacity: int):
        self.ids = np.empty((rows, 1), dtype=np.int64)
        self._ones = np.ones((1, capacity), dtype=np.int64) if rows == 1 else None

    def mask(self, lengths: np.ndarray) -> np.ndarray:
        """The right-padded mask of rows holding `lengths` tokens (one row: a view, nothing computed)."""
        if self._ones is not None:
            return self._ones[:, : int(lengths[0])]
        return _right_padded_mask(lengths)


def _right_padded_mask(lengths: np.ndarray) -> np.ndarray:
    """[batch, longest] mask with `lengths[b]` leading ones: the graph reads each row's cache length from it."""
    return (np.arange(int(lengths.max()))[None, :] < lengths[:, None]).astype(np.int64)


class _KVCache:
    """Preallocated key/value buffers [batch, kv_heads, capacity, head_dim], one per layer and part, on the
    CPU (numpy) or the GPU (OrtValue). A row is contiguous, so one sequence's rows bind by pointer offset."""

    def __init__(self, shape: tuple[int, int, int, int], count: int, dtype, device: str):
        self.shape, self.dtype, self.device = shape, dtype, device
        self.row_bytes = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
        if device == "cpu":
            self._buffers: list[Any] = [np.empty(shape, dtype=dtype) for _ in range(count)]
            self._pointers = [b.ctypes.data for b in self._buffers]
        else:
            from onnxruntime import OrtValue

            self._buffers = [OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, device, 0) for _ in range(count)]
            self._pointers = [b.data_ptr() for b in self._buffers]

    def read_positions(self, row: int, length: int) -> list[np.ndarray]:
        """Copies of `row`'s first `length` positions, one per buffer (host memory only)."""
        return [buffer[row, :, :length].copy() for buffer in self._buffers]

    def write_positions(self, row: int, parts: list[np.ndarray], length: int) -> None:
        """Write the first `length` positions of `parts` (from `read_positions`) into `row`."""
        for buffer, part in zip(self._buffers, parts, strict=True):
            buffer[row, :, :length] = part[:, :length]

    def bind(self, binding, index: int, rows: range, past_name: str, present_name: str) -> None:
        shape = [len(rows), *self.shape[1:]]
        pointer = self._pointers[index] + rows.start * self.row_bytes
        binding.bind_input(past_name, self.device, 0, self.dtype, shape, pointer)
        binding.bind_output(present_name, self.device, 0, self.dtype, shape, pointer)


# Loading


def _find_model(path: Path) -> tuple[Path, Path]:
    if not path.exists():
        raise ModelNotFoundError(f"no ONNX model at {path}")
    if path.is_dir():
        candidates = sorted(path.glob("*.onnx"))
        if not candidates:
            raise InvalidModelFileError(f"{path} has no .onnx file; export one with `bayling-local convert --to onnx`")
        path = candidates[0]
    if path.suffix != ".onnx":
        raise InvalidModelFileError(f"{path} is not an .onnx file")
    return path.parent, path


def read_export_config(folder: Path) -> dict:
    """`bayling_onnx.json` of an export folder, checked: readable, its format and version the ones this
    bayling-local writes, the dimensions the backend needs present."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise InvalidModelFileError(
            f"{folder} has no {CONFIG_FILE}; export the model with `bayling-local convert --to onnx`"
        )
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelFileError(f"{config_path} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        found = config.get("format") if isinstance(config, dict) else None
        raise InvalidModelFileError(
            f"{config_path} says format '{found}', not '{FORMAT_NAME}'; "
            "export the model with `bayling-local convert CHECKPOINT --to onnx`"
        )
    required = ("layers", "num_key_value_heads", "head_dim", "vocab_size")
    missing = [k for k in required if not isinstance(config.get(k), int)]
    if missing:
        raise InvalidModelFileError(f"{config_path} lacks {', '.join(missing)}; re-export the model")
    if config.get("format_version") != FORMAT_VERSION:
        raise InvalidModelFileError(
            f"{config_path} is format version {config.get('format_version')}, this bayling-local reads "
            f"{FORMAT_VERSION}; re-export the model with `bayling-local convert --to onnx`"
        )
    return config


def _load_tokenizer(folder: Path) -> Any:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InvalidModelFileError(
            f"{folder} has no tokenizer (tokenizer.json or tokenizer.model); copy the tokenizer files beside the .onnx"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidModelFileError(f"could not load the tokenizer in {folder}: {_one_line(exc)}") from exc


def _open_session(model_file: Path, providers: list[str], options: LoadOptions) -> Any:
    import onnxruntime

    session_options = onnxruntime.SessionOptions()
    if options.threads:
        session_options.intra_op_num_threads = options.threads
    session_options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        # By path, never from bytes: external weight data (`model.onnx.data`) is found beside it.
        return onnxruntime.InferenceSession(str(model_file), session_options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise InvalidModelFileError(f"{model_file} is not a loadable ONNX model: {_one_line(exc)}") from exc


def _is_dynamic_int8(config: dict) -> bool:
    """An int8 export written before int8 became weight-only `MatMulNBits` (it records no accuracy level):
    ONNX Runtime dynamic quantization, u8 activations times s8 weights."""
    return config.get("precision") == "int8" and "accuracy_level" not in config


def _legacy_level(config: dict) -> str:
    return "- (dynamic int8: MatMulInteger)" if _is_dynamic_int8(config) else "-"


def _warn_if_saturating_int8(config: dict, folder: Path) -> None:
    # Without VNNI, MLAS multiplies u8 x s8 with VPMADDUBSW, whose int16 pair sums saturate on full-range
    # activations: an AVX2-only EPYC measured top-1 0.27 against fp32 in English with such an export.
    from bayling_local.backends.device import cpu_instruction_sets

    found = cpu_instruction_sets()
    if not _is_dynamic_int8(config) or not found or {"AVX-VNNI", "AVX-512VNNI"} & set(found) or "NEON" in found:
        return
    warnings.warn(
        f"{folder.name} is an int8 export from an older bayling-local (dynamic quantization), which loses "
        "accuracy on CPUs without VNNI like this one; export it again with `bayling-local convert CHECKPOINT "
        "--to onnx --quant int8`",
        stacklevel=3,
    )


def _check_graph(session: Any, config: dict, model_file: Path) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if "past_key_values.0.key" not in inputs or "present.0.key" not in outputs or "num_logits_to_keep" not in inputs:
        raise InvalidModelFileError(
            f"{model_file} has no KV-cache inputs (past_key_values.N.key/value); "
            "export it with `bayling-local convert --to onnx`"
        )
    layers = sum(1 for name in inputs if name.startswith("past_key_values.") and name.endswith(".key"))
    kv_shape = inputs["past_key_values.0.key"].shape
    expected = (config["layers"], config["num_key_value_heads"], config["head_dim"])
    if (layers, kv_shape[1], kv_shape[3]) != expected:
        raise InvalidModelFileError(
            f"{CONFIG_FILE} does not match {model_file.name}: config says layers/kv_heads/head_dim "
            f"{expected}, the graph has {(layers, kv_shape[1], kv_shape[3])}; re-export the model"
        )


def _model_info(config: dict, tokenizer: Any, options: LoadOptions, device: str) -> ModelInfo:
    from bayling_local.backends.tokenizer_info import adds_bos_by_default, tokenizer_chat_template

    trained = int(config.get("max_position_embeddings") or 0)
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
    }
    eos = {int(i) for i in config.get("eos_token_ids") or []}
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    context_length = resolve_context_length(options.context_length, trained)
    positions = int(config.get("rotary_positions") or context_length)
    if context_length > positions:
        raise BackendUnavailableError(
            f"--context {context_length} is longer than the {positions} positions this ONNX export's rotary "
            f"tables cover; use --context {positions} or less"
        )
    return ModelInfo(
        architecture="llama",
        context_length=context_length,
        trained_context_length=trained,
        vocab_size=int(config["vocab_size"]),
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        add_bos=adds_bos_by_default(tokenizer),
        chat_template=config.get("chat_template") or tokenizer_chat_template(tokenizer),
        end_of_generation_ids=frozenset(i for i in eos if i in special),
        device=device,
    )


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
