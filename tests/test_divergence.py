"""A run whose loss or weights become non-finite stops in one line, unfinished, with nothing non-finite saved."""

import math

import pytest
import torch

from earlyphase.studies.engine import checkpoints
from earlyphase.studies.engine.errors import TrainingDiverged
from earlyphase.studies.engine.schedule import Training, run_trainings
from earlyphase.studies.engine.stacked import StackedRun, train_stacked
from earlyphase.studies.engine.trainer import train
from earlyphase.studies.jobs import setup
from earlyphase.studies.jobs.config import TrainConfig

from conftest import TINY, one_line_error, run_cli


# ------------------------------------------------------------------------------- non-finite losses
def test_a_diverging_run_stops_with_one_line_and_is_not_marked_finished(out, capsys):
    code, stdout, stderr = run_cli(["train", f"--out={out}", *TINY, "--lr=1e30"], capsys)
    line = one_line_error(code, stderr, "training diverged", "the training loss was nan at step 2", "--lr")
    (folder,) = out.iterdir()
    assert str(folder) in line and stdout == ""
    assert not (folder / "summary.json").exists() and not (folder / "final.pt").exists()
    assert not list(folder.glob("*.pt"))  # nothing of the NaN network was saved


def _tiny_run(out, **kw):
    cfg = setup.validate(TrainConfig(out=str(out), **{"width": 4, "training_steps": "4ep", "eval_every": 1, **kw}))
    device = torch.device("cpu")
    data = setup.load_data(cfg, device)
    return setup.make_model(cfg, data, device), data, setup.make_plan(cfg, data, device)


def _poison_at(step, value):
    """A step hook that sets one weight to `value` after `step` steps (what an overflowing update does)."""
    def hook(s, model, loss):
        if s == step:
            with torch.no_grad():
                weight = next(model.parameters())
                weight[(0,) * weight.dim()] = value  # its first element, whatever its layout (channels_last)
    return hook


def _finite_file(path):
    state = torch.load(path, weights_only=True)
    return all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_divergence_after_a_checkpoint_keeps_it_and_saves_no_bad_weights(out):
    # 23 steps per epoch: checkpoint at 23; the weights go bad after step 30, so the loss of step 31 is nan;
    # the rewind point due at step 35 must not be written, nor any later record
    model, data, plan = _tiny_run(out)
    plan = plan.__class__(**{**plan.__dict__, "save_at": (20, 35)})
    with pytest.raises(TrainingDiverged, match="the training loss was nan at step 31"):
        train(model, data, plan, out / "r", step_hooks=[_poison_at(30, math.nan)])
    assert sorted(p.name for p in (out / "r").glob("*.pt")) == ["checkpoint.pt", "weights_20it.pt"]
    assert torch.load(out / "r" / "checkpoint.pt", weights_only=True)["step"] == 23
    assert all(_finite_file(p) for p in (out / "r").glob("*.pt"))
    assert [r["step"] for r in checkpoints.read_jsonl(out / "r" / "metrics.jsonl")] == [23]
    assert not (out / "r" / "summary.json").exists()


def test_non_finite_weights_with_a_finite_loss_are_not_checkpointed(out):
    model, data, plan = _tiny_run(out)
    with pytest.raises(TrainingDiverged, match="the weights became non-finite at step 23"):
        train(model, data, plan, out / "r", step_hooks=[_poison_at(23, math.inf)])
    assert not list((out / "r").glob("*.pt"))


def test_divergence_stops_interleaved_and_stacked_trainings(out):
    def trainings(name):
        runs = []
        for seed in (0, 1):
            model, data, plan = _tiny_run(out, lr=1e30, seed=seed)
            runs.append(Training(model, data, plan, out / name / f"seed{seed}"))
        return runs

    with pytest.raises(TrainingDiverged, match="at step 2"):
        run_trainings(trainings("streams"), concurrent=2, engine="streams")
    vmap = trainings("vmap")
    with pytest.raises(TrainingDiverged, match="at step 2"):
        train_stacked([StackedRun(t.model, t.plan, t.run_dir) for t in vmap], vmap[0].data)
    assert not list(out.glob("*/*/summary.json")) and not list(out.glob("*/*/*.pt"))
