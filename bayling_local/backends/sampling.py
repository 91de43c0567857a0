"""Picking the next token from logits, the same way on every backend that samples in Python
(transformers, ONNX Runtime); llama.cpp samples in C with the same chain."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bayling_local.backends.base import GenerationConfig

if TYPE_CHECKING:
    import torch

REPEAT_PENALTY_WINDOW = 64
"""Tokens the repeat penalty looks back over: llama-cpp-python's default (`last_n_tokens_size`)."""


class Sampler:
    """Picks the next token from logits: greedy at temperature 0, else top-k, top-p, then temperature.

    The order is llama.cpp's sampler chain (penalties, top-k, top-p, temperature), so a config gives the
    same distribution on both backends; transformers' `generate` applies the temperature first. Works on
    the CPU in float32 with its own seeded generator: the same seed gives the same tokens on any device.
    """

    def __init__(self, config: GenerationConfig):
        self.config = config
        self._seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**63)
        self._generator = None

    def pick(self, logits: Any, history: Sequence[int]) -> int:
        """`logits`: a 1-D torch tensor or numpy array."""
        if self.config.temperature <= 0 and self.config.repeat_penalty == 1.0:
            # Plain greedy: an arg-max where the logits are, with no copy and no torch thread pool
            # (which would compete with ONNX Runtime's spinning workers for the same cores).
            return int(logits.argmax())
        import torch

        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self._seed)
        logits = torch.as_tensor(logits).detach().float().cpu().clone()
        recent = history[-REPEAT_PENALTY_WINDOW:]
        logits = apply_repeat_penalty(logits, recent, self.config.repeat_penalty)
        if self.config.temperature <= 0:
            return int(torch.argmax(logits))
        candidates, token_ids = top_k_sorted(logits, self.config.top_k)
        candidates = keep_top_p(candidates, self.config.top_p)
        probs = torch.softmax(candidates / self.config.temperature, dim=-1)
        return int(token_ids[torch.multinomial(probs, 1, generator=self._generator)])


def apply_repeat_penalty(logits: torch.Tensor, history: Sequence[int], penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019) on every token in `history`; 1.0 is off."""
    import torch

    if penalty == 1.0 or not history:
        return logits
    seen = torch.tensor(sorted({t for t in history if 0 <= t < logits.shape[-1]}), dtype=torch.long)
    scores = logits[seen]
    logits[seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits


def top_k_sorted(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top_k` best logits (all when top_k <= 0), best first, with their token ids."""
    import torch

    if 0 < top_k < logits.shape[-1]:
        return torch.topk(logits, top_k, sorted=True)
    return torch.sort(logits, descending=True)


def keep_top_p(sorted_logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Of logits sorted best first, keep those whose probabilities first add up to `top_p` (at least one)."""
    import torch

    if top_p >= 1.0:
        return sorted_logits
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop = mass_before >= top_p
    drop[0] = False
    return sorted_logits.masked_fill(drop, float("-inf"))
