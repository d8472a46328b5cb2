import json
from pathlib import Path

import pytest

from earlyphase.studies import cli, study

TINY = ["--width=4", "--training_steps=2ep", "--milestone_steps=1ep", "--eval_every=2", "--levels=2",
        "--rewind_step=3it", "--pretrain_steps=4it", "--batch_size=128"]


def test_presets_and_overrides():
    quick = study.parse([])
    assert quick.dataset == "digits" and quick.seeds == "0,1" and quick.prune_fraction == 0.75
    paper = study.parse(["--preset=paper", "--seeds=4"])
    assert paper.dataset == "cifar10" and paper.levels == 8 and paper.rewind_step == "500it" and paper.seeds == "4"
    units = study.plan_units(study.parse(["--conditions=reset,rotation", "--pretrain_budgets=rotation=7it"]))
    assert [(u["condition"], u["seed"], u["pretrain_steps"]) for u in units] == [
        ("reset", 0, "24it"), ("reset", 1, "24it"), ("rotation", 0, "7it"), ("rotation", 1, "7it")]
    all_conditions = {u["condition"] for u in study.plan_units(study.parse([]))}
    assert {"reset", "rewind", "supervised", "rotation", "simclr", "random_labels", "blur"} <= all_conditions


@pytest.mark.parametrize("args,message", [
    (["--conditions=rotashun"], "unknown rotashun"),
    (["--seeds=a,b"], "--seeds"),
    (["--preset=huge"], "--preset"),
    (["--pretrain_budgets=rotation"], "name=steps"),
    (["--prune_fraction=1.5"], "prune_fraction"),
])
def test_bad_study_input(tmp_path, capsys, args, message):
    assert cli.main(["study", f"--out={tmp_path}/runs", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_tiny_study_writes_a_report_matching_the_records(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["study", f"--out={out}", "--conditions=reset,rewind,rotation", "--seeds=0,1", *TINY]
    assert cli.main(args) == 0
    study_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads((study_dir / "study.json").read_text())
    assert len(record["units"]) == 6 and all("imp_dir" in u for u in record["units"])
    rep = study_dir / "report"
    for name in ("report.md", "report.html", "accuracy_vs_density.png"):
        assert (rep / name).stat().st_size > 100
    table = json.loads((rep / "report.json").read_text())
    assert table["reference"] == "rewind 3it" and table["incomplete"] == []
    # every table row equals the mean of the matching ticket records over the two seeds
    for row in table["table"]:
        label = row["condition"]
        unit_dirs = [u["imp_dir"] for u in record["units"]
                     if {"reset": "reset", "rewind": "rewind 3it"}.get(u["condition"], f"{u['condition']} 4it") == label]
        accs = [t["test_accuracy"] for d in unit_dirs for t in json.loads((Path(d) / "tickets.json").read_text())
                if t["kind"] == "trunk" and t["level"] == row["level"]]
        assert len(accs) == 2 and row["mean"] == pytest.approx(sum(accs) / 2)
    assert "random_reinit" in (rep / "report.md").read_text()  # the quick preset's control for `rewind`
    # rerunning finds everything done and changes no result
    before = {p: p.stat().st_mtime for p in out.rglob("final.pt")}
    assert cli.main(args) == 0
    assert {p: p.stat().st_mtime for p in out.rglob("final.pt")} == before
