"""Stability of a rewind point to SGD noise: linear mode connectivity (Frankle, Dziugaite, Roy & Carbin, ICML 2020).

From one start state (a rewind point at step k, dense or under a ticket's mask), two copies train [k, T)
with different data orders (data-order seeds; everything else equal), and the linear path between the two
final networks, theta(alpha) = (1 - alpha) theta_A + alpha theta_B, is evaluated at evenly spaced points:
`points` interior ones plus both endpoints (alpha = i / (points + 1)). The *instability* is the largest
error on the path minus the mean of the two endpoints' errors, in points, for the test error and for the
training error on a fixed subset of the training split (the first `TRAIN_SUBSET` examples of a seeded
permutation, without augmentation). A stable start state gives two networks in one linearly connected
basin: instability near 0.

BatchNorm along the path (`bn`):
- `interpolate` (default): every tensor of the state, BatchNorm's running statistics included, is
  interpolated; this is the network the two state dicts define at alpha, and at the endpoints exactly the
  two trained networks (their evaluated accuracies, bit for bit).
- `recompute`: the weights are interpolated, then the running statistics are recomputed at every point
  by a pass over the training subset in train mode, without gradients (a cumulative average, momentum
  None); the endpoints then differ slightly from the trained networks, whose statistics were running
  averages over training.
Masks: both copies train under one mask, so a pruned weight is exactly 0 in both and on the whole path
(0 * (1 - alpha) + 0 * alpha = 0); `check_mask_holds` verifies it.

Everything here is a pure function of the two state dicts, the data and the settings: deterministic on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from earlyphase.pretext.supervised import Supervised

from .augment import fork_rng
from .data import ImageData
from .evaluation import evaluate
from .plan import TrainPlan

BN_MODES = ("interpolate", "recompute")
TRAIN_SUBSET = 10_000  # training examples evaluated along the path (the whole split when smaller)
STABLE_BELOW = 2.0  # points of instability under which a start state counts as stable (the LMC paper's threshold)


@dataclass(frozen=True)
class PathSettings:
    points: int = 11  # interior points; the endpoints are added
    bn: str = "interpolate"

    def key(self) -> str:
        """How stability.json keys a result computed with these settings, e.g. bn=interpolate,points=11."""
        return f"bn={self.bn},points={self.points}"

    def alphas(self) -> list[float]:
        return [i / (self.points + 1) for i in range(self.points + 2)]


def interpolate(a: dict, b: dict, alpha: float) -> dict:
    """(1 - alpha) a + alpha b for every floating tensor (exact at alpha 0 and 1); integer buffers (BatchNorm's
    num_batches_tracked) come from a."""
    out = {}
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape:
            raise ValueError(f"the two networks differ in {name}: {tuple(x.shape)} vs {tuple(y.shape)}")
        out[name] = (1.0 - alpha) * x + alpha * y if x.is_floating_point() else x.clone()
    return out


def train_subset(data: ImageData, size: int = TRAIN_SUBSET) -> ImageData:
    """The training split's fixed evaluation subset as a test split (first `size` of a seeded permutation)."""
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:size]
    order = order.to(data.train_x.device)
    return ImageData(data.name, data.train_x, data.train_y, data.train_x[order], data.train_y[order],
                     data.num_classes, data.mean, data.std, data.crop_padding, data.flip)


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, images: torch.Tensor, normalise, batch_size: int) -> None:
    """Running statistics of every BatchNorm as the cumulative average over `images` (uint8), in train mode."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    was_training = model.training
    model.train()
    for lo in range(0, len(images), batch_size):
        model(normalise(images[lo:lo + batch_size]))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    model.train(was_training)


def evaluate_path(model: torch.nn.Module, state_a: dict, state_b: dict, data: ImageData, plan: TrainPlan,
                  settings: PathSettings) -> list[dict]:
    """Test and train-subset loss and error (fractions) at each alpha of the path; `model` is a scratch network."""
    subset = train_subset(data)
    normalise = data.normaliser()
    path = []
    with fork_rng(data.train_x.device):
        for alpha in settings.alphas():
            model.load_state_dict(interpolate(state_a, state_b, alpha))
            if settings.bn == "recompute":
                recompute_batchnorm(model, subset.test_x, normalise, plan.batch_size)
            test, train = evaluate(model, data, Supervised(), plan), evaluate(model, subset, Supervised(), plan)
            path.append({"alpha": alpha, "test_error": 1.0 - test["test_accuracy"], "test_loss": test["test_loss"],
                         "train_error": 1.0 - train["test_accuracy"], "train_loss": train["test_loss"]})
    return path


def instability(path: list[dict], key: str = "test_error") -> float:
    """Largest error on the path minus the mean of the endpoints' errors, in points (>= 0 up to rounding)."""
    ends = (path[0][key] + path[-1][key]) / 2
    return 100.0 * (max(p[key] for p in path) - ends)


def check_mask_holds(state: dict, mask: dict | None) -> None:
    """ValueError if an interpolated state has a non-zero weight where the mask prunes it."""
    for name, keep in (mask or {}).items():
        if torch.count_nonzero(state[name][~keep.to(state[name].device)]):
            raise ValueError(f"{name} is non-zero where the mask prunes it")


def summarise(path: list[dict], settings: PathSettings, seeds: tuple[int, int]) -> dict:
    """stability.json's content for one start state."""
    test, train = instability(path, "test_error"), instability(path, "train_error")
    return {
        "instability": test,
        "train_instability": train,
        "stable": bool(math.isfinite(test) and test < STABLE_BELOW),
        "points": settings.points,
        "bn": settings.bn,
        "data_seeds": list(seeds),
        "path": path,
    }
