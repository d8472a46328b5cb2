"""Weights & Biases logging that can never stop a run.

Mode (`--wandb`): disabled, offline or online; by default `WANDB_MODE` if set, else online when an API key
is configured (WANDB_API_KEY or ~/.netrc), else disabled. If the server cannot be reached (or anything in
wandb fails), a warning is printed once and logging continues offline, or is dropped if even that fails:
training never fails or hangs because of W&B.

What W&B receives, so that W&B can group and average runs without earlyphase's code:
- One W&B run per unit of work (dense training, pretraining, each IMP level and each of its parts: controls,
  perturbations, stability copies), grouped by study, job_type train / pretrain / level / control /
  stability. Its config is the job's resolved config without local paths, plus the condition's identity
  (jobs.identity: condition, condition_kind, task, task_options, budget, k, seed) and, for IMP parts, level,
  part and density. The job sends these as an {"identity": ...} record before its first training.
- The trainer's evaluations; at the end of each part its summary (condition, k, budget, seed, level, part,
  density, test_accuracy) and one point of `ticket/{part}/test_accuracy` against `ticket/density`
  (define_metric: density is that curve's x axis); the ticket table (a wandb.Table with seed, condition, k
  and budget columns).
- At the end of each IMP level, the run's records as an artifact of type `earlyphase-records` named by its
  run directory (`records_artifact`: config.json, tickets.json, every part's summary.json and density.json,
  stability.json, and records_manifest.json with the sha256 of each intact final.pt; `--wandb_weights` adds
  the final.pt files), from that level's W&B run. It is logged only when the records changed since this
  --out last logged them to that project and mode (a resumed run with nothing new logs nothing; for the same
  content W&B would make no new version anyway).
- Under a sweep agent (WANDB_SWEEP_ID set) the agent has made the run already, and everything goes into it.
  A sweep run should be one study unit (one condition, one seed: see sweeps/): its identity is then the run's
  config and its keys carry no seed (`level_3/trunk/test_accuracy` against `level_3/trunk/step`,
  `level_3/density`), so W&B groups sweep runs by condition and averages seeds. A study of several units
  there prefixes each unit's keys with its name, which W&B cannot group, and says so once.
- Files: what a later `wandb sync` needs stays under --out: the runs in --out/wandb, the records' staged
  copies in --out/wandb/earlyphase-staging (content-addressed, never changed), and wandb's own staging of
  tables in --out/wandb/data (WANDB_DATA_DIR, unless it is set).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import netrc
import os
import sys
import zipfile
from pathlib import Path

from .events import Identity, InPart, PartDone, RecordsWritten, Tickets

MODES = ("disabled", "offline", "online")
INIT_TIMEOUT_S = 10  # wandb's own default is 90 s; an unreachable server should cost little
RECORDS_TYPE = "earlyphase-records"
REPORT_TYPE = "earlyphase-report"
RECORD_NAMES = ("summary.json", "density.json", "stability.json")  # in every part folder below level_*/
MANIFEST = "records_manifest.json"
IDENTITY_KEYS = ("condition", "condition_kind", "k", "budget", "seed")  # jobs.identity's fields W&B summaries carry
PART_KEYS = ("level", "part", "density")  # an IMP part's own config entries (an agent's run holds the whole unit)


def default_mode() -> str:
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("dryrun",):
        return "offline"
    if env in MODES:
        return env
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "disabled"


def wandb_logger(cfg, group: str | None = None, units: int = 1) -> "WandbLogger":
    """The W&B logger a command's config asks for (its --wandb* fields); units: how many study units share it."""
    from ..engine.errors import UsageError

    if cfg.wandb is not None and cfg.wandb not in MODES:
        raise UsageError(f"--wandb={cfg.wandb}: use disabled, offline or online")
    return WandbLogger(cfg.wandb, cfg.wandb_project, cfg.wandb_entity, cfg.wandb_group or group,
                       Path(cfg.out).expanduser(), units=units, weights=getattr(cfg, "wandb_weights", False))


def logged_run(run, cfg, name: str, job_type: str):
    """run(cfg, sinks=[...]) with its records sent to W&B as the config asks; returns run's result."""
    logger = wandb_logger(cfg)
    with logger.router(name, {}, job_type) as sink:
        result = run(cfg, sinks=[sink])
    logger.close()
    return result


def _warn(message: str) -> None:
    print(f"earlyphase: warning: {message}", file=sys.stderr)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def _safely(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        _warn(f"W&B call failed and was skipped ({type(err).__name__}: {_first_line(err)})")
        return None


@contextlib.contextmanager
def staging_under(directory: str | None):
    """wandb stages the files of logged tables and artifacts in its data folder: under --out while inside."""
    if directory is None or "WANDB_DATA_DIR" in os.environ:
        yield
        return
    os.environ["WANDB_DATA_DIR"] = str(Path(directory).absolute() / "wandb" / "data")
    try:
        yield
    finally:
        os.environ.pop("WANDB_DATA_DIR", None)


class WandbLogger:
    """Hands out metric sinks (callables taking a dict) for units of work; see the module docstring."""

    def __init__(self, mode: str | None = None, project: str = "earlyphase", entity: str | None = None,
                 group: str | None = None, directory: str | Path | None = None, units: int = 1,
                 weights: bool = False):
        self.mode = mode or default_mode()
        if self.mode not in MODES:
            raise ValueError(f"--wandb={self.mode}: use disabled, offline or online")
        self.project, self.entity, self.group = project, entity or None, group
        self.directory = str(directory) if directory else None
        self.units, self.weights = units, weights
        self.sweep_run = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    @property
    def under_agent(self) -> bool:
        return bool(os.environ.get("WANDB_SWEEP_ID"))

    def _init(self, **kwargs):
        import wandb

        try:  # the settings are validated against the environment too (an unwritable HOME fails here)
            settings = wandb.Settings(init_timeout=INIT_TIMEOUT_S, silent=True, console="off", x_disable_stats=True)
            kwargs = dict(project=self.project, entity=self.entity, group=self.group, dir=self.directory,
                          settings=settings, reinit="create_new", **kwargs)
            return wandb.init(mode=self.mode, **kwargs)
        except Exception as err:  # unreachable server, bad key, ...: go offline, never fail the run
            if self.mode == "online":
                self._warn_once(
                    f"W&B unreachable ({type(err).__name__}: {_first_line(err)}); logging offline, `wandb sync` later"
                )
                self.mode = "offline"
                try:
                    return wandb.init(mode="offline", **kwargs)
                except Exception:
                    pass
            self._warn_once(f"W&B logging off ({type(err).__name__}: {_first_line(err)})")
            self.mode = "disabled"
            return None

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            _warn(message)
            self._warned = True

    def unit(self, name: str, job_type: str, config: dict, prefix: str = "") -> "UnitSink":
        """A sink for one unit of work; call .close() (or use as a context manager) when it ends. Under a sweep
        agent the unit logs into the agent's run with `prefix` before its keys, its config merged in."""
        if not self.enabled:
            return UnitSink(None, "", owned=False)
        if self.under_agent:
            if self.sweep_run is None:
                self.sweep_run = self._init(config={}, allow_val_change=True)
                if self.units > 1:
                    self._warn_once(f"this sweep run holds {self.units} study units, so W&B keys are prefixed by "
                                    f"unit and W&B cannot group them across seeds: give each sweep run one condition "
                                    f"and one seed (see sweeps/)")
            if self.sweep_run is not None and self.units == 1:  # the unit's identity, not one part's
                unit_config = {k: v for k, v in config.items() if k not in PART_KEYS}
                _safely(self.sweep_run.config.update, unit_config, allow_val_change=True)
            return UnitSink(self.sweep_run, prefix, owned=False, directory=self.directory)
        run = self._init(name=name, job_type=job_type, config=config)
        return UnitSink(run, "", owned=True, directory=self.directory)

    def router(self, name: str, config: dict, job_type: str = "level") -> "LevelRouter":
        """A lazy sink (nothing starts before the first record): an IMP part's events (jobs.events.InPart) go to
        one W&B run per IMP level (job_type level) and per part (control, stability), other records to
        one run of `job_type`; the ticket table to the last run."""
        return LevelRouter(self, name, config, job_type)

    def records_key(self) -> str:
        """Where records are logged: a change of mode, project or sweep logs them again."""
        return "|".join(str(x) for x in (self.mode, self.entity, self.project, os.environ.get("WANDB_SWEEP_ID", "")))

    def close(self) -> None:
        if self.sweep_run is not None:
            _safely(self.sweep_run.finish)
            self.sweep_run = None

    def report(self, out_dir: Path, name: str) -> None:
        """Log a written report (reporting.report's OUT_DIR) as one run of job_type report (under an agent, into
        its run): report.html, the figures, the findings, report.json as an artifact."""
        if not self.enabled:
            return
        import wandb

        out_dir = Path(out_dir)
        data = json.loads((out_dir / "report.json").read_text())
        config = {"report": name, "report_conditions": len(data["conditions"]),
                  "report_comparisons": len(data["comparisons"])}
        sink = self.unit(f"report {name}", "report", config, prefix="report/")
        if sink.run is None:
            return
        with staging_under(self.directory):
            values = {sink.prefix + "report": wandb.Html((out_dir / "report.html").read_text()),
                      sink.prefix + "findings_table": wandb.Table(columns=["finding"],
                                                                  data=[[s] for s in data["findings"]])}
            figures = sorted(out_dir.glob("*.png"))
            values.update({sink.prefix + f"figures/{p.stem}": wandb.Image(str(p)) for p in figures})
            _safely(sink.run.log, values)
            sink.summary({sink.prefix + "findings": "\n".join(data["findings"]), **_why_summary(data, sink.prefix)})
            artifact = wandb.Artifact(_artifact_name(f"report-{name}"), type=REPORT_TYPE,
                                      metadata={"findings": data["findings"]})
            artifact.add_file(str(out_dir / "report.json"), name="report.json")
            _safely(sink.run.log_artifact, artifact)
        sink.close()


def _why_summary(data: dict, prefix: str) -> dict:
    """The crossed decomposition and the anatomy as flat summary numbers (W&B compares runs by them):
    `crossed/SUBJECT vs REFERENCE/level_L/{total,mask,weights,interaction}` and `anatomy/SUBJECT vs REFERENCE/...`."""
    out = {}
    for row in data.get("crossed") or []:
        key = f"{prefix}crossed/{row['subject']} vs {row['reference']}/level_{row['level']}"
        out |= {f"{key}/{part}": row[part]["mean"] for part in ("total", "mask", "weights", "interaction")}
    for a in data.get("anatomy") or []:
        key = f"{prefix}anatomy/{a['subject']} vs {a['reference']}"
        out |= {f"{key}/{name}": value["mean"] for name, value in (a.get("whole") or {}).items()}
        out |= {f"{key}/jaccard_level_{m['level']}": m["jaccard"]["mean"] for m in a.get("masks") or []}
    return out


def _artifact_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:128]


class UnitSink:
    """Callable metrics sink for one W&B run (or none): evaluation records are logged; LevelRouter calls its
    tickets (the table) and part_done (the part's summary and ticket point)."""

    def __init__(self, run, prefix: str, owned: bool, directory: str | None = None):
        self.run, self.prefix, self.owned, self.directory = run, prefix, owned, directory
        if run is not None and prefix:  # each part's evaluations against its own step
            _safely(run.define_metric, f"{prefix}step")
            _safely(run.define_metric, f"{prefix}*", step_metric=f"{prefix}step")

    def __call__(self, record: dict) -> None:
        if self.run is None:
            return
        values = {self.prefix + k: v for k, v in record.items() if isinstance(v, (int, float))
                  and not isinstance(v, bool)}
        _safely(self.run.log, values)

    def tickets(self, records: list[dict], identity: dict) -> None:
        import wandb

        columns = ["level", "kind", "density", "test_accuracy", "seed", "condition", "k", "budget"]
        rows = [[{**identity, **r}.get(c) for c in columns] for r in records]
        with staging_under(self.directory):
            _safely(self.run.log, {self.prefix + "tickets": wandb.Table(columns=columns, data=rows)})

    def part_done(self, summary: dict, prefix: str, part: str, density: float, accuracy: float) -> None:
        """A finished part: its summary, and its point on the ticket curve (accuracy against density)."""
        if self.run is None:
            return
        self.summary(summary)
        density_key = f"{prefix}ticket/density"
        _safely(self.run.define_metric, density_key)
        _safely(self.run.define_metric, f"{prefix}ticket/*", step_metric=density_key)
        _safely(self.run.log, {density_key: density, f"{prefix}ticket/{part}/test_accuracy": accuracy})

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                _safely(lambda k=k, v=v: self.run.summary.__setitem__(k, v))

    def close(self) -> None:
        if self.run is not None and self.owned:
            _safely(self.run.finish)
        self.run = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LevelRouter:
    """Sends each record to the W&B run of its (IMP level, kind), created on first use.

    A level's trunk, controls and perturbations may train at the same time (--concurrent), and with the
    second copy of the level before it (--stability), so runs stay open together; a level's runs are
    finished when the level two above it starts, or at close()."""

    def __init__(self, logger: WandbLogger, name: str, config: dict, job_type: str = "level"):
        self.logger, self.name, self.config, self.job_type = logger, name, dict(config), job_type
        self.identity: dict = {}
        self.open: dict = {}
        self.current = UnitSink(None, "", owned=False)

    @property
    def unit_prefix(self) -> str:
        """Under an agent holding several units, each unit's keys start with its name."""
        return f"{self.name}/" if self.logger.under_agent and self.logger.units > 1 else ""

    def _sink(self, level, kind, density=None) -> UnitSink:
        key = (level, kind)
        if key not in self.open:
            for old in [k for k in self.open if (k[0] or 0) < (level or 0) - 1]:
                self.open.pop(old).close()
            if level is None:
                job_type, unit = self.job_type, self.name
                prefix = "" if job_type == "train" else f"{job_type}/"
                config = {**self.config, **self.identity}
            else:
                job_type = {None: "level", "trunk": "level", "stability": "stability"}.get(kind, "control")
                unit = f"{self.name}: level {level}" + ("" if kind in (None, "trunk") else f" {kind}")
                prefix = f"level_{level}/{kind}/"
                config = {**self.config, **self.identity, "level": level, "part": kind, "density": density}
            sink = self.logger.unit(unit, job_type, config, prefix=self.unit_prefix + prefix)
            if self.logger.under_agent:
                if level is not None and density is not None:
                    sink.summary({f"{self.unit_prefix}level_{level}/density": density})
            else:  # what W&B's run table groups by, without opening the config
                sink.summary({k: config[k] for k in IDENTITY_KEYS + PART_KEYS if k in config})
            self.open[key] = sink
        return self.open[key]

    def __call__(self, event) -> None:
        """One of jobs.events' events, or a training's record (a dict of numbers)."""
        if not self.logger.enabled:
            return
        if isinstance(event, Identity):
            self.identity.update(event.fields)
            return
        if isinstance(event, Tickets):  # into the deepest level's trunk run (a stability copy may have trained last)
            trunks = [k for k in self.open if k[1] in (None, "trunk")]
            target = self.open[max(trunks, key=lambda k: k[0] or 0)] if trunks else self.current
            if target.run is not None:
                target.tickets(event.records, self.identity)
            return
        if isinstance(event, RecordsWritten):
            self._records(event.run_dir, event.level)
            return
        level, kind, density = (event.level, event.kind, event.density) if isinstance(event, InPart) else (None,) * 3
        event = event.event if isinstance(event, InPart) else event
        self.current = self._sink(level, kind, density)
        if isinstance(event, PartDone):
            self._part_done(level, kind, density, event.test_accuracy)
        else:
            self.current(event)

    def _part_done(self, level, kind, density, accuracy) -> None:
        """A finished part's summary and ticket point: the identity, level, part, density and accuracy in its own
        run; under an agent, in keys of the level and part (`level_3/trunk/test_accuracy`, `level_3/density`)."""
        if self.logger.under_agent:
            up = self.unit_prefix
            summary = {f"{up}level_{level}/density": density, f"{up}level_{level}/{kind}/test_accuracy": accuracy}
        else:
            up = ""
            summary = {"test_accuracy": accuracy}
        self.current.part_done(summary, up, kind, density, accuracy)

    def _records(self, run_dir: Path, level) -> None:
        """The IMP run's records as an artifact from its level's W&B run, when they changed since last logged."""
        files = records_files(run_dir, self.logger.weights)
        digest = hashlib.sha256(json.dumps(sorted((n, d) for n, (_, d) in files.items())).encode()).hexdigest()
        out = Path(self.logger.directory or run_dir.parent)
        marker = out / "wandb" / "earlyphase-logged" / f"{run_dir.name}.json"
        if _read_json(marker).get(self.logger.records_key()) == digest:
            return
        sink = self._sink(level, "trunk", None)
        if sink.run is None:
            return
        artifact = records_artifact(run_dir.name, files, out, self.identity)
        with staging_under(self.logger.directory):
            if _safely(sink.run.log_artifact, artifact) is not None:
                from ..engine.checkpoints import write_json_atomic

                marker.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(marker, {**_read_json(marker), self.logger.records_key(): digest})

    def close(self) -> None:
        for sink in self.open.values():
            sink.close()
        self.open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------- records
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _intact(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def records_files(run_dir: Path, weights: bool = False) -> dict[str, tuple[Path | bytes, str]]:
    """{name in the artifact: (file or bytes, sha256)}: an IMP run's small records as the run directory lays them out,
    and records_manifest.json with the sha256 of each finished part's intact final.pt (+ the final.pt files)."""
    run_dir = Path(run_dir)
    found = [run_dir / n for n in ("config.json", "tickets.json")]
    found += [p for p in sorted(run_dir.glob("level_*/**/*")) if p.name in RECORD_NAMES and p.is_file()]
    files = {p.relative_to(run_dir).as_posix(): (p, _sha256(p)) for p in found if p.is_file()}
    finals = {}
    for name in [n for n in files if n.endswith("/summary.json")]:
        final = run_dir / name.removesuffix("summary.json") / "final.pt"
        if final.is_file() and _intact(final):
            finals[name.removesuffix("/summary.json")] = (final, _sha256(final))
    manifest = json.dumps({"run": run_dir.name, "final_sha256": {k: d for k, (_, d) in finals.items()}}, indent=1,
                          sort_keys=True).encode()
    files[MANIFEST] = (manifest, hashlib.sha256(manifest).hexdigest())
    if weights:
        files.update({f"{part}/final.pt": value for part, value in finals.items()})
    return files


def records_artifact(name: str, files: dict, out: Path, identity: dict):
    """The W&B artifact of an IMP run's records. Each small file is staged as a content-addressed copy under
    OUT/wandb/earlyphase-staging (never changed, so what an offline run refers to is still there at `wandb
    sync`), added with policy immutable; weights are added where they lie (a finished final.pt never changes)."""
    import wandb

    from ..engine.checkpoints import write_bytes_atomic

    staging = Path(out) / "wandb" / "earlyphase-staging"
    staging.mkdir(parents=True, exist_ok=True)
    artifact = wandb.Artifact(_artifact_name(name), type=RECORDS_TYPE,
                              metadata={k: identity.get(k) for k in ("condition", "k", "budget", "seed", "task")})
    for entry, (source, digest) in sorted(files.items()):
        if entry.endswith("final.pt"):
            artifact.add_file(str(source), name=entry, policy="immutable")
            continue
        blob = staging / digest
        if not blob.exists():
            write_bytes_atomic(blob, source if isinstance(source, bytes) else Path(source).read_bytes())
        artifact.add_file(str(blob), name=entry, policy="immutable")
    return artifact
