"""One training example in messages form, and the one check every JSONL line goes through."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bayling_local.errors import UsageError

ROLES = ("system", "user", "assistant")
# ShareGPT speaker names (`from`) and the role each stands for.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant",
}


class DataError(UsageError):
    """A data file or line that cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Example:
    """A conversation with the labels the mixer and the stats use."""

    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    language: str  # FLORES code the example is counted under
    task: str
    group: str
    source: str

    def key(self) -> str:
        """Identity for exact de-duplication: the conversation text, nothing else."""
        text = "\x1e".join(f"{role}\x1f{content}" for role, content in self.messages)
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()

    def to_record(self) -> dict:
        return {
            "messages": [{"role": role, "content": content} for role, content in self.messages],
            "language": self.language,
            "task": self.task,
            "group": self.group,
            "source": self.source,
        }

    def to_json_line(self) -> str:
        return json.dumps(self.to_record(), ensure_ascii=False) + "\n"


def conversation(*turns: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(turns)


def messages_from_record(record: object, where: str) -> tuple[tuple[str, str], ...]:
    """The (role, content) turns of one JSON line in messages, ShareGPT or Alpaca form."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: a line must be a JSON object, got {type(record).__name__}")
    if "messages" in record:
        turns = _messages_turns(record["messages"], where)
    elif "conversations" in record:
        turns = _sharegpt_turns(record["conversations"], where)
    elif "instruction" in record and "output" in record:
        turns = _alpaca_turns(record, where)
    else:
        raise DataError(
            f"{where}: no messages: expected a 'messages' list, a ShareGPT 'conversations' list, or "
            "Alpaca 'instruction'/'output' fields"
        )
    _check_turns(turns, where)
    return turns


def _messages_turns(items: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise DataError(f"{where}: 'messages' must be a list of {{role, content}} objects")
    turns = []
    for item in items:
        if not isinstance(item, Mapping) or "role" not in item or "content" not in item:
            raise DataError(f"{where}: every message needs 'role' and 'content'")
        turns.append((item["role"], item["content"]))
    return tuple(turns)


def _sharegpt_turns(items: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise DataError(f"{where}: 'conversations' must be a list of {{from, value}} objects")
    turns = []
    for item in items:
        if not isinstance(item, Mapping) or "from" not in item or "value" not in item:
            raise DataError(f"{where}: every ShareGPT turn needs 'from' and 'value'")
        speaker = str(item["from"]).lower()
        if speaker not in SHAREGPT_ROLES:
            raise DataError(f"{where}: unknown ShareGPT speaker {item['from']!r}; use human, gpt or system")
        turns.append((SHAREGPT_ROLES[speaker], item["value"]))
    return tuple(turns)


def _alpaca_turns(record: Mapping, where: str) -> tuple[tuple[str, str], ...]:
    instruction, extra, output = record["instruction"], record.get("input") or "", record["output"]
    if not all(isinstance(value, str) for value in (instruction, extra, output)):
        raise DataError(f"{where}: Alpaca 'instruction', 'input' and 'output' must be strings")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return (("user", prompt), ("assistant", output))


def _check_turns(turns: tuple[tuple[str, str], ...], where: str) -> None:
    if not turns:
        raise DataError(f"{where}: the conversation is empty")
    for role, content in turns:
        if role not in ROLES:
            raise DataError(f"{where}: unknown role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: message content must be a string")
    if not any(role == "assistant" and content.strip() for role, content in turns):
        raise DataError(f"{where}: no assistant message with text, so there is nothing to learn from it")
    if any(role == "system" for role, _ in turns[1:]):
        raise DataError(f"{where}: a system message may only come first")


def read_jsonl_records(path, label: str | None = None):
    """(where, record) for every non-blank line of a JSONL file (or every item of a JSON array).

    JSONL is read line by line, so a multi-gigabyte mix is never held in memory whole."""
    shown = label or str(path)
    try:
        if path.suffix == ".json" and _starts_with_bracket(path):
            yield from _json_array_records(path.read_text("utf-8"), shown)
            return
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield f"{shown}:{number}", _parse_line(line, f"{shown}:{number}")
    except FileNotFoundError:
        raise DataError(f"no data file at {path}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{shown}: not UTF-8 ({error.reason} at byte {error.start})") from None


def _starts_with_bracket(path) -> bool:
    with path.open("rb") as head:
        return head.read(4096).lstrip().startswith(b"[")


def _json_array_records(text: str, shown: str):
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{shown}: not valid JSON ({error.msg} at line {error.lineno})") from None
    for index, item in enumerate(items):
        yield f"{shown}[{index}]", item


def _parse_line(line: str, where: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg})") from None
