"""A draft model for speculative decoding: a smaller llama.cpp model with the target's vocabulary that
guesses the next tokens of every speculating sequence, which the target then verifies in one pass.

Drafts are greedy (the draft's most likely token). A greedy draft is a point mass, so verification by
"keep the token while the target's own choice equals it" is exactly the standard rejection scheme
(accept with probability min(1, p/q) = p(token), else sample the target without that token).

Where to stop a draft is learnt. llama.cpp stops where the draft is unsure (`p_min` 0.75). That pays for
a weak draft, whose unsure guesses are mostly rejected, and costs a strong one: the bundled model's Q8_0
drafting for its f32 agrees with it on most tokens it is unsure of, and cutting there gave 1.7 tokens a
pass and 0.71x plain decoding's speed where drafting on gave 6.0 and 1.18x (AVX2 EPYC, FLORES prose;
its Q4_0 draft: 0.89x cut, 0.98x not). So an unsure token is still drafted, and the draft goes on past
it only while unsure tokens have been accepted often enough (`UnsureTokens`); drafting one unsure token
costs a verification row, not a draft pass, and it is what keeps the rate up to date.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bayling_local.engine.llamacpp import ContextShape, LlamaContext, TokenBatch
from bayling_local.engine.prefix import common_prefix_length

CONFIDENCE = 0.75
"""A draft token the draft gives less than this probability is unsure (llama.cpp's p_min)."""
KEEP_GOING = 0.7
"""Draft past unsure tokens while at least this share of them is accepted."""


@dataclass
class UnsureTokens:
    """How often the target accepts the draft's unsure tokens, over the recent ones (a pair's property,
    so one count for every sequence). It starts pessimistic, as llama.cpp does."""

    accepted: float = 0.0
    tried: float = 2.0
    window: float = 64.0

    @property
    def trusted(self) -> bool:
        return self.accepted >= KEEP_GOING * self.tried

    def record(self, accepted: bool) -> None:
        if self.tried >= self.window:  # older outcomes fade: the text being translated changes
            self.accepted, self.tried = self.accepted / 2, self.tried / 2
        self.accepted += accepted
        self.tried += 1


class DraftModel:
    """The draft model's llama context: one KV stream per engine slot, kept in step with each
    sequence's accepted tokens, so a draft only runs the tokens it has not seen."""

    def __init__(self, llm, shape: ContextShape, confidence: float = CONFIDENCE):
        import llama_cpp

        self._context = LlamaContext(llm, shape)
        self._batch = TokenBatch(shape.step_tokens)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(llm._model.vocab)
        self._confidence = confidence
        self.unsure = UnsureTokens()
        self._seen: dict[int, list[int]] = {}
        """slot -> the tokens whose KV the draft context holds for it."""
        self._sure: dict[int, list[bool]] = {}
        """slot -> for each token of its last draft, whether the draft was sure of it."""

    def draft(self, wanted: Sequence[tuple[int, Sequence[int], int]]) -> dict[int, list[int]]:
        """Drafts for (slot, history, count): `history` is the sequence's prompt and output so far, its
        last token the one the target decodes next; the draft guesses up to `count` tokens after it."""
        drafts: dict[int, list[int]] = {slot: [] for slot, _, _ in wanted}
        self._sure.update({slot: [] for slot, _, _ in wanted})
        counts = {slot: count for slot, _, count in wanted}
        last = self._catch_up([(slot, list(history)) for slot, history, _ in wanted], drafts)
        positions = {slot: len(history) for slot, history, _ in wanted}
        while True:
            going = [s for s in last if len(drafts[s]) < counts[s]]
            if not going:
                break
            rows = [(drafts[s][-1], positions[s] + len(drafts[s]) - 1, s, True) for s in going]
            last = self._run(rows, drafts, {s: i for i, s in enumerate(going)})
        for slot, history, _ in wanted:
            self._seen[slot] = [*history, *drafts[slot][:-1]]  # the last draft never ran through
        return drafts

    def record(self, slot: int, accepted: int) -> None:
        """After verification: the first `accepted` tokens of the slot's last draft were kept (the one
        after them, if any, was rejected; later ones were not judged)."""
        for position, sure in enumerate(self._sure.get(slot, [])[: accepted + 1]):
            if not sure:
                self.unsure.record(position < accepted)

    def forget(self, slot: int) -> None:
        self._context.remove(slot)
        self._seen.pop(slot, None)
        self._sure.pop(slot, None)

    def close(self) -> None:
        self._batch.close()
        self._context.close()

    def _catch_up(self, histories: list[tuple[int, list[int]]], drafts: dict[int, list[int]]) -> set[int]:
        """Run each history's tokens the context has not seen (the whole prompt the first time, then
        the tokens accepted since), in batches of at most `step_tokens`; the first draft token of each
        comes from its history's last row. Returns the slots still drafting."""
        rows: list[tuple[int, int, int, bool]] = []
        for slot, history in histories:
            start = min(common_prefix_length(self._seen.get(slot, []), history), len(history) - 1)
            self._context.remove(slot, start)  # rejected drafts (and the last token, run again for its logits)
            rows += [(history[p], p, slot, p == len(history) - 1) for p in range(start, len(history))]
        drafting: set[int] = set()
        capacity = self._context.shape.step_tokens
        for begin in range(0, len(rows), capacity):
            chunk = rows[begin : begin + capacity]
            samplers = {row[2]: i for i, row in enumerate(chunk) if row[3]}
            drafting |= self._run(chunk, drafts, samplers)
        return drafting

    def _run(self, rows, drafts: dict[int, list[int]], samplers: dict[int, int]) -> set[int]:
        """Decode `rows`; each slot in `samplers` (slot -> row) takes its next draft token from that
        row. Returns the slots whose draft goes on: sure of that token, or trusted where unsure."""
        import llama_cpp

        self._batch.fill(rows)
        self._context.decode(self._batch)
        going = set()
        for slot, row in samplers.items():
            pointer = llama_cpp.llama_get_logits_ith(self._context.pointer, row)
            token, confidence = _best_token(np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)))
            sure = confidence >= self._confidence
            drafts[slot].append(token)
            self._sure[slot].append(sure)
            if sure or self.unsure.trusted:
                going.add(slot)
        return going


def _best_token(logits: np.ndarray) -> tuple[int, float]:
    best = int(np.argmax(logits))
    return best, float(1.0 / np.exp(logits - logits[best]).sum())
