"""Pretraining on part of the data: the `subset` task (random / EL2N easy / hard), its scoring runs, the batches
both training loops draw from a subset, resume after kill -9, and `supervised_noaug`."""

import dataclasses

import pytest
import torch

from earlyphase.pretext.base import TaskInfo
from earlyphase.pretext.subset import Subset
from earlyphase.studies.engine.batches import EpochBatches
from earlyphase.studies.engine.stacked import _StackedEpochs
from earlyphase.studies.jobs import config, setup
from earlyphase.studies.jobs import pretrain as pretrain_job
from earlyphase.studies.jobs.events import Identity

from conftest import final_weights, kill_9_then_rerun, load, one_line_error, run_cli, same_state

PretrainConfig = config.with_task_options(config.PretrainConfig)  # with the tasks' options (subset_fraction)

SETTING = dict(width=4, training_steps="1ep", eval_every=1)
INFO = TaskInfo(seed=7, num_train=100, num_examples=100, training_iterations=50)


def test_random_subset_is_a_seeded_sorted_fraction():
    chosen = Subset(INFO, fraction=0.25).choose()
    assert len(chosen) == 25 and len(set(chosen.tolist())) == 25 and torch.equal(chosen, chosen.sort().values)
    assert torch.equal(Subset(INFO, fraction=0.25).choose(), chosen)  # a pure function of the seed
    other = Subset(TaskInfo(seed=8, num_train=100), fraction=0.25).choose()
    assert not torch.equal(other, chosen)
    assert Subset(INFO, fraction=1.0).choose() is None and Subset(INFO, fraction=1.0).scoring() is None
    assert Subset(INFO).scoring() is None  # random needs no scores


def test_easy_and_hard_take_the_lowest_and_highest_scores():
    scores = torch.arange(100, dtype=torch.float64).flip(0)  # example i scores 99 - i
    easy, hard = Subset(INFO, fraction=0.1, select="easy"), Subset(INFO, fraction=0.1, select="hard")
    assert easy.scoring().runs == 10 and easy.scoring().steps == 5  # auto: T // 10 of T = 50
    assert Subset(INFO, select="easy", score_steps=3, score_runs=2).scoring().steps == 3
    assert easy.choose(scores).tolist() == list(range(90, 100))
    assert hard.choose(scores).tolist() == list(range(10))
    with pytest.raises(ValueError, match="one EL2N score per training example"):
        easy.choose(None)


@pytest.mark.parametrize("options, words", [({"fraction": 0}, "fraction=0"), ({"select": "medium"}, "medium"),
                                            ({"score_runs": 0}, "score_runs=0")])
def test_bad_subset_options_are_one_line_errors(out, capsys, options, words):
    args = [f"--subset_{k}={v}" for k, v in options.items()]
    code, _, err = run_cli(["pretrain", "--pretext=subset", f"--out={out}", "--width=4", *args], capsys)
    one_line_error(code, err, words)
    assert not out.exists()


def test_epochs_keep_their_length_and_fill_it_with_passes_over_the_subset():
    cfg = setup.validate(PretrainConfig(out="unused", **SETTING))
    data = setup.load_data(cfg, torch.device("cpu"))
    plan = setup.make_plan(cfg, data, torch.device("cpu"), seed=3)
    n = len(data.train_y)
    task = Subset(TaskInfo(seed=1, num_train=n), fraction=0.1)
    subset = task.choose()
    batches = EpochBatches(data, plan, task)
    per_epoch = batches.per_epoch
    assert per_epoch == data.iterations_per_epoch(plan.batch_size)  # the full split's epoch length
    seen = torch.cat([batches.batch(s)[2] for s in range(per_epoch)])
    m = len(subset)
    assert len(seen) == n and set(seen.tolist()) == set(subset.tolist())
    assert sorted(seen[:m].tolist()) == subset.tolist()  # each pass is a permutation of the subset
    assert sorted(seen[m:2 * m].tolist()) == subset.tolist() and not torch.equal(seen[:m], seen[m:2 * m])
    # repeats of one example within an epoch are augmented afresh by each pass
    first = (seen[:m] == subset[0]).nonzero().item()
    second = m + (seen[m:2 * m] == subset[0]).nonzero().item()
    assert not torch.equal(batches.images[first], batches.images[second])
    # without augmentation the images are the examples themselves
    plain = EpochBatches(data, dataclasses.replace(plan, augment=False), task)
    x, y, idx = plain.batch(0)
    assert torch.equal(x, data.normaliser()(data.train_x[idx])) and torch.equal(y, data.train_y[idx])
    # a later epoch draws other passes; the same epoch again draws the same ones (resume from any step)
    again = EpochBatches(data, plan, task)
    assert torch.equal(again.batch(per_epoch)[2], batches.batch(per_epoch)[2])
    assert torch.equal(again.batch(0)[0], EpochBatches(data, plan, task).batch(0)[0])


def test_the_stacked_loop_draws_each_members_own_subset_batches():
    cfg = setup.validate(PretrainConfig(out="unused", **SETTING))
    data = setup.load_data(cfg, torch.device("cpu"))
    n = len(data.train_y)
    plans = [setup.make_plan(cfg, data, torch.device("cpu"), seed=s) for s in (3, 4)]
    tasks = [Subset(TaskInfo(seed=1, num_train=n), fraction=0.2), Subset(TaskInfo(seed=2, num_train=n), fraction=1.0)]
    for t in tasks:
        t.choose()

    class Member:  # what _StackedEpochs reads of a stacked run
        def __init__(self, plan, task):
            self.plan, self.task = plan, task

    stacked = _StackedEpochs(data, [Member(p, t) for p, t in zip(plans, tasks)])
    for step in (0, 5, stacked.per_epoch + 1):
        x, y, idx = stacked.batch(step)
        for k in range(2):
            ex, ey, eidx = EpochBatches(data, plans[k], tasks[k]).batch(step)
            assert torch.equal(x[k], ex) and torch.equal(y[k], ey) and torch.equal(idx[k], eidx)
    assert set(idx[0].tolist()) <= set(tasks[0].subset.tolist())


def test_el2n_scores_are_a_run_of_their_own_shared_and_never_recomputed(out, capsys):
    args = ["pretrain", "--pretext=subset", "--subset_score_runs=2", "--subset_score_steps=3",
            "--pretrain_steps=2it", "--width=4", f"--out={out}"]
    code, first, err = run_cli(args + ["--subset_select=easy"], capsys)
    assert code == 0, err
    (scores_dir,) = out.glob("scores_el2n_*")
    assert sorted(p.name for p in scores_dir.iterdir()) == ["config.json", "run_0", "run_1", "scores.pt"]
    saved = load(scores_dir / "scores.pt")
    scores = saved["scores"]
    assert saved["runs"] == 2 and saved["steps"] == 3 and scores.dtype == torch.float64
    assert scores.shape == (1437,) and 0 <= scores.min() and scores.max() <= 2 ** 0.5 + 1e-9
    point = load(out / first.strip().splitlines()[-1].split("/")[-1] / "rewind_point.pt")["pretext"]
    assert point["scoring_iterations"] == 6 and point["scores_run"] == scores_dir.name
    assert point["examples"] == round(0.1 * 1437)
    stamp = (scores_dir / "scores.pt").stat().st_mtime_ns
    # another fraction and the hard end share the scores; nothing is retrained
    for extra in (["--subset_select=easy", "--subset_fraction=0.3"], ["--subset_select=hard"]):
        code, _, err = run_cli(args + extra, capsys)
        assert code == 0, err
    assert list(out.glob("scores_el2n_*")) == [scores_dir] and (scores_dir / "scores.pt").stat().st_mtime_ns == stamp
    runs = {p.name: load(p / "rewind_point.pt")["pretext"] for p in out.glob("pretrain_subset_*")}
    assert len(runs) == 3 and len({r["examples_digest"] for r in runs.values()}) == 3
    # the easy subset scored lower than the hard one
    easy = Subset(TaskInfo(num_train=1437), fraction=0.1, select="easy").choose(scores)
    hard = Subset(TaskInfo(num_train=1437), fraction=0.1, select="hard").choose(scores)
    assert scores[easy].max() <= scores[hard].min()


def test_a_subset_run_resumed_after_kill_9_trains_on_the_same_examples(out):
    full_dir, killed_dir = kill_9_then_rerun(["pretrain", "--pretext=subset", "--subset_fraction=0.2", "--width=4",
                                              "--pretrain_steps=20ep", "--eval_every=5"], out)
    assert same_state(final_weights(full_dir / "final.pt"), final_weights(killed_dir / "final.pt"))
    assert load(full_dir / "rewind_point.pt")["pretext"]["examples_digest"] == \
        load(killed_dir / "rewind_point.pt")["pretext"]["examples_digest"]


def test_subset_of_every_example_and_supervised_noaug_against_their_twins(out):
    """subset at fraction 1 *is* supervised pretraining (so rewinding to k); supervised_noaug is supervised
    with --augment=false, and differs from supervised: augmentation is the one difference."""
    def point(**kw):
        run_dir, _ = pretrain_job.run(PretrainConfig(out=str(out), pretrain_steps="5it", **SETTING, **kw))
        return run_dir, load(run_dir / "rewind_point.pt")

    _, supervised = point(pretext="supervised")
    whole_dir, whole = point(pretext="subset", subset_fraction=1.0)
    assert same_state(whole["model"], supervised["model"]) and same_state(whole["momentum"], supervised["momentum"])
    assert "examples" not in whole["pretext"]
    _, noaug = point(pretext="supervised_noaug")
    _, plain = point(pretext="supervised", augment=False)
    assert same_state(noaug["model"], plain["model"]) and same_state(noaug["momentum"], plain["momentum"])
    assert not same_state(noaug["model"], supervised["model"])


def test_what_wandb_gets_names_the_subset_setting(out):
    """The pretraining's W&B identity carries the variant, as the IMP runs' identity (jobs.identity) does, so W&B
    never groups two selections as one condition."""
    seen = []
    pretrain_job.run(PretrainConfig(out=str(out), pretext="subset", subset_fraction=0.2, pretrain_steps="2it",
                                    **SETTING), sinks=[seen.append])
    (identity,) = [e.fields for e in seen if isinstance(e, Identity)]
    assert identity["condition"] == "subset(random 0.2) 2it" and identity["task_options"]["fraction"] == 0.2
    assert identity["examples"] == round(0.2 * 1437) and "scoring_iterations" not in identity


def test_a_damaged_scores_file_is_a_one_line_error_and_stays_as_it_was(out, capsys):
    args = ["pretrain", "--pretext=subset", "--subset_select=hard", "--subset_score_runs=1", "--subset_score_steps=2",
            "--pretrain_steps=2it", "--width=4", f"--out={out}"]
    assert run_cli(args, capsys)[0] == 0
    (scores,) = out.glob("scores_el2n_*/scores.pt")
    for damage in (b"not a checkpoint", None):
        if damage is None:  # a good file of the wrong length
            torch.save({"scores": torch.zeros(3, dtype=torch.float64)}, scores)
        else:
            scores.write_bytes(damage)
        before = scores.read_bytes()
        code, _, err = run_cli(args + ["--subset_fraction=0.3"], capsys)
        one_line_error(code, err, str(scores))
        assert scores.read_bytes() == before and len(list(out.glob("pretrain_subset_*"))) == 1
