"""A report is written aside and swapped in whole, so a report folder never holds parts of two reports.

`swapped_in(out_dir)` yields an empty staging folder beside `out_dir` (`.NAME.XXXX.tmp`); when the block ends, the
staging folder becomes `out_dir` by two renames (the previous folder moves to `.NAME.XXXX.old`, the staging folder
takes its name) and the previous one is removed. What the previous folder held that is not a report's file (a
W&B run's files, a reader's notes) is carried over; a report file the new report does not write (a figure it no
longer draws) goes with the previous report. Writers take turns through a lock beside the folder, so two reports
into one folder leave one of them whole, never a mix. A writer killed at any point leaves the previous report
whole (or, between the two renames, as `.NAME.XXXX.old`); the next writer cleans up first: it removes staging
folders, puts a previous folder back where the report is missing, and never deletes what is not a report's file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..engine.errors import UsageError
from ..engine.folders import check_out
from ..engine.locks import RunLock

REPORT_FILE = re.compile(r"report\.(md|html|json)|[\w.-]+\.png")  # what a report writes (write_report)


def _carry(source: Path, target: Path) -> None:
    """Move what `source` holds that is not a report file into `target` (where `target` has no entry of that name)."""
    for entry in source.iterdir():
        if not REPORT_FILE.fullmatch(entry.name) and not (target / entry.name).exists():
            os.rename(entry, target / entry.name)


def _clean(out_dir: Path) -> None:
    """Leftovers of writers killed earlier: a previous folder back in place where the report is missing, every
    other leftover removed once what it held that is not a report's is back in the report folder."""
    parent = out_dir.parent
    for old in sorted(parent.glob(f".{out_dir.name}.*.old")):
        if not out_dir.exists():
            os.rename(old, out_dir)
            continue
        _carry(old, out_dir)
        shutil.rmtree(old)
    for staging in sorted(parent.glob(f".{out_dir.name}.*.tmp")):
        if out_dir.is_dir():
            _carry(staging, out_dir)
        shutil.rmtree(staging)


@contextlib.contextmanager
def swapped_in(out_dir: Path):
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir} is a file: choose a folder for the report")
    check_out(str(out_dir), flag="-o")  # /proc, a read-only or too long path: one line, before anything
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    with RunLock(parent, name=f".{out_dir.name}.lock", doing="writing a report into"):
        _clean(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=parent))
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if not out_dir.exists():
            os.rename(staging, out_dir)
            return
        old = Path(f"{staging.with_suffix('')}.old")
        os.rename(out_dir, old)
        os.rename(staging, out_dir)
        _carry(old, out_dir)
        shutil.rmtree(old)
