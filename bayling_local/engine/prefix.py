"""Which prompt prefix the engine keeps in its reserved sequence, and how much of a new prompt it covers.

Translation prompts (and chats with one system prompt) begin with the same tokens. The engine keeps the
KV of such a prefix once and copies it into each new sequence instead of prefilling it again. The
prefix is learnt, not declared: when a prompt shares at least `MIN_TOKENS` leading tokens with the
prompt before it, and the prefix kept now does not already cover it, those tokens become the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

MIN_TOKENS = 16
"""A shorter shared start is not worth a KV copy."""


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


class PrefixPolicy:
    """The prefix in the reserved sequence (`ids`) and the prompt seen before, to learn a new one from."""

    def __init__(self, min_tokens: int = MIN_TOKENS):
        self.min_tokens = min_tokens
        self.ids: list[int] = []
        self._previous: list[int] = []

    def reusable(self, prompt: Sequence[int]) -> int:
        """Leading prompt tokens the kept prefix covers (0 when too few to be worth a copy). The last
        prompt token always runs through the model: its logits give the first generated token."""
        length = min(common_prefix_length(self.ids, prompt), len(prompt) - 1)
        return length if length >= self.min_tokens else 0

    def learn(self, prompt: Sequence[int]) -> int:
        """After `prompt` is prefilled: how many of its leading tokens should become the kept prefix
        (0: keep the one there is). Either way `prompt` is what the next one is compared with."""
        shared = common_prefix_length(self._previous, prompt)
        self._previous = list(prompt)
        if shared < self.min_tokens or shared <= self.reusable(prompt):
            return 0
        return shared

    def keep(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)

    def forget(self) -> None:
        self.ids = []
