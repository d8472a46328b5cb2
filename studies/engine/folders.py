"""Whether a folder can hold what earlyphase writes, asked before anything is written (runs under --out, a report
under -o)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UsageError


def refuse_control_characters(flag: str, text: str) -> None:
    """A value with a newline, tab or other control character (in a path it would break 'the run directory is the
    last line') is refused."""
    bad = next((ch for ch in text if ord(ch) < 32 or ord(ch) == 127), None)
    if bad is not None:
        raise UsageError(f"{flag}: the value contains a control character ({bad!r}): remove it")


def _name_max(folder: Path) -> tuple[int, int]:
    """(longest file name, longest path) the file system holding `folder` allows."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 255, 4096


def check_out(text: str, flag: str = "--out") -> None:
    """Refuse an --out that cannot hold run directories (under a file, too long a name, not writable) before
    anything is written. A folder that becomes unusable later is reported by the CLI in one line too. flag: the
    option that names it (`-o` for a report), as the messages name it."""
    if not text.strip():
        raise UsageError(f"{flag} is empty: name the folder, e.g. {flag}{'=' * flag.startswith('--')}runs")
    refuse_control_characters(flag, text)  # `sweep run --out` comes here without the field parser
    given = f"{flag}={text}" if flag.startswith("--") else f"{flag} {text}"
    path = Path(text).expanduser().absolute()
    existing = path
    while not os.path.lexists(existing):  # lexists: a name that is too long, or below a file, is "missing"
        existing = existing.parent
    name_max, path_max = _name_max(existing if existing.is_dir() else existing.parent)
    too_long = [part for part in path.parts if len(os.fsencode(part)) > name_max]
    if too_long:
        raise UsageError(f"{given}: the name {too_long[0][:40]}... is longer than the file system allows "
                         f"({name_max} bytes): choose a shorter {flag}")
    if len(os.fsencode(str(path))) > path_max - 256:  # room for the run directories' own names
        raise UsageError(f"{given}: the path is too long for the run directories below it: choose a shorter "
                         f"{flag}")
    if not existing.is_dir():
        what = "a file" if existing.exists() else "a broken link"
        where = f"is {what}" if existing == path else f"is below {existing}, which is {what}"
        raise UsageError(f"{given} {where}, not a folder: choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{given}: cannot write in {existing} (permission denied or read-only): "
                         f"choose a folder you can write to")
    try:  # a folder made and removed at once: some file systems (/proc, /sys) refuse folders despite the access bits
        os.rmdir(tempfile.mkdtemp(prefix=".earlyphase-probe-", dir=existing))
    except OSError as err:
        raise UsageError(f"{given}: cannot make folders in {existing} ({err.strerror}): choose a folder on an "
                         f"ordinary file system") from None
