"""Per-example scores a pretext task asks for (`PretextTask.scoring`), as a resumable run of their own.

EL2N (Paul et al., "Deep Learning on a Data Diet", 2021): train `runs` supervised networks for `steps`
iterations each (the training's own schedule, batch size and augmentation; run r from the initialisation
and data order seeded by (seed, "el2n", r), so the runs are independent of each other and of the network
being studied), then score every training example, un-augmented and in eval mode, by the L2 norm of
softmax(output) - one_hot(label), averaged over the runs.

Run directory `scores_el2n_HASH` beside the other runs, named by what the scores depend on (dataset,
model, width, seed, schedule, batch size, augmentation; runs and steps), not by the task that asked: every
task and fraction with these settings shares it. Each scoring training is a run of its own below it
(`run_{r}`: resumable, locked, skipped when finished), and `scores.pt` is written last and atomically; when
present nothing is recomputed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.nn import functional as F

from earlyphase.pretext.base import ScoreRequest

from ..engine import checkpoints
from ..engine.augment import derive_seed
from ..engine.bound import sha256
from ..engine.data import ImageData
from ..engine.errors import UsageError
from ..engine.run_dir import final_file, load_bound
from ..engine.schedule import Job, Training
from . import setup
from .config import TrainConfig, run_dir

KINDS = ("el2n",)
VERSION = 1  # of the scoring procedure: a change renames every scores run


def scores_dir(cfg: TrainConfig, request: ScoreRequest) -> Path:
    """runs/scores_{kind}_{hash}: only the supervised training's fields name it (pretraining's own and
    the tasks' option fields cannot change it; T enters only through the resolved `steps`)."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unused = {f.name for f in dataclasses.fields(cfg)} - train_fields | {"training_steps"}
    return run_dir("scores", cfg, unused=unused, label=request.kind,
                   extra={"runs": request.runs, "steps": request.steps, "version": VERSION})


def work(cfg: TrainConfig, data: ImageData, device: torch.device, request: ScoreRequest) -> Job:
    """The scores as a scheduler job (`request.runs` trainings); returns (run dir, float64 scores per example)."""
    if request.kind not in KINDS:
        raise UsageError(f"score kind {request.kind!r}: earlyphase computes {', '.join(KINDS)}")
    if request.runs < 1 or request.steps < 1:
        raise UsageError(f"scores need runs >= 1 and steps >= 1 (got {request.runs}, {request.steps})")
    out = scores_dir(cfg, request)
    path = out / "scores.pt"
    if path.exists():
        return out, _read(path, len(data.train_y), out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json_atomic(out / "config.json", {**setup.config_record("scores", cfg), "kind": request.kind,
                                                         "runs": request.runs, "steps": request.steps,
                                                         "version": VERSION})
    per_epoch = data.iterations_per_epoch(cfg.batch_size)
    rates = setup.schedule(cfg, per_epoch)
    trainings = []
    for r in range(request.runs):
        model = setup.make_model(cfg, data, device, seed=derive_seed(cfg.seed, "el2n", r))
        plan = setup.plan_for(cfg, device, schedule=rates, batch_size=cfg.batch_size, start=0, end=request.steps,
                              seed=derive_seed(cfg.data_order_seed(), "el2n", r),
                              progress=f"el2n scoring {r + 1}/{request.runs} {out.name}")
        trainings.append(Training(model, data, plan, out / f"run_{r}"))
    yield trainings
    total = torch.zeros(len(data.train_y), dtype=torch.float64)
    for t in trainings:  # the final weights from disk: the same whether trained now or found finished
        t.model.load_state_dict(load_bound(final_file(t.run_dir), map_location=device)["model"])
        total += el2n(t.model, data).double().cpu()
    scores = total / request.runs
    sources = {t.run_dir.name: sha256(final_file(t.run_dir)) for t in trainings}  # what the scores came from
    checkpoints.save_atomic({"kind": request.kind, "runs": request.runs, "steps": request.steps,
                             "scores": scores, "run": out.name, "sources": sources}, path)
    return out, scores


@torch.no_grad()
def el2n(model: torch.nn.Module, data: ImageData, batch: int = 1000) -> torch.Tensor:
    """Each training example's ||softmax(f(x)) - one_hot(y)||_2, un-augmented, in eval mode."""
    was_training = model.training
    model.eval()
    normalise = data.normaliser()
    out = []
    for lo in range(0, len(data.train_y), batch):
        x, y = data.train_x[lo:lo + batch], data.train_y[lo:lo + batch]
        probs = F.softmax(model(normalise(x)).float(), dim=1)
        out.append((probs - F.one_hot(y, probs.shape[1]).float()).norm(dim=1))
    model.train(was_training)
    return torch.cat(out)


def _read(path: Path, n: int, out: Path) -> torch.Tensor:
    """scores.pt, checked: one finite score per example, written by this scores run (its name) from the final.pt
    files its scoring runs hold now (their sha256); files written before these records are checked for shape."""
    saved = checkpoints.load(path)
    scores = saved.get("scores") if isinstance(saved, dict) else None
    if isinstance(saved, dict) and saved.get("run", out.name) != out.name:
        raise UsageError(f"{path} was written by {saved['run']}, not by {out.name} (copied from another scores run?): "
                         f"move it away to recompute it")
    for name, digest in (saved.get("sources") or {}).items() if isinstance(saved, dict) else ():
        final = out / str(name) / "final.pt"
        if final.is_file() and sha256(final) != digest:
            raise UsageError(f"{path} was computed from another {name}/final.pt than the one there now: move "
                             f"{path} away to recompute it")
    if not isinstance(scores, torch.Tensor) or scores.shape != (n,):
        raise UsageError(f"{path} does not hold one score per training example ({n}): move it away to recompute it")
    if not torch.isfinite(scores).all():  # NaN would sort anywhere: an `easy` subset chosen by nothing
        raise UsageError(f"{path} holds scores that are not finite numbers: move it away to recompute it")
    return scores.double()
