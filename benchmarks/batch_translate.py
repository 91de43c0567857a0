"""Sentences/s translating FLORES sentences one at a time vs batched (same model, same threads).

Usage: python benchmarks/batch_translate.py [--data ../shared/data/flores200_dev_devtest_204langs.tar.xz]
           [--sentences 200] [--batch-size 8] [--to swh_Latn] [--model NAME] [--threads N]
Greedy decoding; prints both rates, their ratio, and how many translations differ (should be 0).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.evaldata import flores_sentences
from bayling_local.languages import resolve
from bayling_local.model import open_model
from bayling_local.translate import translation_messages

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flores200_dev_devtest_204langs.tar.xz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--to", default="swh_Latn")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    sentences = flores_sentences(args.data, "eng_Latn", "devtest", limit=args.sentences)
    model = open_model(args.model, options=LoadOptions(threads=args.threads, context_length=2048))
    target = resolve(args.to)
    conversations = [translation_messages(s, target) for s in sentences]
    config = GenerationConfig(max_tokens=args.max_tokens)

    start = time.perf_counter()
    single = [model.chat_batch([c], config)[0] for c in conversations]
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = []
    for i in range(0, len(conversations), args.batch_size):
        batched += model.chat_batch(conversations[i : i + args.batch_size], config)
    batched_s = time.perf_counter() - start

    differ = sum(a.text != b.text for a, b in zip(single, batched))
    tokens = sum(len(c.token_ids) for c in batched)
    print(f"model {model.name}, {len(sentences)} sentences eng_Latn -> {target.code}, max {args.max_tokens} tokens")
    print(f"one at a time : {len(sentences) / single_s:7.2f} sentences/s ({single_s:6.1f} s)")
    print(f"batch of {args.batch_size:<5}: {len(sentences) / batched_s:7.2f} sentences/s ({batched_s:6.1f} s, "
          f"{tokens / batched_s:.0f} generated tokens/s)")
    print(f"ratio batched/single: {single_s / batched_s:.2f}x; translations that differ: {differ}")


if __name__ == "__main__":
    main()
