"""SFT tokenization: render with the model's chat format, label only the assistant's tokens, cut to
the maximum length, and pack several examples into one sequence.

Tokens as at inference (`Model.prompt_ids`): the chat format's markup is tokenized with special-token
parsing, message text as plain text, so a `</s>` or `<|eot_id|>` inside the data is learned as text,
never as an end of turn; the BOS token goes first as markup, as a saved chat template writes it.

Labels: a token is learned (its id kept) only when it starts inside an assistant turn's content or
the end-of-turn token that follows it (`</s>`, `<|eot_id|>`, ...); everything else is -100. Packed
sequences carry position ids that restart at 0 for every example; transformers (>= 4.53) turns
restarts into a block-diagonal causal mask when no attention mask is passed, so no token attends
across examples. Padding is appended as a block of its own for the same reason.

`encode_conversation` is the reference, one tokenizer call per run; `encode_conversations` gives the same
ids and labels for many conversations a call to the Rust backend (the token cache's path).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from bayling_local.errors import TemplateError, UsageError
from bayling_local.prompts import ChatFormat, Message, Run, Segment, prompt_runs, with_leading_bos
from bayling_local.training.data.records import messages_from_record, read_jsonl_records

IGNORE_INDEX = -100
# Formats whose rendered text does not carry the beginning-of-sequence token (Llama-2 adds <s>).
PREPENDS_BOS = {"bayling-2": True, "bayling-3": False, "chatml": False, "template": False}
Offsets = list[tuple[int, int]]
# Conversations tokenized per call to the Rust backend by `encode_conversations`: enough for its threads to
# share out, few enough that a batch's ids stay a few MB.
CONVERSATIONS_PER_CALL = 512


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


def iter_conversations(paths: Sequence[Path]) -> Iterator[list[Message]]:
    """Every conversation of the JSONL files (messages, ShareGPT or Alpaca lines), checked, one at a time."""
    for path in paths:
        for where, record in read_jsonl_records(path):
            turns = messages_from_record(record, where)
            yield [{"role": role, "content": content} for role, content in turns]


def load_conversations(paths: Sequence[Path]) -> list[list[Message]]:
    """Every conversation of the JSONL files as a list (small sets; large ones go through `token_cache`)."""
    return list(iter_conversations(paths))


def conversation_segments(
    messages: Sequence[Message], chat_format: ChatFormat, bos_token: str | None = None
) -> tuple[list[Segment], list[tuple[int, int]]]:
    """The training prompt (up to the last assistant turn's end, `bos_token` first when given) and the
    character spans to learn: each assistant text and the end-of-turn token after it."""
    last = max(index for index, message in enumerate(messages) if message["role"] == "assistant")
    segments = with_leading_bos(chat_format.segments(messages[: last + 1]), bos_token)
    spans = _assistant_spans(segments, chat_format.stop_tokens)
    if not spans:
        raise TemplateError(
            f"chat format '{chat_format.id}' renders no assistant text, so there is nothing to learn; "
            "train with a built-in format (bayling-2, bayling-3, chatml)"
        )
    return _cut(segments, spans[-1][1]), spans


def _assistant_spans(segments: Sequence[Segment], stop_tokens: Sequence[str]) -> list[tuple[int, int]]:
    text = "".join(segment.text for segment in segments)
    spans, position = [], 0
    for segment in segments:
        end = position + len(segment.text)
        if segment.role == "assistant":
            marker = next((stop for stop in stop_tokens if stop and text.startswith(stop, end)), "")
            spans.append((position, end + len(marker)))
        position = end
    return spans


def _cut(segments: Sequence[Segment], end: int) -> list[Segment]:
    kept, position = [], 0
    for segment in segments:
        if position >= end:
            break
        kept.append(Segment(segment.text[: end - position], segment.role))
        position += len(segment.text)
    return kept


def encode_segments(segments: Sequence[Segment], tokenizer) -> tuple[list[int], Offsets]:
    """Ids and character offsets of a rendered prompt: markup with special-token parsing, message text
    that spells a special token as plain text (`prompt_runs`)."""
    ids: list[int] = []
    offsets: Offsets = []
    for run in prompt_runs(segments, lambda text: _spells_special(tokenizer, text)):
        run_ids, run_offsets = _encode_run(tokenizer, run)
        ids += run_ids
        offsets += run_offsets
    return ids, offsets


def _spells_special(tokenizer, text: str) -> bool:
    return _encode(tokenizer, text, True)[0] != _encode(tokenizer, text, False)[0]


def _encode(tokenizer, text: str, special: bool) -> tuple[list[int], Offsets]:
    encoding = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=not special
    )
    return list(encoding["input_ids"]), [tuple(pair) for pair in encoding["offset_mapping"]]


def _encode_run(tokenizer, run: Run) -> tuple[list[int], Offsets]:
    # As prompts.tokenize_run, with offsets: a run inside the prompt is encoded after a newline that is
    # then removed, so a SentencePiece tokenizer does not put a space before it.
    if run.start > 0:
        newline, _ = _encode(tokenizer, "\n", run.special)
        ids, offsets = _encode(tokenizer, "\n" + run.text, run.special)
        if newline and ids[: len(newline)] == newline:
            shifted = [(run.start + start - 1, run.start + stop - 1) for start, stop in offsets]
            return ids[len(newline) :], shifted[len(newline) :]
    ids, offsets = _encode(tokenizer, run.text, run.special)
    return ids, [(run.start + start, run.start + stop) for start, stop in offsets]


def encode_conversation(
    messages: Sequence[Message], tokenizer, chat_format: ChatFormat, max_length: int
) -> EncodedExample | None:
    """Token ids and labels, cut to `max_length`; None when the cut leaves nothing to learn.

    The reference, one `tokenizer(...)` call per run; `encode_conversations` gives the same, faster."""
    segments, spans = conversation_segments(messages, chat_format, _bos_token(tokenizer, chat_format))
    ids, offsets = encode_segments(segments, tokenizer)
    return _learnable_example(ids, offsets, spans, max_length)


def _learnable_example(ids: list[int], offsets: Offsets, spans: list[tuple[int, int]], max_length: int):
    ids, offsets = ids[:max_length], offsets[:max_length]
    labels = assistant_labels(ids, offsets, spans)
    if labels.count(IGNORE_INDEX) == len(labels):
        return None
    return EncodedExample(ids, labels)


def assistant_labels(ids: Sequence[int], offsets: Offsets, spans: Sequence[tuple[int, int]]) -> list[int]:
    """Each id whose token starts inside a span (and has a width), else -100."""
    labels = [IGNORE_INDEX] * len(ids)
    # One pass over the tokens per span (conversations have few): no call per token.
    for low, high in spans:
        for index, (start, stop) in enumerate(offsets):
            if low <= start < high and stop > start:
                labels[index] = ids[index]
    return labels


def encode_conversations(
    conversations: Iterable[Sequence[Message]], tokenizer, chat_format: ChatFormat, max_length: int
) -> Iterator[EncodedExample | None]:
    """`encode_conversation` of every conversation, in order, with exactly its ids and labels: the runs of
    CONVERSATIONS_PER_CALL conversations go to the Rust backend in one call, spread over its threads."""
    encoder = BackendEncoder(tokenizer)
    bos_token = _bos_token(tokenizer, chat_format)
    remaining = iter(conversations)
    while batch := list(islice(remaining, CONVERSATIONS_PER_CALL)):
        yield from _encode_batch(batch, encoder, chat_format, bos_token, max_length)


def _encode_batch(
    batch: list[Sequence[Message]], encoder: BackendEncoder, chat_format: ChatFormat, bos_token: str | None,
    max_length: int,
) -> Iterator[EncodedExample | None]:
    prompts = [conversation_segments(messages, chat_format, bos_token) for messages in batch]
    runs = [prompt_runs(segments, encoder.spells_special) for segments, _ in prompts]
    encoded = iter(encoder.encode_runs([run for conversation in runs for run in conversation]))
    for (_, spans), conversation in zip(prompts, runs):
        ids: list[int] = []
        offsets: Offsets = []
        for run_ids, run_offsets in islice(encoded, len(conversation)):
            ids += run_ids
            offsets += run_offsets
        yield _learnable_example(ids, offsets, spans, max_length)


class BackendEncoder:
    """A fast tokenizer's Rust backend (`backend_tokenizer`) called directly with many texts at once: the
    ids and offsets of `tokenizer(text, add_special_tokens=False, split_special_tokens=...)` without the
    Python cost of each such call."""

    def __init__(self, tokenizer):
        self.backend = tokenizer.backend_tokenizer
        # As every `tokenizer(...)` call without truncation or padding does to the backend first.
        if self.backend.truncation is not None:
            self.backend.no_truncation()
        if self.backend.padding is not None:
            self.backend.no_padding()
        self.special_spelling = _special_spelling_pattern(self.backend)
        self.newline = {special: self.encode(["\n"], special)[0][0] for special in (True, False)}

    def encode(self, texts: list[str], special: bool) -> list[tuple[list[int], Offsets]]:
        """Ids and offsets of each text; `special`: spellings of special tokens become those tokens."""
        saved = self.backend.encode_special_tokens
        self.backend.encode_special_tokens = not special
        try:
            encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        finally:
            self.backend.encode_special_tokens = saved
        return [(encoding.ids, encoding.offsets) for encoding in encodings]

    def spells_special(self, text: str) -> bool:
        """As `_spells_special`; a text in which no special token's spelling occurs is answered without
        tokenizing it (tokenizers only split on spellings found in the text)."""
        if self.special_spelling is not None and not self.special_spelling.search(text):
            return False
        (with_specials, _), (as_text, _) = self.encode([text], True)[0], self.encode([text], False)[0]
        return with_specials != as_text

    def encode_runs(self, runs: Sequence[Run]) -> list[tuple[list[int], Offsets]]:
        """`_encode_run` of every run, in order: one backend call per kind of run, one more for the runs
        (if any) whose first characters merged with the newline put before them."""
        placed: list[tuple[list[int], Offsets] | None] = [None] * len(runs)
        for special in (True, False):
            chosen = [index for index, run in enumerate(runs) if run.special == special]
            texts = ["\n" + runs[index].text if runs[index].start > 0 else runs[index].text for index in chosen]
            for index, (ids, offsets) in zip(chosen, self.encode(texts, special)):
                placed[index] = self._placed(runs[index], ids, offsets)
        for index, run in enumerate(runs):
            if placed[index] is None:
                ids, offsets = self.encode([run.text], run.special)[0]
                placed[index] = ids, _shifted(offsets, run.start)
        return placed

    def _placed(self, run: Run, ids: list[int], offsets: Offsets) -> tuple[list[int], Offsets] | None:
        """Ids and prompt offsets of a run encoded as `_encode_run` first tries; None when the newline merged."""
        if run.start == 0:
            return ids, offsets
        newline = self.newline[run.special]
        if newline and ids[: len(newline)] == newline:
            return ids[len(newline) :], _shifted(offsets[len(newline) :], run.start - 1)
        return None


def _special_spelling_pattern(backend) -> re.Pattern | None:
    """A pattern found in every text that spells a special token; None when that cannot be told from the
    raw text (a special token matched after normalization)."""
    specials = [token for token in backend.get_added_tokens_decoder().values() if token.special]
    if any(token.normalized for token in specials):
        return None
    spellings = sorted({token.content for token in specials if token.content}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, spellings))) if spellings else re.compile("(?!)")


def _shifted(offsets: Offsets, by: int) -> Offsets:
    return [(start + by, stop + by) for start, stop in offsets] if by else offsets


def _bos_token(tokenizer, chat_format: ChatFormat) -> str | None:
    return tokenizer.bos_token if PREPENDS_BOS.get(chat_format.id) else None


def template_length(tokenizer, chat_format: ChatFormat) -> int:
    """Tokens the format itself takes for one empty exchange (with its default system prompt)."""
    messages = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    segments, _ = conversation_segments(messages, chat_format, _bos_token(tokenizer, chat_format))
    return len(encode_segments(segments, tokenizer)[0])


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
    for example in encode_conversations(conversations, tokenizer, chat_format, max_length):
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
