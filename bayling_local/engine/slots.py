"""A request's progress while it holds a slot (prompt in KV so far, tokens generated, its text), and
the pool of slot numbers (each slot is one llama.cpp sequence id with its own KV stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bayling_local.backends.base import Completion
from bayling_local.backends.decoding import TextAssembler
from bayling_local.engine.requests import RequestHandle


@dataclass
class Sequence:
    """One running request. The prompt is prefilled in chunks; then each step decodes `pending`."""

    handle: RequestHandle
    slot: int
    budget: int
    """Most tokens to generate (max_tokens, cut to the room left in the slot)."""
    sampler: object
    assembler: TextAssembler
    stop_ids: frozenset[int] = frozenset()
    """Tokens that end it (its stop tokens and, unless ignore_eos, the model's end-of-generation ids)."""
    prefilled: int = 0
    """Prompt tokens whose KV is in the slot (copied from a shared prefix or run through the model)."""
    generated: list[int] = field(default_factory=list)
    pending: int | None = None
    """The token sampled last and accepted: the next step decodes it."""
    draft: list[int] = field(default_factory=list)
    """Tokens guessed to follow `pending` (speculative decoding): decoded with it in the same step,
    each kept only while it is what the model itself chooses."""
    finish: str | None = None

    @property
    def prompt(self) -> list[int]:
        return self.handle.prompt_ids

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.prompt)

    @property
    def next_position(self) -> int:
        """The position of `pending` (the prompt, then every generated token before it)."""
        return len(self.prompt) + len(self.generated) - 1

    def accept(self, token: int, ends: bool, piece: bytes) -> None:
        """Take a sampled token: `ends` when it is a stop token (not part of the text); its bytes otherwise."""
        if ends:
            self.finish = "stop"
            return
        self.generated.append(token)
        self.handle.emit(self.assembler.feed(piece))
        if self.assembler.stopped:
            self.finish = "stop"
        elif len(self.generated) >= self.budget:
            self.finish = "length"
        else:
            self.pending = token

    def complete(self, reason: str | None = None) -> Completion:
        """End the request (with `reason`, or the one it finished with) and hand over its Completion."""
        self.finish = reason or self.finish or "length"
        self.handle.emit(self.assembler.finish())
        completion = Completion(self.assembler.text, list(self.generated), len(self.prompt), self.finish)
        self.handle.finish(completion)
        return completion


class SlotPool:
    """Free slot numbers, lowest first (llama.cpp sequence ids 0..slots-1)."""

    def __init__(self, slots: int):
        self._free = list(range(slots))

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self) -> int:
        self._free.sort()
        return self._free.pop(0)

    def give_back(self, slot: int) -> None:
        self._free.append(slot)
