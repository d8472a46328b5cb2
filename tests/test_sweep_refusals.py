"""A sweep file that cannot run is refused in one line before its first run starts: a YAML bomb, a grid too large
to enumerate, schema violations, special folders, runs or scheduler settings a command would refuse."""

import time

import pytest
import yaml

from conftest import TINY, one_line_error, run_cli, sweep_file

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
    code, _, err = run_cli(["sweep", "run", str(sweep_file(tmp_path, text)), f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "expands to more than", "aliases")
    assert time.monotonic() - started < 10 and not (tmp_path / "runs").exists()


def test_a_huge_grid_is_counted_and_refused_before_enumerating(tmp_path, capsys):
    values = ", ".join(str(i) for i in range(100))
    text = (f"method: grid\nparameters:\n  seed: {{values: [{values}]}}\n  data_seed: {{values: [{values}]}}\n"
            f"  width: {{values: [{values}]}}\ncommand: [earlyphase, train, '${{args}}']\n")
    started = time.monotonic()
    code, _, err = run_cli(["sweep", "run", str(sweep_file(tmp_path, text)), f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "1,000,000 runs", "--max_runs")
    assert time.monotonic() - started < 10
    code, _, err = run_cli(["sweep", "run", str(sweep_file(tmp_path, text)), "--max_runs=0"], capsys)
    one_line_error(code, err, "--max_runs")


def test_a_sweeps_schema_violations_are_one_line(tmp_path, capsys):
    text = yaml.safe_dump({"method": "grid", "parameters": {"seed": {"valuez": [1]}, "lr": {"vals": [1]}}})
    code, _, err = run_cli(["sweep", "run", str(sweep_file(tmp_path, text))], capsys)
    one_line_error(code, err, "is not a valid sweep", "valuez")


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


def test_a_study_sweep_checks_the_scheduler_settings_before_the_first_run(tmp_path, capsys):
    sweep = {"method": "grid", "parameters": {"concurrent": {"values": [1, 0]}},
             "command": ["${env}", "earlyphase", "study", "--conditions=reset", "${args}"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep))
    code, _, err = run_cli(["sweep", "run", str(path), f"--out={tmp_path / 'runs'}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run 2 of 2 (--concurrent=0): --concurrent=0: must be 1" in err
    assert not (tmp_path / "runs").exists()


def test_special_folders_and_sweeps_the_engine_cannot_run_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(["train", *TINY, "--out=/proc/earlyphase-runs"], capsys)
    one_line_error(code, err, "--out=/proc/earlyphase-runs: cannot make folders in /proc")
    sweep = tmp_path / "bayes.yaml"
    sweep.write_text("program: earlyphase\nmethod: bayes\nparameters:\n  seeds:\n    values: [0, 1]\n"
                     "command:\n  - earlyphase\n  - study\n  - ${args}\n")
    code, _, err = run_cli(["sweep", "run", str(sweep), f"--out={tmp_path}/runs", "--count=2"], capsys)
    one_line_error(code, err, 'Bayesian search requires "metric" section')
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["pretext", "report", "sweep", "nonsense"])
def test_a_sweep_of_a_command_without_a_check_is_one_line(tmp_path, capsys, command):
    """A sweep runs commands with --field options (each has check(argv)); any other is refused before a run starts."""
    text = yaml.safe_dump({"program": "earlyphase", "method": "grid", "parameters": {"seed": {"values": [0]}},
                           "command": ["${env}", "earlyphase", command, "${args}"]})
    code, _, err = run_cli(["sweep", "run", str(sweep_file(tmp_path, text)), f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, f"runs `earlyphase {command}`", "use a command with --field options")
    assert not (tmp_path / "runs").exists()
