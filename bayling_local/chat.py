"""A multi-turn conversation with a model: the state the CLI REPL and the TUI share.

The session keeps the system prompt and turns, sends them through `Model.chat` (which drops the
oldest turns when the window is full) and records each answer once its stream ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from bayling_local.backends.base import Completion, GenerationConfig
from bayling_local.model import Model
from bayling_local.prompts import Message


@dataclass
class Reply:
    """One answer being streamed; iterate for text pieces, then read `completion`."""

    pieces: Iterator[str]
    dropped_turns: int
    completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        return self.pieces


@dataclass
class ChatSession:
    model: Model
    config: GenerationConfig = field(default_factory=GenerationConfig)
    system: str | None = None
    """Replaces the chat format's default system text when set."""
    turns: list[Message] = field(default_factory=list)

    def messages(self) -> list[Message]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns

    def send(self, text: str, cancel: threading.Event | None = None) -> Reply:
        """Add the user's message and stream the answer; the answer joins the history at the end."""
        self.turns.append({"role": "user", "content": text})
        try:
            stream, fitted = self.model.chat(self.messages(), self.config, cancel)
        except Exception:
            self.turns.pop()  # the message was refused (too long): the history stays as it was
            raise
        if fitted.dropped_turns:  # forget what no longer fits, so the notice comes once
            self.turns = [m for m in fitted.messages if m["role"] != "system"]
        reply = Reply(iter(()), fitted.dropped_turns)

        def pieces() -> Iterator[str]:
            first = True
            for piece in stream:
                # Models often open with a space or newline after the header; the reader never needs it.
                piece = piece.lstrip() if first else piece
                first = first and not piece
                if piece:
                    yield piece
            reply.completion = stream.completion
            self._record(stream.completion)

        reply.pieces = pieces()
        return reply

    def _record(self, completion: Completion) -> None:
        # A cancelled answer is kept as far as the user saw it, so the history matches the screen.
        self.turns.append({"role": "assistant", "content": completion.text.strip()})

    def reset(self) -> None:
        self.turns.clear()
