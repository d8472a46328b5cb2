"""Several processes on one --out: each run directory is trained by exactly one of them, none deadlocks.

The tests hold a run's lock themselves while the processes start, so that every process must meet it
(no race decides what is tested), then let go and check that the run was trained once and that every
file equals a single uninterrupted run's."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from earlyphase.studies.engine import locks
from earlyphase.studies.engine.schedule import Training, train_interleaved
from earlyphase.studies.engine.stacked import StackedRun, train_stacked
from earlyphase.studies.jobs import arguments, setup
from earlyphase.studies.jobs import imp as imp_job
from earlyphase.studies.jobs.config import TrainConfig, run_dir
from earlyphase.studies.jobs.flags import parse_overrides

from conftest import TINY

DEADLINE_S = 600  # only against a hang; nothing here measures time


class _Stderr:
    """A process's stderr lines, read by a thread so that the test can wait for one without blocking."""

    def __init__(self, proc):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc):
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, *words):
        deadline = time.time() + DEADLINE_S
        while time.time() < deadline:
            if any(all(w in line for w in words) for line in list(self.lines)):
                return
            if not self.thread.is_alive():
                break
            time.sleep(0.05)
        pytest.fail(f"no line with {words} on stderr: {self.lines}")


ENV = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the kernels of the in-process references


def _start(args):
    env = ENV
    proc = subprocess.Popen([sys.executable, "-m", "earlyphase.studies.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, _Stderr(proc)


def _finish(proc, stderr):
    stdout = proc.stdout.read()
    assert proc.wait(timeout=DEADLINE_S) == 0, stderr.lines
    stderr.thread.join()
    return stdout


def _steps(path):
    return [json.loads(line)["step"] for line in Path(path).read_text().splitlines()]


def _same_final(a, b):
    x, y = (torch.load(Path(p) / "final.pt", weights_only=True)["model"] for p in (a, b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_two_train_processes_on_one_out_train_the_run_once(out):
    args = ["train", *TINY, "--eval_every=1"]
    subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", *args, f"--out={out}/single"], check=True,
                   env=ENV, capture_output=True)
    shared = run_dir("train", parse_overrides(TrainConfig, args[1:] + [f"--out={out}/shared"]))
    with locks.RunLock(shared):  # as if a third process were training it: both must wait
        started = [_start(args + [f"--out={out}/shared"]) for _ in range(2)]
        for _, stderr in started:
            stderr.wait_for("another process is training", str(shared), "waiting")
    outputs = sorted(_finish(*p).splitlines()[0] for p in started)
    assert outputs[0].startswith("train done: ") and outputs[1].startswith("train finished by another process: ")
    single = out / "single" / shared.name
    assert _steps(shared / "metrics.jsonl") == _steps(single / "metrics.jsonl") == [23]
    for name in ("metrics.jsonl", "summary.json"):
        assert (shared / name).read_text() == (single / name).read_text()
    assert _same_final(shared, single)


def test_two_imp_processes_running_parts_interleaved_share_an_out_without_deadlock(out):
    # each process runs level 1's trunk and control interleaved (--concurrent=2); the control is locked
    # by the test, so each must train (or skip) the trunk while waiting for the control, holding nothing
    args = ["imp", *TINY, "--rewind_step=5it", "--prune_fraction=0.5", "--levels=1", "--controls=random_reinit",
            "--concurrent=2"]
    command = arguments.imp(args[1:] + [f"--out={out}/single"])
    single, _ = imp_job.run(command.imp, scheduler=command.scheduler)
    shared = out / "shared" / single.name
    control = shared / "level_1" / "random_reinit"
    with locks.RunLock(control):
        started = [_start(args + [f"--out={out}/shared"]) for _ in range(2)]
        for _, stderr in started:
            stderr.wait_for("another process is training", str(control), "waiting")
    for proc in started:
        assert _finish(*proc).strip().splitlines()[-1] == str(shared)
    for part in ("level_0", "level_1", "level_1/random_reinit"):
        assert _steps(shared / part / "metrics.jsonl") == _steps(single / part / "metrics.jsonl"), part
        assert _same_final(shared / part, single / part), part
    assert (shared / "tickets.json").read_text() == (single / "tickets.json").read_text()
    finished_lines = [line for _, e in started for line in e.lines if "imp level 1 random_reinit" in line]
    assert sorted(line.endswith("(already finished)") for line in finished_lines) == [False, True]


def _trainings(out, name):
    cfg = setup.validate(TrainConfig(out=str(out), width=4, training_steps="1ep"))
    device = torch.device("cpu")
    data = setup.load_data(cfg, device)
    return [Training(setup.make_model(cfg, data, device, seed=seed), data,
                     setup.make_plan(cfg, data, device, seed=seed), out / name / f"seed{seed}") for seed in (0, 1)]


@pytest.mark.parametrize("engine", ["streams", "vmap"])
def test_a_process_trains_the_runs_it_can_lock_before_waiting_for_the_others(out, engine):
    reference = _trainings(out, "reference")
    for t in reference:
        t.train()
    trainings = _trainings(out, "shared")
    free, held = trainings
    results = []

    def work():
        if engine == "streams":
            results.extend(train_interleaved(trainings))
        else:
            results.extend(train_stacked([StackedRun(t.model, t.plan, t.run_dir) for t in trainings], free.data))

    lock = locks.RunLock(held.run_dir)
    assert lock.try_acquire()
    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.time() + DEADLINE_S
    while not (free.run_dir / "summary.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (free.run_dir / "summary.json").exists(), "the free run waited for the locked one"
    steps = held.steps(lock)  # this "other process" trains the locked run meanwhile
    while True:
        try:
            next(steps)
        except StopIteration:
            break
    lock.release()
    worker.join(DEADLINE_S)
    assert not results[0].skipped and results[1].skipped and results[1].by_other_process
    assert _steps(free.run_dir / "metrics.jsonl") == _steps(held.run_dir / "metrics.jsonl") == [23]  # trained once
    assert (held.run_dir / "metrics.jsonl").read_text() == (reference[1].run_dir / "metrics.jsonl").read_text()
    assert _same_final(held.run_dir, reference[1].run_dir)
