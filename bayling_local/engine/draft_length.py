"""How many tokens a sequence drafts next: a long run while drafts are accepted, backing off when not.

A rejected draft token costs a row of the model's batch and, with a draft model, a draft pass; a run
of rejections means the draft does not know this text, so the length shrinks to what was accepted
and, after repeated misses, drafting pauses for a few steps before it probes again.
"""

from __future__ import annotations

from dataclasses import dataclass

PAUSE_STEPS = 8
"""Steps without drafting after repeated misses."""
MISSES_BEFORE_PAUSE = 2


@dataclass
class DraftLength:
    most: int
    fixed: bool = False
    now: int = 0
    misses: int = 0
    paused: int = 0

    def __post_init__(self) -> None:
        self.now = self.most

    def next(self) -> int:
        """Tokens to draft this step (0: decode plainly)."""
        if self.fixed:
            return self.most
        if self.paused:
            self.paused -= 1
            return 0
        return self.now

    def record(self, drafted: int, accepted: int) -> None:
        """After a verification: `accepted` of `drafted` tokens were what the model itself chose."""
        if self.fixed or drafted == 0:
            return
        if accepted == drafted:
            self.now, self.misses = min(self.most, self.now + 2), 0
        elif accepted:
            self.now, self.misses = max(1, accepted + 1), 0
        else:
            self.now, self.misses = max(1, self.now // 2), self.misses + 1
            if self.misses >= MISSES_BEFORE_PAUSE:
                self.paused, self.misses = PAUSE_STEPS, 0
