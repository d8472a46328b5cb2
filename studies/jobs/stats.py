"""Early-phase statistics (the paper's Section 3), tracked during any training as a trainer step hook.

`--track_steps=4000it` (any training command; empty = off) records, over the first 4000 iterations of
that training, at every iteration up to 100 and then at ~50 points per decade (101, 106, ..., plus the
window's last step), per prunable layer (conv/linear weights) and for the whole network (all of them
together):
- `grad_norm`: L2 norm of the loss gradient of that iteration (over surviving weights; weight decay and
  momentum are not part of it: the optimiser leaves `.grad` as backward made it);
- `weight_norm`: L2 norm of the weights after the iteration's update and mask;
- `dist_REF`, `sign_diff_REF`: L2 distance from a reference state, and the fraction of surviving weights
  whose sign differs from it (0 counts as its own sign, so pruned weights never count), where REF is
  - `init`: the network's original initialisation (the seed's initialisation that the dense run and
    pretraining start from; level 0's weights_0it.pt), masked like the run; for a run that starts
    there (dense training, level 0, random reinitialisation, pretraining) it is the start state;
  - `rewind`: the run's own start state, when it is not the initialisation (IMP levels >= 1 rewound to
    k, perturbed tickets, level 0 from a --rewind_from point);
- `train_loss`: the loss of the iteration's batch; `test_accuracy` / `test_loss`: the task's test
  metrics at 10 points per decade (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, ...), measured in the hook (eval mode,
  RNG forked, so training is bit-identical with tracking on or off, which is why the field is a
  platform field).
The record at step s holds the weights after s iterations and the gradient and loss of iteration s.
Steps are absolute (a ticket rewound to 500 tracks 501, 502, ...).

Cost: the statistics of a point are computed on the device with foreach kernels and stacked into one
tensor; the host reads them in one transfer per epoch (no `.item()` per step). After the window the
hook is a single comparison.

Storage and resume: `stats.jsonl` in the run directory, one record per tracked step, with per-layer
values under "layers"; `stats_meta.json` names the references and surviving-weight counts. Pending
points are written at every epoch boundary (before the trainer writes a checkpoint there), at the end of
the window and at the end of training. On the first hook call of a (resumed) run the file is cut to the
steps before that call, so points written after the last checkpoint are recomputed, never duplicated,
and none before it is lost. Records also go to the metrics sinks (W&B) as `stats/...` values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import torch

from earlyphase.imp.masks import prunable_names
from earlyphase.pretext.supervised import Supervised

from ..engine.checkpoints import append_text, read_jsonl, truncate_jsonl, write_json_atomic
from ..engine.evaluation import evaluate as evaluate_task
from . import setup

STATS_FILE, META_FILE = "stats.jsonl", "stats_meta.json"
EVERY_STEP_UNTIL = 100
PER_DECADE = 50
EVAL_PER_DECADE = 10  # PER_DECADE must be a multiple of it


def _log_grid(window: int, every: int) -> set[int]:
    """round(10 ** (k / PER_DECADE)) for k = 0, every, 2 * every, ... up to `window`."""
    out, k = set(), 0
    while (offset := round(10 ** (k / PER_DECADE))) <= window:
        out.add(offset)
        k += every
    return out


def tracked_offsets(window: int) -> list[int]:
    """Offsets from the start (1-based iterations) at which statistics are recorded."""
    dense = set(range(1, min(window, EVERY_STEP_UNTIL) + 1))
    return sorted(dense | {o for o in _log_grid(window, 1) if o > EVERY_STEP_UNTIL} | ({window} if window else set()))


def eval_offsets(window: int) -> list[int]:
    """Offsets at which test metrics are measured too: every PER_DECADE // EVAL_PER_DECADE-th point of the
    same logarithmic grid, so a subset of tracked_offsets."""
    return sorted(_log_grid(window, PER_DECADE // EVAL_PER_DECADE) | ({window} if window else set()))


def read_stats(run_dir: Path) -> list[dict]:
    """The records of `run_dir/stats.jsonl` (a line cut short by a kill is skipped)."""
    return read_jsonl(Path(run_dir) / STATS_FILE)


class StatsTracker:
    """A trainer step hook recording the statistics above; see the module docstring."""

    def __init__(self, run_dir: Path, *, start: int, window: int, end: int, per_epoch: int, names: Sequence[str],
                 references: dict[str, dict], mask: dict | None = None,
                 evaluate: Callable[[torch.nn.Module], dict] | None = None,
                 sinks: Sequence[Callable[[dict], None]] = (), descriptions: dict | None = None):
        self.run_dir, self.start, self.end, self.per_epoch = Path(run_dir), start, end, per_epoch
        self.until = min(start + window, end)
        self.track = set(tracked_offsets(self.until - start))
        self.evals = set(eval_offsets(self.until - start)) if evaluate else set()
        self.names, self.mask, self.evaluate, self.sinks = list(names), mask, evaluate, list(sinks)
        self.references = references  # {ref: state dict}, moved and masked when training starts
        self.descriptions = descriptions or {}
        self.survivors = [int(mask[n].sum()) if mask and n in mask else None for n in self.names]
        self.pending, self.tests, self.started, self.done = [], {}, False, self.until <= start

    # ------------------------------------------------------------------ set-up at the first call
    def _begin(self, step: int, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        self.params = [params[n] for n in self.names]
        device = self.params[0].device
        self.masks = None
        if self.mask:
            self.masks = [self.mask[n].to(device, p.dtype) if n in self.mask else torch.ones_like(p)
                          for n, p in zip(self.names, self.params)]
        self.survivors = [s if s is not None else p.numel() for s, p in zip(self.survivors, self.params)]
        self.refs = {}
        for ref, state in self.references.items():
            tensors = [state[n].detach().to(device, p.dtype) for n, p in zip(self.names, self.params)]
            if self.masks:
                tensors = torch._foreach_mul(tensors, self.masks)
            self.refs[ref] = (tensors, torch._foreach_sign(tensors))
        self.references = None
        truncate_jsonl(self.run_dir / STATS_FILE,  # resumed: keep what precedes
                       lambda r: isinstance(r.get("step"), int) and r["step"] < step)
        write_json_atomic(self.run_dir / META_FILE, {
            "start": self.start, "until": self.until, "references": {r: self.descriptions.get(r, r) for r in self.refs},
            "layers": dict(zip(self.names, self.survivors)), "whole_network": "all layers listed together"})
        self.started = True

    # ------------------------------------------------------------------ per step
    @torch.no_grad()
    def _measure(self, loss: torch.Tensor) -> torch.Tensor:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.masks:
            grads = torch._foreach_mul(grads, self.masks)
        values = [loss.detach().float().reshape(())]
        values += torch._foreach_norm(grads)
        values += torch._foreach_norm(self.params)
        signs = torch._foreach_sign(self.params)
        for tensors, ref_signs in self.refs.values():
            values += torch._foreach_norm(torch._foreach_sub(self.params, tensors))
            values += [torch.ne(s, r).sum() for s, r in zip(signs, ref_signs)]
        return torch.stack([v.float() for v in values])

    def __call__(self, step: int, model: torch.nn.Module, loss: torch.Tensor) -> None:
        if self.done:
            return
        if not self.started:
            self._begin(step, model)
        offset = step - self.start
        if offset in self.track:
            self.pending.append((step, self._measure(loss)))
            if offset in self.evals:
                self.tests[step] = self.evaluate(model)
        if step % self.per_epoch == 0 or step >= self.until:
            self.flush()
        if step >= self.until:
            self.done = True
            self.params = self.refs = self.masks = None  # release the device copies

    # ------------------------------------------------------------------ output
    def _record(self, step: int, row: list[float]) -> dict:
        n = len(self.names)
        grad, weight = row[1:1 + n], row[1 + n:1 + 2 * n]
        layers = {name: {"grad_norm": grad[i], "weight_norm": weight[i]} for i, name in enumerate(self.names)}
        record = {
            "step": step,
            "train_loss": row[0],
            "grad_norm": math.hypot(*grad),
            "weight_norm": math.hypot(*weight),
        }
        at = 1 + 2 * n
        total = sum(self.survivors)
        for ref in self.refs:
            dist, diff = row[at:at + n], row[at + n:at + 2 * n]
            at += 2 * n
            record[f"dist_{ref}"] = math.hypot(*dist)
            record[f"sign_diff_{ref}"] = sum(diff) / total if total else 0.0
            for i, name in enumerate(self.names):
                layers[name][f"dist_{ref}"] = dist[i]
                layers[name][f"sign_diff_{ref}"] = diff[i] / self.survivors[i] if self.survivors[i] else 0.0
        record.update(self.tests.pop(step, {}))
        record["layers"] = layers
        return record

    def flush(self) -> None:
        """Write the pending points (one device-to-host transfer) and pass them to the sinks."""
        if not self.pending:
            return
        rows = torch.stack([row for _, row in self.pending]).cpu().tolist()
        records = [self._record(step, row) for (step, _), row in zip(self.pending, rows)]
        self.pending = []
        append_text(self.run_dir / STATS_FILE, "".join(json.dumps(r) + "\n" for r in records))
        for record in records:
            values = {f"stats/{k}": v for k, v in record.items() if k not in ("step", "layers") and v is not None}
            for sink in self.sinks:
                sink({"step": record["step"], **values})


def tracker_hooks(cfg, model: torch.nn.Module, plan, data, run_dir: Path, *, task=None, mask: dict | None = None,
                  init: dict | None = None, sinks=(), names: Sequence[str] | None = None) -> list:
    """`[StatsTracker]` for a train() call when `cfg.track_steps` is set, else `[]`.

    Call it right before train(), with `model` at the run's start state. init: the original
    initialisation (default: the start state); when the start state differs from it, the start state
    is tracked as `rewind` too. names: the layers (default: every conv/linear weight).
    """
    text = getattr(cfg, "track_steps", "")
    if not text:
        return []
    per_epoch = data.iterations_per_epoch(plan.batch_size)
    window = setup.parse_step(text, per_epoch, "track_steps").it
    start_state = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    chosen = set(names or prunable_names(model))
    names = [n for n, _ in model.named_parameters() if n in chosen]
    references = {"init": start_state if init is None else init}
    descriptions = {"init": "this training's start state" if init is None else "the original initialisation"}
    keep = lambda n: mask[n].cpu() if mask and n in mask else True  # noqa: E731  (compare survivors only)
    if init is not None and any(not torch.equal(init[n].cpu() * keep(n), start_state[n] * keep(n)) for n in names):
        references["rewind"], descriptions["rewind"] = start_state, "this training's start state (the rewind point)"
    task = task or Supervised()
    return [StatsTracker(run_dir, start=plan.start, window=window, end=plan.end, per_epoch=per_epoch, names=names,
                         references=references, mask=mask, evaluate=lambda m: evaluate_task(m, data, task, plan),
                         sinks=sinks, descriptions=descriptions)]
