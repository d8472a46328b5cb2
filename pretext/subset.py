"""`subset`: the true labels on part of the training split (Paul et al., "Lottery Tickets on a Data Diet").

`fraction` of the training examples (round(fraction * n), at least 1), chosen by `select`:
- `random`: a seeded random draw (from `info.seed`, so each run seed draws its own subset);
- `easy` / `hard`: the examples with the lowest / highest EL2N score, the L2 norm of softmax error,
  averaged over `score_runs` short supervised trainings of `score_steps` iterations each (0 = auto:
  T // 10, the paper's epoch 20 of 200, at least 1 iteration). Ties go to the lower index.
fraction 1 is every example (no subset): `subset` is then `supervised`, i.e. rewinding to k, bit for bit.
The scoring trainings are extra supervised iterations the condition costs: the rewind point records them
(`scoring_iterations` = score_runs x score_steps) and the report states them next to the budget.
"""

import torch

from .base import Option, PretextTask, ScoreRequest

SELECTIONS = ("random", "easy", "hard")


class Subset(PretextTask):
    name = "subset"
    description = "true labels on a fraction of the examples: random, or the easiest/hardest by EL2N score"
    stochastic = False
    # its options, attributes once set (PretextTask.__init__)
    fraction: float
    select: str
    score_runs: int
    score_steps: int
    options = {"fraction": Option(0.1, "share of the training examples trained on"),
               "select": Option("random", "which: random, easy or hard (by EL2N score)"),
               "score_runs": Option(10, "EL2N: trainings averaged (easy/hard)"),
               "score_steps": Option(0, "EL2N: iterations of each scoring training; 0 = auto, T // 10")}

    def setup(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"subset fraction={self.fraction}: must be in (0, 1], e.g. 0.1")
        if self.select not in SELECTIONS:
            raise ValueError(f"subset select={self.select!r}: choose one of {', '.join(SELECTIONS)}")
        if self.score_runs < 1 or self.score_steps < 0:
            raise ValueError(f"subset score_runs={self.score_runs}, score_steps={self.score_steps}: "
                             f"need score_runs >= 1 and score_steps >= 0 (0 = auto)")
        if self.info.num_train < 1:
            raise ValueError("subset needs TaskInfo.num_train (the size of the training split)")
        self.size = max(1, round(self.fraction * self.info.num_train))

    def whole(self) -> bool:
        return self.size >= self.info.num_train

    def variant(self) -> str:
        return f"{self.select} {self.fraction:g}"

    def scoring(self) -> ScoreRequest | None:
        if self.select == "random" or self.whole():
            return None
        steps = self.score_steps or max(1, self.info.training_iterations // 10)
        return ScoreRequest("el2n", self.score_runs, steps)

    def examples(self, scores=None):
        n = self.info.num_train
        if self.whole():
            return None
        if self.select == "random":
            chosen = torch.randperm(n, generator=torch.Generator().manual_seed(self.info.seed))[:self.size]
        else:
            if scores is None or len(scores) != n:
                raise ValueError(f"subset select={self.select} needs one EL2N score per training example")
            order = torch.sort(torch.as_tensor(scores, dtype=torch.float64), stable=True,
                               descending=self.select == "hard").indices
            chosen = order[:self.size]
        return torch.sort(chosen).values
