"""Prompt lookup: drafts taken from the tokens a sequence already has (its prompt and its output).

A translation copies markup, names, numbers and code from its source; a chat answer quotes the
question. When the last few tokens occurred before, what followed them then is a cheap guess for
what follows now, and the model verifies the guess like any other draft.
"""

from __future__ import annotations

from collections.abc import Iterable

MIN_NGRAM = 2
"""Shortest match drafted from: a single shared token (" the") predicts too little in prose."""


class NgramIndex:
    """Where each n-gram of 2..`longest` tokens of a history last occurred, kept as tokens arrive."""

    def __init__(self, longest: int, tokens: Iterable[int] = ()):
        self.longest = longest
        self.shortest = min(MIN_NGRAM, longest)
        self.history: list[int] = []
        self._continuation: dict[tuple[int, ...], int] = {}
        """n-gram -> the position of the token that followed its latest occurrence."""
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self.history.append(token)
            end = len(self.history) - 1  # the new token follows every n-gram that ends just before it
            for size in range(self.shortest, min(self.longest, end) + 1):
                self._continuation[tuple(self.history[end - size : end])] = end

    def draft(self, count: int) -> list[int]:
        """Up to `count` tokens that followed the longest earlier match of the history's last tokens."""
        if count <= 0:
            return []
        for size in range(min(self.longest, len(self.history)), self.shortest - 1, -1):
            position = self._continuation.get(tuple(self.history[-size:]))
            if position is not None:
                return self.history[position : position + count]
        return []
