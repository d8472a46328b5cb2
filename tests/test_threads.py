"""--threads: the default is the cores this process may use (or its share under `sweep run --jobs`), applied before
the run's first op and recorded as the count used."""

import json
import os
from pathlib import Path

import pytest
import torch

from earlyphase.studies.engine import threads
from earlyphase.studies.engine.errors import UsageError

from conftest import one_line_error, run_cli


@pytest.fixture(autouse=True)
def keep_thread_count():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_is_the_affinity_or_the_parents_share(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.default_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.default_threads() == 3 and threads.share(2) == 1 and threads.share(1) == 3
    assert threads.child_environment(1)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(UsageError, match="EARLYPHASE_THREADS=two: use a whole number"):
        threads.default_threads()


def test_the_flag_sets_the_count_before_training_and_config_records_it(capsys, out, monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    torch.set_num_threads(2)
    code, stdout, err = run_cli(["train", "--threads=1", "--width=2", "--training_steps=2it", f"--out={out}"], capsys)
    assert code == 0, err
    assert torch.get_num_threads() == 1
    run = Path(stdout.strip().splitlines()[-1])
    assert json.loads((run / "config.json").read_text())["threads"] == 1
    # platform: the thread count names nothing (the same run, resumed or found finished, with any count)
    code, stdout2, _ = run_cli(["train", "--width=2", "--training_steps=2it", f"--out={out}"], capsys)
    assert code == 0 and stdout2.strip().splitlines()[-1] == str(run)
    assert json.loads((run / "config.json").read_text())["threads"] == len(os.sched_getaffinity(0))


def test_zero_threads_is_refused(capsys, out):
    code, _, err = run_cli(["train", "--threads=0", f"--out={out}"], capsys)
    one_line_error(code, err, "--threads must be a positive integer")
