"""The exceptions the CLI turns into a one-line message and exit status 2, and the one-line form of I/O faults."""

from __future__ import annotations

import errno


class OneLineError(Exception):
    """What the CLI prints as one line with exit status 2 (no traceback): the message says what and the fix."""


class UsageError(OneLineError):
    """Bad user input (flags, files, data). The message names the fix."""


class TrainingDiverged(OneLineError):
    """The loss or the weights became non-finite: the run stops unfinished, its last good checkpoint kept."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
NOT_A_FOLDER = (errno.ENOTDIR, errno.EEXIST)


def os_error_message(err: OSError, path=None, flag: str = "--out") -> str | None:
    """The one line for an OSError the user can fix (a full disk, an unusable folder), or None for any other.

    path: the file being written, where the error does not name it (a failed write() names no file); flag: the
    option that chose the folder (`-o` for a report)."""
    where = path if path is not None else err.filename
    if where is None:
        return None
    if err.errno in DISK_FULL:
        return (f"the disk is full: could not write {where} ({err.strerror}); free some space and rerun the "
                f"same command: it resumes where it stopped")
    if err.errno in NOT_WRITABLE:
        return f"cannot write {where} ({err.strerror}): make it writable or choose another {flag}"
    if err.errno == errno.ENAMETOOLONG:
        return f"cannot write {where}: the name is longer than the file system allows; choose a shorter {flag}"
    if err.errno in NOT_A_FOLDER:
        return f"cannot write {where}: a part of that path is a file, not a folder; choose another {flag}"
    return None
