"""`earlyphase stability`: instability of rewind points to SGD noise (linear mode connectivity), from `earlyphase imp`.

It is `earlyphase imp` with `--stability=0` and `--levels=0` unless given (the same flags, the same run
directory, so a run's levels and analyses are shared with `imp` and `study`): the dense network at the
rewind point k (`--rewind_step`, or `--rewind_from` a pretext point) is trained twice from k with two data
orders (the first copy is level 0 itself), and the linear path between the two final networks is evaluated
(earlyphase.studies.engine.interpolation). `--stability=0,3` adds level 3's ticket (its start state under its mask).
It prints one row per analysed level (instability of the test error and of the training-subset error, in
points), then the run directory.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import records
from ..engine.errors import UsageError
from ..engine.interpolation import STABLE_BELOW, PathSettings
from . import arguments
from .config import ImpCommand, ImpConfig
from .imp import check_command, run_logged, stability_dir, stability_levels


def table(cfg: ImpConfig, out: Path) -> str:
    """One row per analysed level of the IMP run directory `out`, from its stability.json files."""
    key = PathSettings(cfg.stability_points, cfg.stability_bn).key()
    rows = [("level", "density %", "instability (test)", "instability (train)", f"stable (< {STABLE_BELOW:g})")]
    for level in stability_levels(cfg):
        folder = stability_dir(out, cfg, level)
        result = (records.read(folder / "stability.json", records.STABILITY, missing_ok=True,
                               fix="move it away and rerun to redo the analysis") or {}).get(key)
        if result is None:
            raise UsageError(f"no stability result for level {level} in {folder}: rerun to finish it")
        rows.append((str(level), f"{100 * result['density']:.2f}", f"{result['instability']:.2f}",
                     f"{result['train_instability']:.2f}", "yes" if result.get("stable") else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)


def _parse_levels_given(argv: list[str]) -> ImpCommand:
    command = arguments.stability(argv)
    if not command.imp.stability.strip():
        raise UsageError("--stability is empty: name the levels to analyse, e.g. --stability=0")
    return command


def check(argv: list[str]) -> None:
    """Everything `main(argv)` would refuse, refused now; nothing is written or trained."""
    check_command(_parse_levels_given(argv))


def main(argv: list[str]) -> int:
    command = _parse_levels_given(argv)
    out, _ = run_logged(command, "stability")
    print(table(command.imp, out))
    print(out)
    return 0
