import json
from pathlib import Path

import pytest
import torch
import torchvision

from earlyphase.studies import cli
from earlyphase.studies.campaigns import study

from cifar_files import UncheckedCIFAR10, write_cifar_tree

FLAGS = ["--cross_levels=none",  # crossing: tests/test_crossed.py
        "--width=4", "--training_steps=2ep", "--milestone_steps=1ep", "--eval_every=2", "--levels=2",
        "--rewind_step=3it", "--pretrain_steps=3it", "--batch_size=128"]


def units_of(args):
    return [(u["condition"], u["seed"], u.get("rewind_step") or u.get("pretrain_steps"), u["controls"])
            for u in study.plan_units(study.parse(args))]


def test_presets_and_overrides():
    quick = study.parse([])
    assert quick.imp.dataset == quick.pretrain.dataset == "digits" and quick.seeds == "0,1,2"
    assert quick.imp.prune_fraction == 0.75
    assert quick.imp.rewind_step == quick.pretrain.pretrain_steps  # one k for every condition
    paper = study.parse(["--preset=paper", "--seeds=4", "--lr=0.05", "--concurrent=2"])
    assert paper.imp.dataset == "cifar10" and paper.imp.levels == 8 and paper.imp.rewind_step == "500it"
    assert paper.seeds == "4" and paper.imp.lr == paper.pretrain.lr == 0.05 and paper.scheduler.concurrent == 2
    all_conditions = {u["condition"] for u in study.plan_units(quick)}
    assert {"reset", "rewind", "rotation", "simclr", "random_labels", "blur"} <= all_conditions
    assert "supervised" not in all_conditions  # supervised for k steps is rewinding to k: the same unit


def test_every_pretext_budget_brings_rewinding_to_the_same_step():
    units = units_of(
        [
            "--conditions=reset,rotation,supervised",
            "--seeds=0",
            "--rewind_step=12it",
            "--pretrain_steps=12it",
            "--pretrain_budgets=rotation=7it,supervised=40it",
            "--controls=random_reinit",
            "--control_conditions=reset,rotation",
        ]
    )
    assert units == [("reset", 0, "0it", "random_reinit"), ("rotation", 0, "7it", "random_reinit"),
                     ("rewind", 0, "7it", ""), ("rewind", 0, "40it", "")]
    # rewind asked for itself and as supervised's and rotation's reference: one unit, controls as rewind asks
    units = units_of(["--conditions=rewind,rotation,supervised", "--seeds=0,1", "--rewind_step=12it",
                      "--pretrain_steps=12it", "--controls=random_reinit"])
    assert units == [("rewind", 0, "12it", "random_reinit"), ("rewind", 1, "12it", "random_reinit"),
                     ("rotation", 0, "12it", ""), ("rotation", 1, "12it", "")]


def test_conditions_with_budgets_of_their_own_and_without_references():
    units = units_of(["--conditions=reset,rewind=12it,rotation=2it,rotation=6it,supervised=9it", "--seeds=0",
                      "--pretrain_budgets=rotation=40it", "--controls=random_reinit", "--control_conditions=rewind"])
    assert units == [("reset", 0, "0it", ""), ("rewind", 0, "12it", "random_reinit"), ("rotation", 0, "2it", ""),
                     ("rewind", 0, "2it", ""), ("rotation", 0, "6it", ""), ("rewind", 0, "6it", ""),
                     ("rewind", 0, "9it", "")]  # an entry's own budget wins over --pretrain_budgets
    units = units_of(["--conditions=rotation=2it,blur", "--seeds=0,1", "--pretrain_steps=3it", "--references=false"])
    assert units == [("rotation", 0, "2it", ""), ("rotation", 1, "2it", ""), ("blur", 0, "3it", ""),
                     ("blur", 1, "3it", "")]  # the references are left to other runs (the sweeps list them)


@pytest.mark.parametrize("args,message", [
    (["--conditions=rotashun"], "unknown rotashun"),
    (["--seeds=a,b"], "--seeds"),
    (["--seeds=0,0"], "seed 0 is given twice"),
    (["--conditions=reset,reset"], "reset given twice"),
    (["--control_conditions=rewnd"], "--control_conditions: unknown rewnd"),
    (["--preset=huge"], "--preset"),
    (["--pretrain_budgets=rotation"], "name=steps"),
    (["--pretrain_budgets=rotation=2it,rotation=3it"], "rotation is given twice"),
    (["--prune_fraction=1.5"], "prune_fraction"),
    (["--pretrain_budgets=rotation=2ep", "--training_steps=2ep"], "(46it) is not before the end of training"),
    (["--conditions=reset=2it"], "reset is rewinding to 0it and takes no budget"),
    (["--conditions=rotation="], "'rotation=' has no budget"),
    (["--conditions=rotation=2it,rotation=2it"], "rotation=2it given twice"),
    (["--conditions=rotation=soon"], "bad step 'soon'"),
    (["--references=maybe"], "--references=maybe: expected bool"),
])
def test_bad_study_input(tmp_path, capsys, args, message):
    assert cli.main(["study", f"--out={tmp_path}/runs", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_tiny_study_writes_a_report_matching_the_records(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["study", f"--out={out}", "--conditions=reset,rewind,rotation,supervised", "--seeds=0,1,2", *FLAGS]
    assert cli.main(args) == 0
    study_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads((study_dir / "study.json").read_text())
    assert [(u["condition"], u["seed"]) for u in record["units"]] == [
        (c, s) for c in ("reset", "rewind", "rotation") for s in range(3)]
    assert all(not Path(u["imp_dir"]).is_absolute() and (out / u["imp_dir"]).is_dir() for u in record["units"])
    rep = study_dir / "report"
    for name in ("report.md", "report.html", "accuracy_vs_density.png", "paired_differences.png"):
        assert (rep / name).stat().st_size > 100
    data = json.loads((rep / "report.json").read_text())
    assert [c["label"] for c in data["conditions"]] == ["reset", "rewind 3it", "rotation 3it"]
    assert data["incomplete"] == []
    questions = {(c["question"], c["subject"], c["reference"]) for c in data["comparisons"]}
    assert {("pretext", "rotation 3it", "rewind 3it"), ("rewind_vs_reset", "rewind 3it", "reset"),
            ("control", "rewind 3it", "rewind 3it: random_reinit")} == questions
    # every paired difference equals the per-seed differences of the ticket records
    tickets = {(u["condition"], u["seed"]): json.loads((out / u["imp_dir"] / "tickets.json").read_text())
               for u in record["units"]}
    acc = lambda c, s, lvl: next(t["test_accuracy"] for t in tickets[(c, s)]  # noqa: E731
                                 if t["level"] == lvl and t["kind"] == "trunk")
    rotation = next(c for c in data["comparisons"] if c["question"] == "pretext")
    for d in rotation["differences"]:
        diffs = [acc("rotation", s, d["level"]) - acc("rewind", s, d["level"]) for s in range(3)]
        assert d["n"] == 3 and d["mean"] == pytest.approx(sum(diffs) / 3)
    assert "**rotation 3it**" in (rep / "report.md").read_text().split("## Tickets")[0]
    # rerunning finds everything done and changes no result
    before = {p: p.stat().st_mtime for p in out.rglob("final.pt")}
    assert cli.main(args) == 0
    assert {p: p.stat().st_mtime for p in out.rglob("final.pt")} == before


def test_paper_preset_with_short_overrides_runs_every_condition(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", UncheckedCIFAR10)  # our small files have no real md5 sums
    write_cifar_tree(tmp_path / "data", per_batch=20)
    args = ["study", "--preset=paper", "--training_steps=8it", "--milestone_steps=6it", "--rewind_step=2it",
            "--pretrain_steps=2it", "--pretrain_budgets=", "--levels=1", "--seeds=0", "--controls=",
            "--width=4", f"--data_dir={tmp_path / 'data'}", f"--out={tmp_path / 'runs'}"]
    assert cli.main(args) == 0
    study_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    data = json.loads((study_dir / "report" / "report.json").read_text())
    assert [c["label"] for c in data["conditions"]] == ["reset", "rewind 2it", "blur 2it", "random_labels 2it",
                                                        "rotation 2it", "simclr 2it"]
    for u in json.loads((study_dir / "study.json").read_text())["units"]:
        tickets = json.loads((tmp_path / "runs" / u["imp_dir"] / "tickets.json").read_text())
        k = 0 if u["condition"] == "reset" else 2
        assert [(t["level"], t["start_step"], t["end_step"]) for t in tickets] == [
            (0, 0 if u["condition"] in ("reset", "rewind") else k, 8), (1, k, 8)]
        point = tmp_path / "runs" / u.get("pretrain_dir", "none") / "rewind_point.pt"
        assert (u["condition"] in ("reset", "rewind")) != point.exists()
        if point.exists():
            assert torch.load(point, weights_only=True)["step"] == 2


def test_presets_keep_the_papers_conditions_and_all_means_every_task():
    quick = {u["condition"] for u in study.plan_units(study.parse([]))}
    assert quick == {"reset", "rewind", "rotation", "simclr", "random_labels", "blur"}
    every = {u["condition"] for u in study.plan_units(study.parse(["--conditions=all"]))}
    assert {"subset", "supervised_noaug"} <= every


def test_a_task_with_options_in_brackets_is_a_condition_of_its_own(capsys):
    units = [(u["condition"], u.get("options"), u.get("pretrain_steps") or u.get("rewind_step"))
             for u in study.plan_units(study.parse(["--conditions=subset[select=easy;fraction=0.2]=6it,"
                                                    "subset[select=random]=6it,subset=2it", "--seeds=0"]))]
    assert units == [("subset", "select=easy,fraction=0.2", "6it"), ("rewind", None, "6it"),
                     ("subset", "select=random", "6it"), ("subset", None, "2it"), ("rewind", None, "2it")]
    for bad, words in (("rewind[x=1]=6it", "only a pretext task"), ("subset[select=easy]=6it,subset[select=easy]=6it",
                                                                     "given twice")):
        code = cli.main(["study", f"--conditions={bad}", "--seeds=0", "--out=/nonexistent/never"])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1


def test_data_subset_conditions_through_a_study_and_its_report(tmp_path):
    """Each subset setting and supervised_noaug is compared with rewinding to its own k; the scoring cost is
    stated beside the budget; both budgets make a series of the budget figure."""
    args = ["study", f"--out={tmp_path}", "--seeds=0,1", "--subset_score_runs=2", *FLAGS,
            "--conditions=subset[select=easy;fraction=0.2]=3it,subset[select=easy;fraction=0.2]=6it,"
            "subset[select=random]=3it,supervised_noaug=3it"]
    assert cli.main(args) == 0
    (study_dir,) = tmp_path.glob("study_*")
    report = json.loads((study_dir / "report" / "report.json").read_text())
    labels = {c["label"]: c for c in report["conditions"]}
    assert {"subset(easy 0.2) 3it", "subset(easy 0.2) 6it", "subset(random 0.1) 3it", "supervised_noaug 3it",
            "rewind 3it", "rewind 6it"} == set(labels)
    # scoring: 2 runs of T // 10 iterations each (T = 2ep = 24it at batch 128 on digits)
    assert labels["subset(easy 0.2) 3it"]["scoring_iterations"] == 2 * (24 // 10)
    assert "scoring_iterations" not in labels["subset(random 0.1) 3it"]
    pairs = {(c["subject"], c["reference"]) for c in report["comparisons"] if c["question"] == "pretext"}
    assert {("subset(easy 0.2) 3it", "rewind 3it"), ("subset(easy 0.2) 6it", "rewind 6it"),
            ("subset(random 0.1) 3it", "rewind 3it"), ("supervised_noaug 3it", "rewind 3it")} <= pairs
    (series,) = report["by_budget"]
    assert series["label"] == "subset(easy 0.2)" and series["scoring_iterations"] == 4
    assert [b["budget"] for b in series["budgets"]] == ["3it", "6it"]
    assert (study_dir / "report" / "pretext_vs_budget.png").is_file()
    markdown = (study_dir / "report" / "report.md").read_text()
    assert "+ 4 iterations of scoring runs per seed" in markdown
    assert len(list(tmp_path.glob("scores_el2n_*"))) == 2  # one per seed, shared by both budgets
