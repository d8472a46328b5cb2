"""Weights & Biases logging that can never stop a run.

Mode (`--wandb`): disabled, offline or online; by default `WANDB_MODE` if set, else online when an API key
is configured (WANDB_API_KEY or ~/.netrc), else disabled. One W&B run per unit of work (dense training,
pretraining, each IMP level, each control), grouped by study, with job_type pretrain / level / control /
train, the unit's full config, throttled training metrics, evaluations and the ticket table.

Under a sweep agent (WANDB_SWEEP_ID set) the agent has already made the run for this command, so every
unit logs into that one run under a prefix (`level_3/trunk/test_accuracy`); the parameters that arrive in
`wandb.config` are the same ones the agent passed as `--key=value`, which the command parsed already.

If the server cannot be reached (or anything in wandb fails), a warning is printed once and logging
continues offline, or is dropped if even that fails: training never fails or hangs because of W&B.
"""

from __future__ import annotations

import netrc
import os
import sys
import time
from pathlib import Path

MODES = ("disabled", "offline", "online")
INIT_TIMEOUT_S = 10  # wandb's own default is 90 s; an unreachable server should cost little


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


def wandb_logger(cfg, group: str | None = None) -> "WandbLogger":
    """The W&B logger a command's config asks for (its --wandb* fields)."""
    from ..engine.errors import UsageError

    if cfg.wandb is not None and cfg.wandb not in MODES:
        raise UsageError(f"--wandb={cfg.wandb}: use disabled, offline or online")
    return WandbLogger(cfg.wandb, cfg.wandb_project, cfg.wandb_entity, cfg.wandb_group or group,
                       Path(cfg.out).expanduser())


def logged_run(run, cfg, name: str, job_type: str):
    """run(cfg, sinks=[...]) with its records sent to W&B as the config asks; returns run's result."""
    import dataclasses

    logger = wandb_logger(cfg)
    with logger.router(name, dataclasses.asdict(cfg), job_type) as sink:
        result = run(cfg, sinks=[sink])
    logger.close()
    return result


def _warn(message: str) -> None:
    print(f"earlyphase: warning: {message}", file=sys.stderr)


class WandbLogger:
    """Hands out metric sinks (callables taking a dict) for units of work; see the module docstring."""

    def __init__(self, mode: str | None = None, project: str = "earlyphase", entity: str | None = None,
                 group: str | None = None, directory: str | Path | None = None, log_every_s: float = 2.0):
        self.mode = mode or default_mode()
        if self.mode not in MODES:
            raise ValueError(f"--wandb={self.mode}: use disabled, offline or online")
        self.project, self.entity, self.group = project, entity or None, group
        self.directory = str(directory) if directory else None
        self.log_every_s = log_every_s
        self.sweep_run = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def _init(self, **kwargs):
        import wandb

        settings = wandb.Settings(init_timeout=INIT_TIMEOUT_S, silent=True, console="off", x_disable_stats=True)
        kwargs = dict(project=self.project, entity=self.entity, group=self.group, dir=self.directory,
                      settings=settings, reinit="create_new", **kwargs)
        try:
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

    def unit(self, name: str, job_type: str, config: dict) -> "UnitSink":
        """A sink for one unit of work; call .close() (or use as a context manager) when it ends."""
        if not self.enabled:
            return UnitSink(None, "", self.log_every_s, owned=False)
        if os.environ.get("WANDB_SWEEP_ID"):
            if self.sweep_run is None:
                self.sweep_run = self._init(config={}, allow_val_change=True)
            return UnitSink(self.sweep_run, f"{name}/", self.log_every_s, owned=False)
        run = self._init(name=name, job_type=job_type, config=config)
        return UnitSink(run, "", self.log_every_s, owned=True)

    def router(self, name: str, config: dict, job_type: str = "level") -> "LevelRouter":
        """A lazy sink (nothing starts before the first record): records tagged imp_level/imp_kind go to
        one W&B run per IMP level (job_type level) and per control (job_type control), untagged ones to
        one run of `job_type`; the ticket table to the last run."""
        return LevelRouter(self, name, config, job_type)

    def close(self) -> None:
        if self.sweep_run is not None:
            _safely(self.sweep_run.finish)
            self.sweep_run = None


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def _safely(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        _warn(f"W&B call failed and was skipped ({type(err).__name__}: {_first_line(err)})")
        return None


class UnitSink:
    """Callable metrics sink: every record is logged (the trainer sends one per evaluation); a record
    {"tickets": [...]} becomes a W&B table. `step_hook` adds the throttled per-step training loss."""

    def __init__(self, run, prefix: str, log_every_s: float, owned: bool):
        self.run, self.prefix, self.log_every_s, self.owned = run, prefix, log_every_s, owned
        self._last = 0.0

    def __call__(self, record: dict) -> None:
        if self.run is None:
            return
        if "tickets" in record:
            self._tickets(record["tickets"])
            return
        values = {self.prefix + k: v for k, v in record.items() if isinstance(v, (int, float))}
        _safely(self.run.log, values)

    def _tickets(self, records: list[dict]) -> None:
        import wandb

        columns = ["level", "kind", "density", "test_accuracy"]
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in records])
        _safely(self.run.log, {self.prefix + "tickets": table})

    def step_hook(self, step: int, model, loss) -> None:
        """A trainer step hook logging the training loss at most every `log_every_s` (one sync then)."""
        if self.run is None:
            return
        now = time.monotonic()
        if now - self._last >= self.log_every_s:
            self._last = now
            _safely(self.run.log, {self.prefix + "step": step, self.prefix + "train_loss_step": float(loss)})

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                _safely(self.run.summary.__setitem__, self.prefix + k, v)

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
        self.logger, self.name, self.config, self.job_type = logger, name, config, job_type
        self.open: dict = {}
        self.current = UnitSink(None, "", 0, owned=False)

    def __call__(self, record: dict) -> None:
        if not self.logger.enabled:
            return
        key = (record.get("imp_level"), record.get("imp_kind"))
        if "tickets" not in record:
            if key not in self.open:
                level, kind = key
                for old in [k for k in self.open if (k[0] or 0) < (level or 0) - 1]:
                    self.open.pop(old).close()
                if level is None:
                    job_type, unit = self.job_type, self.name
                else:
                    job_type = {None: "level", "trunk": "level", "stability": "stability"}.get(kind, "control")
                    unit = f"{self.name}: level {level}" + ("" if kind in (None, "trunk") else f" {kind}")
                self.open[key] = self.logger.unit(unit, job_type, {**self.config, "level": level, "kind": kind})
            self.current = self.open[key]
        self.current(record)

    def close(self) -> None:
        for sink in self.open.values():
            sink.close()
        self.open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
