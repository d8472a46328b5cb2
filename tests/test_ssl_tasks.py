"""Self-supervised tasks with state (byol, moco, dino) and without (vicreg, barlowtwins), and the interface that holds
them: modules of a task's own, trained or updated by itself, checkpointed, never in the rewind point."""

import json
import math
from pathlib import Path

import pytest
import torch

from earlyphase.pretext.base import PretextTask, TaskInfo
from earlyphase.pretext.byol import BYOL
from earlyphase.pretext.dino import DINO
from earlyphase.pretext.moco import MoCo
from earlyphase.studies.engine import models
from earlyphase.studies.engine.checkpoints import full_state
from earlyphase.studies.engine.evaluation import evaluate
from earlyphase.studies.engine.plan import Schedule, TrainPlan
from earlyphase.studies.engine.run_dir import RunFiles
from earlyphase.studies.engine.stacked import StackedRun, train_stacked
from earlyphase.studies.engine.trainer import make_optimizer, train, train_steps
from earlyphase.studies.jobs import config, setup
from earlyphase.studies.jobs import pretrain as pretrain_job

from conftest import final_weights, kill_9_then_rerun, load, one_line_error, run_cli, same_state

PretrainConfig = config.with_task_options(config.PretrainConfig)  # with the tasks' options (simclr_out_dim, ...)

STATEFUL = ("byol", "moco", "dino")
DIGITS = TaskInfo(image_size=(8, 8), flip=False, num_classes=10)


def plan(end: int, seed: int = 0, **kw) -> TrainPlan:
    return TrainPlan(seed=seed, batch_size=64, schedule=Schedule(0.1), start=0, end=end, **kw)


def pretrain(out, pretext, **kw):
    cfg = PretrainConfig(out=str(out), pretext=pretext, width=4, pretrain_steps="6it", eval_every=1, **kw)
    return pretrain_job.run(cfg)


def bound(task_cls, **options):
    """A task bound to a width-4 network with its head, as the trainer binds it."""
    task = task_cls(DIGITS, **options)
    model = models.create("cifar_resnet20", width=4)
    model.fc = task.head(model.num_features, 10)
    task.bind(model)
    return task, model


@pytest.mark.parametrize("pretext", ["byol", "moco", "dino", "vicreg", "barlowtwins"])
def test_each_task_pretrains_a_rewind_point_of_the_network_alone(out, pretext):
    run_dir, result = pretrain(out, pretext)
    assert run_dir.name.startswith(f"pretrain_{pretext}_") and result.summary["end_step"] == 6
    assert math.isfinite(result.summary["test_loss"]) and 0 <= result.summary["test_accuracy"] <= 1
    point = load(run_dir / "rewind_point.pt")
    assert point["model"].keys() == models.create("cifar_resnet20", width=4).state_dict().keys()
    assert set(point["momentum"]) == {n for n in point["model"] if not n.startswith("fc.")
                                      and "running" not in n and "num_batches" not in n}
    assert not (run_dir / "checkpoint.pt").exists()


@pytest.mark.parametrize("pretext", STATEFUL)
def test_killed_mid_pretraining_then_rerun_gives_the_same_bytes(out, pretext):
    full_dir, killed_dir = kill_9_then_rerun(["pretrain", f"--pretext={pretext}", "--width=4",
                                              "--pretrain_steps=3ep", "--threads=1"], out)
    assert same_state(final_weights(full_dir), final_weights(killed_dir))
    assert (full_dir / "metrics.jsonl").read_text() == (killed_dir / "metrics.jsonl").read_text()
    assert same_state(load(full_dir / "rewind_point.pt")["model"], load(killed_dir / "rewind_point.pt")["model"])


@pytest.mark.parametrize("task_cls", [BYOL, MoCo, DINO])
def test_a_tasks_state_round_trips_through_a_checkpoint(tmp_path, task_cls):
    """Teacher weights and BatchNorm statistics, the predictor, MoCo's queue and pointer, DINO's centre: trained a
    few steps, checkpointed, and restored into a freshly built task, they are the same tensors."""
    data = setup.load_data(PretrainConfig(), torch.device("cpu"))
    four = plan(4, seed=3)
    first, model = bound(task_cls)
    train(model, data, four, tmp_path / "a", task=first)
    state = full_state(first.own_modules)
    (tmp_path / "b").mkdir()
    files = RunFiles(tmp_path / "b", four)
    files.checkpoint(model, make_optimizer(model, four, first.own_modules), 4, torch.zeros(()), 0,
                     torch.device("cpu"), first.own_modules)
    second, model2 = bound(task_cls)
    assert not same_state(full_state(second.own_modules), state)  # a fresh build differs (a trained teacher)
    files.resume(model2, make_optimizer(model2, four, second.own_modules), torch.device("cpu"),
                 task_modules=second.own_modules)
    assert same_state(full_state(second.own_modules), state)
    if task_cls is MoCo:
        assert int(state["criterion.memory_bank.bank_ptr"]) == (4 * 64) % 4096  # four batches of keys queued


def test_one_momentum_step_equals_the_hand_computation():
    task, model = bound(BYOL, momentum=0.9)
    teacher = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)  # the student moved on
    student = {k: v.clone() for k, v in model.state_dict().items()}
    task.after_step(3, 10)  # the update after the third of ten steps
    m = 1 - (1 - 0.9) * (math.cos(math.pi * 2 / 9) + 1) / 2  # lightly's cosine schedule at step 2 of 0..9
    assert task.momentum_at(3, 10) == pytest.approx(m) and task.momentum_at(1, 10) == pytest.approx(0.9)
    assert task.momentum_at(10, 10) == 1.0
    names = [n for n, _ in model.named_parameters()]
    for name in names:
        want = teacher[name] * m + student[name] * (1 - m)
        assert torch.allclose(task.teacher.state_dict()[name], want, rtol=0, atol=1e-7), name
    assert not any(p.requires_grad for p in task.teacher.parameters())
    assert all(p.requires_grad for p in task.own_modules["predictor"].parameters())


def test_the_trainer_trains_a_predictor_and_the_teacher_follows_by_its_schedule(tmp_path):
    data = setup.load_data(PretrainConfig(), torch.device("cpu"))
    task, model = bound(BYOL)
    predictor = {k: v.clone() for k, v in task.own_modules["predictor"].state_dict().items()}
    teacher0 = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    train(model, data, plan(3, seed=0), tmp_path / "run", task=task)
    assert not same_state(task.own_modules["predictor"].state_dict(), predictor)  # trained by the run's optimiser
    moved = [n for n, _ in model.named_parameters() if not torch.equal(task.teacher.state_dict()[n], teacher0[n])]
    assert moved and task.step == 2 and task.steps == 3


def test_evaluation_leaves_a_tasks_state_as_it_was():
    """DINO's loss moves its centre whenever it runs and MoCo's bank takes keys in training: evaluating must not."""
    data = setup.load_data(PretrainConfig(), torch.device("cpu"))
    for task_cls in (DINO, MoCo):
        task, model = bound(task_cls)
        before = full_state(task.own_modules)
        metrics = evaluate(model, data, task, plan(1))
        assert same_state(full_state(task.own_modules), before) and task.own_modules.training
        assert math.isfinite(metrics["test_loss"])


def test_dino_teacher_temperature_warms_up_over_the_pretraining():
    task, _ = bound(DINO, warmup=0.5)
    task.steps = 10
    temps = []
    for step in range(10):
        task.step = step
        temps.append(task.teacher_temperature())
    assert temps[0] == pytest.approx(0.04) and temps[5:] == [0.07] * 5
    assert temps[2] == pytest.approx(0.04 + 0.03 * 2 / 5)


def test_extra_state_of_a_tasks_module_is_checkpointed(tmp_path):
    """A module keeping a counter as get_extra_state (a plain value, not a tensor) is saved and restored."""

    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.count = 0

        def get_extra_state(self):
            return {"count": self.count}

        def set_extra_state(self, state):
            self.count = state["count"]

    class Counting(PretextTask):
        name = "counting"

        def build(self, model):
            return Counter()

        def after_step(self, step, steps):
            self.own_modules.count += 1

    data = setup.load_data(PretrainConfig(), torch.device("cpu"))
    model = models.create("cifar_resnet20", width=4)
    forty = plan(40)
    task = Counting()
    steps = train_steps(model, data, forty, tmp_path / "run", task=task)
    for _ in range(30):  # past the first epoch's checkpoint (23 steps), then dropped like a killed run
        next(steps)
    steps.close()
    assert load(tmp_path / "run" / "checkpoint.pt")["task"]["_extra_state"] == {"count": 23}
    again = Counting()
    train(models.create("cifar_resnet20", width=4), data, forty, tmp_path / "run", task=again)
    assert again.own_modules.count == 40  # 23 restored, 17 more


def test_vmap_refuses_a_task_with_its_own_step_naming_streams(tmp_path):
    data = setup.load_data(PretrainConfig(), torch.device("cpu"))
    runs = []
    for seed in (0, 1):
        task = BYOL(DIGITS)
        model = models.create("cifar_resnet20", width=4)
        model.fc = task.head(model.num_features, 10)
        runs.append(StackedRun(model, plan(2, seed=seed), tmp_path / str(seed), task=task))
    with pytest.raises(ValueError, match="--concurrent_engine=streams"):
        train_stacked(runs, data)


def test_a_study_pairs_each_new_task_with_rewinding_to_its_k_under_the_vmap_engine(tmp_path, capsys):
    """byol and moco train alone beside the vmap stack (which holds their IMP levels), named and paired with
    `rewind 3it` in the report."""
    args = ["study", f"--out={tmp_path}", "--conditions=byol,moco", "--seeds=0,1", "--cross_levels=none", "--width=4",
            "--training_steps=2ep", "--milestone_steps=1ep", "--eval_every=2", "--levels=1", "--rewind_step=3it",
            "--pretrain_steps=3it", "--batch_size=128", "--concurrent=2", "--concurrent_engine=vmap"]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    (study_dir,) = tmp_path.glob("study_*")
    report = json.loads((study_dir / "report" / "report.json").read_text())
    assert {c["label"] for c in report["conditions"]} == {"byol 3it", "moco 3it", "rewind 3it"}
    pairs = {(c["subject"], c["reference"]) for c in report["comparisons"] if c["question"] == "pretext"}
    assert pairs == {("byol 3it", "rewind 3it"), ("moco 3it", "rewind 3it")}
    for unit in json.loads((study_dir / "study.json").read_text())["units"]:
        if unit["condition"] in ("byol", "moco"):
            point = load(Path(tmp_path) / unit["pretrain_dir"] / "rewind_point.pt")
            assert point["step"] == 3 and point["pretext"]["name"] == unit["condition"]


@pytest.mark.parametrize("args,words", [
    (["pretrain", "--pretext=byol", "--byol_momentum=1.5"], ("byol momentum=1.5",)),
    (["pretrain", "--pretext=moco", "--moco_queue=0"], ("moco queue=0",)),
    (["pretrain", "--pretext=dino", "--dino_warmup=2"], ("dino warmup=2.0",)),
    (["pretrain", "--pretext=vicreg", "--vicreg_out_dim=0"], ("vicreg out_dim=0",)),
    (["pretrain", "--pretext=barlowtwins", "--barlowtwins_min_scale=0"], ("barlowtwins min_scale=0.0",)),
    (["study", "--conditions=rewind,simclr", "--simclr_min_scale=0"], ("simclr min_scale=0.0",)),
    (["study", "--conditions=rewind,dino", "--dino_student_temp=0"], ("temperatures must be > 0",)),
])
def test_bad_task_options_are_one_line_and_write_nothing(tmp_path, capsys, args, words):
    code, stdout, stderr = run_cli([*args, f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, stderr, *words)
    assert stdout == "" and not (tmp_path / "runs").exists()
    assert "[1/" not in stderr  # no study progress before the refusal
