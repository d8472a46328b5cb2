"""`earlyphase study --seeds=auto`: seeds added, paired, to the comparisons still undetermined, up to a cap."""

import json
from pathlib import Path

import pytest

from earlyphase.studies import cli
from earlyphase.studies.campaigns import study
from earlyphase.studies.reporting import sequential
from earlyphase.studies.reporting.paired import Difference, comparisons
from earlyphase.studies.reporting.runs import Condition

FLAGS = ["--cross_levels=none",  # crossing: tests/test_crossed.py
        "--width=4", "--training_steps=2ep", "--milestone_steps=1ep", "--eval_every=2", "--levels=2",
        "--rewind_step=3it", "--batch_size=128", "--conditions=reset,rewind", "--controls=", "--seeds=auto"]


def test_the_stopping_rule_is_bonferroni_over_its_looks():
    assert sequential.looks(3, 2, 9) == 4 and sequential.looks(3, 2, 10) == 5 and sequential.looks(3, 1, 3) == 1
    assert sequential.stop_confidence(4) == pytest.approx(0.9875)
    # mean -0.2 points, sd 0.5 points, n = 5
    d = Difference(level=1, density=0.25, n=5, mean=-0.002, sd=0.005)
    # 95%: t(0.975, 4) = 2.776 -> low = -0.2 - 0.62 = -0.82 points > -1: matches
    assert sequential.verdict_at(d, 0.01, 0.95) == "matches"
    # 98.75%: t(0.99375, 4) = 4.22 -> low = -0.2 - 0.94 = -1.14 points: not yet
    assert sequential.verdict_at(d, 0.01, 0.9875) == "undetermined"
    short = Difference(level=1, density=0.25, n=3, mean=-0.05, sd=0.001)
    assert sequential.verdict_at(short, 0.01, 0.9875) == "falls short"
    assert sequential.verdict_at(Difference(1, 0.25, 2, -0.05, sd=0.001), 0.01, 0.99) == "too few seeds"


def _condition(label, kind, k, accuracies):
    records = [{"seed": s, "level": lvl, "kind": "trunk", "test_accuracy": a, "density": 0.8 ** lvl}
               for s, per_level in enumerate(accuracies) for lvl, a in enumerate(per_level)]
    return Condition(label, kind, k, "same", {}, records=records, runs=[Path(f"/runs/{label.replace(' ', '_')}")])


def test_status_names_each_comparison_its_runs_and_whether_it_is_decided():
    reset = _condition("reset", "reset", 0, [[0.9, 0.80, 0.70], [0.9, 0.81, 0.72], [0.9, 0.79, 0.71]])
    rewind = _condition("rewind 3it", "rewind", 3, [[0.9, 0.86, 0.75], [0.9, 0.87, 0.79], [0.9, 0.85, 0.70]])
    found = {(s["subject"], s["reference"]): s for s in sequential.status([reset, rewind], 0.01, 0.9875)}
    s = found["rewind 3it", "reset"]
    assert s["n"] == 3 and s["runs"] == ["/runs/reset", "/runs/rewind_3it"]
    # level 1: +6 points, sd 0: matches; level 2: +3.7 points with sd 4.2: undetermined -> not decided
    assert s["verdicts"] == {"80%": "matches", "64%": "undetermined"} and not s["decided"]
    assert [c.question for c in comparisons([reset, rewind])[0]] == ["rewind_vs_reset"]


def test_next_seeds_are_the_smallest_both_sides_lack_up_to_the_cap():
    assert study._next_seeds([0, 1, 2], 2, 9) == [3, 4]
    assert study._next_seeds([0, 1, 2, 3, 4, 5, 6, 7], 2, 9) == [8]
    assert study._next_seeds([0, 2, 5], 2, 9) == [1, 3]


def _study(out, capsys, *more):
    assert cli.main(["study", f"--out={out}", *FLAGS, *more]) == 0
    study_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    return study_dir, json.loads((study_dir / "study.json").read_text())


def test_undetermined_comparisons_get_paired_seeds_up_to_the_cap_and_the_report_says_so(tmp_path, capsys):
    out = tmp_path / "runs"
    study_dir, record = _study(out, capsys, "--seeds_max=5")
    log = record["seeds_auto"]
    assert log["looks"] == 2 and log["confidence"] == pytest.approx(0.975)
    first, last = log["looks_taken"]
    assert first["seeds"] == [0, 1, 2] and not first["comparisons"][0]["decided"]  # width 4, 2 epochs: noisy
    # the undetermined comparison got seeds 3 and 4 on both sides, and no more (the cap)
    seeds = {c: sorted(u["seed"] for u in record["units"] if u["condition"] == c) for c in ("reset", "rewind")}
    assert seeds == {"reset": [0, 1, 2, 3, 4], "rewind": [0, 1, 2, 3, 4]}
    assert last["seeds"] == [0, 1, 2, 3, 4] and last["comparisons"][0]["n"] == 5
    data = json.loads((study_dir / "report" / "report.json").read_text())
    assert data["seeds_auto"] == [log]
    diffs = next(c for c in data["comparisons"] if c["question"] == "rewind_vs_reset")["differences"]
    assert {d["n"] for d in diffs} == {5}
    said = [s for s in data["findings"] if "rewind 3it** against **reset**: " in s]
    assert len(said) == 1 and ("decided at n = 5" in said[0] or "still undetermined at n = 5" in said[0])
    assert "undetermined at n = 3" in said[0]
    assert "Seeds until decided" in (study_dir / "report" / "report.md").read_text()
    # resumable: a rerun makes the same decisions from the records on disk and trains nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("final.pt")}
    _, again = _study(out, capsys, "--seeds_max=5")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("final.pt")} == before
    assert again["units"] == record["units"] and again["seeds_auto"] == log


def test_a_comparison_decided_at_the_first_look_gets_no_more_seeds(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(study, "DEFAULT_MARGIN", 1.0)  # a 100-point margin: every interval matches
    _, record = _study(tmp_path / "runs", capsys, "--seeds_max=5")
    assert sorted({u["seed"] for u in record["units"]}) == [0, 1, 2]
    (look,) = record["seeds_auto"]["looks_taken"]
    assert look["comparisons"][0]["decided"] and set(look["comparisons"][0]["verdicts"].values()) == {"matches"}


@pytest.mark.parametrize("args,message", [(["--seeds_batch=0"], "--seeds_batch must be 1 or more"),
                                          (["--seeds_max=2"], "--seeds_max 3 ... 1000")])
def test_bad_auto_seed_settings_are_refused(tmp_path, capsys, args, message):
    assert cli.main(["study", f"--out={tmp_path}/runs", *FLAGS, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_a_look_recorded_without_the_seeds_estimate_claims_none():
    look = {"subject": "rotation 6it", "reference": "rewind 6it", "n": 9, "decided": False,
            "verdicts": {"25%": "undetermined"}}
    record = {"first": 3, "batch": 2, "cap": 9, "looks": 4, "confidence": 0.9875, "looks_taken": [
        {"seeds": list(range(9)), "comparisons": [look]}]}
    (line,) = sequential.sentences([record])[1:]
    assert line == "**rotation 6it** against **rewind 6it**: still undetermined at n = 9 at 25%."
    (line,) = sequential.sentences([record | {"looks_taken": [{"seeds": [], "comparisons": [
        look | {"seeds_needed": 40}]}]}])[1:]
    assert line.endswith("at 25%; about 40 seeds would detect a difference of the margin from the observed spread "
                         "(`--seeds_max`).")
