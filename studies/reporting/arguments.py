"""`earlyphase report`'s command line parsed with nothing heavy imported (no torch, no matplotlib): the CLI refuses a
bad flag from here before it imports the report, which parses with the same function."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from ..engine.errors import UsageError
from ..jobs.flags import parse_command_line, platform, refuse_control_characters
from .wandb_source import DEFAULT_CACHE

DEFAULT_MARGIN = 0.01  # one accuracy point: the matching bound (--match_margin, --seeds=auto's)
USAGE = ("usage: earlyphase report [FOLDER ...] [-o OUT_DIR] [--wandb=ENTITY/PROJECT[/SWEEP_ID]] [--wandb_cache=DIR] "
         "[--wandb_log[=offline|online]] [--match_margin=POINTS]")


@dataclass
class ReportOptions:
    """`earlyphase report`'s options (its FOLDERs are positional)."""

    out_dir: typing.Optional[str] = platform(None, "where the report goes (-o; default FOLDER/report)")
    wandb: typing.Optional[str] = platform(None, "ENTITY/PROJECT[/SWEEP_ID]: the records of W&B's runs")
    wandb_cache: str = platform(DEFAULT_CACHE, "where W&B's records are kept")
    wandb_log: typing.Optional[str] = platform(None, "log the report to W&B: default (WANDB_MODE or a key), "
                                                     "offline or online", bare="default")
    match_margin: float = platform(100 * DEFAULT_MARGIN, "the matching bound in accuracy points")


def report(argv: list[str]) -> tuple[ReportOptions, list[Path]]:
    """(the options, the FOLDERs): the one field parser, `-o` and `--output` standing for `--out_dir`."""
    if any(a.startswith("--reference") for a in argv):
        raise UsageError("--reference is gone: every condition is compared with its like (a pretext condition with "
                         "rewinding to its own k, rewinding with reset); " + USAGE)
    opts, positional = parse_command_line(ReportOptions, argv, aliases={"-o": "out_dir", "--output": "out_dir"})
    for folder in positional:
        if folder.startswith("-"):
            raise UsageError(f"unknown option {folder}: {USAGE}")
        refuse_control_characters("FOLDER", folder)
    if opts.wandb_log not in (None, "default", "offline", "online"):
        raise UsageError(f"--wandb_log={opts.wandb_log}: use --wandb_log (the default mode), offline or online")
    if not 0 <= opts.match_margin < 100:
        raise UsageError(f"--match_margin={opts.match_margin:g}: give the matching bound in accuracy points, "
                         f"e.g. 1 (0 = no worse at all)")
    if not positional and not opts.wandb:
        raise UsageError(USAGE)
    if opts.out_dir is None and (len(positional) > 1 or (positional and opts.wandb)):
        raise UsageError(f"several folders need -o OUT_DIR for the merged report: {USAGE}")
    return opts, [Path(f).expanduser() for f in positional]
