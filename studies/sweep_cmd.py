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
in lock-step, so same-shaped trainings of every study stack K at a time on one device
(earlyphase.studies.schedule; results equal the separate runs' up to rounding, same run directories).
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

from .checkpoints import write_json_atomic
from .errors import UsageError

USAGE = "usage: earlyphase sweep run FILE.yaml [--count=N] [--jobs=J | --concurrent=K] [--out=DIR]"


def import_engine():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sweeps' pydantic-2 config warnings are not the user's business
            import sweeps
            from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    except ImportError:
        raise UsageError("the sweep engine is not installed: pip install 'earlyphase[sweeps]' (or pip install sweeps)") from None
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
    raise UsageError("the sweep's command does not run earlyphase: write command as [${env}, earlyphase, SUBCOMMAND, ..., ${args}]")


def check_args(args: list[str]) -> None:
    """Parse a run's arguments with its subcommand's parser, running nothing."""
    from . import cli
    import importlib

    if not args or args[0] not in cli.COMMANDS or not cli.COMMANDS[args[0]][1]:
        raise UsageError(f"the sweep's command runs `earlyphase {args[0] if args else ''}`: use a command with --field options, e.g. study")
    module = importlib.import_module(cli.COMMANDS[args[0]][0])
    if hasattr(module, "parse"):
        module.parse(args[1:])
    else:
        from .config import parse_overrides
        parse_overrides(getattr(module, cli.COMMANDS[args[0]][1]), args[1:])


def _parse_options(argv: list[str]) -> tuple[Path, int | None, int, Path, int]:
    if len(argv) < 2 or argv[0] != "run":
        raise UsageError(USAGE)
    path, count, jobs, out, stack = Path(argv[1]).expanduser(), None, 1, Path("runs"), 1
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
                stack = int(value)
            else:
                raise UsageError(f"unknown option {arg}: {USAGE}")
        except ValueError:
            raise UsageError(f"{arg}: expected a whole number") from None
    if (count is not None and count < 1) or jobs < 1 or stack < 1:
        raise UsageError("--count, --jobs and --concurrent must be at least 1")
    if jobs > 1 and stack > 1:
        raise UsageError("--jobs runs processes side by side, --concurrent stacks trainings in one: choose one")
    return path, count, jobs, out, stack


def run_stacked(argvs: list[list[str]], commands: list[list[str]], ledger: dict, save, out: Path, stack: int) -> list[int]:
    """Every unfinished study of the sweep in this process, in lock-step, trainings stacked `stack` at a time."""
    from . import schedule, study

    jobs, codes = [], [0] * len(commands)
    for i, command in enumerate(commands):
        args = earlyphase_args(command)
        if args[0] != "study":
            raise UsageError(f"--concurrent runs sweeps of `earlyphase study`; this one runs `earlyphase {args[0]}`: use --jobs")
        key = " ".join(argvs[i])
        if ledger.get(key, {}).get("returncode") == 0:
            print(f"[{i + 1}/{len(commands)}] {key}: finished earlier, skipped", file=sys.stderr)
            continue
        cfg = study.parse([*args[1:], f"--out={out}", f"--concurrent={stack}"])
        jobs.append(_ledgered(study.work(cfg), i, argvs[i], ledger, save, len(commands)))
    engines = {study.parse(earlyphase_args(c)[1:]).concurrent_engine for c in commands}
    if len(engines) > 1:
        raise UsageError(f"the sweep's runs ask for different --concurrent_engine values ({', '.join(sorted(engines))}): use one")
    schedule.run(schedule.gather(jobs), stack, engines.pop())
    return codes


def _ledgered(job, i: int, argv: list[str], ledger: dict, save, total: int):
    """`job`, then its ledger entry (finished, returncode 0) once it ends."""
    yield from job
    ledger[" ".join(argv)] = {"argv": argv, "returncode": 0, "log": None}
    save()
    print(f"[{i + 1}/{total}] {' '.join(argv)}: done", file=sys.stderr)


def main(argv: list[str]) -> int:
    path, count, jobs, out, stack = _parse_options(argv)
    config = load_sweep(path)
    argvs = enumerate_argvs(config, count)
    commands = [expand_command(config, a) for a in argvs]
    for command in commands:
        check_args(earlyphase_args(command))
    digest = hashlib.sha256(json.dumps([config, str(out.resolve())], sort_keys=True, default=str).encode()).hexdigest()[:10]
    ledger_dir = out / "sweeps" / f"{path.stem}-{digest}"
    ledger_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = ledger_dir / "ledger.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
    lock = threading.Lock()

    def save() -> None:
        with lock:
            write_json_atomic(ledger_path, ledger)

    if stack > 1:
        codes = run_stacked(argvs, commands, ledger, save, out, stack)
        print(f"sweep {path.name}: {len(codes)} of {len(codes)} runs finished; report: earlyphase report {out}", file=sys.stderr)
        print(ledger_dir)
        return 0

    def run_one(i: int, command: list[str]) -> int:
        key = " ".join(argvs[i])
        if ledger.get(key, {}).get("returncode") == 0:
            print(f"[{i + 1}/{len(commands)}] {key}: finished earlier, skipped", file=sys.stderr)
            return 0
        args = earlyphase_args(command)
        full = [sys.executable, "-m", "earlyphase.studies.cli", *args, f"--out={out}"]
        print(f"[{i + 1}/{len(commands)}] {key}: running", file=sys.stderr)
        with open(ledger_dir / f"run-{i:04d}.log", "w") as log:
            code = subprocess.run(full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        with lock:
            ledger[key] = {"argv": argvs[i], "returncode": code, "log": f"run-{i:04d}.log"}
            write_json_atomic(ledger_path, ledger)
        print(f"[{i + 1}/{len(commands)}] {key}: {'done' if code == 0 else f'FAILED (exit {code}), see {ledger_dir}/run-{i:04d}.log'}",
              file=sys.stderr)
        return code

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(run_one, range(len(commands)), commands))
    failed = sum(c != 0 for c in codes)
    print(f"sweep {path.name}: {len(codes) - failed} of {len(codes)} runs finished; report: earlyphase report {out}", file=sys.stderr)
    print(ledger_dir)
    return 1 if failed else 0
