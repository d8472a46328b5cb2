"""Why a condition falls short: crossed tickets (mask from one, weights from the other), the rewind points' anatomy,
and a task across one of its options (issue 30)."""

import json
from pathlib import Path

import pytest

from earlyphase.studies import cli
from earlyphase.studies.engine import schedule
from earlyphase.studies.jobs import imp_cross
from earlyphase.studies.jobs.config import ImpConfig
from earlyphase.studies.jobs.imp import prepare
from earlyphase.studies.jobs.imp import run as run_imp
from earlyphase.studies.reporting import across_option, anatomy, report

from conftest import final_weights, load, same_state, write_imp

FLAGS = ["--width=4", "--training_steps=2ep", "--milestone_steps=1ep", "--eval_every=2", "--levels=2",
        "--rewind_step=3it", "--pretrain_steps=3it", "--batch_size=128", "--threads=1"]


def test_crossing_a_run_with_itself_is_its_own_ticket_bit_for_bit(tmp_path):
    cfg = ImpConfig(out=str(tmp_path / "runs"), width=4, training_steps="2ep", milestone_steps="1ep", levels=1,
                    rewind_step="3it", prune_fraction=0.5, threads=1)
    run_dir, _ = run_imp(cfg)
    r = prepare(cfg)
    cross, found = schedule.run(imp_cross.work(r, r, [1]))
    assert {(x["level"], x["kind"]) for x in found} == {(1, "crossed_mask"), (1, "crossed_weights")}
    ticket = final_weights(run_dir / "level_1")
    for kind in imp_cross.KINDS:
        assert same_state(final_weights(cross / "level_1" / kind), ticket), kind
    assert json.loads((cross / "config.json").read_text())["subject"] == run_dir.name


def test_a_study_splits_each_difference_into_mask_and_weights_and_reports_the_anatomy(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["study", f"--out={out}", "--conditions=reset,rewind,rotation", "--seeds=0,1,2", "--controls=", *FLAGS]
    assert cli.main(args) == 0
    study_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads((study_dir / "study.json").read_text())
    assert len(record["crossed"]) == 6  # (rotation vs rewind, rewind vs reset) x 3 seeds, at the sparsest level
    data = json.loads((study_dir / "report" / "report.json").read_text())
    rows = {(r["subject"], r["reference"]): r for r in data["crossed"]}
    assert set(rows) == {("rotation 3it", "rewind 3it"), ("rewind 3it", "reset")}
    units = {(u["condition"], u["seed"]): out / u["imp_dir"] for u in record["units"]}
    acc = lambda run, level: next(t["test_accuracy"] for t in json.loads((run / "tickets.json").read_text())  # noqa
                                  if t["level"] == level and t["kind"] == "trunk")
    row = rows["rotation 3it", "rewind 3it"]
    assert row["level"] == 2 and row["n"] == 3
    for i, seed in enumerate(row["seeds"]):
        crossed = {}
        for name in record["crossed"]:
            config = json.loads((out / name / "config.json").read_text())
            if config["subject"] == units["rotation", seed].name:
                crossed = {r["kind"]: r["test_accuracy"] for r in json.loads((out / name / "crossed.json").read_text())}
        reference = acc(units["rewind", seed], 2)
        assert row["total"]["values"][i] == pytest.approx(acc(units["rotation", seed], 2) - reference)
        assert row["mask"]["values"][i] == pytest.approx(crossed["crossed_mask"] - reference)
        assert row["weights"]["values"][i] == pytest.approx(crossed["crossed_weights"] - reference)
        assert row["interaction"]["values"][i] == pytest.approx(
            row["total"]["values"][i] - row["mask"]["values"][i] - row["weights"]["values"][i])
    findings = "\n".join(data["findings"])
    assert "**rotation 3it** against **rewind 3it** at " in findings and "mask " in findings
    # the anatomy, from the files the runs wrote
    (a,) = [a for a in data["anatomy"] if a["subject"] == "rotation 3it"]
    assert a["n"] == 3 and 0 < a["whole"]["dist_reference"]["mean"] and -1 <= a["whole"]["cos_reference"]["mean"] <= 1
    name = a["layers"][0]["name"]
    distances = []
    for seed in range(3):
        mine = load(units["rotation", seed] / "level_0" / "weights_3it.pt")["model"][name].double()
        theirs = load(units["rewind", seed] / "level_0" / "weights_3it.pt")["model"][name].double()
        distances.append(float((mine - theirs).norm() / theirs.norm()))
    assert a["layers"][0]["dist_reference"]["mean"] == pytest.approx(sum(distances) / 3)
    (deepest,) = [m for m in a["masks"] if m["level"] == 2]
    assert 0 <= deepest["jaccard"]["mean"] <= 1
    d = deepest["density"]
    assert deepest["random"] == pytest.approx(d * d / (2 * d - d * d), rel=0.05)
    for name in ("crossed.png", "anatomy.png"):
        assert (study_dir / "report" / name).read_bytes()[:4] == b"\x89PNG"
    md = (study_dir / "report" / "report.md").read_text()
    assert "## Crossed tickets: mask or weights" in md and "## Rewind points and masks against the reference" in md
    # rerunning finds every crossed part finished
    before = {p: p.stat().st_mtime_ns for p in out.glob("cross_*/level_*/*/final.pt")}
    assert len(before) == 12 and cli.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("cross_*/level_*/*/final.pt")} == before


def test_bad_cross_levels_are_refused_before_anything_runs(tmp_path, capsys):
    assert cli.main(["study", f"--out={tmp_path}/runs", "--cross_levels=5", *FLAGS]) == 2
    err = capsys.readouterr().err
    assert "--cross_levels=5: the levels run are 1 ... 2" in err and not (tmp_path / "runs").exists()


def test_random_mask_overlap_is_the_product_over_the_union():
    assert anatomy.random_jaccard(0.5, 0.5) == pytest.approx(1 / 3)
    assert anatomy.random_jaccard(1.0, 0.25) == pytest.approx(0.25)


def _with_option(root, name, seed, accuracies, fraction):
    run = write_imp(root, name, seed, accuracies, k=6, pretext="random_labels")
    config = json.loads((run / "config.json").read_text())
    config["rewind_point"]["pretext"]["options"] = {"fraction": fraction}
    (run / "config.json").write_text(json.dumps(config))


def test_a_task_across_one_of_its_options(tmp_path):
    root = tmp_path / "runs"
    wobble = {0: 0.0, 1: 0.002, 2: -0.002}
    for seed in range(3):
        base = [0.95, 0.95 + wobble[seed], 0.93 + wobble[seed], 0.90 + wobble[seed]]
        write_imp(root, f"imp_rewind_{seed}", seed, base, k=6)
        spread = {0: 0.0, 1: 0.01, 2: -0.01}[seed]  # fraction 0.5: a wide interval around -1 point
        for fraction, gap in ((0.0, 0.0), (0.5, -0.01 + spread), (1.0, -0.05)):
            _with_option(root, f"imp_rl{fraction}_{seed}", seed, [base[0]] + [a + gap for a in base[1:]], fraction)
    out = report.write_report([root], tmp_path / "rep")
    data = json.loads((out / "report.json").read_text())
    (series,) = data["by_option"]
    assert series["option"] == "fraction" and series["reference"] == "rewind 6it"
    assert [v["value"] for v in series["values"]] == [0.0, 0.5, 1.0]
    assert [v["verdict"] for v in series["values"]] == ["matches", "undetermined", "falls short"]
    assert series["values"][2]["differences"][0]["mean"] == pytest.approx(-0.05)
    assert (out / "pretext_vs_option.png").read_bytes()[:4] == b"\x89PNG"
    said = [s for s in data["findings"] if "across its option fraction" in s]
    assert said and "matches at fraction = 0.0" in said[0] and "falls short at fraction = 1.0" in said[0]
    assert across_option.series_of([]) == []


def test_runs_a_sweep_trained_apart_are_crossed_by_the_cross_command(tmp_path, capsys):
    out = tmp_path / "runs"
    base = ["imp", f"--out={out}", "--width=4", "--training_steps=2ep", "--milestone_steps=1ep", "--levels=1",
            "--prune_fraction=0.5", "--threads=1"]
    for seed in range(3):
        for step in ("0it", "3it"):
            assert cli.main(base + [f"--seed={seed}", f"--rewind_step={step}"]) == 0
    capsys.readouterr()
    assert cli.main(["cross", str(out)]) == 0
    made = capsys.readouterr().out.strip().splitlines()
    assert len(made) == 3 and all(Path(d).name.startswith("cross_") for d in made)
    data = json.loads((report.write_report([out], tmp_path / "rep") / "report.json").read_text())
    (row,) = data["crossed"]
    assert (row["subject"], row["reference"], row["level"], row["n"]) == ("rewind 3it", "reset", 1, 3)
    before = {p: p.stat().st_mtime_ns for p in out.glob("cross_*/level_*/*/final.pt")}
    assert len(before) == 6 and cli.main(["cross", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("cross_*/level_*/*/final.pt")} == before
    assert cli.main(["cross", str(out), "--level=1"]) == 2
