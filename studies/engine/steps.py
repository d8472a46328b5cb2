"""Step strings, as in open_lth: `500it`, `2ep`, `1ep100it`, resolved against iterations per epoch."""

from __future__ import annotations

import re
from dataclasses import dataclass

_STEP = re.compile(r"^(?:(\d+)ep)?(?:(\d+)it)?$")


class StepError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Step:
    """A training step: `it` iterations in total, `per_epoch` iterations per epoch."""

    it: int
    per_epoch: int

    @classmethod
    def parse(cls, text: str, per_epoch: int) -> "Step":
        match = _STEP.match(str(text).strip())
        if not match or not any(match.groups()):
            raise StepError(f"bad step {text!r}: write it as e.g. '500it', '2ep' or '1ep100it'")
        epochs, its = (int(g) if g else 0 for g in match.groups())
        return cls(epochs * per_epoch + its, per_epoch)

    @property
    def ep(self) -> int:
        return self.it // self.per_epoch

    @property
    def it_in_ep(self) -> int:
        return self.it % self.per_epoch

    def __str__(self) -> str:
        return f"{self.it}it"

