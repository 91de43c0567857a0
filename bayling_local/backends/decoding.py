"""Pieces every backend's decoding loop shares: UTF-8 assembly, stop strings, stop tokens.

A token can end in the middle of a multi-byte character, and a stop string can span several tokens;
`TextAssembler` emits only text that is final, so no stop string and no broken character leaks out.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Iterable


@dataclass
class TextAssembler:
    """Turn generated token bytes into text pieces that are safe to show."""

    stop_strings: tuple[str, ...] = ()
    text: str = ""
    emitted: int = 0
    stopped: bool = False
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def feed(self, token_bytes: bytes) -> str:
        """Add one token's bytes; return the text that can be shown now ('' while holding back)."""
        self.text += self._decoder.decode(token_bytes)
        stop_at = self._first_stop()
        if stop_at is not None:
            self.text, self.stopped = self.text[:stop_at], True
            return self._emit(len(self.text))
        return self._emit(len(self.text) - self._held_back())

    def finish(self) -> str:
        """Flush what is left when generation ends for another reason than a stop string.

        Bytes of a character that the token limit cut in half are dropped, not shown as U+FFFD.
        """
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        piece = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return piece

    def _first_stop(self) -> int | None:
        # Only the part not yet shown can hold a new stop string (plus the longest stop's overlap).
        start = max(0, self.emitted - max((len(s) for s in self.stop_strings), default=0))
        hits = [i for s in self.stop_strings if (i := self.text.find(s, start)) >= 0]
        return min(hits, default=None)

    def _held_back(self) -> int:
        """Length of the longest tail of the text that could still grow into a stop string."""
        longest = 0
        for stop in self.stop_strings:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


def resolve_stop_token_ids(tokenize, stop_tokens: Iterable[str]) -> tuple[set[int], tuple[str, ...]]:
    """Map special-token texts to ids with the model's vocabulary.

    Texts that are not one token in this vocabulary become stop *strings* instead, so a format's stop
    still works with a vocabulary that spells it in pieces. Returns (ids, leftover stop strings).
    """
    ids, strings = set(), []
    for text in stop_tokens:
        token_ids = tokenize(text)
        if len(token_ids) == 1:
            ids.add(token_ids[0])
        else:
            strings.append(text)
    return ids, tuple(strings)
