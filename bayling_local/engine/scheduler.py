"""What one step puts in its llama_batch: one token for every decoding sequence, then prompt chunks of
sequences still prefilling, up to a token budget, so a long prompt does not stall the decoders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bayling_local.engine.slots import Sequence


@dataclass
class StepPlan:
    """The batch rows (token, position, sequence id, wants logits) and which sequence samples from
    which row."""

    rows: list[tuple[int, int, int, bool]] = field(default_factory=list)
    samplers: list[tuple[int, Sequence]] = field(default_factory=list)
    """(row, sequence): the row whose logits a sequence samples its next token from (a decoding
    sequence with a draft samples from the rows after it too, one per drafted token)."""
    prefilled: list[tuple[Sequence, int]] = field(default_factory=list)
    """(sequence, prompt tokens) this step adds to a prefilling sequence's KV."""

    def add(self, token: int, position: int, sequence: Sequence, wants_logits: bool) -> None:
        if wants_logits:
            self.samplers.append((len(self.rows), sequence))
        self.rows.append((token, position, sequence.slot, wants_logits))


def plan_step(sequences: Iterable[Sequence], budget: int) -> StepPlan:
    """Decode tokens (with their drafts) first: they never wait, and the caller sized the drafts to
    fit; then prefill chunks in admission order. The rows go in
    slot order, because llama.cpp (one KV stream per sequence) splits a batch into micro-batches of
    consecutive sequence ids with equal token counts, and sorted rows make the fewest of them."""
    sequences = list(sequences)
    chunks: dict[int, tuple[Sequence, int]] = {}  # slot -> (sequence, prompt tokens this step)
    used = 0
    for s in sequences:
        if s.pending is not None and used < budget:
            chunks[s.slot] = (s, 0)
            used += 1 + len(s.draft)
    for s in sequences:
        if s.prefilling and used < budget:
            count = min(len(s.prompt) - s.prefilled, budget - used)
            chunks[s.slot] = (s, count)
            used += count
    plan = StepPlan()
    for slot in sorted(chunks):
        s, count = chunks[slot]
        if count:
            _add_prompt_chunk(plan, s, count)
        else:
            _add_decode_rows(plan, s)
    return plan


def _add_decode_rows(plan: StepPlan, s: Sequence) -> None:
    plan.add(s.pending, s.next_position, s, True)
    for offset, token in enumerate(s.draft, start=1):
        plan.rows.append((token, s.next_position + offset, s.slot, True))


def _add_prompt_chunk(plan: StepPlan, s: Sequence, count: int) -> None:
    end = s.prefilled + count
    for position in range(s.prefilled, end):
        plan.add(s.prompt[position], position, s, position == len(s.prompt) - 1)
    plan.prefilled.append((s, count))
