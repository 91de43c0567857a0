"""SFT tokenization: render with the model's chat format, label only the assistant's tokens, cut to
the maximum length, and pack several examples into one sequence.

Labels: a token is learned (its id kept) only when it starts inside an assistant turn's content or
the end-of-turn token that follows it (`</s>`, `<|eot_id|>`, ...); everything else is -100. Packed
sequences carry position ids that restart at 0 for every example; transformers (>= 4.53) turns
restarts into a block-diagonal causal mask when no attention mask is passed, so no token attends
across examples. Padding is appended as a block of its own for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bayling_local.errors import TemplateError, UsageError
from bayling_local.prompts import ChatFormat, Message
from bayling_local.training.data.records import messages_from_record, read_jsonl_records

IGNORE_INDEX = -100
# Formats whose rendered text does not carry the beginning-of-sequence token (Llama-2 adds <s>).
PREPENDS_BOS = {"bayling-2": True, "bayling-3": False, "chatml": False, "template": False}


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one conversation and its labels (-100 where nothing is learned)."""

    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class PackedSequence:
    """One training row: one or more examples end to end, positions restarting per example."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def load_conversations(paths: Sequence[Path]) -> list[list[Message]]:
    """Every conversation of the JSONL files (messages, ShareGPT or Alpaca lines), checked."""
    conversations = []
    for path in paths:
        for where, record in read_jsonl_records(path):
            turns = messages_from_record(record, where)
            conversations.append([{"role": role, "content": content} for role, content in turns])
    return conversations


def conversation_text(messages: Sequence[Message], chat_format: ChatFormat) -> tuple[str, list[tuple[int, int]]]:
    """The training text (up to the last assistant turn's end) and the character spans to learn."""
    last = max(index for index, message in enumerate(messages) if message["role"] == "assistant")
    text = chat_format.render(messages[: last + 1])
    spans = []
    for index in range(last + 1):
        if messages[index]["role"] == "assistant":
            spans.append(_assistant_span(messages, index, chat_format, text))
    return text[: spans[-1][1]], spans


def _assistant_span(messages: Sequence[Message], index: int, chat_format: ChatFormat, text: str) -> tuple[int, int]:
    prompt = chat_format.render(messages[:index])
    content = messages[index]["content"]
    start, end = len(prompt), len(prompt) + len(content)
    if not text.startswith(prompt) or text[start:end] != content:
        raise TemplateError(
            f"chat format '{chat_format.id}' does not render earlier turns as a prefix of later ones, so "
            "assistant tokens cannot be located; train with a built-in format (bayling-2, bayling-3, chatml)"
        )
    marker = next((stop for stop in chat_format.stop_tokens if stop and text.startswith(stop, end)), "")
    return start, end + len(marker)


def encode_conversation(
    messages: Sequence[Message], tokenizer, chat_format: ChatFormat, max_length: int
) -> EncodedExample | None:
    """Token ids and labels, cut to `max_length`; None when the cut leaves nothing to learn."""
    text, spans = conversation_text(messages, chat_format)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    labels = [
        token if _starts_inside(start, stop, spans) else IGNORE_INDEX
        for token, (start, stop) in zip(ids, encoding["offset_mapping"])
    ]
    if PREPENDS_BOS.get(chat_format.id) and tokenizer.bos_token_id is not None:
        ids, labels = [tokenizer.bos_token_id, *ids], [IGNORE_INDEX, *labels]
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return EncodedExample(ids, labels)


def _starts_inside(start: int, stop: int, spans: list[tuple[int, int]]) -> bool:
    return stop > start and any(low <= start < high for low, high in spans)


def template_length(tokenizer, chat_format: ChatFormat) -> int:
    """Tokens the format itself takes for one empty exchange (with its default system prompt)."""
    messages = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    text, _ = conversation_text(messages, chat_format)
    extra = 1 if PREPENDS_BOS.get(chat_format.id) and tokenizer.bos_token_id is not None else 0
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + extra


def check_max_length(tokenizer, chat_format: ChatFormat, max_length: int) -> None:
    """Refuse a max length that leaves no room for an answer once the template is in."""
    needed = template_length(tokenizer, chat_format)
    if max_length <= needed:
        raise UsageError(
            f"train.max_length ({max_length}) is not more than the {chat_format.id} template itself "
            f"({needed} tokens for an empty exchange with the default system prompt); raise train.max_length"
        )


def encode_all(
    conversations: Iterable[Sequence[Message]], tokenizer, chat_format: ChatFormat, max_length: int
) -> tuple[list[EncodedExample], int]:
    """Encoded examples and how many were dropped (nothing left to learn after the cut)."""
    check_max_length(tokenizer, chat_format, max_length)
    encoded, dropped = [], 0
    for messages in conversations:
        example = encode_conversation(messages, tokenizer, chat_format, max_length)
        if example is None:
            dropped += 1
        else:
            encoded.append(example)
    return encoded, dropped


def pack(examples: Iterable[EncodedExample], max_length: int) -> list[PackedSequence]:
    """Examples end to end, in order, into rows of at most `max_length` tokens (greedy)."""
    rows: list[PackedSequence] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        if ids and len(ids) + len(example.input_ids) > max_length:
            rows.append(PackedSequence(ids, labels, positions))
            ids, labels, positions = [], [], []
        ids.extend(example.input_ids)
        labels.extend(example.labels)
        positions.extend(range(len(example.input_ids)))
    if ids:
        rows.append(PackedSequence(ids, labels, positions))
    return rows


def unpacked(examples: Iterable[EncodedExample]) -> list[PackedSequence]:
    """One example per row."""
    return [PackedSequence(e.input_ids, e.labels, list(range(len(e.input_ids)))) for e in examples]


class SftCollator:
    """Pads a batch of rows to the longest (rounded up to a multiple); returns torch tensors."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, rows: Sequence[PackedSequence | dict]) -> dict:
        import torch

        rows = [row if isinstance(row, PackedSequence) else PackedSequence(**row) for row in rows]
        width = max(len(row) for row in rows)
        width = -(-width // self.multiple) * self.multiple
        batch = {"input_ids": [], "labels": [], "position_ids": []}
        for row in rows:
            padding = width - len(row)
            batch["input_ids"].append(row.input_ids + [self.pad_token_id] * padding)
            batch["labels"].append(row.labels + [IGNORE_INDEX] * padding)
            # Padding positions restart at 0 (in range whatever the width); no real token attends to
            # the padding after it, and transformers reads the restart as one more packed block.
            batch["position_ids"].append(row.position_ids + list(range(padding)))
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


class SftDataset:
    """A list of rows as the HF Trainer wants them (indexable, with len)."""

    def __init__(self, rows: Sequence[PackedSequence]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        return {"input_ids": row.input_ids, "labels": row.labels, "position_ids": row.position_ids}

    def tokens(self) -> int:
        return sum(len(row) for row in self.rows)
