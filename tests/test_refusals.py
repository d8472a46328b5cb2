"""Hardening of the jobs: runaway IMP, miscounted or ambiguous input, misleading messages, nothing written on
refusal."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from earlyphase.studies import cli

from conftest import TINY, one_line_error, run_cli, write_imp


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


def test_a_corrupt_final_file_names_what_else_must_go(out, capsys):
    args = ["imp", f"--out={out}", *TINY, "--rewind_step=5it", "--prune_fraction=0.5"]
    code, stdout, _ = run_cli([*args, "--levels=0"], capsys)
    run = Path(stdout.strip().splitlines()[-1])
    (run / "level_0" / "final.pt").write_bytes((run / "level_0" / "final.pt").read_bytes()[:200])
    code, _, err = run_cli([*args, "--levels=1"], capsys)
    one_line_error(code, err, f"checkpoint {run / 'level_0' / 'final.pt'} is corrupt or unreadable",
                   "move it and summary.json beside it away (both mark the run finished)")
    assert not (run / "level_1").exists()


def test_a_half_finished_study_reports_what_is_missing(tmp_path, capsys):
    study = tmp_path / "runs" / "study_x"
    study.mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({"units": [{"condition": "reset", "seed": 0}]}))
    code, _, err = run_cli(["report", str(study)], capsys)
    assert code == 2 and "no finished IMP level under" in err and "(1 runs or units not finished)" in err


def test_a_sweep_checks_every_run_before_the_first_starts(tmp_path, capsys):
    sweep = {
        "method": "grid",
        "parameters": {"prune_fraction": {"values": [0.5, 1.5]}},
        "command": [
            "${env}",
            "earlyphase",
            "imp",
            "--width=4",
            "--training_steps=1ep",
            "--rewind_step=5it",
            "--levels=1",
            "--out=elsewhere",
            "${args}",
        ],
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep))
    code, _, err = run_cli(["sweep", "run", str(path), f"--out={tmp_path / 'runs'}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run 2 of 2 (--prune_fraction=1.5): --prune_fraction=1.5: must be strictly between 0 and 1" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()  # not even a ledger
    code, _, err = run_cli(["sweep", "run", str(path), f"--out={path}"], capsys)
    assert code == 2 and "is a file, not a folder" in err


def test_a_copied_study_reports_its_own_runs_even_from_absolute_records(tmp_path, capsys):
    """study.json written before runs were kept relative held absolute paths: a copy still reads its own runs."""
    original = tmp_path / "runs"
    for s in range(3):
        write_imp(original, f"imp_a{s}", s, [0.9, 0.8])
    study = original / "study_x"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({"units": [
        {"condition": "rewind", "seed": s, "imp_dir": str(original / f"imp_a{s}")} for s in range(3)]}))
    copy = tmp_path / "runs2"
    shutil.copytree(original, copy)
    tickets = json.loads((copy / "imp_a0" / "tickets.json").read_text())
    tickets[1]["test_accuracy"] = 0.5
    (copy / "imp_a0" / "tickets.json").write_text(json.dumps(tickets))
    shutil.rmtree(original)
    assert cli.main(["report", str(copy / "study_x")]) == 0
    data = json.loads((copy / "study_x" / "report" / "report.json").read_text())
    assert data["conditions"][0]["curve"][1]["mean"] == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert data["conditions"][0]["runs"] == ["imp_a0", "imp_a1", "imp_a2"]  # named by directory, read from the copy


def test_the_report_verifies_the_parts_it_reports(out, capsys):
    code, stdout, _ = run_cli(["imp", f"--out={out}", *TINY, "--rewind_step=5it", "--prune_fraction=0.5", "--levels=1"],
                              capsys)
    run = Path(stdout.strip().splitlines()[-1])
    final = run / "level_1" / "final.pt"
    data = bytearray(final.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights: torch.load might not notice, the CRC does
    final.write_bytes(bytes(data))
    assert cli.main(["report", str(out), "-o", str(out / "rep")]) == 0
    report = json.loads((out / "rep" / "report.json").read_text())
    assert [p["level"] for p in report["conditions"][0]["curve"]] == [0]  # level 1's number is not shown
    problem = next(i for i in report["incomplete"] if i["run"].endswith("level_1"))
    assert (
        "its final.pt is missing or corrupt" in problem["why"]
        and "move final.pt and summary.json away" in problem["why"]
    )


def test_a_report_killed_while_writing_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    root = tmp_path / "runs"
    for s in range(3):
        write_imp(root, f"imp_a{s}", s, [0.9, 0.8])
        write_imp(root, f"imp_z{s}", s, [0.9, 0.7], k=0)
    out = tmp_path / "rep"
    assert cli.main(["report", str(root), "-o", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def dies_halfway(self, target, *args, **kwargs):  # a kill or a full disk in the middle of a figure
        (target.write if hasattr(target, "write") else open(target, "wb").write)(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", dies_halfway)
    with pytest.raises(OSError):
        from earlyphase.studies.reporting import report
        report.write_report([root], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no half file, no temporary left


def test_a_study_sweep_checks_the_scheduler_settings_before_the_first_run(tmp_path, capsys):
    sweep = {"method": "grid", "parameters": {"concurrent": {"values": [1, 0]}},
             "command": ["${env}", "earlyphase", "study", "--conditions=reset", "${args}"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep))
    code, _, err = run_cli(["sweep", "run", str(path), f"--out={tmp_path / 'runs'}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run 2 of 2 (--concurrent=0): --concurrent=0: must be 1" in err
    assert not (tmp_path / "runs").exists()
