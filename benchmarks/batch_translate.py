"""Sentences/s translating FLORES sentences one at a time vs the continuous-batching engine at
--parallel 4/8/16 (same model, same threads, same runtime settings): llama.cpp for a GGUF, ONNX Runtime's
cache rows for an ONNX export (`--model PATH/TO/EXPORT`).

Usage: python benchmarks/batch_translate.py [--data ../shared/data/flores200_dev_devtest_204langs.tar.xz]
           [--sentences 200] [--parallel 4 8 16] [--to swh_Latn] [--model NAME] [--threads N] [--rounds 3]

Greedy decoding. Each side runs in its own process, as a user runs `translate` with or without
--parallel. (Before the engine's thread ended when idle, llama.cpp's OpenMP threads ran slower in a
process where an engine had run: libgomp counted more threads than cores and stopped spinning between
graph runs; AMD EPYC AVX-512, 2 cores, Q4_0: 16 sentences one at a time took 7.4 s in a fresh process and
12.2 s after an engine had run in it. See `bayling_local/engine/queueing.py`.) Every side's process gets
an untimed warm-up first; then --rounds rounds each time every side, the order reversing from round to
round, so no side always runs on a warmer or cooler machine. The engine sides submit every sentence at
once and read the results; the prompt prefix their engine learnt in the warm-up is kept. Prints the hardware line, the backend's build and
settings, the median seconds and sentences/s per side, the ratio to one at a time, prefill tokens saved
by prefix reuse, and how many translations differ from one at a time (greedy near-ties in llama.cpp's
multi-token kernels can flip a few).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.evaldata import flores_sentences
from bayling_local.languages import resolve
from bayling_local.model import open_model
from bayling_local.translate import translation_messages

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flores200_dev_devtest_204langs.tar.xz"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--parallel", type=int, nargs="+", default=[4, 8, 16], help="engine slots per side")
    parser.add_argument("--to", default="swh_Latn")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)  # a child process: measure this side once
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (medians are printed)")
    args = parser.parse_args()
    if args.sentences < 1 or min(args.parallel) < 1 or args.rounds < 1:
        parser.error("--sentences, --parallel and --rounds must be at least 1")
    return args


SINGLE = "one at a time"


def one_at_a_time(model, conversations, config):
    return [model.chat_batch([c], config)[0] for c in conversations]


def through_engine(engine):
    """A side that submits every conversation to `engine` at once and waits for all of them."""

    def side(model, conversations, config):
        chat_config = model.chat_config(config)
        handles = [engine.submit(model.fit(c, reserve=0).prompt_ids, chat_config) for c in conversations]
        return [handle.result() for handle in handles]

    return side


def timed(side, model, conversations, config):
    start = time.perf_counter()
    completions = side(model, conversations, config)
    return time.perf_counter() - start, completions


def print_setup(model) -> None:
    from bayling_local.bench.hardware import detect_hardware
    from bayling_local.bench.jobs import summarize_model
    from bayling_local.bench.speed import backend_runtime_settings
    from bayling_local.bench.tables import build_line, runtime_settings_line

    print(f"hardware: {detect_hardware().describe()}")
    print(build_line(summarize_model(model)))
    print(runtime_settings_line(model.backend.name, backend_runtime_settings(model.backend)))
    print(f"engine: {engine_description(model.backend.name)}")


def engine_description(backend_name: str) -> str:
    if backend_name == "onnxruntime":
        from bayling_local.engine.onnx_rows import STEP_TOKENS

        return (
            "preallocated KV cache rows per side, one request per row; each new prompt runs alone into its row "
            f"(chunks of {STEP_TOKENS} tokens) after the shared prefix's KV copied in (CPU cache), "
            "then one run decodes a token for every row in use; "
            "sampling in Python (argmax when greedy)"
        )
    from bayling_local.engine.continuous import STEP_TOKENS

    return (
        "one llama context per side, a KV stream per slot plus one for the shared prefix, "
        f"{STEP_TOKENS} tokens per llama_decode (decode tokens first, then prefill chunks), "
        "n_threads_batch = n_threads, sampling in llama.cpp sampler chains"
    )


def side_names(parallels: list[int]) -> list[str]:
    return [SINGLE] + [f"engine x{p}" for p in parallels]


def load(args: argparse.Namespace):
    """(model, conversations, generation config) as every process sets them up."""
    sentences = flores_sentences(args.data, "eng_Latn", "devtest", limit=args.sentences)
    model = open_model(args.model, options=LoadOptions(threads=args.threads, context_length=2048))
    conversations = [translation_messages(s, resolve(args.to)) for s in sentences]
    return model, conversations, GenerationConfig(max_tokens=args.max_tokens)


def measure_side(args: argparse.Namespace) -> None:
    """In a child process: warm up the side `args.side`, time it once, print one JSON line of results."""
    model, conversations, config = load(args)
    engine = None
    if args.side == SINGLE:
        side = one_at_a_time
    else:
        from bayling_local.engine import create_engine

        engine = create_engine(model, int(args.side.removeprefix("engine x")))
        side = through_engine(engine)
    side(model, conversations[: max(args.parallel)], config)  # warm-up: allocations, caches, the prefix
    saved_before = engine.stats.prefill_tokens_saved if engine else 0
    elapsed, completions = timed(side, model, conversations, config)
    saved = engine.stats.prefill_tokens_saved - saved_before if engine else 0
    if engine:
        engine.close()
    model.close()
    print(json.dumps({"seconds": elapsed, "texts": [c.text for c in completions],
                      "tokens": sum(len(c.token_ids) for c in completions), "prefill_saved": saved}))


def run_side_process(args: argparse.Namespace, name: str) -> dict:
    command = [sys.executable, __file__, "--side", name, "--data", args.data, "--sentences", str(args.sentences),
               "--parallel", *map(str, args.parallel), "--to", args.to, "--max-tokens", str(args.max_tokens)]
    command += ["--model", args.model] if args.model else []
    command += ["--threads", str(args.threads)] if args.threads else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"error: the {name} side failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_arguments()
    if args.side:
        measure_side(args)
        return
    model, conversations, _ = load(args)
    print_setup(model)
    print(
        f"model {model.name}, {len(conversations)} sentences eng_Latn -> {resolve(args.to).code}, max "
        f"{args.max_tokens} tokens, parallel {args.parallel}, {args.rounds} rounds, each side in its own "
        "process after a warm-up there, order reversing each round"
    )
    model.close()
    names = side_names(args.parallel)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            runs[name].append(run_side_process(args, name))
            print(f"  round {round_index + 1}/{args.rounds} {name:<13}: {runs[name][-1]['seconds']:6.1f} s", flush=True)
    report(runs, len(conversations))


def report(runs: dict[str, list[dict]], sentences: int) -> None:
    medians = {name: statistics.median(r["seconds"] for r in side) for name, side in runs.items()}
    for name, median in medians.items():
        last = runs[name][-1]
        seconds = [r["seconds"] for r in runs[name]]
        line = (
            f"{name:<13}: {sentences / median:7.2f} sentences/s (median {median:6.1f} s, range "
            f"{min(seconds):.1f}-{max(seconds):.1f} s, {last['tokens'] / median:.0f} generated tokens/s)"
        )
        if name != SINGLE:
            differ = sum(a != b for a, b in zip(runs[SINGLE][-1]["texts"], last["texts"]))
            line += (
                f"; {medians[SINGLE] / median:.2f}x one at a time; prefill tokens saved by prefix reuse "
                f"{last['prefill_saved']} per round; translations that differ from one at a time: {differ}"
            )
        print(line)


if __name__ == "__main__":
    main()
