"""Speculative decoding in the engine: before a step, each decoding sequence gets a draft (from a draft
model, or from its own tokens by prompt lookup); the step runs the pending token and the draft as
consecutive rows, and the sequence keeps the drafted tokens the model itself would have chosen.

The engine verifies (`ContinuousEngine._verify`); this module only proposes and keeps the counts.
"""

from __future__ import annotations

from collections.abc import Iterable

from bayling_local.backends.base import SpeculationOptions
from bayling_local.engine.draft_length import DraftLength
from bayling_local.engine.lookup import NgramIndex
from bayling_local.engine.slots import Sequence


class Speculator:
    """Drafts for the engine's sequences: a draft model's guesses where there is one, else lookup."""

    def __init__(self, options: SpeculationOptions, draft_model=None):
        self.options = options
        self.draft_model = draft_model
        self._lookups: dict[int, NgramIndex] = {}
        self._lengths: dict[int, DraftLength] = {}

    def start(self, s: Sequence) -> None:
        self._lengths[s.slot] = DraftLength(self.options.draft_tokens, fixed=self.options.fixed)
        if self.options.lookup_ngram and self.draft_model is None:
            self._lookups[s.slot] = NgramIndex(self.options.lookup_ngram, s.prompt)

    def propose(self, sequences: Iterable[Sequence], room: int) -> None:
        """Set `draft` on each sequence about to decode; `room` caps the draft rows of one step."""
        wanted = []
        for s in sequences:
            count = min(self._lengths[s.slot].next(), s.budget - len(s.generated) - 1, room)
            if count > 0:
                wanted.append((s, count))
                room -= count
        if self.draft_model is not None:
            drafts = self.draft_model.draft([(s.slot, [*s.prompt, *s.generated], n) for s, n in wanted])
            for s, _ in wanted:
                s.draft = drafts[s.slot]
        else:
            for s, count in wanted:
                s.draft = self._lookups[s.slot].draft(count)

    def record(self, s: Sequence, drafted: int, accepted: int, new_tokens: list[int]) -> None:
        self._lengths[s.slot].record(drafted, accepted)
        if self.draft_model is not None:
            self.draft_model.record(s.slot, accepted)
        if s.slot in self._lookups:
            self._lookups[s.slot].extend(new_tokens)

    def forget(self, s: Sequence) -> None:
        self._lengths.pop(s.slot, None)
        self._lookups.pop(s.slot, None)
        if self.draft_model is not None:
            self.draft_model.forget(s.slot)

    def close(self) -> None:
        if self.draft_model is not None:
            self.draft_model.close()
