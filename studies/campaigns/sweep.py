"""`earlyphase sweep run FILE [--count=N] [--jobs=J | --concurrent=K] [--out=DIR]`: a W&B sweep file, run here.

The runs are enumerated by `sweeps` (W&B's own sweep engine) and each run's argv is built by
`wandb.sdk.launch.sweeps.utils.create_sweep_command_args`, so they are exactly the runs, and the
arguments, that `wandb agent` would give on GPU machines. Each run is the sweep's `command` with its
macros expanded (${env} dropped, ${interpreter} -> this Python, ${program} -> the program, ${args} ->
the run's `--key=value` list) plus `--out=DIR`, run as a subprocess, J at a time.

Before anything runs: the file must pass `sweeps.schema_violations_from_proposed_config` (violations
are printed one per line, exit 2), and every run's arguments must parse for the earlyphase command the
sweep calls (unknown parameter names are refused). Grids run to the end; other methods need --count.
A ledger in DIR/sweeps/NAME-HASH/ (ledger.json and one log per run) records finished runs, which a
rerun skips; the commands themselves resume their own unfinished work.

`--concurrent=K` (sweeps of `earlyphase study` runs) runs the studies in this process instead, all
in lock-step, so the trainings of every study run K at a time on one device (earlyphase.studies.engine.schedule;
with the default engine the results are the separate runs' bit for bit, in the same run directories).
Their output goes to this terminal, not to per-run logs; an error stops the sweep (rerun to resume).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..engine import threads
from ..engine.errors import UsageError  # the rest of the application is imported when a sweep is about to run
from ..jobs.flags import parse_command_line, platform

USAGE = "usage: earlyphase sweep run FILE.yaml [--count=N] [--jobs=J | --concurrent=K] [--out=DIR] [--max_runs=N]"


def import_engine():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sweeps' pydantic-2 config warnings are not the user's business
            from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

            import sweeps
    except ImportError:
        raise UsageError(
            "the sweep engine is not installed: pip install 'earlyphase[sweeps]' (or pip install sweeps)"
        ) from None
    return sweeps, create_sweep_command_args


MAX_NODES = 100_000  # a sweep file's YAML nodes with every alias expanded (the paper's sweeps: about 200)
MAX_BYTES = 1 << 20
MAX_RUNS = 10_000  # `--max_runs` raises it


def _expanded_size(node, seen: dict) -> int:
    """How many nodes the YAML tree has once every alias is expanded (memoised: an alias bomb is counted, not
    built)."""
    import yaml

    key = id(node)
    if key not in seen:
        seen[key] = 0  # a node that contains itself counts once
        children = node.value if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) else []
        flat = [part for child in children for part in (child if isinstance(child, tuple) else (child,))]
        seen[key] = min(1 + sum(_expanded_size(c, seen) for c in flat), MAX_NODES + 1)
    return seen[key]


def load_sweep(path: Path) -> dict:
    """The sweep file, parsed with a bound on its size and on what its aliases expand to, and checked against
    W&B's own schema; every refusal is one line."""
    import yaml

    if not path.is_file():
        raise UsageError(f"no sweep file at {path}")
    if path.stat().st_size > MAX_BYTES:
        raise UsageError(f"{path} is {path.stat().st_size:,} bytes, more than a sweep file needs ({MAX_BYTES:,}): "
                         f"check that it is the sweep you meant")
    try:
        text = path.read_text()
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise UsageError(f"{path} expands to more than {MAX_NODES:,} YAML nodes (nested aliases, a 'YAML bomb'?): "
                             f"write the sweep without aliases")
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file: pass a sweep's YAML file") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path} does not hold a sweep (a mapping with method, parameters, command)")
    sweeps, _ = import_engine()
    violations = sweeps.schema_violations_from_proposed_config(config)
    if violations:
        raise UsageError(f"{path} is not a valid sweep: " + "; ".join(str(v).splitlines()[0] for v in violations))
    return config


def grid_size(parameters: dict) -> int:
    """How many runs a grid of these parameters has (nested parameters multiply), counted, not enumerated."""
    size = 1
    for spec in parameters.values():
        if not isinstance(spec, dict):
            continue
        if isinstance(spec.get("parameters"), dict):
            size *= grid_size(spec["parameters"])
        elif isinstance(spec.get("values"), list):
            size *= max(1, len(spec["values"]))
        elif spec.get("distribution") == "int_uniform":
            size *= max(1, int(spec["max"]) - int(spec["min"]) + 1)
        elif spec.get("distribution") == "q_uniform":
            size *= max(1, math.ceil((float(spec["max"]) - float(spec["min"])) / float(spec["q"])))
    return size


def planned_runs(config: dict, count: int | None, max_runs: int = MAX_RUNS) -> int:
    """How many runs the sweep will have, refused above max_runs before anything is enumerated."""
    if config.get("method") != "grid" and not count:
        raise UsageError(f"method {config.get('method')} never ends by itself: pass --count=N")
    total = grid_size(config["parameters"]) if config.get("method") == "grid" else count
    total = min(total, count) if count else total
    if total > max_runs:
        raise UsageError(f"the sweep has {total:,} runs, more than --max_runs={max_runs:,}: split it (fewer values "
                         f"per parameter), run part of it with --count=N, or raise --max_runs")
    return total


@contextlib.contextmanager
def _engine_refusals():
    """W&B's engine refuses some files only when asked for runs (bayes without a metric): one line, not a traceback."""
    try:
        yield
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"the sweep file cannot be run: {err} (W&B's sweep engine); fix the file") from None


def enumerate_argvs(config: dict, count: int | None, max_runs: int = MAX_RUNS) -> list[list[str]]:
    """The argv lists an agent would pass, in the engine's order (a grid in one call of the engine, which then
    works through the grid once instead of once per run)."""
    sweeps, command_args = import_engine()
    total = planned_runs(config, count, max_runs)
    with warnings.catch_warnings(), _engine_refusals():
        warnings.simplefilter("ignore")
        if config.get("method") == "grid":
            found = [r for r in sweeps.next_runs(config, [], n=total) if r is not None]
        else:
            found = []
            while len(found) < total:
                run = sweeps.next_run(config, found)
                if run is None:
                    break
                run.state = sweeps.RunState.finished
                found.append(run)
    return [list(command_args({"args": run.config})["args"]) for run in found]


def expand_command(config: dict, argv: list[str]) -> list[str]:
    command = config.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]
    out = []
    for part in command:
        if part == "${env}":
            continue
        if part == "${args}":
            out += argv
        elif part == "${interpreter}":
            out.append(sys.executable)
        elif part == "${program}":
            out.append(str(config.get("program", "")))
        elif part == "${args_no_hyphens}":
            out += [a[2:] for a in argv]
        else:
            out.append(part)
    return out


def earlyphase_args(command: list[str]) -> list[str]:
    """The arguments after the earlyphase executable, or a UsageError if the sweep runs something else."""
    for i, part in enumerate(command):
        if Path(part).name == "earlyphase" or part.endswith("earlyphase.studies.cli"):
            return command[i + 1:]
    raise UsageError(
        "the sweep's command does not run earlyphase: write command as [${env}, earlyphase, SUBCOMMAND, ..., ${args}]"
    )


def with_out(args: list[str], out: Path) -> list[str]:
    """A run's arguments with this runner's --out (it replaces one in the sweep's command)."""
    return [a for a in args if not a.startswith("--out=")] + [f"--out={out}"]


def check_args(args: list[str]) -> None:
    """Everything the run would refuse, refused before any run starts: its subcommand's full check (every field,
    every unit of a study), nothing written or trained."""
    import importlib

    from .commands import COMMANDS

    command = COMMANDS.get(args[0]) if args else None
    module = importlib.import_module(command.module) if command else None
    if not hasattr(module, "check"):  # the commands a sweep may run have check(argv)
        raise UsageError(
            f"the sweep's command runs `earlyphase {args[0] if args else ''}`: "
            f"use a command with --field options, e.g. study"
        )
    module.check(args[1:])


@dataclass
class SweepOptions:
    """`earlyphase sweep run FILE`'s options."""

    count: typing.Optional[int] = platform(None, "run the first N runs (needed for random and bayes sweeps)")
    jobs: int = platform(1, "J runs side by side, each its own process")
    out: str = platform("runs", "parent folder of the run directories (replaces the sweep's --out)")
    concurrent: int = platform(1, "the sweep's studies in this process, K trainings at a time")
    max_runs: int = platform(MAX_RUNS, "refuse a sweep of more runs than this")


def _parse_options(argv: list[str]) -> tuple[Path, SweepOptions]:
    """(the sweep file, the options): `run FILE` and the one field parser."""
    opts, positional = parse_command_line(SweepOptions, argv)
    if len(positional) != 2 or positional[0] != "run":
        raise UsageError(USAGE)
    if (opts.count is not None and opts.count < 1) or min(opts.jobs, opts.concurrent, opts.max_runs) < 1:
        raise UsageError("--count, --jobs, --concurrent and --max_runs must be at least 1")
    if opts.jobs > 1 and opts.concurrent > 1:
        raise UsageError("--jobs runs processes side by side, --concurrent stacks trainings in one: choose one")
    return Path(positional[1]).expanduser(), opts


def check_every_run(argvs: list[list[str]], commands: list[list[str]], out: Path) -> None:
    """Every run's full check before the first starts, with progress every few seconds on a long sweep."""
    shown = time.monotonic()
    for i, command in enumerate(commands, 1):
        try:
            check_args(with_out(earlyphase_args(command), out))
        except UsageError as err:
            raise UsageError(f"run {i} of {len(commands)} ({' '.join(argvs[i - 1])}): {err}") from None
        if time.monotonic() - shown > 5:
            print(f"sweep: checked {i} of {len(commands)} runs", file=sys.stderr, flush=True)
            shown = time.monotonic()


def run_in_process(commands: list[list[str]], out: Path, concurrency: int, finished, record) -> None:
    """Every unfinished study of the sweep in this process, in lock-step, `concurrency` trainings at a time.
    finished(i) says (and reports) whether run i finished earlier; record(i, 0, None) books it when it ends."""
    from ..engine import schedule
    from . import study

    cfgs = []
    for command in commands:
        args = earlyphase_args(command)
        if args[0] != "study":
            raise UsageError(
                f"--concurrent runs sweeps of `earlyphase study`; this one runs `earlyphase {args[0]}`: use --jobs"
            )
        cfgs.append(study.parse([a for a in with_out(args[1:], out) if not a.startswith("--concurrent=")]
                                + [f"--concurrent={concurrency}"]))
    engines = {cfg.scheduler.concurrent_engine for cfg in cfgs}
    if len(engines) > 1:
        raise UsageError(
            f"the sweep's runs ask for different --concurrent_engine values ({', '.join(sorted(engines))}): use one"
        )

    def booked(i: int):
        yield from study.work(cfgs[i])
        record(i, 0, None)

    jobs = [booked(i) for i in range(len(commands)) if not finished(i)]
    schedule.run(schedule.gather(jobs), concurrency, engines.pop())


def main(argv: list[str]) -> int:
    path, opts = _parse_options(argv)
    jobs, concurrency, out = opts.jobs, opts.concurrent, Path(opts.out).expanduser()
    config = load_sweep(path)
    argvs = enumerate_argvs(config, opts.count, opts.max_runs)
    commands = [expand_command(config, a) for a in argvs]
    from ..engine import records
    from ..engine.checkpoints import write_json_atomic
    from ..jobs.setup import check_out

    check_out(str(out))
    check_every_run(argvs, commands, out)
    digest = hashlib.sha256(json.dumps([config, str(out.resolve())], sort_keys=True, default=str).encode()).hexdigest()[
        :10
    ]
    ledger_dir = out / "sweeps" / f"{path.stem}-{digest}"
    ledger_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = ledger_dir / "ledger.json"
    ledger = records.read(ledger_path, records.LEDGER, missing_ok=True, fix="move it away: finished runs are then "
                          "started again and skip their finished work") or {}
    lock = threading.Lock()

    def finished(i: int) -> bool:
        if ledger.get(" ".join(argvs[i]), {}).get("returncode") != 0:
            return False
        print(f"[{i + 1}/{len(commands)}] {' '.join(argvs[i])}: finished earlier, skipped", file=sys.stderr)
        return True

    def record(i: int, code: int, log: str | None) -> None:
        with lock:
            ledger[" ".join(argvs[i])] = {"argv": argvs[i], "returncode": code, "log": log}
            write_json_atomic(ledger_path, ledger)
        failed = f"FAILED (exit {code}), see {ledger_dir}/{log}"
        print(f"[{i + 1}/{len(commands)}] {' '.join(argvs[i])}: {'done' if code == 0 else failed}", file=sys.stderr)

    if concurrency > 1:
        run_in_process(commands, out, concurrency, finished, record)
        print(f"sweep {path.name}: {len(commands)} of {len(commands)} runs finished; report: earlyphase report {out}",
              file=sys.stderr)
        print(ledger_dir)
        return 0

    children: list[subprocess.Popen] = []  # running now: stopped with this process (Ctrl-C, SIGTERM)
    stopping = threading.Event()

    def run_one(i: int, command: list[str]) -> int:
        if finished(i):
            return 0
        if stopping.is_set():
            return 130
        full = [sys.executable, "-m", "earlyphase.studies.cli", *with_out(earlyphase_args(command), out)]
        print(f"[{i + 1}/{len(commands)}] {' '.join(argvs[i])}: running", file=sys.stderr)
        # appended, never truncated: two `sweep run`s on one --out each keep their part of a run's log
        with open(ledger_dir / f"run-{i:04d}.log", "a") as log:
            log.write(f"=== {' '.join(argvs[i])}: started by process {os.getpid()} at {time.ctime()} ===\n")
            log.flush()
            slot = slots.get()  # a free worker slot: its GPU (round-robin over the visible ones)
            try:
                env = threads.worker_environment(slot, share, gpus) if jobs > 1 else child_env
                child = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**env, threads.PARENT_ENV: str(os.getpid())})
                with lock:
                    children.append(child)
                code = child.wait()
                with lock:
                    children.remove(child)
            finally:
                slots.put(slot)
        record(i, code, f"run-{i:04d}.log")
        return code

    # each job its share of the cores: J processes that each take every core spin-wait for each other
    share = threads.share(jobs)
    child_env = threads.child_environment(share)
    gpus = threads.visible_gpus() if jobs > 1 else []
    slots: queue.Queue = queue.Queue()
    for slot in range(jobs):
        slots.put(slot)
    on = f", GPUs {', '.join(gpus)} round-robin" if gpus else ""
    print(f"sweep {path.name}: {jobs} job(s) at a time, {share} CPU thread(s) each{on}", file=sys.stderr)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        codes = list(pool.map(run_one, range(len(commands)), commands))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: each running study stops as it would itself (resumable)
        stopping.set()
        with lock:
            for child in children:
                child.send_signal(signal.SIGTERM)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    failed = sum(c != 0 for c in codes)
    print(
        f"sweep {path.name}: {len(codes) - failed} of {len(codes)} runs finished; report: earlyphase report {out}",
        file=sys.stderr,
    )
    print(ledger_dir)
    return 1 if failed else 0
