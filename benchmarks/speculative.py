"""Speculative decoding on this machine, bundled model family: decode tokens/s with and without drafts.

Target: the f32 GGUF converted (by our converter) from the bundled checkpoint, dequantized by
transformers. Drafts: that GGUF's own Q8_0 and Q4_0 (llama.cpp's quantizer), side by side, each with the
adaptive draft length and with a fixed one (to see whether adapting helps); and prompt lookup
(`--lookup-ngram`) on a Markdown file full of code and links and on plain prose (FLORES sentences).

Usage: python benchmarks/speculative.py [--sentences 12] [--rounds 3] [--threads N] [--draft-tokens 8]
           [--max-tokens 64] [--data ../shared/data/flores200_dev_devtest_204langs.tar.xz] [--to fra_Latn]

Every request is translated alone (one engine slot), greedy. Decode tokens/s is measured per request
from its first generated piece to its end (prompt processing excluded), summed over the inputs. Each
side gets an untimed warm-up; then --rounds rounds run every side, the order reversing each round;
medians are printed. Every side's text is compared with plain decoding's, token for token.

First it prints what a pass costs on this machine (median llama_decode times: the target for one token
and for a pending token plus a draft of --draft-tokens, each draft for one token) and the ceiling they
set: the speedup if every drafted token were accepted, (k + 1) * target(1) / (k * draft(1) + target(k + 1)).
A draft only pays where it decodes a token much faster than the target (an 8B target with a 1B draft);
the bundled model's quantizations of itself are a small model on a CPU, where a pass costs more in
per-operation overhead than in weight bytes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bayling_local.backends.base import GenerationConfig, LoadOptions, SpeculationOptions
from bayling_local.bench.hardware import detect_hardware
from bayling_local.engine.continuous import ContinuousEngine
from bayling_local.evaldata import flores_sentences
from bayling_local.languages import resolve
from bayling_local.model import open_model
from bayling_local.translate import translation_messages

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "flores200_dev_devtest_204langs.tar.xz"
MARKDOWN = HERE / "speculative_sample.md"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--sentences", type=int, default=12)
    parser.add_argument("--to", default="fra_Latn")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--lookup-ngram", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--markdown-max-tokens", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default="~/.cache/bayling-local/bench/speculative")
    return parser.parse_args()


def conversions(workdir: Path) -> dict[str, Path]:
    """f32, Q8_0 and Q4_0 GGUFs of the bundled checkpoint, made once in `workdir`."""
    sys.path.insert(0, str(HERE))
    from train_cpu import dequantized_smollm2  # the same dequantized checkpoint the training benchmark uses

    from bayling_local.convert import to_gguf
    from bayling_local.convert.quantize import quantize_gguf

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"f32": workdir / "smollm2-f32.gguf", "q8_0": workdir / "smollm2-q8_0.gguf", "q4_0": workdir / "smollm2-q4_0.gguf"}
    if not paths["f32"].is_file():
        to_gguf(dequantized_smollm2(workdir / "checkpoint"), "f32", out=paths["f32"])
    for quant in ("q8_0", "q4_0"):
        if not paths[quant].is_file():
            quantize_gguf(paths["f32"], paths[quant], quant)
    return paths


@dataclass
class Run:
    seconds: float = 0.0
    decode_tokens: int = 0
    texts: list[list[int]] | None = None


def decode_rate(run: Run) -> float:
    return run.decode_tokens / run.seconds if run.seconds else 0.0


def timed(stream_of, prompts, config) -> Run:
    """Decode time (first piece to end) and tokens of every prompt, one after another."""
    run = Run(texts=[])
    for ids in prompts:
        start, first = time.perf_counter(), None
        pieces, completion = stream_of(ids, config)
        for _ in pieces:
            first = first or time.perf_counter()
        completion = completion()
        end = time.perf_counter()
        run.seconds += end - (first or start)
        run.decode_tokens += max(0, len(completion.token_ids) - 1)
        run.texts.append(completion.token_ids)
    return run


def plain_side(backend):
    def stream_of(ids, config):
        stream = backend.stream(ids, config)
        return stream, lambda: stream.completion

    return stream_of


def engine_side(engine):
    def stream_of(ids, config):
        handle = engine.submit(ids, config)
        return handle, handle.result

    return stream_of


def main() -> None:
    args = parse_arguments()
    paths = conversions(Path(args.workdir).expanduser())
    options = LoadOptions(device="cpu", threads=args.threads, context_length=2048)
    model = open_model(str(paths["f32"]), options=options)
    backend = model.backend
    drafts = {
        quant: open_llama_draft(backend, paths[quant], args.threads) for quant in ("q8_0", "q4_0")
    }
    target = resolve(args.to)
    prose = [
        model.prompt_ids(translation_messages(s, target))
        for s in flores_sentences(args.data, "eng_Latn", "devtest", args.sentences)
    ]
    markdown = [model.prompt_ids(translation_messages(MARKDOWN.read_text("utf-8"), target))]
    adaptive = SpeculationOptions(draft_tokens=args.draft_tokens)
    fixed = SpeculationOptions(draft_tokens=args.draft_tokens, fixed=True)
    lookup = SpeculationOptions(draft_tokens=args.draft_tokens, lookup_ngram=args.lookup_ngram)
    engines = {
        "engine, no draft": ContinuousEngine(backend, 1, speculation=SpeculationOptions()),
        "draft Q8_0 (adaptive)": ContinuousEngine(backend, 1, speculation=adaptive, draft_llm=drafts["q8_0"]),
        "draft Q8_0 (fixed)": ContinuousEngine(backend, 1, speculation=fixed, draft_llm=drafts["q8_0"]),
        "draft Q4_0 (adaptive)": ContinuousEngine(backend, 1, speculation=adaptive, draft_llm=drafts["q4_0"]),
        "draft Q4_0 (fixed)": ContinuousEngine(backend, 1, speculation=fixed, draft_llm=drafts["q4_0"]),
        f"lookup {args.lookup_ngram}-gram": ContinuousEngine(backend, 1, speculation=lookup),
    }
    print(f"hardware: {detect_hardware().describe()}")
    print(f"llama.cpp settings: {backend.runtime_settings()}")
    print(f"target {paths['f32'].name}; drafts {paths['q8_0'].name}, {paths['q4_0'].name}; greedy, one slot")
    print_pass_costs(backend.llm, drafts, args.draft_tokens)
    try:
        for label, prompts, max_tokens in (
            (f"{len(prose)} FLORES sentences eng->{args.to}", prose, args.max_tokens),
            (f"Markdown file ({MARKDOWN.name}) eng->{args.to}", markdown, args.markdown_max_tokens),
        ):
            config = GenerationConfig(max_tokens=max_tokens, temperature=0.0)
            sides = {"plain (llama-cpp-python loop)": plain_side(backend)}
            sides.update({name: engine_side(engine) for name, engine in engines.items()})
            report(label, sides, engines, prompts, config, args.rounds)
    finally:
        for engine in engines.values():
            engine.close()
        for llm in drafts.values():
            llm.close()
        model.close()


def open_llama_draft(backend, path: Path, threads: int | None):
    from bayling_local.backends.llamacpp import open_draft

    speculation = SpeculationOptions(draft_path=str(path))
    return open_draft(backend.llm, LoadOptions(device="cpu", threads=threads, speculation=speculation), 0)


def decode_ms(llm, rows: int, repeats: int = 7) -> float:
    """Median time of one llama_decode of `rows` tokens after a 100-token prompt, in a fresh context. On
    a thread that ends with it: a thread that has decoded keeps an OpenMP team, and every later decode in
    the process (both sides' streams) would run throttled (`bayling_local/backends/compute_threads.py`)."""
    from bayling_local.backends.compute_threads import call_on_own_thread

    return call_on_own_thread(lambda: _decode_ms(llm, rows, repeats), "pass-costs")


def _decode_ms(llm, rows: int, repeats: int) -> float:
    from decode_scaling import timed_decode  # the sibling benchmark

    from bayling_local.engine.llamacpp import ContextShape, LlamaContext, TokenBatch

    context, batch = LlamaContext(llm, ContextShape(1, 512, 128)), TokenBatch(128)
    try:
        batch.fill([(100 + p, p, 0, p == 99) for p in range(100)])
        context.decode(batch)
        times = []
        for _ in range(repeats):
            context.remove(0, 100)
            times.append(timed_decode(context, batch, [(300 + i, 100 + i, 0, True) for i in range(rows)]))
        return statistics.median(times) * 1000
    finally:
        batch.close()
        context.close()


def print_pass_costs(target_llm, drafts: dict, draft_tokens: int) -> None:
    one, verify = decode_ms(target_llm, 1), decode_ms(target_llm, draft_tokens + 1)
    print(f"pass costs: target {one:.1f} ms for 1 token, {verify:.1f} ms for {draft_tokens + 1}")
    for name, llm in drafts.items():
        draft = decode_ms(llm, 1)
        ceiling = (draft_tokens + 1) * one / (draft_tokens * draft + verify)
        print(f"  draft {name}: {draft:.1f} ms for 1 token ({draft / one:.2f} of the target's); "
              f"ceiling at {draft_tokens} drafted, all accepted: {ceiling:.2f}x")


def report(label, sides, engines, prompts, config, rounds: int) -> None:
    print(f"\n== {label}, max {config.max_tokens} tokens")
    for stream_of in sides.values():  # warm-up
        timed(stream_of, prompts[:1], config)
    before = {name: _counters(engine) for name, engine in engines.items()}
    runs: dict[str, list[Run]] = {name: [] for name in sides}
    order = list(sides)
    for round_index in range(rounds):
        for name in order if round_index % 2 == 0 else reversed(order):
            runs[name].append(timed(sides[name], prompts, config))
    baseline = statistics.median(decode_rate(r) for r in runs[order[0]])
    reference = runs[order[0]][0].texts
    print(f"{'side':32} {'decode tok/s':>12} {'speedup':>8} {'accepted':>9} {'tok/pass':>9} {'same text':>10}")
    for name in order:
        rate = statistics.median(decode_rate(r) for r in runs[name])
        same = sum(a == b for r in runs[name] for a, b in zip(r.texts, reference))
        accepted, per_pass = "-", "-"
        if name in engines:
            drafted, kept, generated, passes = (a - b for a, b in zip(_counters(engines[name]), before[name]))
            accepted = f"{kept / drafted:.0%}" if drafted else "-"
            per_pass = f"{generated / passes:.2f}" if passes else "-"
        total = len(reference) * rounds
        print(f"{name:32} {rate:12.1f} {rate / baseline:7.2f}x {accepted:>9} {per_pass:>9} {same:>5}/{total}")


def _counters(engine) -> tuple[int, int, int, int]:
    s = engine.stats
    return s.drafted_tokens, s.accepted_tokens, s.generated_tokens, s.sampling_passes


if __name__ == "__main__":
    main()
