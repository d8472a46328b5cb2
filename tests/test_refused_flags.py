"""A flag or value that cannot work is refused in one line (exit 2) naming the fix, before anything is written:
non-finite numbers, an overflowing learning rate, a flag without its value, seeds out of range, empty values and
control characters, ambiguous or impossible settings, a network too large for memory."""

import json
import math
import os

import pytest

from earlyphase.studies.campaigns.study import StudyConfig
from earlyphase.studies.engine.errors import UsageError
from earlyphase.studies.jobs import setup
from earlyphase.studies.jobs.config import TrainConfig, with_task_options
from earlyphase.studies.jobs.flags import parse_overrides, with_values
from earlyphase.studies.jobs.imp import ImpConfig
from earlyphase.studies.jobs.pretrain import PretrainConfig

from conftest import TINY, one_line_error, run_cli

FLAGS = ["--width=2", "--training_steps=4it", "--batch_size=256", "--prune_fraction=0.5", "--levels=1",
        "--rewind_step=1it"]


@pytest.mark.parametrize("command,flag", [
    ("train", "--lr=inf"), ("train", "--weight_decay=nan"), ("train", "--gamma=inf"), ("train", "--momentum=-inf"),
    ("imp", "--lr=nan"), ("pretrain", "--pretrain_lr=inf"), ("pretrain", "--simclr_temperature=nan"),
])
def test_non_finite_flags_are_refused_before_anything_is_written(out, capsys, command, flag):
    code, stdout, stderr = run_cli([command, f"--out={out}", *TINY, flag], capsys)
    one_line_error(code, stderr, flag, "finite")
    assert not out.exists()


@pytest.mark.parametrize("cls,field", [(TrainConfig, "lr"), (TrainConfig, "weight_decay"), (ImpConfig, "perturb_noise"),
                                       (PretrainConfig, "random_labels_fraction"), (StudyConfig, "simclr_min_scale")])
def test_validate_refuses_non_finite_fields_of_configs_built_in_python(tmp_path, cls, field):
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(UsageError, match=f"--{field}=.*finite"):
            cfg = with_values(with_task_options(cls)(), {"out": str(tmp_path / "runs"), field: value})
            setup.validate(cfg.pretrain if cls is StudyConfig else cfg)  # a study validates each unit's configs


def test_a_learning_rate_that_overflows_at_a_milestone_is_refused(out, capsys):
    code, _, stderr = run_cli(["train", f"--out={out}", *TINY, "--gamma=1e200", "--milestone_steps=2it,4it"], capsys)
    one_line_error(code, stderr, "--gamma=1e+200", "overflows")
    assert not out.exists()


def test_a_flag_without_a_value_does_not_take_the_next_flag_as_its_value(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli(["train", *TINY, "--out", "--seed=1"], capsys)
    one_line_error(code, stderr, "--out needs a value: --out=VALUE")
    assert list(tmp_path.iterdir()) == []
    cfg = parse_overrides(TrainConfig, ["--out", "elsewhere", "--augment", "--seed", "-1"])
    assert (cfg.out, cfg.augment, cfg.seed) == ("elsewhere", True, -1)  # values still follow their flag


@pytest.mark.parametrize("seed", ["-1", str(2 ** 64), str(10 ** 30)])
def test_a_seed_out_of_range_is_refused_before_anything_is_written(out, capsys, seed):
    code, _, stderr = run_cli(["train", f"--out={out}", *TINY, f"--seed={seed}"], capsys)
    one_line_error(code, stderr, f"--seed={seed}", "from 0 to 2**64 - 1")
    assert not out.exists()


@pytest.mark.parametrize("command,field", [("train", "data_seed"), ("stability", "data_seed"),
                                           ("stability", "stability_data_seed")])
def test_every_seed_field_is_range_checked(out, capsys, command, field):
    code, _, stderr = run_cli([command, f"--out={out}", *TINY, f"--{field}=-3"], capsys)
    one_line_error(code, stderr, f"--{field}=-3", "from 0 to 2**64 - 1")
    assert not out.exists()


def test_the_largest_seed_trains(out, capsys):
    largest = 2 ** 64 - 1
    code, stdout, _ = run_cli(["train", f"--out={out}", "--width=4", "--training_steps=2it", f"--seed={largest}"],
                              capsys)
    folder = stdout.strip().splitlines()[-1]
    assert code == 0 and json.load(open(os.path.join(folder, "config.json")))["seed"] == largest


@pytest.mark.parametrize("args,message", [
    (["imp", "--rewind_step="], "--rewind_step is empty"),
    (["train", "--training_steps="], "--training_steps is empty"),
    (["train", "--dataset="], "--dataset is empty"),
    (["study", "--conditions="], "--conditions is empty"),
    (["train", "--data_seed="], "--data_seed is empty"),
    (["train", "--out=runs\nsecond line"], "control character"),
    (["pretrain", "--pretext=rota\ttion"], "control character"),
])
def test_empty_values_and_control_characters_are_refused(out, capsys, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, message)
    assert "\nsecond line" not in err and list(tmp_path.iterdir()) == []


def test_empty_means_none_where_the_help_says_so(out, capsys):
    longer = [a for a in FLAGS if not a.startswith("--training_steps")] + ["--training_steps=2ep"]
    code, stdout, _ = run_cli(["imp", f"--out={out}", *longer, "--controls=", "--stability=", "--track_steps=",
                               "--milestone_steps=", "--eval_every=1"], capsys)
    assert code == 0
    run = stdout.strip().splitlines()[-1]
    lrs = {json.loads(line)["lr"] for line in open(os.path.join(run, "level_0", "metrics.jsonl"))}
    assert lrs == {0.1}  # no milestones: a constant rate (the digits default would drop it at 6ep)


def test_a_long_value_is_echoed_cut(capsys, tmp_path):
    code, _, err = run_cli(["train", "--dataset=" + "x" * 100_000], capsys)
    line = one_line_error(code, err, "unknown dataset")
    assert len(line) < 400 and "(100003 characters)" in line  # the quoted value, cut


def test_imp_refuses_levels_that_would_leave_no_weight(out, capsys):
    code, _, err = run_cli(["imp", f"--out={out}", "--training_steps=1it", "--rewind_step=0it", "--prune_fraction=0.9",
                            "--levels=10000"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("--levels=10000: pruning 0.9 of the survivors per level leaves no weight at level 6 (of 270896 prunable "
            "weights); use at most --levels=5") in err
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    (["train", "--lr=0.1", "--lr=0.2"], "--lr is given twice: give each option once"),
    (["pretrain", "--pretext=rotation", "--pretext_args=all_four=true,all_four=false"], "all_four is given twice"),
    (["train", "--warmup_steps=2ep"], "--warmup_steps=2ep (46it) is longer than training (1ep = 23it)"),
    (["pretrain", "--pretext=rotation", "--pretrain_steps=0it"], "--pretrain_steps=0it: pretrain for at least 1it"),
    (["study", "--wandb=foo"], "--wandb=foo: use disabled, offline or online"),
    (["study", "--seeds=-1"], "--seeds=-1: seed -1 is outside"),
    (["study", "--conditions=reset", "--seeds=0", "--stability=4", "--levels=3"], "level 4 is not among levels 0..3"),
])
def test_ambiguous_or_impossible_input_is_refused_before_anything_is_written(out, capsys, args, message):
    code, _, err = run_cli([*args, f"--out={out}", *TINY], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_an_empty_entry_in_a_list_is_refused(tmp_path, capsys):
    code, _, err = run_cli(["study", "--seeds=0,,1", f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "'0,,1' has an empty entry between commas")
    assert not (tmp_path / "runs").exists()


def test_a_network_too_large_for_memory_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["imp", "--width=100000", "--training_steps=1ep", f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "--width=100000: the network does not fit in memory", "choose a smaller --width")
