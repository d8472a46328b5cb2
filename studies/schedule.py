"""Jobs as generators of trainings, so independent trainings can share a device (`--concurrent=K`).

A *job* (an IMP run, a pretraining, a study unit, a whole study or sweep) is a generator that yields a
list of `Training`s it needs next - trainings independent of each other, e.g. one IMP level's trunk,
controls and perturbations - receives their `TrainResult`s (same order) and finally returns its value.
Jobs never call the trainer themselves, so one driver decides how the trainings run:

- `run(job, concurrent=1)`: one after another with `trainer.train`, exactly as a plain loop would;
- `run(job, concurrent=K)`: trainings of one shape (same data, plan up to seed/save_at, same model
  shape, no step hooks) are stacked K at a time with `stacked.train_stacked` (torch.func + vmap); each
  result equals its sequential counterpart up to floating-point summation order (exactly in float64,
  tests/test_stacked.py), and either way of training resumes the other's checkpoints.

`gather(jobs)` makes one job of several independent ones, advanced in lock-step, so the trainings of
all of them meet in one list: a study's units, a sweep's runs. Units with equal shapes then stack: a
`reset` unit's level L and a pretext unit's level L both train [0, T), so they share a stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, Sequence

import torch

from .data import ImageData
from .errors import UsageError
from .stacked import StackedRun, _shared, train_stacked
from .trainer import Mask, TrainPlan, TrainResult, train

Job = Generator[list, list, object]  # yields list[Training], is sent list[TrainResult], returns its value


@dataclass
class Training:
    """One `trainer.train` call as data; `done` (optional) is called with its result."""

    model: torch.nn.Module
    data: ImageData
    plan: TrainPlan
    run_dir: Path
    task: object = None
    mask: Mask | None = None
    optimizer_state: dict | None = None
    sinks: Sequence[Callable[[dict], None]] = ()
    step_hooks: Sequence[Callable] = ()
    done: Callable[[TrainResult], None] | None = field(default=None, repr=False)

    def train(self) -> TrainResult:
        return train(self.model, self.data, self.plan, self.run_dir, task=self.task, mask=self.mask,
                     optimizer_state=self.optimizer_state, sinks=self.sinks, step_hooks=self.step_hooks)

    def stacked(self) -> StackedRun:
        return StackedRun(self.model, self.plan, self.run_dir, task=self.task, mask=self.mask,
                          optimizer_state=self.optimizer_state, sinks=self.sinks)


def stack_key(t: Training):
    """Trainings with equal keys can be stacked; None = must run alone (step hooks need train())."""
    if t.step_hooks:
        return None
    shapes = tuple((n, tuple(p.shape), p.dtype, p.device) for n, p in t.model.named_parameters())
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in t.model.named_buffers())
    return id(t.data), _shared(t.plan), shapes, buffers


def chunks(items: list, k: int) -> list[list]:
    """`items` in ceil(n/k) consecutive chunks of near-equal size (9 with k=8 -> 5+4, not 8+1)."""
    n = math.ceil(len(items) / k)
    size, extra = divmod(len(items), n)
    out, lo = [], 0
    for i in range(n):
        hi = lo + size + (i < extra)
        out.append(items[lo:hi])
        lo = hi
    return out


def run_trainings(trainings: list[Training], concurrent: int = 1) -> list[TrainResult]:
    """Every training, in order (concurrent=1) or stacked by shape, K at a time; results in input order."""
    results: list[TrainResult | None] = [None] * len(trainings)
    groups: dict = {}
    for i, t in enumerate(trainings):
        key = stack_key(t) if concurrent > 1 else None
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    for members in groups.values():
        for chunk in chunks(members, concurrent):
            if len(chunk) == 1:
                outcome = [trainings[chunk[0]].train()]
            else:
                outcome = train_stacked([trainings[i].stacked() for i in chunk], trainings[chunk[0]].data)
            for i, result in zip(chunk, outcome):
                results[i] = result
                if trainings[i].done is not None:
                    trainings[i].done(result)
    return results


def run(job: Job, concurrent: int = 1):
    """Drive `job` to the end, running what it yields; returns the job's value."""
    if concurrent < 1:
        raise UsageError(f"--concurrent={concurrent}: must be 1 (one training at a time) or more, e.g. 8 on a GPU")
    try:
        trainings = next(job)
        while True:
            trainings = job.send(run_trainings(trainings, concurrent))
    except StopIteration as stop:
        return stop.value


def gather(jobs: Sequence[Job]) -> Job:
    """One job made of independent ones: each round yields all their pending trainings; returns their values."""
    jobs = list(jobs)
    values: list = [None] * len(jobs)
    pending: dict[int, list] = {}

    def advance(i: int, sent) -> None:
        try:
            pending[i] = next(jobs[i]) if sent is None else jobs[i].send(sent)
        except StopIteration as stop:
            pending.pop(i, None)
            values[i] = stop.value

    for i in range(len(jobs)):
        advance(i, None)
    while pending:
        order = list(pending.items())
        results = yield [t for _, ts in order for t in ts]
        lo = 0
        for i, ts in order:
            advance(i, results[lo:lo + len(ts)])
            lo += len(ts)
    return values


def chain(jobs: Sequence[Job]) -> Job:
    """One job made of several, run one after another; returns their values."""
    values = []
    for job in jobs:
        values.append((yield from job))
    return values

