"""The mix's stats report: examples and tokens per group, language and task, as JSON and Markdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from bayling_local.languages import resolve
from bayling_local.training.data.records import DataError, Example

TokenCounter = Callable[[list[str]], list[int]]


def load_token_counter(path: Path, name: str) -> TokenCounter:
    """Counts tokens with a tokenizer.json (a file, a folder holding one, or a hub id in the local
    cache), without special tokens."""
    from tokenizers import Tokenizer

    file = _tokenizer_file(path, name)
    tokenizer = Tokenizer.from_file(str(file))

    def count(texts: list[str]) -> list[int]:
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]

    return count


def _tokenizer_file(path: Path, name: str) -> Path:
    file = path / "tokenizer.json" if path.is_dir() else path
    if file.is_file():
        return file
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "tokenizer.json") if name.count("/") == 1 else None
    if isinstance(cached, str):
        return Path(cached)
    raise DataError(f"data.tokenizer: no tokenizer.json at {path} (nor {name!r} in the Hugging Face cache)")


def mix_stats(
    examples: Sequence[Example],
    *,
    eval_size: int,
    seed: int,
    ratios: dict[str, float],
    duplicates_skipped: int,
    count_tokens: TokenCounter | None,
) -> dict:
    """Counts for the report; token counts are the message contents' (no chat template)."""
    texts = ["".join(content for _, content in example.messages) for example in examples]
    tokens = count_tokens(texts) if count_tokens else [None] * len(texts)
    characters = [len(text) for text in texts]
    norm = sum(ratios.values())
    return {
        "examples": len(examples),
        "train_examples": len(examples) - eval_size,
        "eval_examples": eval_size,
        "seed": seed,
        "duplicates_skipped": duplicates_skipped,
        "token_unit": "tokenizer tokens" if count_tokens else None,
        "groups": _breakdown(examples, lambda e: e.group, tokens, characters,
                             extra=lambda g: {"ratio_requested": round(ratios[g] / norm, 4)}),
        "languages": _breakdown(examples, lambda e: e.language, tokens, characters,
                                extra=lambda code: {"name": resolve(code).english_name}),
        "tasks": _breakdown(examples, lambda e: e.task, tokens, characters),
        "language_task": _breakdown(examples, lambda e: f"{e.language}/{e.task}", tokens, characters),
    }


def _breakdown(examples, key_of, tokens, characters, extra=None) -> dict:
    counts, token_sums, char_sums = Counter(), Counter(), Counter()
    for example, token_count, char_count in zip(examples, tokens, characters):
        key = key_of(example)
        counts[key] += 1
        token_sums[key] += token_count or 0
        char_sums[key] += char_count
    total = max(1, len(examples))
    rows = {}
    for key in sorted(counts):
        row = {"examples": counts[key], "share": round(counts[key] / total, 4),
               "tokens": token_sums[key] if tokens and tokens[0] is not None else None,
               "characters": char_sums[key]}
        rows[key] = {**row, **(extra(key) if extra else {})}
    return rows


def stats_markdown(stats: dict) -> str:
    """The same report as Markdown tables."""
    lines = [
        "# Instruction mix",
        "",
        f"{stats['examples']} examples ({stats['train_examples']} train, {stats['eval_examples']} eval), "
        f"seed {stats['seed']}, {stats['duplicates_skipped']} duplicates skipped. "
        + ("Tokens: message contents, no chat template." if stats["token_unit"] else
           "Tokens not counted (set data.tokenizer); characters shown."),
        "",
    ]
    lines += _table("Groups", stats["groups"], ("ratio_requested",))
    lines += _table("Languages", stats["languages"], ("name",))
    lines += _table("Tasks", stats["tasks"], ())
    lines += _table("Language x task", stats["language_task"], ())
    return "\n".join(lines) + "\n"


def _table(title: str, rows: dict, extra_columns: tuple[str, ...]) -> list[str]:
    header = ("key", *extra_columns, "examples", "share", "tokens", "characters")
    out = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, row in rows.items():
        cells = [key, *(str(row[c]) for c in extra_columns), str(row["examples"]), f"{row['share']:.2%}",
                 "" if row["tokens"] is None else str(row["tokens"]), str(row["characters"])]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]
