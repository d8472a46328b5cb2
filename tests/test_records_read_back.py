"""Every file read back is checked against the run that wrote it: a record of the wrong shape, edited, damaged,
nested too deeply or from another run is one line (exit 2) naming the file and the fix, or a part the report lists
as excluded; never a traceback or a silent wrong number."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from earlyphase.studies import cli
from earlyphase.studies.engine import records
from earlyphase.studies.engine.trainer import train
from earlyphase.studies.jobs import setup
from earlyphase.studies.jobs.config import TrainConfig
from earlyphase.studies.reporting import report

from conftest import TINY, final_weights, load, one_line_error, run_cli, same_state, sweep_file, write_imp

FLAGS = ["--width=2", "--training_steps=4it", "--batch_size=256", "--prune_fraction=0.5", "--levels=1",
        "--rewind_step=1it"]
ONE_LEVEL = ["--rewind_step=3it", "--levels=1", "--threads=1"]


@pytest.fixture
def imp_run(out, capsys):
    code, stdout, _ = run_cli(["imp", f"--out={out}", *FLAGS], capsys)
    assert code == 0
    return out, stdout.strip().splitlines()[-1]


def _tiny_run(out):
    cfg = setup.validate(TrainConfig(out=str(out), width=4, training_steps="4ep", eval_every=1))
    device = torch.device("cpu")
    data = setup.load_data(cfg, device)
    return setup.make_model(cfg, data, device), data, setup.make_plan(cfg, data, device)


@pytest.mark.parametrize("content,problem", [
    ({}, "has no 'test_accuracy'"),
    ({"test_accuracy": "0.9", "test_loss": 1.0, "train_loss": 1.0, "start_step": 1, "end_step": 4},
     "test_accuracy '0.9' is not a finite number"),
    ({"test_accuracy": 0.9, "test_loss": 1.0, "train_loss": 1.0, "start_step": 1, "end_step": -4},
     "end_step -4 is not a whole number >= 0"),
])
def test_a_summary_of_the_wrong_shape_is_one_line_when_imp_reads_it_back(imp_run, capsys, content, problem):
    out, run = imp_run
    path = os.path.join(run, "level_1", "summary.json")
    with open(path, "w") as f:
        json.dump(content, f)
    code, _, err = run_cli(["imp", f"--out={out}", *FLAGS], capsys)
    one_line_error(code, err, path, problem, "move it away")
    assert json.load(open(path)) == content  # nothing overwritten


def test_a_density_record_of_the_wrong_shape_is_one_line(imp_run, capsys):
    out, run = imp_run
    path = os.path.join(run, "level_1", "density.json")
    with open(path, "w") as f:
        json.dump({"density": 2.5}, f)
    code, _, err = run_cli(["imp", f"--out={out}", *FLAGS], capsys)
    one_line_error(code, err, path, "density 2.5 is not in [0, 1]", "rebuilt from mask.pt")


@pytest.mark.parametrize("edit,problem", [
    (lambda t: t[1].update(test_accuracy="high"), "[1].test_accuracy 'high' is not a finite number"),
    (lambda t: t[1].update(test_accuracy=float("nan")), "[1].test_accuracy nan is not a finite number"),
    (lambda t: t[1].update(level=float("inf")), "[1].level inf is not a finite number"),  # `1e999` in the file
    (lambda t: t[0].pop("kind"), "[0] has no 'kind'"),
])
def test_report_names_a_damaged_tickets_record_and_the_fix(tmp_path, capsys, edit, problem):
    root = tmp_path / "runs"
    run = write_imp(root, "imp_a", 0, [0.9, 0.8])
    tickets = json.loads((run / "tickets.json").read_text())
    edit(tickets)
    (run / "tickets.json").write_text(json.dumps(tickets).replace("Infinity", "1e999"))
    code, _, err = run_cli(["report", str(root)], capsys)
    one_line_error(code, err, str(run / "tickets.json"), problem, "rerun `earlyphase imp` on that run")
    assert not (root / "report").exists()


def test_report_names_a_config_of_the_wrong_shape(tmp_path, capsys):
    root = tmp_path / "runs"
    run = write_imp(root, "imp_a", 0, [0.9, 0.8])
    (run / "config.json").write_text("[1, 2]")
    code, _, err = run_cli(["report", str(root)], capsys)
    one_line_error(code, err, str(run / "config.json"), "is not a JSON object")


def test_an_edited_run_config_is_refused_by_imp_and_excluded_by_the_report(imp_run, tmp_path, capsys):
    out, run = imp_run
    path = os.path.join(run, "config.json")
    original = open(path).read()
    config = json.loads(original)
    config["lr"] = 0.5
    with open(path, "w") as f:
        json.dump(config, f)
    code, _, err = run_cli(["imp", f"--out={out}", *FLAGS], capsys)
    one_line_error(code, err, path, "names another run", "edited after the run")
    assert json.load(open(path))["lr"] == 0.5  # left as found
    code, _, err = run_cli(["report", str(out), "-o", str(tmp_path / "rep")], capsys)
    one_line_error(code, err, "no finished IMP level")  # its only run is excluded, so there is nothing to show
    with open(path, "w") as f:
        f.write(original)
    write_imp(out, "imp_other", 0, [0.9, 0.8])
    with open(path, "w") as f:
        json.dump(config, f)
    data = json.loads((report.write_report([out], tmp_path / "rep") / "report.json").read_text())
    (excluded,) = [i for i in data["incomplete"] if i.get("excluded")]
    assert excluded["run"].endswith(os.path.basename(run)) and "edited after the run" in excluded["why"]
    assert [c["runs"] for c in data["conditions"]] == [["imp_other"]]


def test_every_shape_names_where_it_breaks():
    shape = records.Obj({"a": records.ListOf(records.Obj({"b": records.COUNT}))})
    assert records.problem({"a": [{"b": 1}, {"b": 1.5}]}, shape) == "a[1].b 1.5 is not a whole number >= 0"
    assert records.problem({"a": [{"b": True}]}, shape) == "a[0].b True is not a finite number"
    assert records.problem([], shape) == "is not a JSON object"
    assert records.problem({"a": [{"b": 3}]}, shape) is None
    assert records.problem({"x": 1.5}, records.MapOf(records.FRACTION)) == "['x'] 1.5 is not in [0, 1]"


def test_a_damaged_sweep_ledger_and_study_record_are_one_line(tmp_path, capsys):
    path = sweep_file(tmp_path, yaml.safe_dump({"method": "grid", "parameters": {"seed": {"values": [0]}},
                                           "command": ["${env}", "earlyphase", "train", "--width=2",
                                                       "--training_steps=2it", "--batch_size=256", "${args}"]}))
    out = tmp_path / "runs"
    assert run_cli(["sweep", "run", str(path), f"--out={out}"], capsys)[0] == 0
    (ledger,) = out.glob("sweeps/*/ledger.json")
    ledger.write_text(json.dumps({"--seed=0": {"argv": "--seed=0", "returncode": 0, "log": None}}))
    code, _, err = run_cli(["sweep", "run", str(path), f"--out={out}"], capsys)
    one_line_error(code, err, str(ledger), "['--seed=0'].argv is not a list", "move it away")
    study = tmp_path / "study_x"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({"config": {}}))
    code, _, err = run_cli(["report", str(study)], capsys)
    one_line_error(code, err, "study.json is corrupt (has no 'units')", "rerun the study")


@pytest.mark.parametrize("content,problem", [("{\"test_acc", "not valid JSON"), ("[]", "not a JSON object"),
                                             ("{\"step\": 1}", "no 'test_accuracy'")])
def test_a_corrupt_summary_is_one_line_naming_it_and_the_fix(out, capsys, content, problem):
    args = ["train", f"--out={out}", *TINY]
    code, stdout, _ = run_cli(args, capsys)
    summary = os.path.join(stdout.strip().splitlines()[-1], "summary.json")
    with open(summary, "w") as f:
        f.write(content)
    code, _, stderr = run_cli(args, capsys)
    one_line_error(code, stderr, summary, problem, "move it away to train that run again")
    assert open(summary).read() == content


def test_a_corrupt_density_record_is_one_line_naming_it(out, capsys):
    args = ["imp", f"--out={out}", *TINY, "--rewind_step=5it", "--prune_fraction=0.5", "--levels=1"]
    code, stdout, _ = run_cli(args, capsys)
    density = os.path.join(stdout.strip().splitlines()[-1], "level_1", "density.json")
    with open(density, "w") as f:
        f.write("{\"dens")
    code, _, stderr = run_cli(args, capsys)
    one_line_error(code, stderr, density, "not valid JSON", "rebuilt from mask.pt")
    os.remove(density)  # the fix the line names
    code, _, _ = run_cli(args, capsys)
    assert code == 0 and json.load(open(density))["density"] == 0.5


def test_metrics_lines_that_are_not_records_are_dropped_on_resume(out):
    class Crash(Exception):
        pass

    def crash_at(step):
        def hook(s, model, loss):
            if s == step:
                raise Crash
        return hook

    model, data, plan = _tiny_run(out)
    train(model, data, plan, out / "full")
    model, data, plan = _tiny_run(out)
    with pytest.raises(Crash):
        train(model, data, plan, out / "resumed", step_hooks=[crash_at(60)])
    with (out / "resumed" / "metrics.jsonl").open("a") as f:
        f.write('[1, 2]\n"text"\n17\nnull\n{"no_step": true}\n{"step": "46"}\n')
    model, data, plan = _tiny_run(out)
    assert train(model, data, plan, out / "resumed").resumed_from == 46
    assert (out / "full" / "metrics.jsonl").read_text() == (out / "resumed" / "metrics.jsonl").read_text()
    assert same_state(final_weights(out / "full" / "final.pt"), final_weights(out / "resumed" / "final.pt"))


def test_records_nested_too_deeply_are_one_line(tmp_path, capsys):
    code, stdout, _ = run_cli(["imp", *TINY, *ONE_LEVEL, f"--out={tmp_path}/runs"], capsys)
    run = Path(stdout.strip().splitlines()[-1])
    (run / "level_1" / "summary.json").write_text("[" * 100_000)
    code, _, err = run_cli(["report", str(run), "-o", str(tmp_path / "report")], capsys)
    assert code == 0, err  # the part is listed as damaged, the rest reported
    incomplete = json.loads((tmp_path / "report" / "report.json").read_text())["incomplete"]
    assert "nested too deeply" in json.dumps(incomplete)
    code, _, err = run_cli(["imp", *TINY, "--rewind_step=3it", "--levels=2", "--threads=1",
                            f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "summary.json", "nested too deeply")


def test_scores_that_are_not_finite_are_refused(tmp_path, capsys):
    args = ["pretrain", "--pretext=subset", "--subset_select=easy", "--subset_score_runs=1", "--width=4",
            "--pretrain_steps=2it", "--threads=1", f"--out={tmp_path}/runs"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    (scores_dir,) = (tmp_path / "runs").glob("scores_el2n_*")
    saved = load(scores_dir / "scores.pt")
    saved["scores"] = torch.full_like(saved["scores"], float("nan"))
    torch.save(saved, scores_dir / "scores.pt")
    before = (scores_dir / "scores.pt").read_bytes()
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, "scores.pt holds scores that are not finite numbers")
    assert (scores_dir / "scores.pt").read_bytes() == before


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
