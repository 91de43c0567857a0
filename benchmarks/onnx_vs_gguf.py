"""Prefill and decode tokens/s of our ONNX int4/int8 (ONNX Runtime, CPU) vs llama.cpp Q4_0/Q4_K_M/Q8_0 and, when
`onnxruntime-genai` is installed, the ONNX Runtime GenAI model builder's int4, for one checkpoint at one thread
count; batched throughput (generated tokens/s at batch 1, 4 and 8) for our backends; and every artifact's KL
divergence / top-1 agreement against our fp32 export on the same sentences (convert/verify.py's machinery).

    .venv/bin/python benchmarks/onnx_vs_gguf.py CHECKPOINT [--threads N] [--tokens 128] [--repeats 3]
        [--work DIR] [--json PATH] [--fresh]

CHECKPOINT is a Hugging Face Llama folder. It is exported with `bayling_local.convert.to_onnx` (fp32 as the
fidelity baseline, int4, int8), converted with our own converter, `bayling_local.convert.to_gguf(..., "f32")`
then `convert.quantize.quantize_gguf` (q4_0, q4_k_m, q8_0, no importance matrix), and built with
`python -m onnxruntime_genai.models.builder -m CHECKPOINT -p int4 -e cpu` (pip install onnxruntime-genai
onnx_ir; an optional extra, not a dependency). Artifacts are cached in --work/<checkpoint folder name>;
--fresh exports and converts again.

Settings, printed under the hardware line: llama.cpp runs as a user gets it from `llama_cpp.Llama(path,
n_threads=N, n_ctx=...)`: its defaults for this CPU, extra buffer types (CPU_REPACK: Q4_0 repacked for its
fastest kernels) on, flash attention and KV cache at llama-cpp-python's defaults. ONNX Runtime runs N
intra-op threads; ours through our backend (I/O-bound KV cache, Python decode loop), the builder's through
onnxruntime_genai's C++ generator (greedy, `min_length` keeps end-of-text from ending a run).

Each artifact is loaded once in its own worker process (spawned; one measures at a time), as a user runs one
runtime per process: inside one process that had also loaded ONNX Runtime sessions and run batches, llama.cpp
Q4_0 decoded at 58-118 tok/s against 136-165 in its own (AVX-512 EPYC, 2 threads), overstating ONNX by up to 2x.
Both runtimes get the same prompt token ids (tokenized once by the ONNX backend, cut to PROMPT_TOKENS).
Prefill is cold on every run (llama-cpp-python's prefix cache is reset): prompt tokens / time to first
token. Decode is (tokens - 1) / time after the first token. Runs alternate: each round runs every artifact
once, the order rotated each round so that no runtime always goes first; figures are medians of --repeats
rounds after a warm-up. End-of-text never ends a run early: every run generates the full --tokens budget.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.backends.compute_threads import call_on_own_thread
from bayling_local.errors import BaylingError

PROMPT_TOKENS = 128
PROMPT = (
    "Translate the following paragraph into French. The weather was pleasant this morning, so we walked along "
    "the river to the old market, where farmers sell bread, cheese, apples and fresh flowers. We bought a loaf "
    "of rye bread, two kinds of goat cheese and a bunch of tulips for my grandmother, who turns ninety next "
    "week. On the way home it started to rain, and we waited under the bridge with a fisherman who told us "
    "about the floods of 1953, when the water reached the church steps and the whole village rowed to school."
)
BATCH_PROMPTS = (
    "The capital of France is", "Le petit chat dort sur", "我们明天早上去", "Der alte Mann liest",
    "Once upon a time", "Los niños juegan en", "The weather today is", "My favourite food is",
)
BATCH_SIZES = (1, 4, 8)
WARMUP_TOKENS = 8
CONTEXT_LENGTH = 2048
GREEDY = {"temperature": 0.0, "top_k": 1, "ignore_eos": True}
"""Greedy, and through end-of-text: every run spends its whole token budget."""
FIDELITY_SENTENCES = 1
"""Sentences per language of convert/verify.py's built-in sample scored for KL / top-1 (10 languages)."""


@dataclass(frozen=True)
class Artifact:
    """One row of the table: a runtime and a quantization of the checkpoint."""

    label: str
    runtime: str
    """`onnx` (our export, ONNX Runtime), `genai` (the GenAI builder's, ONNX Runtime) or `gguf` (llama.cpp)."""
    quant: str
    """The converter's name for the type (`int4`, `q4_k_m`)."""
    load_options: tuple[tuple[str, object], ...] = ()
    """`LoadOptions` fields other than the defaults (for example `(("huge_pages", False),)`)."""

    def path(self, work: Path) -> Path:
        from bayling_local.backends.onnxrt import FORMAT_VERSION

        if self.runtime == "genai":
            return work / f"ort-genai-{self.quant}"
        return work / (f"onnx-v{FORMAT_VERSION}-{self.quant}" if self.runtime == "onnx" else f"{self.quant}.gguf")


BASELINE = Artifact("onnx fp32", "onnx", "fp32")
"""What KL divergence is measured against (its logits match transformers' within 1e-3)."""
ARTIFACTS = (
    Artifact("onnx int4", "onnx", "int4"),
    Artifact("ort-genai int4", "genai", "int4"),
    Artifact("llama.cpp Q4_0", "gguf", "q4_0"),
    Artifact("onnx int8", "onnx", "int8"),
    Artifact("llama.cpp Q4_K_M", "gguf", "q4_k_m"),
    Artifact("llama.cpp Q8_0", "gguf", "q8_0"),
)
DECODE_RATIOS = (
    ("onnx int4", "llama.cpp Q4_0"),
    ("onnx int4", "ort-genai int4"),
    ("onnx int4", "llama.cpp Q4_K_M"),
    ("onnx int8", "llama.cpp Q8_0"),
)
REFERENCE_TOKENIZER = "onnx int4"


def genai_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime_genai") is not None and importlib.util.find_spec("onnx_ir") is not None


@dataclass
class Row:
    """Every figure measured for one artifact (runs kept for the JSON)."""

    artifact: Artifact
    path: Path
    size_bytes: int
    settings: dict[str, str] = field(default_factory=dict)
    prefill_tps: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    batch_tps: dict[int, list[float]] = field(default_factory=dict)
    batch_generated: dict[int, list[int]] = field(default_factory=dict)
    """Tokens generate_batch actually returned per run (expected: batch x --tokens)."""
    fidelity: dict | None = None
    """KL divergence / top-1 agreement against BASELINE, overall and per language."""

    def as_json(self) -> dict:
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "settings": self.settings,
            "prefill_tps": statistics.median(self.prefill_tps),
            "decode_tps": statistics.median(self.decode_tps),
            "batch_tps": {b: statistics.median(runs) for b, runs in self.batch_tps.items()},
            "fidelity": self.fidelity,
            "runs": {
                "prefill_tps": self.prefill_tps,
                "decode_tps": self.decode_tps,
                "batch_tps": self.batch_tps,
                "batch_generated": self.batch_generated,
            },
        }


# --- artifacts ------------------------------------------------------------------------------------------


def build_artifact(artifact: Artifact, checkpoint: Path, work: Path, fresh: bool = False) -> Path:
    """The artifact's path in `work`, exported or converted first unless a complete one is there."""
    path = artifact.path(work)
    if artifact.runtime == "onnx":
        if fresh or not _readable_export(path, artifact.quant):
            _progress(f"exporting {artifact.label} to {path}")
            from bayling_local.convert import to_onnx

            to_onnx(checkpoint, path, artifact.quant)
        return path
    if artifact.runtime == "genai":
        if fresh or not (path / "genai_config.json").is_file():
            build_genai(checkpoint, path, artifact.quant, work / "ort-genai-cache")
        return path
    if fresh or not path.is_file():
        from bayling_local.convert.quantize import quantize_gguf

        f32 = _f32_gguf(checkpoint, work)
        _progress(f"quantizing {f32.name} to {artifact.quant}")
        quantize_gguf(f32, path, artifact.quant)
    return path


def build_genai(checkpoint: Path, out: Path, quant: str, cache: Path) -> None:
    """The ONNX Runtime GenAI model builder's export for the CPU (its own subprocess: it logs a line per node)."""
    import subprocess

    _progress(f"building {out} with onnxruntime_genai.models.builder -p {quant} -e cpu")
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", str(checkpoint), "-o", str(out),
               "-p", quant, "-e", "cpu", "-c", str(cache)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            check=False)
    if result.returncode != 0 or not (out / "genai_config.json").is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise BaylingError(f"the GenAI builder failed on {checkpoint}: {' | '.join(tail)}")


def _f32_gguf(checkpoint: Path, work: Path) -> Path:
    path = work / "f32.gguf"
    if not path.is_file():  # the converter writes a temporary file and renames it: a file here is whole
        from bayling_local.convert import to_gguf

        _progress(f"converting {checkpoint} to {path}")
        to_gguf(checkpoint, "f32", out=path, imatrix="none")
    return path


def _readable_export(folder: Path, quant: str) -> bool:
    """Whether `folder` holds an export this bayling-local reads and would write (else it is exported again:
    int8 exports of the dynamic-quantization kind predate the recorded `accuracy_level`)."""
    from bayling_local.backends.onnxrt import read_export_config

    try:
        config = read_export_config(folder)
    except BaylingError:
        return False
    return quant in ("fp32", "fp16") or config.get("accuracy_level") is not None


def artifact_size(path: Path) -> int:
    files = path.iterdir() if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.suffix in (".gguf", ".onnx", ".data"))


# --- runners: what a worker process loads, one artifact each ------------------------------------------------


def load(artifact: Artifact, path: Path, threads: int):
    if artifact.runtime == "genai":
        return GenaiRunner(path, threads)
    options = LoadOptions(device="cpu", threads=threads, context_length=CONTEXT_LENGTH, **dict(artifact.load_options))
    if artifact.runtime == "gguf":
        from bayling_local.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend.load(path, options)
    from bayling_local.backends.onnxrt import OnnxRuntimeBackend
    from bayling_local.bench.speed import wait_for_huge_pages

    backend = OnnxRuntimeBackend.load(path, options)
    wait_for_huge_pages(backend)  # measure the weights where they will stay
    return backend


class GenaiRunner:
    """The GenAI builder's model through onnxruntime_genai's generator at `threads` intra-op threads."""

    name = "onnxruntime-genai"

    def __init__(self, folder: Path, threads: int):
        import onnxruntime_genai as og

        self.folder, self.threads = folder, threads
        config = og.Config(str(folder))
        config.clear_providers()  # the CPU
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)

    def token_steps(self, ids: list[int], tokens: int) -> Iterator[int]:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        total = len(ids) + tokens
        params.set_search_options(do_sample=False, max_length=total, min_length=total, batch_size=1)
        generator = og.Generator(self.model, params)
        generator.append_tokens(ids)  # prefill; the first token comes with it
        while not generator.is_done():
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])

    def runtime_settings(self) -> dict[str, str]:
        import onnxruntime_genai as og

        level = _genai_accuracy_levels(self.folder / "model.onnx")
        return {"runtime": f"onnxruntime-genai {og.__version__} generator", "provider": "CPUExecutionProvider",
                "intra_op_threads": str(self.threads), "matmulnbits_accuracy_level": level}

    def generate_batch(self, prompts, config):  # batching is not measured for this runner
        raise NotImplementedError

    def close(self) -> None:
        self.model = None


def _genai_accuracy_levels(model_file: Path) -> str:
    import onnx

    graph = onnx.load(model_file, load_external_data=False).graph
    levels = {a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"}
    blocks = {a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
    return f"{','.join(map(str, sorted(levels)))} (block size {','.join(map(str, sorted(blocks)))})"


@dataclass(frozen=True)
class Prompts:
    """Token ids every backend is given: one for prefill/decode, one per batch row."""

    main: list[int]
    batch: list[list[int]]


def reference_prompts(backend) -> Prompts:
    ids = backend.tokenize(PROMPT, add_bos=True)
    main = list(itertools.islice(itertools.cycle(ids), PROMPT_TOKENS))
    return Prompts(main, [backend.tokenize(p, add_bos=True) for p in BATCH_PROMPTS])


def forget_previous_prompt(backend) -> None:
    """Make the next llama.cpp `generate` evaluate its whole prompt.

    llama-cpp-python's `Llama.generate(reset=True)` keeps the prefix it shares with the previous call's
    tokens; `reset()` sets its token count to 0, so nothing matches.
    """
    if backend.name == "llama.cpp":
        backend.llm.reset()


# --- measuring ------------------------------------------------------------------------------------------------


def token_steps(backend, ids: list[int], tokens: int) -> Iterator[int]:
    """Greedy next tokens from the backend's own decode loop (no detokenizing), through end-of-text."""
    config = GenerationConfig(max_tokens=tokens, **GREEDY)
    if backend.name == "onnxruntime":
        return (step[0] for step in backend._decode([ids], config, None))
    if backend.name == "onnxruntime-genai":
        return backend.token_steps(ids, tokens)
    from bayling_local.backends.llamacpp import sampling_arguments

    forget_previous_prompt(backend)
    return backend.llm.generate(ids, reset=True, **sampling_arguments(config))


def prefill_and_decode(backend, ids: list[int], tokens: int) -> tuple[float, float]:
    """(prompt tokens / time to first token, (tokens - 1) / time from the first token to the last).

    On a thread that ends with it, as our backends decode: llama.cpp's OpenMP team lives as long as the
    thread that ran it, and with the worker's main thread keeping one, the engine's thread (batches)
    made a second and libgomp throttled both (llama.cpp Q4_0 at batch 1: 28 tok/s against 136 plain;
    `bayling_local/backends/compute_threads.py`)."""
    return call_on_own_thread(lambda: timed_prefill_and_decode(backend, ids, tokens), "benchmark-decode")


def timed_prefill_and_decode(backend, ids: list[int], tokens: int) -> tuple[float, float]:
    steps = token_steps(backend, ids, tokens)
    start = time.perf_counter()
    first = None
    count = 0
    for _ in steps:
        count += 1
        first = first or time.perf_counter()
        if count >= tokens:
            break
    end = time.perf_counter()
    steps.close()
    if count < tokens:
        raise RuntimeError(f"{backend.name} stopped after {count} of {tokens} tokens")
    return len(ids) / (first - start), (count - 1) / (end - first)


def batch_throughput(backend, prompts: list[list[int]], tokens: int) -> tuple[float, int]:
    """(generated tokens / wall time of one generate_batch call, tokens generated)."""
    config = GenerationConfig(max_tokens=tokens, **GREEDY)
    forget_previous_prompt(backend)  # batch 1 goes through llama.cpp's single-prompt path
    start = time.perf_counter()
    completions = backend.generate_batch(prompts, config)
    elapsed = time.perf_counter() - start
    generated = sum(len(c.token_ids) for c in completions)
    return generated / elapsed, generated


def measures_batches(artifact: Artifact) -> bool:
    return artifact.runtime != "genai"


def warm_up(backend, prompts: Prompts, batches: bool) -> None:
    prefill_and_decode(backend, prompts.main, WARMUP_TOKENS)
    if batches:
        # The widest batch first: llama.cpp's batch context is then made for 8 sequences outside the timing.
        backend.generate_batch(prompts.batch[: max(BATCH_SIZES)], GenerationConfig(max_tokens=WARMUP_TOKENS, **GREEDY))


def rotated(items: list, round_index: int) -> list:
    """`items` starting at position `round_index` (mod len): who runs first changes every round."""
    shift = round_index % len(items)
    return items[shift:] + items[:shift]


# --- workers: one process per artifact, so that no runtime's state slows another's figures ----------------------


def reference_prompt_lists(backend) -> tuple[list[int], list[list[int]]]:
    """reference_prompts as plain lists: a class of a spawned child's __main__ does not unpickle in the parent."""
    prompts = reference_prompts(backend)
    return prompts.main, prompts.batch


WORKER_COMMANDS = {
    "reference_prompts": reference_prompt_lists,
    "runtime_settings": lambda backend: getattr(backend, "runtime_settings", dict)(),
    "warm_up": warm_up,
    "prefill_and_decode": prefill_and_decode,
    "batch_throughput": batch_throughput,
}
"""What a worker answers: name -> function(backend, *arguments)."""
WORKER_CLOSE_SECONDS = 30


def serve(connection, artifact: Artifact, path: Path, threads: int) -> None:
    """A worker process's life: load one artifact, then answer (command, arguments) until `close` or the
    parent's end of the pipe closes. Every answer is ("ok", value) or ("error", one line)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent ends us
    try:
        backend = load(artifact, path, threads)
    except Exception as error:  # noqa: BLE001 - any failure goes back as one line
        connection.send(("error", f"loading {path} failed: {one_line(error)}"))
        return
    try:
        connection.send(("ok", None))
        answer_commands(connection, backend)
    finally:
        backend.close()
    with contextlib.suppress(OSError):  # the parent may be gone already
        connection.send(("ok", None))  # unloaded: the parent stops waiting


def answer_commands(connection, backend) -> None:
    while True:
        try:
            command, arguments = connection.recv()
        except EOFError:  # the parent is gone
            return
        if command == "close":
            return
        try:
            connection.send(("ok", WORKER_COMMANDS[command](backend, *arguments)))
        except Exception as error:  # noqa: BLE001 - any failure goes back as one line
            connection.send(("error", f"{command} failed: {one_line(error)}"))


def one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines() or [""]
    return lines[0] if isinstance(error, BaylingError) else f"{type(error).__name__}: {lines[0]}"


class ArtifactWorker:
    """One artifact loaded in its own spawned process; `call` runs one command there and returns its answer."""

    def __init__(self, artifact: Artifact, path: Path, threads: int):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited from this one
        self.artifact = artifact
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=serve, args=(child_end, artifact, path, threads),
                                       name=f"bench {artifact.label}", daemon=True)
        self.process.start()
        child_end.close()  # only the child holds it now: its exit ends our recv with EOFError, never a hang

    def wait_loaded(self) -> None:
        self.answer()

    def call(self, command: str, *arguments):
        try:
            self.connection.send((command, arguments))
        except OSError:
            raise self.exited() from None
        return self.answer()

    def answer(self):
        try:
            status, value = self.connection.recv()
        except EOFError:
            raise self.exited() from None
        if status == "error":
            raise BaylingError(f"{self.artifact.label}: {value}")
        return value

    def exited(self) -> BaylingError:
        self.process.join(WORKER_CLOSE_SECONDS)
        return BaylingError(f"the {self.artifact.label} worker process ended (exit code {self.process.exitcode})")

    def close(self) -> None:
        """Unload and end the worker; ended by force when it does not answer in time."""
        with contextlib.suppress(OSError, EOFError):  # a worker that is gone needs no asking
            self.connection.send(("close", ()))
            if self.connection.poll(WORKER_CLOSE_SECONDS):
                self.connection.recv()
        self.process.join(WORKER_CLOSE_SECONDS)
        self.terminate()

    def terminate(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.connection.close()


@contextlib.contextmanager
def artifact_workers(artifacts: Iterable[tuple[Artifact, Path]], threads: int) -> Iterator[dict[str, ArtifactWorker]]:
    """A loaded worker per artifact, by label: they load side by side, and all are loaded before any measures.
    Leaving closes them; an error or Ctrl-C ends them at once, even mid-measurement."""
    workers: dict[str, ArtifactWorker] = {}
    try:
        for artifact, path in artifacts:
            workers[artifact.label] = ArtifactWorker(artifact, path, threads)
        for worker in workers.values():
            worker.wait_loaded()
        yield workers
    except BaseException:
        for worker in workers.values():
            worker.terminate()
        raise
    for worker in workers.values():
        worker.close()


def reference_prompt_ids(worker: ArtifactWorker) -> Prompts:
    """The prompts tokenized once, by REFERENCE_TOKENIZER's worker, for every worker."""
    return Prompts(*worker.call("reference_prompts"))


def measure_alternating(rows: dict[str, Row], workers: dict[str, ArtifactWorker], prompts: Prompts, tokens: int,
                        repeats: int) -> None:
    """Each round runs every artifact once, in an order rotated by the round; then the same for batches."""
    labels = list(rows)
    for index in range(repeats):
        for label in rotated(labels, index):
            prefill, decode = workers[label].call("prefill_and_decode", prompts.main, tokens)
            rows[label].prefill_tps.append(prefill)
            rows[label].decode_tps.append(decode)
    batched = [label for label in labels if measures_batches(rows[label].artifact)]
    for batch in BATCH_SIZES:
        for index in range(repeats):
            for label in rotated(batched, index):
                tps, generated = workers[label].call("batch_throughput", prompts.batch[:batch], tokens)
                rows[label].batch_tps.setdefault(batch, []).append(tps)
                rows[label].batch_generated.setdefault(batch, []).append(generated)


# --- fidelity: KL divergence and top-1 agreement against the fp32 export ----------------------------------------


def fidelity(rows: dict[str, Row], baseline: Path, threads: int) -> None:
    """Each row's KL / top-1 against BASELINE on convert/verify.py's sample sentences (10 scripts), with
    convert/verify.py's `quant_quality`; the GenAI builder's model runs through plain onnxruntime."""
    import contextlib

    from bayling_local.backends.onnxrt import OnnxRuntimeBackend
    from bayling_local.convert.logits import artifact_logits
    from bayling_local.convert.verify import MAX_TOKENS, load_texts, quant_quality

    reference = OnnxRuntimeBackend.load(baseline, LoadOptions(device="cpu", threads=threads))
    try:
        texts = load_texts(None, None, FIDELITY_SENTENCES)
        ids = {code: [reference.tokenize(line, add_bos=True)[:MAX_TOKENS] for line in lines] for code, lines in texts.items()}
        with contextlib.ExitStack() as stack:
            candidates = {
                label: (genai_logits(row.path, threads) if row.artifact.runtime == "genai" else
                        stack.enter_context(artifact_logits(row.path, n_ctx=MAX_TOKENS + 8, threads=threads)))
                for label, row in rows.items()
            }
            totals = quant_quality(reference.logits, candidates, ids)
    finally:
        reference.close()
    for label, per_language in totals.items():
        kl = sum(v[0] for v in per_language.values())
        agree = sum(v[1] for v in per_language.values())
        positions = sum(v[2] for v in per_language.values()) or 1
        worst = max(per_language.items(), key=lambda kv: kv[1][0] / kv[1][2])
        rows[label].fidelity = {
            "kl_divergence": kl / positions, "top1_agreement": agree / positions,
            "worst_language": worst[0], "worst_kl": worst[1][0] / worst[1][2],
            "per_language": {c: {"kl_divergence": v[0] / v[2], "top1_agreement": v[1] / v[2]} for c, v in per_language.items()},
        }


def genai_logits(folder: Path, threads: int):
    """`logits(ids)` of the GenAI builder's model: one forward from an empty cache with plain onnxruntime."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    pasts = [(i.name, i.shape) for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    head_size = json.loads((folder / "genai_config.json").read_text("utf-8"))["model"]["decoder"]["head_size"]

    def logits(ids) -> np.ndarray:
        feeds = {"input_ids": np.array([list(ids)], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        for name, shape in pasts:
            feeds[name] = np.zeros((1, shape[1], 0, head_size), np.float32)
        return session.run(["logits"], feeds)[0][0]

    return logits


# --- reporting ------------------------------------------------------------------------------------------------


def environment(args: argparse.Namespace) -> dict:
    import llama_cpp
    import onnxruntime

    from bayling_local.bench.hardware import detect_hardware

    config = json.loads((args.checkpoint / "config.json").read_text("utf-8"))
    env = {
        "hardware": detect_hardware().describe(),
        "checkpoint": str(args.checkpoint),
        "model": {k: config.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")},
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "prompt_tokens": PROMPT_TOKENS,
        "decode_tokens": args.tokens,
        "repeats": args.repeats,
        "onnxruntime": onnxruntime.__version__,
        "llama_cpp_python": llama_cpp.__version__,
        "load_average_start": os.getloadavg(),
    }
    if genai_installed():
        import onnxruntime_genai

        env["onnxruntime_genai"] = onnxruntime_genai.__version__
    return env


def print_header(env: dict) -> None:
    load = ", ".join(f"{x:.2f}" for x in env["load_average_start"])
    print(f"hardware: {env['hardware']}")
    print(f"model: {env['checkpoint']} ({env['model']})")
    genai = f", onnxruntime-genai {env['onnxruntime_genai']}" if "onnxruntime_genai" in env else ", onnxruntime-genai not installed"
    print(f"onnxruntime {env['onnxruntime']}, llama-cpp-python {env['llama_cpp_python']}{genai}")
    print(
        f"threads={env['threads']} (of {env['cpu_count']} CPUs), load average {load}; prompt {env['prompt_tokens']} "
        f"tokens, decode {env['decode_tokens']} tokens, median of {env['repeats']} alternating rounds after a warm-up"
    )


def print_settings(rows: dict[str, Row]) -> None:
    for label, row in rows.items():
        print(f"settings {label}: " + ", ".join(f"{k}={v}" for k, v in row.settings.items()))
        if row.artifact.runtime == "gguf" and row.settings.get("extra_buffers", "on").startswith("off"):
            print(f"  note: {label} runs without llama.cpp's extra buffer types (no repacked weights); not its default")


def print_table(rows: dict[str, Row], tokens: int) -> None:
    batches = "".join(f"{f'b={b} tok/s':>13}" for b in BATCH_SIZES)
    print(f"{'artifact':<18}{'MB':>7}{'prefill tok/s':>15}{'decode tok/s':>14}{batches}{'KL':>9}{'top-1':>8}  worst (KL)")
    for row in rows.values():
        figures = row.as_json()
        batches = "".join(f"{figures['batch_tps'][b]:>13.1f}" if b in figures["batch_tps"] else f"{'-':>13}"
                          for b in BATCH_SIZES)
        quality = row.fidelity or {}
        kl = f"{quality['kl_divergence']:>9.4f}{quality['top1_agreement']:>8.1%}  {quality['worst_language']} ({quality['worst_kl']:.3f})" if quality else ""
        print(f"{row.artifact.label:<18}{row.size_bytes / 1e6:>7.1f}{figures['prefill_tps']:>15.1f}"
              f"{figures['decode_tps']:>14.1f}{batches}{kl}", flush=True)
        short = {b: n for b, runs in row.batch_generated.items() for n in runs if n != b * tokens}
        if short:
            print(f"  note: generate_batch returned fewer tokens than batch x {tokens}: {short}", flush=True)


def decode_ratios(rows: dict[str, Row]) -> dict[str, float]:
    return {
        f"{ours} / {theirs}": rows[ours].as_json()["decode_tps"] / rows[theirs].as_json()["decode_tps"]
        for ours, theirs in DECODE_RATIOS if ours in rows and theirs in rows
    }


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- entry ----------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    work = args.work.expanduser() / args.checkpoint.name
    work.mkdir(parents=True, exist_ok=True)
    chosen = [a for a in ARTIFACTS if a.runtime != "genai" or genai_installed()]
    if not genai_installed():
        _progress("onnxruntime-genai (and onnx_ir) not installed: no GenAI builder baseline")
    if args.build_only:
        for artifact in [*chosen, BASELINE]:
            build_artifact(artifact, args.checkpoint, work, args.fresh)
        return {}
    build_in_child(args)
    paths = {a.label: build_artifact(a, args.checkpoint, work) for a in chosen}
    baseline = build_artifact(BASELINE, args.checkpoint, work)
    env = environment(args)
    print_header(env)
    rows = {a.label: Row(a, paths[a.label], artifact_size(paths[a.label])) for a in chosen}
    with artifact_workers([(row.artifact, row.path) for row in rows.values()], args.threads) as workers:
        for label, row in rows.items():
            row.settings = workers[label].call("runtime_settings")
        prompts = reference_prompt_ids(workers[REFERENCE_TOKENIZER])
        print_settings(rows)
        for label, worker in workers.items():
            worker.call("warm_up", prompts, measures_batches(rows[label].artifact))
        measure_alternating(rows, workers, prompts, args.tokens, args.repeats)
    fidelity(rows, baseline, args.threads)  # in this process: every speed figure is taken by then
    print_table(rows, args.tokens)
    ratios = decode_ratios(rows)
    for name, ratio in ratios.items():
        print(f"decode ratio {name}: {ratio:.2f}x")
    env["load_average_end"] = os.getloadavg()
    print("load average at the end: " + ", ".join(f"{x:.2f}" for x in env["load_average_end"]))
    return {**env, "rows": {label: row.as_json() for label, row in rows.items()}, "decode_ratios": ratios}


def build_in_child(args: argparse.Namespace) -> None:
    """Export and convert in a child process. Measured here: after this process had exported and converted
    (torch, the quantizers), every runtime in it decoded slower for the rest of the run, llama.cpp at half
    speed (Q4_0 58 against 118 tok/s, AVX-512 EPYC, 2 threads), so the measuring process never builds."""
    import subprocess

    command = [sys.executable, __file__, str(args.checkpoint), "--work", str(args.work), "--build-only"]
    if args.fresh:
        command.append("--fresh")
    if subprocess.run(command, check=False).returncode:
        sys.exit("error: building the artifacts failed (see above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="Hugging Face Llama checkpoint folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for every runtime")
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate per run and per batch row")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds per figure (the median is shown)")
    parser.add_argument(
        "--work", type=Path, default=Path.home() / ".cache" / "bayling-local-bench" / "onnx_vs_gguf",
        help="where converted artifacts are cached",
    )
    parser.add_argument("--fresh", action="store_true", help="export, convert and build every artifact again")
    parser.add_argument("--json", type=Path, help="also write every figure and run to this file")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)  # build_in_child's child
    args = parser.parse_args()
    if args.tokens < 2 or args.repeats < 1 or args.threads < 1:
        parser.error("--tokens must be at least 2, --repeats and --threads at least 1")
    try:
        figures = run(args)
    except BaylingError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted (every worker process ended)")
    if args.json and figures:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
