"""Reports from synthetic records with known answers: conditions, like-for-like pairing, intervals, findings."""

import json
import math
import os
import shutil
import statistics
import subprocess
import sys

import pytest

from earlyphase.studies import cli
from earlyphase.studies.reporting import findings, paired, report
from earlyphase.studies.reporting import runs as report_data

from conftest import T_975_2, write_imp, write_stability


@pytest.fixture
def runs(tmp_path):
    """Three seeds of reset, rewind 24it (+ random_reinit), rotation at 24it and rotation at 48it (no reference)."""
    root = tmp_path / "runs"
    rewind = {0: [0.90, 0.90, 0.88, 0.80], 1: [0.92, 0.90, 0.86, 0.82], 2: [0.91, 0.91, 0.87, 0.84]}
    reinit = {0: [0.85, 0.70, 0.50], 1: [0.87, 0.72, 0.52], 2: [0.86, 0.71, 0.60]}
    reset = {0: [0.90, 0.89, 0.80, 0.60], 1: [0.92, 0.85, 0.78, 0.64], 2: [0.91, 0.90, 0.86, 0.83]}
    rotation = {0: [0.91, 0.89, 0.87, 0.70], 1: [0.92, 0.91, 0.85, 0.73], 2: [0.90, 0.90, 0.88, 0.75]}
    for s in range(3):
        write_imp(root, f"imp_rewind{s}", s, rewind[s], controls={"random_reinit": reinit[s]})
        write_imp(root, f"imp_reset{s}", s, reset[s], k=0)
        write_imp(root, f"imp_rot{s}", s, rotation[s], pretext="rotation")
        write_imp(root, f"imp_rotlong{s}", s, rotation[s], k=48, pretext="rotation")
    return root, {"rewind": rewind, "reinit": reinit, "reset": reset, "rotation": rotation}


def by_label(conditions):
    return {c.label: c for c in conditions}


def test_conditions_come_from_configs_and_settings(runs):
    root, _ = runs
    conditions, incomplete = report_data.collect([root])
    assert [c.label for c in conditions] == ["reset", "rewind 24it", "rotation 24it", "rotation 48it"]
    assert [(c.kind, c.k) for c in conditions] == [("reset", 0), ("rewind", 24), ("pretext", 24), ("pretext", 48)]
    assert len({c.setting for c in conditions}) == 1 and incomplete == []


def test_intervals_are_paired_by_seed_with_known_answers(runs):
    root, acc = runs
    conditions = by_label(report_data.collect([root])[0])
    found, notes = paired.comparisons(list(conditions.values()))
    rotation = next(c for c in found if c.question == "pretext")
    assert rotation.subject.label == "rotation 24it" and rotation.reference.label == "rewind 24it"
    # by hand: level 3 differences rotation - rewind per seed, mean +- t * sd / sqrt(n)
    diffs = [acc["rotation"][s][3] - acc["rewind"][s][3] for s in range(3)]  # -0.10, -0.09, -0.09
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    d3 = next(d for d in rotation.differences if d.level == 3)
    assert (d3.n, d3.density, d3.seeds) == (3, 0.125, [0, 1, 2])
    assert d3.mean == pytest.approx(mean) and d3.mean == pytest.approx(-0.09333333)
    assert d3.low == pytest.approx(mean - T_975_2 * sd / math.sqrt(3))
    assert d3.high == pytest.approx(mean + T_975_2 * sd / math.sqrt(3)) and d3.high < 0 and d3.called
    # levels 0-2: differences of mixed sign, intervals around 0
    for level, diffs in ((0, [0.01, 0.0, -0.01]), (1, [-0.01, 0.01, -0.01]), (2, [-0.01, -0.01, 0.01])):
        d = next(d for d in rotation.differences if d.level == level)
        assert d.mean == pytest.approx(statistics.fmean(diffs), abs=1e-12) and d.low < 0 < d.high and not d.called

    # rewinding vs reset: only pruned levels (level 0 is the same dense run); differences vary in sign at level 3
    vs_reset = next(c for c in found if c.question == "rewind_vs_reset")
    assert [d.level for d in vs_reset.differences] == [1, 2, 3]
    d = vs_reset.differences[2]
    diffs = [acc["rewind"][s][3] - acc["reset"][s][3] for s in range(3)]  # 0.20, 0.18, 0.01
    assert d.mean == pytest.approx(statistics.fmean(diffs))
    half = T_975_2 * statistics.stdev(diffs) / math.sqrt(3)
    assert (d.low, d.high) == (pytest.approx(d.mean - half), pytest.approx(d.mean + half)) and not d.called
    # tickets vs their control: a paired advantage of 0.09, 0.16, 0.26 at levels 1..3
    control = next(c for c in found if c.question == "control")
    assert control.reference_kind == "random_reinit"
    d = control.differences[2]
    diffs = [acc["rewind"][s][3] - acc["reinit"][s][2] for s in range(3)]
    assert d.mean == pytest.approx(statistics.fmean(diffs)) and d.called and d.low > 0


def test_identical_differences_have_a_zero_width_interval():
    assert paired.interval([-0.01, -0.01, -0.01]) == pytest.approx((-0.01, -0.01, -0.01))
    assert paired.Difference(1, 0.5, 3, -0.01, -0.01, -0.01).called  # three seeds, every one 1 point lower
    assert not paired.Difference(1, 0.5, 2, -0.01, -0.01, -0.01).called  # two seeds never conclude
    assert paired.interval([0.02]) == (0.02, None, None)


def test_no_condition_is_compared_across_k_budget_or_setting(runs, tmp_path):
    root, _ = runs
    # tempting records: a rewinding run at 12it that beats everything, and a rotation run with another T
    for s in range(3):
        write_imp(root, f"imp_rewind12_{s}", s, [0.99, 0.99, 0.99, 0.99], k=12)
        write_imp(root, f"imp_rotT{s}", s, [0.5, 0.5, 0.5, 0.5], pretext="rotation", training_steps="120it")
    conditions = report_data.collect([root])[0]
    found, notes = paired.comparisons(conditions)
    pretext = [(c.subject.label, c.reference.label) for c in found if c.question == "pretext"]
    assert pretext == [("rotation 24it", "rewind 24it")]  # never rotation 48it against rewind 24it or 12it
    for c in found:
        assert c.subject.setting == c.reference.setting
        if c.question == "pretext":
            assert c.subject.k == c.reference.k
    assert any(n.startswith("rotation 48it: no supervised rewinding to the same k (48it)") for n in notes)
    other_t = [c for c in conditions if c.label.startswith("rotation 24it [")]
    assert [c.label for c in other_t] == ["rotation 24it [training_steps=120it]"]
    assert any(n.startswith("rotation 24it [training_steps=120it]: no supervised rewinding") for n in notes)
    out = report.write_report([root], tmp_path / "rep")
    md = (out / "report.md").read_text()
    assert "**rotation 48it**" not in md.split("## Tickets")[0].split("- rotation 48it:")[0]
    assert "rotation 48it: no supervised rewinding to the same k" in md


def test_findings_state_the_intervals_and_refuse_to_conclude_with_two_seeds(runs, tmp_path):
    root, acc = runs
    out = report.write_report([root], tmp_path / "rep")
    data = json.loads((out / "report.json").read_text())
    text = " ".join(data["findings"])
    assert "**rotation 24it** falls short of supervised rewinding to the same k (**rewind 24it**) at 1 of 3" in text
    d3 = next(c for c in data["comparisons"] if c["subject"] == "rotation 24it")["differences"][-1]
    assert f"{100 * d3['mean']:+.2f} points [{100 * d3['low']:+.2f}, {100 * d3['high']:+.2f}] at 12.5% (n = 3)" in text
    assert "Rewinding (**rewind 24it**) is not distinguishable from resetting" in text
    # the ticket table: one row per condition, one column per density, differences and intervals beside values
    md = (out / "report.md").read_text()
    assert "| condition | k | seeds | compared with | 100% | 50% | 25% | 12.5% |" in md
    row = next(line for line in md.splitlines() if line.startswith("| rotation 24it |"))
    assert row.startswith("| rotation 24it | 24it | 3 | rewind 24it | 91.00 ± 1.00 (+0.00 [")
    assert "(-9.33 [" in row and row.endswith("]*) |")

    two = tmp_path / "two"
    for name in ("imp_rewind0", "imp_rewind1", "imp_rot0", "imp_rot1"):
        shutil.copytree(root / name, two / name)
    data = json.loads((report.write_report([two], tmp_path / "rep2") / "report.json").read_text())
    assert data["findings"][0] == ("**rotation 24it** vs supervised rewinding to the same k (**rewind 24it**): 2 seeds "
                                   "in common, too few to conclude anything (3 or more are needed).")
    md = (tmp_path / "rep2" / "report.md").read_text()
    assert "*" not in "".join(line.split("|", 5)[-1] for line in md.splitlines() if line.startswith("| rotation"))


def test_one_seed_shows_no_spread(tmp_path):
    root = tmp_path / "runs"
    write_imp(root, "imp_a", 0, [0.9, 0.8])
    write_imp(root, "imp_b", 0, [0.9, 0.7], k=0)
    md = (report.write_report([root], tmp_path / "rep") / "report.md").read_text()
    assert "| rewind 24it | 24it | 1 | reset | 90.00 | 80.00 (+10.00) |" in md and "± 0.00" not in md


def test_seeds_of_one_condition_with_different_engines_are_one_condition(tmp_path):
    root = tmp_path / "runs"
    for s, engine in enumerate(("streams", "vmap", "streams")):
        write_imp(root, f"imp_{s}", s, [0.9, 0.8], concurrent_engine=engine, concurrent=s + 1, compile="none")
    conditions = report_data.collect([root])[0]
    assert [(c.label, len(c.runs)) for c in conditions] == [("rewind 24it", 3)]


def test_report_files_and_html_as_a_reader_sees_them(runs, tmp_path, capsys):
    root, _ = runs
    out = tmp_path / "rep"
    assert cli.main(["report", str(root), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    for name in ("accuracy_vs_density.png", "paired_differences.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page and "`" not in page and "**" not in page
    assert "<strong>rotation 24it</strong>" in page and "<code>" in page
    assert not list(out.glob("*.tmp"))


def test_copied_folders_report_their_own_data_and_merge(runs, tmp_path, capsys):
    root, _ = runs
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    tickets = json.loads((copy / "imp_reset0" / "tickets.json").read_text())
    tickets[1]["test_accuracy"] = 0.5
    (copy / "imp_reset0" / "tickets.json").write_text(json.dumps(tickets))
    reset = lambda folder: by_label(report_data.collect([folder])[0])["reset"]  # noqa: E731
    assert [r["test_accuracy"] for r in reset(copy).records if r["seed"] == 0][1] == 0.5
    assert [r["test_accuracy"] for r in reset(root).records if r["seed"] == 0][1] == 0.89
    # merging two folders: the same run twice counts once; two different records of one part are refused
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(root, a)
    shutil.copytree(root, b)
    tickets = json.loads((b / "imp_reset0" / "tickets.json").read_text())
    (a / "imp_reset0" / "tickets.json").write_text(json.dumps(tickets[:2]))  # machine a had finished level 1 only
    conditions = by_label(report_data.collect([a, b])[0])
    assert len(conditions["reset"].runs) == 3 and len(conditions["reset"].records) == 12
    assert cli.main(["report", str(root), str(copy), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "two different records of one run: level 1 trunk" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["report", str(a), str(b)]) == 2
    assert "several folders need -o OUT_DIR" in capsys.readouterr().err


def test_report_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "none")]) == 2
    assert "no runs folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished IMP level" in capsys.readouterr().err
    write_imp(tmp_path / "bad", "imp_x", 0, [0.9])
    (tmp_path / "bad" / "imp_x" / "tickets.json").write_text(json.dumps({"level": 0}))
    assert cli.main(["report", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "tickets.json is corrupt (is not a list): move it away" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad" / "imp_x" / "tickets.json").write_text("[{")
    assert cli.main(["report", str(tmp_path / "bad")]) == 2
    assert "tickets.json is corrupt or unreadable (not valid JSON)" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "empty"), "--reference=rewind 24it"]) == 2
    assert "--reference is gone" in capsys.readouterr().err


def test_runs_of_the_earlier_protocol_are_excluded(tmp_path):
    root = tmp_path / "runs"
    write_imp(root, "imp_new", 0, [0.9, 0.8])
    old = write_imp(root, "imp_old", 0, [0.9, 0.95], pretext="rotation")
    config = json.loads((old / "config.json").read_text())
    del config["rewind_step_it"]
    (old / "config.json").write_text(json.dumps(config))
    conditions, incomplete = report_data.collect([root])
    assert [c.label for c in conditions] == ["rewind 24it"]
    assert incomplete[0]["excluded"] and "trained [0, T)" in incomplete[0]["why"]
    assert "excluded" in " ".join(findings.findings([], [], [incomplete[0]]))


def test_stability_section_verdicts_and_agreement_with_tickets(runs, tmp_path):
    root, acc = runs
    default, other = "bn=interpolate,points=11", "bn=recompute,points=3"
    for s, (rewind, reset) in enumerate(((0.5, 9.0), (1.0, 12.0), (0.9, 10.5))):
        write_stability(root / f"imp_rewind{s}", 0, {default: rewind, other: 30.0})
        write_stability(root / f"imp_reset{s}", 0, {default: reset})
    for s in range(2):
        write_stability(root / f"imp_rot{s}", 0, {default: 0.1})
    out = report.write_report([root], tmp_path / "rep")
    data = json.loads((out / "report.json").read_text())
    summary = {c["label"]: c["levels"][0] for c in data["stability"]["conditions"]}
    assert data["stability"]["setting"] == default  # the default path setting, not the recomputed one
    rewind = summary["rewind 24it"]
    values = [0.5, 1.0, 0.9]
    half = T_975_2 * statistics.stdev(values) / math.sqrt(3)
    assert rewind["mean"] == pytest.approx(0.8) and rewind["high"] == pytest.approx(0.8 + half)
    assert rewind["verdict"] == "stable" and summary["reset"]["verdict"] == "unstable"
    assert summary["rotation 24it"]["verdict"] == "too few seeds"
    text = " ".join(data["findings"])
    # rewinding: stable, yet its tickets at 12.5% fall short of its dense network (-0.10, -0.10, -0.07)
    assert "**rewind 24it** (k = 24it) is stable at its rewind point: instability 0.80 points [" in text
    assert "At 12.5%, its tickets fall short of its dense network (-9.00 points [" in text
    assert "stability does not predict its tickets here" in text
    # reset: unstable; its tickets' shortfall (-0.30, -0.28, -0.08) varies too much to be called
    assert "**reset** (k = 0it) is unstable" in text and "despite the instability" in text
    assert "**rotation 24it** (k = 24it): instability 0.10 points at its rewind point from 2 seeds, too few" in text
    md = (out / "report.md").read_text()
    assert "## Stability to SGD noise" in md and "| reset | 0it | 10.50 [" in md and "unstable) |" in md
    assert (out / "stability.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bad_matplotlib_backend_in_the_environment_does_not_stop_a_report(tmp_path):
    for seed in range(3):  # records enough for figures: reset and rewinding, three seeds, three levels
        write_imp(tmp_path / "runs", f"imp_reset_{seed}", seed, [0.9, 0.88, 0.8, 0.7], k=0)
        write_imp(tmp_path / "runs", f"imp_rewind_{seed}", seed, [0.9, 0.89, 0.85, 0.8 + 0.01 * seed], k=24)
    env = {**os.environ, "MPLBACKEND": "nonsense", "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", "report", str(tmp_path / "runs"), "-o",
                           str(tmp_path / "report")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = list((tmp_path / "report").glob("*.png"))
    assert figures and all(f.read_bytes()[:4] == b"\x89PNG" for f in figures)
