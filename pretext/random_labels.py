"""`random_labels`: uniform random classes instead of the true labels (the paper's Section 5 control).

Each example's random label is drawn once, from `info.seed`, and indexed by the example's position
in its split, so it is fixed across epochs and runs. `fraction` is the share of examples relabelled
(exactly round(fraction * n) of them, chosen at random); the rest keep their true label. A relabelled
example keeps its true class by chance with probability 1/num_classes. The 10-way classifier is
trained (no head of its own). The test split is relabelled the same way, so the reported test
accuracy is against random labels (about chance when fraction=1).
"""

import torch

from .base import Option, PretextTask


class RandomLabels(PretextTask):
    name = "random_labels"
    description = "uniform random labels, drawn once per example from a seed (fraction relabelled)"
    stochastic = False
    # its options, attributes once set (PretextTask.__init__)
    fraction: float
    options = {"fraction": Option(1.0, "share of examples given a random label")}

    def setup(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"random_labels fraction={self.fraction}: must be in [0, 1]")
        n = self.info.num_examples
        if n < 1:
            raise ValueError("random_labels needs TaskInfo.num_examples (the size of the largest split)")
        gen = torch.Generator().manual_seed(self.info.seed)
        self.labels = torch.randint(self.info.num_classes, (n,), generator=gen)
        self.relabelled = torch.zeros(n, dtype=torch.bool)
        self.relabelled[torch.randperm(n, generator=gen)[:round(self.fraction * n)]] = True

    def batch(self, x, y, idx):
        if self.labels.device != y.device:  # move the tables once, to wherever the batches live
            self.labels, self.relabelled = self.labels.to(y.device), self.relabelled.to(y.device)
        return x, torch.where(self.relabelled[idx], self.labels[idx], y)
