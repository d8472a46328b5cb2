"""-h/--help anywhere among a command's arguments: the fields with the values those arguments resolve to."""

import pytest

from conftest import run_cli


def _help_values(stdout):
    """{field: the value shown in brackets} from a command's help."""
    values = {}
    for line in stdout.splitlines():
        if line.startswith("  --"):
            name, rest = line.strip()[2:].split("=", 1)
            values[name] = rest.split("[", 1)[1].split("]", 1)[0]
    return values


@pytest.mark.parametrize("args,expected", [
    (["train", "--help"], {"batch_size": "64", "training_steps": "'12ep'", "lr": "0.1"}),
    (["train", "--dataset=cifar10", "--help"], {"batch_size": "128", "training_steps": "'160ep'", "eval_every": "4"}),
    (["imp", "--dataset=cifar10", "-h"], {"batch_size": "128", "rewind_step": "'500it'",
                                          "milestone_steps": "'80ep,120ep'"}),
    (["imp", "--width=4", "--help", "--rewind_step=3it"], {"width": "4", "rewind_step": "'3it'", "batch_size": "64"}),
    (["study", "--preset=paper", "--help"], {"dataset": "'cifar10'", "batch_size": "128", "levels": "8",
                                             "seeds": "'0,1,2'", "rewind_step": "'500it'"}),
    (["pretrain", "--help", "--dataset=cifar10", "--pretext=simclr"], {"pretext": "'simclr'", "batch_size": "128"}),
])
def test_help_anywhere_shows_the_values_the_arguments_resolve_to_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                                                    args, expected):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run_cli(args + [f"--out={tmp_path / 'runs'}"], capsys)
    assert code == 0 and stderr == ""
    values = _help_values(stdout)
    assert {k: values[k] for k in expected} == expected
    assert list(tmp_path.iterdir()) == []


def test_help_with_arguments_that_do_not_parse_shows_the_defaults_and_says_why(capsys):
    code, stdout, _ = run_cli(["train", "--widht=4", "--help"], capsys)
    assert code == 0 and "did you mean --width" in stdout and _help_values(stdout)["width"] == "model default"
    for command in ("report", "sweep", "pretext"):
        code, stdout, _ = run_cli([command, "something", "--help"], capsys)
        assert code == 0 and stdout.startswith(f"earlyphase {command}: ") and "usage: earlyphase" in stdout


def test_help_and_flag_errors_of_every_command_import_neither_torch_nor_the_tasks():
    """Refusals and help come from each command's arguments parser, before its module (torch, lightly, matplotlib):
    checked in a fresh interpreter by what it imported, not by time."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from earlyphase.studies import cli\n"
        "from earlyphase.studies.campaigns.commands import COMMANDS\n"
        "codes = []\n"
        "for name in COMMANDS:\n"
        "    codes.append(cli.main([name, '--help']))\n"
        "    codes.append(cli.main([name, '--no_such_flag=1']))\n"
        "heavy = sorted(m for m in ('torch', 'lightly', 'kornia', 'matplotlib', 'timm') if m in sys.modules)\n"
        "print('RESULT', codes, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    codes, heavy = done.stdout.split("RESULT ")[-1].strip().rsplit("] ", 1)
    assert heavy == "[]", done.stdout[-2000:]
    from earlyphase.studies.campaigns.commands import COMMANDS

    assert codes == "[" + ", ".join(["0, 2"] * len(COMMANDS)), codes  # help exits 0, a bad flag 2
    assert done.stderr.count("earlyphase: error:") == len(COMMANDS)
