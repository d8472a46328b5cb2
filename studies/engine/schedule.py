"""Jobs as generators of trainings, so independent trainings can share a device (`--concurrent=K`).

A *job* (an IMP run, a pretraining, a study unit, a whole study or sweep) is a generator that yields a
list of `Training`s it needs next - trainings independent of each other, e.g. one IMP level's trunk,
controls and perturbations - receives their `TrainResult`s (same order) and finally returns its value.
Jobs never call the trainer themselves, so one driver decides how the trainings run:

- `run(job, concurrent=1)`: one after another with `trainer.train`, exactly as a plain loop would;
- `run(job, concurrent=K, engine=...)`: K trainings at a time, by one of two engines:
  - `vmap`: trainings of one shape (same data, plan up to seed/save_at, same model shape, no step
    hooks, no pretext task with modules or a forward of its own: those train alone beside the stack)
    are stacked with `stacked.train_stacked` (torch.func); each result equals its sequential
    counterpart up to floating-point summation order (exactly in float64, tests/test_stacked.py);
  - `streams`: any K trainings advance one step each in turn (`trainer.train_steps`), each on its own
    CUDA stream, so the GPU overlaps their small kernels; every training runs exactly its own
    operations, so results are bit-identical to sequential runs, and step hooks work.
  The default is streams, by measurement and because its results are those of sequential runs (so a
  run directory's contents never depend on --concurrent, a field outside the run's hash). On an H200
  (`earlyphase bench --gpu-suite`, CIFAR-10-sized ResNet-20 trainings, bf16, whole-step CUDA graphs)
  eight trainings on eight streams ran 76.6k images/s in aggregate, the vmapped stack of eight 50.3k
  (vmap turns each convolution into a grouped one with layout copies), one training 45.2k. On 2 CPU
  cores neither engine gains on the quick study (vmap: 2:01 against 1:57 sequential); vmap gained on
  a study of width-16 models at batch 64 (43 s against 55 s), where per-operation overhead dominates.
  vmap's rounding differences grow through training like any float32 perturbation (the quick study's
  accuracies moved by up to 3 points), so use it knowing the runs are not bit-for-bit the sequential ones.
Either engine resumes the other's checkpoints (they are train()'s).

Several processes may share one --out (sweep agents): every training holds its run directory's lock
(locks.py). The engines take the free locks without waiting, train those, release them, and then wait
for the rest one at a time holding none, so two processes never deadlock; a run that another process
trained meanwhile is skipped (its TrainResult says `by_other_process`), never trained twice.

`gather(jobs)` makes one job of several independent ones, advanced in lock-step, so the trainings of
all of them meet in one list: a study's units, a sweep's runs. Trainings of equal shape then stack: the
levels of the units at one k (a pretext condition and its `rewind k` reference) all train [k, T).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, Sequence

import torch

from earlyphase.pretext.base import PretextTask, has_own_step

from . import locks
from .data import ImageData
from .errors import UsageError
from .plan import Mask, TrainPlan, TrainResult, all_done
from .run_dir import finished_result
from .stacked import StackedRun, train_stacked
from .trainer import train, train_steps

Job = Generator[list, list, object]  # yields list[Training], is sent list[TrainResult], returns its value


@dataclass
class Training:
    """One `trainer.train` call as data; `done` (optional) is called with its result."""

    model: torch.nn.Module
    data: ImageData
    plan: TrainPlan
    run_dir: Path
    task: PretextTask | None = None
    mask: Mask | None = None
    optimizer_state: dict | None = None
    sinks: Sequence[Callable[[dict], None]] = ()
    step_hooks: Sequence[Callable] = ()
    done: Callable[[TrainResult], None] | None = field(default=None, repr=False)

    def train(self) -> TrainResult:
        return train(self.model, self.data, self.plan, self.run_dir, task=self.task, mask=self.mask,
                     optimizer_state=self.optimizer_state, sinks=self.sinks, step_hooks=self.step_hooks)

    def steps(self, lock: locks.RunLock | None = None):
        return train_steps(self.model, self.data, self.plan, self.run_dir, task=self.task, mask=self.mask,
                           optimizer_state=self.optimizer_state, sinks=self.sinks, step_hooks=self.step_hooks,
                           lock=lock)

    def stacked(self) -> StackedRun:
        return StackedRun(self.model, self.plan, self.run_dir, task=self.task, mask=self.mask,
                          optimizer_state=self.optimizer_state, sinks=self.sinks)


def stack_key(t: Training):
    """Trainings with equal keys can be stacked; None = must run alone (step hooks, and a task that steps its own
    way, need train())."""
    if t.step_hooks or (t.task is not None and has_own_step(t.task)):
        return None
    shapes = tuple((n, tuple(p.shape), p.dtype, p.device) for n, p in t.model.named_parameters())
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in t.model.named_buffers())
    return id(t.data), t.plan.shared(), shapes, buffers


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


ENGINES = ("streams", "vmap")


def train_interleaved(trainings: Sequence[Training]) -> list[TrainResult]:
    """The trainings advanced one step each in turn, each on its own CUDA stream (off CUDA: in turn only).

    Trainings whose run directory another process holds are not waited for while this process holds
    the others' locks: they come afterwards, one at a time (usually found finished, then skipped)."""
    results: list[TrainResult | None] = [None] * len(trainings)
    unfinished = {k: t.run_dir for k, t in enumerate(trainings) if finished_result(t.run_dir) is None}
    held, busy = locks.take_free(unfinished)
    try:
        ready = [k for k in range(len(trainings)) if k not in busy]  # held, or finished (read without a lock)
        for k, result in zip(ready, _interleave([trainings[k] for k in ready], [held.get(k) for k in ready])):
            results[k] = result
    finally:
        locks.release_all(held.values())
    for k in busy:
        results[k] = trainings[k].train()  # waits for the other process, holding no lock
    return all_done(results)


def _interleave(trainings: Sequence[Training], held: Sequence[locks.RunLock | None]) -> list[TrainResult]:
    """train_interleaved's work on trainings that are finished or whose locks this process holds (`held`)."""
    if not trainings:
        return []
    device = next(trainings[0].model.parameters()).device
    cuda = device.type == "cuda"
    here = torch.cuda.current_stream(device) if cuda else None
    streams = [torch.cuda.Stream(device) if cuda else None for _ in trainings]
    for s in streams:
        if s is not None and here is not None:
            s.wait_stream(here)  # models and data were made on the current stream
    running = {k: t.steps(lock) for k, (t, lock) in enumerate(zip(trainings, held))}
    results: list[TrainResult | None] = [None] * len(trainings)
    try:
        while running:
            for k, steps in list(running.items()):
                with torch.cuda.stream(streams[k]) if cuda else nullcontext():
                    try:
                        next(steps)
                    except StopIteration as stop:
                        results[k] = stop.value
                        del running[k]
    finally:
        for steps in running.values():  # one training failed: stop the others (their files stay resumable)
            steps.close()
        for s in streams:
            if s is not None and here is not None:
                here.wait_stream(s)
    return all_done(results)


def run_trainings(trainings: list[Training], concurrent: int = 1, engine: str = "streams") -> list[TrainResult]:
    """Every training, in order (concurrent=1) or K at a time by `engine`; results in input order.

    A run directory asked for twice in one round (two units sharing one scoring run) trains once: the
    repeats run after the rest, one by one, and find it finished."""
    results: list[TrainResult | None] = [None] * len(trainings)
    groups: dict = {}
    seen, repeats = set(), []
    for i, t in enumerate(trainings):
        where = Path(t.run_dir).resolve()
        if where in seen:
            repeats.append(i)
            continue
        seen.add(where)
        if concurrent == 1:
            key = None
        elif engine == "streams":  # any trainings interleave; one group per device
            key = next(t.model.parameters()).device
        else:
            key = stack_key(t)
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    for members in groups.values():
        for chunk in chunks(members, concurrent):
            if len(chunk) == 1:
                outcome = [trainings[chunk[0]].train()]
            elif engine == "streams":
                outcome = train_interleaved([trainings[i] for i in chunk])
            else:
                outcome = train_stacked([trainings[i].stacked() for i in chunk], trainings[chunk[0]].data)
            for i, result in zip(chunk, outcome):
                results[i] = result
                _tell_done(trainings[i], result)
    for i in repeats:
        result = results[i] = trainings[i].train()
        _tell_done(trainings[i], result)
    return all_done(results)


def _tell_done(training: Training, result: TrainResult) -> None:
    if training.done is not None:
        training.done(result)


def check_settings(concurrent: int, engine: str) -> None:
    if concurrent < 1:
        raise UsageError(f"--concurrent={concurrent}: must be 1 (one training at a time) or more, e.g. 8 on a GPU")
    if engine not in ENGINES:
        raise UsageError(f"--concurrent_engine={engine}: choose {', '.join(ENGINES)}")


def run(job: Job, concurrent: int = 1, engine: str = "streams"):
    """Drive `job` to the end, running what it yields; returns the job's value."""
    check_settings(concurrent, engine)
    try:
        trainings = next(job)
        while True:
            trainings = job.send(run_trainings(trainings, concurrent, engine))
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

