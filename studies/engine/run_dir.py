"""A run directory's files, the one place that writes and reads them, for the single loop (trainer) and the
stacked one (stacked) alike, so a run written by either resumes in the other.

    metrics.jsonl    one record per evaluation: step, epoch, lr, train_loss, test_loss, test_accuracy
    checkpoint.pt    while running: model, optimiser, step, loss accumulator, RNG states, and a pretext task's own
                     modules (`task`: momentum teachers, queues, centres; PretextTask.build) (removed at the end)
    weights_{it}it.pt  model and optimiser at the plan's save_at steps (rewind points)
    final.pt         the final weights
    summary.json     the last evaluation's metrics, the trained span and `files`: the sha256 of final.pt and of
                     every weights_{it}it.pt; its presence marks the run finished

Every file a finished run's readers load (final.pt, weights) goes through `load_bound`, which checks it against the
digest its run recorded, so a file copied in from another run (another seed, another width) is refused in one line
naming it, never used. Runs finished before digests were recorded have none to check and load as they are.

Every file is written atomically (engine.checkpoints). Resuming cuts metrics.jsonl back to the checkpoint's
step, so records written after it are recomputed, never duplicated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import torch

from earlyphase.pretext.base import PretextTask

from . import checkpoints, records
from .bound import bound_problem, sha256
from .data import ImageData
from .errors import UsageError
from .evaluation import evaluate
from .plan import TrainPlan, TrainResult


def weights_file(run_dir: Path, it: int) -> Path:
    """The run's rewind point at step `it` (model and optimiser), written when the plan's save_at asks for it."""
    return Path(run_dir) / f"weights_{it}it.pt"


def final_file(run_dir: Path) -> Path:
    """The run's final weights."""
    return Path(run_dir) / "final.pt"


def finished_result(run_dir: Path, by_other_process: bool = False) -> TrainResult | None:
    """The result of a finished run (its summary.json exists), or None; a corrupt summary is a one-line error."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    summary = records.read(path, records.SUMMARY, fix="move it away to train that run again")
    return TrainResult(summary, Path(run_dir), skipped=True, by_other_process=by_other_process)


def load_bound(path: Path, map_location="cpu") -> dict:
    """checkpoints.load of a finished run's file, refused in one line when it is not the file its run wrote (a
    damaged file is named as such first, by checkpoints.load)."""
    state = checkpoints.load(path, map_location=map_location)
    why = bound_problem(path)
    if why:
        raise UsageError(f"{why}: put back the run's own file, or move {Path(path).parent} away to train it again")
    return state


def cpu_state(model: torch.nn.Module) -> dict:
    """The state dict on the CPU as plain contiguous tensors (the CUDA path trains in channels_last); a module's
    extra state (get_extra_state) is kept as it is."""
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v
            for k, v in checkpoints.state_dict_cpu(model).items()}


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class RunFiles:
    """One run's files while it trains: resume, weights at save_at steps, metrics records (and their sinks),
    checkpoints and the finish. The loop owns the model, the optimiser and the loss accumulator."""

    def __init__(self, run_dir: Path, plan: TrainPlan, sinks: Sequence[Callable[[dict], None]] = ()):
        self.dir, self.plan, self.sinks = Path(run_dir), plan, list(sinks)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.records: list[dict] = []
        self.resumed_from: int | None = None

    def resume(self, model, optimizer, device: torch.device, optimizer_state: dict | None = None,
               restore_rng: bool = True, task_modules: torch.nn.Module | None = None) -> tuple[int, torch.Tensor, int]:
        """(step, loss sum, loss count) to go on from: the checkpoint's, else the plan's start with
        `optimizer_state`; the metrics log is cut back to match, and the start's weights saved if asked.
        task_modules: a pretext task's own modules, restored from the checkpoint with the model."""
        self.dir.mkdir(parents=True, exist_ok=True)
        step, loss_sum, loss_count = self.plan.start, torch.zeros((), device=device), 0
        if (self.dir / "checkpoint.pt").exists():
            state = checkpoints.load(self.dir / "checkpoint.pt", map_location=device)
            model.load_state_dict(state["model"])
            if (task_modules is None) != (state.get("task") is None):
                raise UsageError(f"{self.dir / 'checkpoint.pt'} was written by a task "
                                 f"{'without' if task_modules is not None else 'with'} modules of its own: move it "
                                 f"away to train {self.dir.name} again from its start")
            if task_modules is not None:
                checkpoints.load_full_state(task_modules, state["task"])
            optimizer.load_state_dict(state["optimizer"])
            step, loss_sum, loss_count = state["step"], state["loss_sum"].to(device), state["loss_count"]
            self.resumed_from = step
            if restore_rng:
                _set_rng_state(state["rng"], device)
        elif optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        self.records = checkpoints.truncate_jsonl(
            self.metrics_path,
            lambda r: (
                self.resumed_from is not None and isinstance(r.get("step"), int) and r["step"] <= self.resumed_from
            ),
        )
        return step, loss_sum, loss_count

    def save_start(self, model, optimizer, step: int) -> None:
        """weights at the plan's start, if asked for and the run starts (not resumes) there."""
        if step == self.plan.start and self.plan.start in self.plan.save_at:
            self.save_weights(model, optimizer, step)

    def save_weights(self, model, optimizer, it: int) -> None:
        """weights_{it}it.pt: a rewind point (model and optimiser at step it). The optimiser lists the model's
        parameters first; `task_parameters` counts those of a task's own modules that follow them."""
        extra = sum(len(group["params"]) for group in optimizer.param_groups) - len(list(model.parameters()))
        checkpoints.save_atomic({"model": cpu_state(model), "optimizer": optimizer.state_dict(), "step": it,
                                 **({"task_parameters": extra} if extra else {})},
                                weights_file(self.dir, it))

    def checkpoint(self, model, optimizer, step: int, loss_sum: torch.Tensor, loss_count: int,
                   device: torch.device, task_modules: torch.nn.Module | None = None) -> None:
        task = {"task": checkpoints.full_state(task_modules)} if task_modules is not None else {}
        checkpoints.save_atomic({"model": cpu_state(model), "optimizer": optimizer.state_dict(), "step": step,
                                 "loss_sum": loss_sum.cpu(), "loss_count": loss_count, "rng": _rng_state(device),
                                 **task}, self.dir / "checkpoint.pt")

    def record(self, step: int, per_epoch: int, lr: float, train_loss: float, metrics: dict) -> dict:
        """One evaluation's record: appended to metrics.jsonl and passed to the sinks."""
        record = {"step": step, "epoch": round(step / per_epoch, 4), "lr": lr, "train_loss": train_loss, **metrics}
        checkpoints.append_text(self.metrics_path, json.dumps(record) + "\n")
        self.records.append(record)
        for sink in self.sinks:
            sink(record)
        return record

    def finish(self, model, data: ImageData, task: PretextTask) -> TrainResult:
        """final.pt and summary.json (the last evaluation's metrics, the files' digests), then the checkpoint goes."""
        final = self.records[-1] if self.records else {**evaluate(model, data, task, self.plan), "train_loss": None}
        checkpoints.save_atomic({"model": cpu_state(model), "step": self.plan.end}, final_file(self.dir))
        bound = [final_file(self.dir), *sorted(self.dir.glob("weights_*it.pt")),
                 *[self.dir / "mask.pt"] * (self.dir / "mask.pt").is_file()]  # an IMP part's mask, written before
        files = {path.name: sha256(path) for path in bound}
        summary = {"test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
                   "train_loss": final["train_loss"], "start_step": self.plan.start, "end_step": self.plan.end,
                   "iterations_per_epoch": data.iterations_per_epoch(self.plan.batch_size), "files": files}
        checkpoints.write_json_atomic(self.dir / "summary.json", summary)
        (self.dir / "checkpoint.pt").unlink(missing_ok=True)
        return TrainResult(summary, self.dir, resumed_from=self.resumed_from)
