"""A finished run's files bound to it: summary.json records the sha256 of each file the run wrote (final.pt, the
weights files, an IMP part's mask.pt), and a reader checks the file against it before using it. No torch here, so
`earlyphase report` checks without importing it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import records


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def bound_problem(path: Path) -> str | None:
    """Why `path` (final.pt, a weights file or a mask of a finished run) is not the file its run wrote, or None: its
    sha256 must equal the one the run's summary.json recorded (nothing to check for a run finished before digests)."""
    path = Path(path)
    summary = records.read(path.parent / "summary.json", records.SUMMARY, missing_ok=True,
                           fix="move it away to train that run again") or {}
    recorded = path.name in (summary.get("files") or {})  # the file is read only where there is a digest to check
    if not recorded or not path.is_file() or not differs(summary, path.name, sha256(path)):
        return None
    return (f"{path} is not the file its run wrote (its sha256 differs from the one {path.parent.name}/summary.json "
            f"recorded when the run finished; copied from another run?)")


def differs(summary: dict, name: str, digest: str) -> bool:
    """Whether `digest` is not the sha256 a run's summary recorded for its file `name` (False where none was
    recorded: a run finished before digests)."""
    recorded = (summary.get("files") or {}).get(name)
    return recorded is not None and recorded != digest
