"""Sentences/s translating FLORES sentences one at a time vs batched (same model, same threads).

Usage: python benchmarks/batch_translate.py [--data ../shared/data/flores200_dev_devtest_204langs.tar.xz]
           [--sentences 200] [--batch-size 8] [--to swh_Latn] [--model NAME] [--threads N] [--rounds 3]

Greedy decoding. Both sides get an untimed warm-up first; then --rounds rounds each time both sides,
the side that goes first alternating from round to round (single, batched | batched, single | ...), so
neither side always runs on a warmer or cooler machine. Prints the hardware line, the backend's build
and settings, the median seconds and sentences/s per side, their ratio, and how many translations
differ between the sides (should be 0).
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
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--to", default="swh_Latn")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (medians are printed)")
    args = parser.parse_args()
    if args.sentences < 1 or args.batch_size < 1 or args.rounds < 1:
        parser.error("--sentences, --batch-size and --rounds must be at least 1")
    return args


def one_at_a_time(model, conversations, config, batch_size):
    return [model.chat_batch([c], config)[0] for c in conversations]


def batched(model, conversations, config, batch_size):
    out = []
    for i in range(0, len(conversations), batch_size):
        out += model.chat_batch(conversations[i : i + batch_size], config)
    return out


SIDES = {"one at a time": one_at_a_time, "batched": batched}


def timed(side, model, conversations, config, batch_size):
    start = time.perf_counter()
    completions = side(model, conversations, config, batch_size)
    return time.perf_counter() - start, completions


def run_rounds(model, conversations, config, batch_size: int, rounds: int):
    """{side: [seconds per round]}, {side: completions of its last round}; first side alternates."""
    names = list(SIDES)
    seconds = {name: [] for name in names}
    last = {}
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            elapsed, last[name] = timed(SIDES[name], model, conversations, config, batch_size)
            seconds[name].append(elapsed)
            print(f"  round {round_index + 1}/{rounds} {name:<13}: {elapsed:6.1f} s")
    return seconds, last


def warm_up(model, conversations, config, batch_size: int) -> None:
    """One untimed pass of each side over one batch (allocations, caches, CPU clocks)."""
    head = conversations[:batch_size]
    for side in SIDES.values():
        side(model, head, config, batch_size)


def print_setup(model) -> None:
    from bayling_local.bench.hardware import detect_hardware
    from bayling_local.bench.jobs import summarize_model
    from bayling_local.bench.speed import backend_runtime_settings
    from bayling_local.bench.tables import build_line, runtime_settings_line

    print(f"hardware: {detect_hardware().describe()}")
    print(build_line(summarize_model(model)))
    print(runtime_settings_line(model.backend.name, backend_runtime_settings(model.backend)))


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
        f"batch {args.batch_size}, {args.rounds} rounds after a warm-up, first side alternating"
    )

    warm_up(model, conversations, config, args.batch_size)
    seconds, last = run_rounds(model, conversations, config, args.batch_size, args.rounds)
    model.close()

    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        tokens = sum(len(c.token_ids) for c in last[name])
        spread = f"{min(seconds[name]):.1f}-{max(seconds[name]):.1f} s"
        print(
            f"{name:<13}: {len(sentences) / median:7.2f} sentences/s (median {median:6.1f} s, range {spread}, "
            f"{tokens / median:.0f} generated tokens/s)"
        )
    differ = sum(a.text != b.text for a, b in zip(last["one at a time"], last["batched"]))
    ratio = medians["one at a time"] / medians["batched"]
    print(f"ratio batched/single (medians): {ratio:.2f}x; translations that differ: {differ}")


if __name__ == "__main__":
    main()
