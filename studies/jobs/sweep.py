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
import hashlib
import json
import subprocess
import sys
import threading
import warnings
from pathlib import Path

from ..engine.checkpoints import write_json_atomic
from ..engine.errors import UsageError
from .setup import check_out

USAGE = "usage: earlyphase sweep run FILE.yaml [--count=N] [--jobs=J | --concurrent=K] [--out=DIR]"


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


def load_sweep(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise UsageError(f"no sweep file at {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UsageError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path} does not hold a sweep (a mapping with method, parameters, command)")
    sweeps, _ = import_engine()
    violations = sweeps.schema_violations_from_proposed_config(config)
    if violations:
        raise UsageError(f"{path} is not a valid sweep:\n" + "\n".join(f"  {v}" for v in violations))
    return config


def enumerate_argvs(config: dict, count: int | None) -> list[list[str]]:
    """The argv lists an agent would pass, in the engine's order."""
    sweeps, command_args = import_engine()
    if config.get("method") != "grid" and not count:
        raise UsageError(f"method {config.get('method')} never ends by itself: pass --count=N")
    runs, argvs = [], []
    while count is None or len(argvs) < count:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = sweeps.next_run(config, runs)
        if run is None:
            break
        run.state = sweeps.RunState.finished
        runs.append(run)
        argvs.append(list(command_args({"args": run.config})["args"]))
    return argvs


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

    if not args or args[0] not in COMMANDS or not COMMANDS[args[0]][1]:
        raise UsageError(
            f"the sweep's command runs `earlyphase {args[0] if args else ''}`: "
            f"use a command with --field options, e.g. study"
        )
    importlib.import_module(COMMANDS[args[0]][0]).check(args[1:])


def _parse_options(argv: list[str]) -> tuple[Path, int | None, int, Path, int]:
    if len(argv) < 2 or argv[0] != "run":
        raise UsageError(USAGE)
    path, count, jobs, out, concurrency = Path(argv[1]).expanduser(), None, 1, Path("runs"), 1
    for arg in argv[2:]:
        key, eq, value = arg.partition("=")
        try:
            if key == "--count" and eq:
                count = int(value)
            elif key == "--jobs" and eq:
                jobs = int(value)
            elif key == "--out" and eq:
                out = Path(value).expanduser()
            elif key == "--concurrent" and eq:
                concurrency = int(value)
            else:
                raise UsageError(f"unknown option {arg}: {USAGE}")
        except ValueError:
            raise UsageError(f"{arg}: expected a whole number") from None
    if (count is not None and count < 1) or jobs < 1 or concurrency < 1:
        raise UsageError("--count, --jobs and --concurrent must be at least 1")
    if jobs > 1 and concurrency > 1:
        raise UsageError("--jobs runs processes side by side, --concurrent stacks trainings in one: choose one")
    return path, count, jobs, out, concurrency


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
    path, count, jobs, out, concurrency = _parse_options(argv)
    config = load_sweep(path)
    argvs = enumerate_argvs(config, count)
    commands = [expand_command(config, a) for a in argvs]
    check_out(str(out))
    for i, command in enumerate(commands, 1):
        try:
            check_args(with_out(earlyphase_args(command), out))
        except UsageError as err:
            raise UsageError(f"run {i} of {len(commands)} ({' '.join(argvs[i - 1])}): {err}") from None
    digest = hashlib.sha256(json.dumps([config, str(out.resolve())], sort_keys=True, default=str).encode()).hexdigest()[
        :10
    ]
    ledger_dir = out / "sweeps" / f"{path.stem}-{digest}"
    ledger_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = ledger_dir / "ledger.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
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

    def run_one(i: int, command: list[str]) -> int:
        if finished(i):
            return 0
        full = [sys.executable, "-m", "earlyphase.studies.cli", *with_out(earlyphase_args(command), out)]
        print(f"[{i + 1}/{len(commands)}] {' '.join(argvs[i])}: running", file=sys.stderr)
        with open(ledger_dir / f"run-{i:04d}.log", "w") as log:
            code = subprocess.run(full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        record(i, code, f"run-{i:04d}.log")
        return code

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(run_one, range(len(commands)), commands))
    failed = sum(c != 0 for c in codes)
    print(
        f"sweep {path.name}: {len(codes) - failed} of {len(codes)} runs finished; report: earlyphase report {out}",
        file=sys.stderr,
    )
    print(ledger_dir)
    return 1 if failed else 0
