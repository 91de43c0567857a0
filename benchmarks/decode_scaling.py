"""The most `--parallel` can gain for a GGUF on this machine: one llama_decode of one token in each of N
sequences, against one sequence, in the engine's own kind of context (a KV stream per sequence).

Usage: python benchmarks/decode_scaling.py [--model NAME|PATH] [--threads N] [--sequences 1 2 4 8 16]
           [--prompt-tokens 64] [--steps 48]

Each N gets a fresh context; every sequence is prefilled with --prompt-tokens tokens (untimed), then
--steps steps decode one token per sequence (sequence ids 0..N-1, in order). It prints the median step
time, tokens/s and the ratio to one sequence: what the engine's batching gains with every slot busy and
no prompt to prefill, so the ceiling for `benchmarks/batch_translate.py`. A type without a batched
kernel (Q4_1, Q5_1 and others run a dot product per token and row on x86) scales far less than one with
one (Q4_0 and Q8_0 go through llama.cpp's repacked or tinyBLAS GEMMs).

It then decodes 16 sequences (or the largest N) with the same ids out of order and with gaps: llama.cpp
splits a batch over per-sequence streams into micro-batches of consecutive sequence ids (llama-batch.cpp
`split_equal`), and each micro-batch reads every weight again. That is why the engine sorts its rows
by slot (`engine/scheduler.py`). Everything runs on one thread that ends with it
(`backends/compute_threads.py`).
"""

from __future__ import annotations

import argparse
import statistics
import time

from bayling_local.backends.base import LoadOptions
from bayling_local.backends.compute_threads import call_on_own_thread
from bayling_local.bench.hardware import detect_hardware
from bayling_local.engine.llamacpp import ContextShape, LlamaContext, TokenBatch
from bayling_local.model import open_model

CELLS_PER_SEQUENCE = 512


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a store name or GGUF path (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sequences", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=48)
    args = parser.parse_args()
    if min(args.sequences) < 1 or args.steps < 1 or not 1 <= args.prompt_tokens < CELLS_PER_SEQUENCE - args.steps:
        parser.error(f"--sequences and --steps must be at least 1; "
                     f"--prompt-tokens + --steps under {CELLS_PER_SEQUENCE}")
    return args


def timed_decode(context: LlamaContext, batch: TokenBatch, rows: list[tuple[int, int, int, bool]]) -> float:
    """Seconds one llama_decode of `rows` (token, position, sequence, wants logits) takes."""
    batch.fill(rows)
    start = time.perf_counter()
    context.decode(batch)
    return time.perf_counter() - start


class Contexts:
    """Fresh engine-style contexts of the model's llama.cpp weights."""

    def __init__(self, llm, prompt_tokens: int):
        self.llm, self.prompt_tokens = llm, prompt_tokens

    def step_ms(self, ids: list[int], steps: int) -> float:
        """Median ms of one llama_decode of one token in each sequence of `ids` (in that order)."""
        count = max(ids) + 1
        context = LlamaContext(self.llm, ContextShape(count, CELLS_PER_SEQUENCE, max(count, self.prompt_tokens)))
        batch = TokenBatch(max(count, self.prompt_tokens))
        try:
            for sequence in range(count):
                batch.fill([(100 + (p * 7) % 1000, p, sequence, p == self.prompt_tokens - 1)
                            for p in range(self.prompt_tokens)])
                context.decode(batch)
            times = [timed_decode(context, batch, [(200 + step, self.prompt_tokens + step, sequence, True)
                                                   for sequence in ids]) for step in range(steps)]
            return statistics.median(times) * 1000
        finally:
            batch.close()
            context.close()


def measure(llm, args: argparse.Namespace) -> None:
    contexts = Contexts(llm, args.prompt_tokens)
    print(f"{'sequences':>9}  {'ms/step':>8}  {'tok/s':>7}  {'x one':>6}")
    one_sequence_rate = None
    for count in sorted(set(args.sequences)):
        ms = contexts.step_ms(list(range(count)), args.steps)
        rate = count / ms * 1000
        one_sequence_rate = rate if count == 1 else one_sequence_rate
        ratio = f"{rate / one_sequence_rate:>5.2f}x" if one_sequence_rate else f"{'-':>6}"
        print(f"{count:>9}  {ms:>8.2f}  {rate:>7.1f}  {ratio}", flush=True)
    widest = max(args.sequences)
    if widest < 2:
        return
    orders = {
        "in order": list(range(widest)),
        "reversed": list(range(widest))[::-1],
        "every other id": list(range(0, 2 * widest, 2)),
    }
    print(f"\n{widest} sequences, one token each, by sequence-id order:")
    for label, ids in orders.items():
        print(f"  {label:<15} {contexts.step_ms(ids, args.steps):8.2f} ms/step", flush=True)


def main() -> None:
    from bayling_local.bench.speed import backend_runtime_settings
    from bayling_local.bench.tables import runtime_settings_line

    args = parse_arguments()
    model = open_model(args.model, options=LoadOptions(device="cpu", threads=args.threads, context_length=2048))
    try:
        if model.backend.name != "llama.cpp":
            raise SystemExit("error: decode_scaling.py measures llama.cpp: give it a GGUF (--model)")
        print(f"hardware: {detect_hardware().describe()}")
        print(runtime_settings_line(model.backend.name, backend_runtime_settings(model.backend)))
        print(f"model {model.name}; {args.prompt_tokens}-token prompts, median of {args.steps} steps\n")
        call_on_own_thread(lambda: measure(model.backend.llm, args), "decode-scaling")
    finally:
        model.close()


if __name__ == "__main__":
    main()
