"""Sentences/s translating FLORES sentences one at a time vs the continuous-batching engine at
--parallel 4/8/16 (same model, same threads, same runtime settings): llama.cpp for a GGUF, ONNX Runtime's
cache rows for an ONNX export (`--model PATH/TO/EXPORT`).

Usage: python benchmarks/batch_translate.py [--data ../shared/data/flores200_dev_devtest_204langs.tar.xz]
           [--sentences 200] [--parallel 4 8 16] [--to swh_Latn] [--model NAME] [--threads N] [--rounds 3]

Greedy decoding. Every side gets an untimed warm-up first; then --rounds rounds each time every side,
the order reversing from round to round, so no side always runs on a warmer or cooler machine. The
engine sides submit every sentence at once and read the results; their engines (and the prompt prefix
they learnt in the warm-up) are kept across rounds. Prints the hardware line, the backend's build and
settings, the median seconds and sentences/s per side, the ratio to one at a time, prefill tokens saved
by prefix reuse, and how many translations differ from one at a time (greedy near-ties in llama.cpp's
multi-token kernels can flip a few).
"""

from __future__ import annotations

import argparse
import statistics
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


def make_sides(model, parallels: list[int]):
    """{name: side}, [engines to close]."""
    from bayling_local.engine import create_engine

    engines = {p: create_engine(model, p) for p in parallels}
    sides = {SINGLE: one_at_a_time} | {f"engine x{p}": through_engine(e) for p, e in engines.items()}
    return sides, engines


def timed(side, model, conversations, config):
    start = time.perf_counter()
    completions = side(model, conversations, config)
    return time.perf_counter() - start, completions


def run_rounds(sides, model, conversations, config, rounds: int):
    """{side: [seconds per round]}, {side: completions of its last round}; the order reverses each round."""
    names = list(sides)
    seconds = {name: [] for name in names}
    last = {}
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            elapsed, last[name] = timed(sides[name], model, conversations, config)
            seconds[name].append(elapsed)
            print(f"  round {round_index + 1}/{rounds} {name:<13}: {elapsed:6.1f} s", flush=True)
    return seconds, last


def warm_up(sides, model, conversations, config, parallels: list[int]) -> None:
    """One untimed pass of each side over a few sentences (allocations, caches, CPU clocks, the prefix)."""
    head = conversations[: max(parallels)]
    for side in sides.values():
        side(model, head, config)


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


def main() -> None:
    args = parse_arguments()
    sentences = flores_sentences(args.data, "eng_Latn", "devtest", limit=args.sentences)
    model = open_model(args.model, options=LoadOptions(threads=args.threads, context_length=2048))
    target = resolve(args.to)
    conversations = [translation_messages(s, target) for s in sentences]
    config = GenerationConfig(max_tokens=args.max_tokens)
    print_setup(model)
    print(
        f"model {model.name}, {len(sentences)} sentences eng_Latn -> {target.code}, max {args.max_tokens} tokens, "
        f"parallel {args.parallel}, {args.rounds} rounds after a warm-up, order reversing each round"
    )
    sides, engines = make_sides(model, args.parallel)
    warm_up(sides, model, conversations, config, args.parallel)
    saved_before = {p: e.stats.prefill_tokens_saved for p, e in engines.items()}
    seconds, last = run_rounds(sides, model, conversations, config, args.rounds)
    saved = {
        f"engine x{p}": (e.stats.prefill_tokens_saved - saved_before[p], e.stats.prefill_tokens)
        for p, e in engines.items()
    }
    for engine in engines.values():
        engine.close()
    model.close()
    report(seconds, last, saved, len(sentences), args.rounds)


def report(seconds, last, saved, sentences: int, rounds: int) -> None:
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        tokens = sum(len(c.token_ids) for c in last[name])
        spread = f"{min(seconds[name]):.1f}-{max(seconds[name]):.1f} s"
        line = (
            f"{name:<13}: {sentences / median:7.2f} sentences/s (median {median:6.1f} s, range {spread}, "
            f"{tokens / median:.0f} generated tokens/s)"
        )
        if name != SINGLE:
            differ = sum(a.text != b.text for a, b in zip(last[SINGLE], last[name]))
            saved_tokens, _ = saved[name]
            line += (
                f"; {medians[SINGLE] / median:.2f}x one at a time; prefill tokens saved by prefix reuse "
                f"{saved_tokens // rounds} per round; translations that differ from one at a time: {differ}"
            )
        print(line)


if __name__ == "__main__":
    main()
