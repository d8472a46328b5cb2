"""Hardening, second round: records of the wrong shape, an edited run config, hostile sweep files, empty and control
characters in values, SIGTERM. Each is one line with exit status 2 (SIGTERM: the interrupt line), nothing lost."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from earlyphase.studies.engine import records
from earlyphase.studies.reporting import report

from conftest import final_weights, one_line_error, run_cli, same_state, write_imp

FLAGS = ["--width=2", "--training_steps=4it", "--batch_size=256", "--prune_fraction=0.5", "--levels=1",
        "--rewind_step=1it"]


@pytest.fixture
def imp_run(out, capsys):
    code, stdout, _ = run_cli(["imp", f"--out={out}", *FLAGS], capsys)
    assert code == 0
    return out, stdout.strip().splitlines()[-1]


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


# ---------------------------------------------------------------------------------------------- sweep files
def write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                                            for i in range(1, 9)])


@pytest.mark.parametrize("where", ["top", "parameters"])
def test_a_yaml_bomb_is_refused_in_one_line_quickly(tmp_path, capsys, where):
    if where == "top":
        text = BOMB + "\nmethod: grid\nparameters: {seed: {values: [0]}}\n"
    else:
        text = "method: grid\nparameters:\n  seed:\n    values: [0]\n  lr:\n    value:\n" + "\n".join(
            "      " + line for line in BOMB.splitlines())
    started = time.monotonic()
    code, _, err = run_cli(["sweep", "run", str(write(tmp_path, text)), f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "expands to more than", "aliases")
    assert time.monotonic() - started < 10 and not (tmp_path / "runs").exists()


def test_a_huge_grid_is_counted_and_refused_before_enumerating(tmp_path, capsys):
    values = ", ".join(str(i) for i in range(100))
    text = (f"method: grid\nparameters:\n  seed: {{values: [{values}]}}\n  data_seed: {{values: [{values}]}}\n"
            f"  width: {{values: [{values}]}}\ncommand: [earlyphase, train, '${{args}}']\n")
    started = time.monotonic()
    code, _, err = run_cli(["sweep", "run", str(write(tmp_path, text)), f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "1,000,000 runs", "--max_runs")
    assert time.monotonic() - started < 10
    code, _, err = run_cli(["sweep", "run", str(write(tmp_path, text)), "--max_runs=0"], capsys)
    one_line_error(code, err, "--max_runs")


def test_a_sweeps_schema_violations_are_one_line(tmp_path, capsys):
    text = yaml.safe_dump({"method": "grid", "parameters": {"seed": {"valuez": [1]}, "lr": {"vals": [1]}}})
    code, _, err = run_cli(["sweep", "run", str(write(tmp_path, text))], capsys)
    one_line_error(code, err, "is not a valid sweep", "valuez")


# ---------------------------------------------------------------------------------------------- values
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


# ---------------------------------------------------------------------------------------------- signals
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_print_the_interrupt_line_and_a_rerun_resumes_identically(out, tmp_path, sig, code):
    args = ["train", "--width=2", "--training_steps=12ep", "--eval_every=12", "--checkpoint_every=1"]
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", *args, f"--out={reference}"], check=True,
                   capture_output=True)
    process = subprocess.Popen([sys.executable, "-m", "earlyphase.studies.cli", *args, f"--out={out}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("train_*/checkpoint.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert err.strip().splitlines()[-1] == "earlyphase: interrupted; rerun the same command to resume"
    (run,) = out.glob("train_*")
    assert not (run / "summary.json").exists() and (run / "checkpoint.pt").exists()
    assert not list(run.glob("*.tmp"))
    done = subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", *args, f"--out={out}"], check=True,
                          capture_output=True, text=True)
    assert done.returncode == 0
    (finished,) = reference.glob("train_*")
    assert same_state(final_weights(run), final_weights(finished))


def test_a_damaged_sweep_ledger_and_study_record_are_one_line(tmp_path, capsys):
    path = write(tmp_path, yaml.safe_dump({"method": "grid", "parameters": {"seed": {"values": [0]}},
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
