"""One advisory lock per run directory, so that several processes can share one --out.

A training holds an exclusive `fcntl.flock` on `RUN_DIR/.lock` from before it looks at the directory's
checkpoint until its summary.json is written. Another process that reaches the same run waits for the
lock, then finds summary.json and skips the run: a run directory is trained by one process at a time,
and a run finished by one process is never trained again by another. The kernel drops the lock when its
holder dies (kill -9 included), so a waiting process then resumes the run from its checkpoint itself.

Deadlock: a process that trains several runs at once (schedule.train_interleaved, stacked.train_stacked)
never waits for one lock while holding another. It takes the free locks without waiting (`take_free`),
trains those runs, releases them, and only then waits for the others, one at a time, holding nothing.

The file system must support flock: local ones and NFS (v4, and v3 with its lock daemon) do, since Linux
emulates flock there with NFS byte-range locks; some network file systems (certain FUSE mounts, SMB
without lock support) refuse it, and then the run goes on unlocked after a one-line warning.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from pathlib import Path

from .errors import UsageError

LOCK_FILE = ".lock"
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class RunLock:
    """The lock of one run directory (created as needed). `waited`: acquire() found another process holding it.
    `name` and `doing` serve other folders shared by processes (a dataset being downloaded)."""

    def __init__(self, run_dir: Path, name: str = LOCK_FILE, doing: str = "training"):
        self.path = Path(run_dir) / name
        self.doing = doing
        self.fd: int | None = None
        self.waited = False

    def try_acquire(self) -> bool:
        """Take the lock if no other process (or other RunLock of this process) holds it; never waits."""
        return self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB)

    def acquire(self) -> None:
        """Take the lock, waiting (with one line on stderr) while another process holds it."""
        if self.try_acquire():
            return
        self.waited = True
        print(f"earlyphase: another process is {self.doing} {self.path.parent}; waiting for it to finish",
              file=sys.stderr, flush=True)
        self._lock(fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _lock(self, operation: int) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # NFS locks an exclusive flock only if writable
        except IsADirectoryError:
            raise UsageError(f"{self.path} is a directory, not a lock file: move it away (earlyphase makes the "
                             f"file itself)") from None
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as err:
            if err.errno not in UNSUPPORTED:
                os.close(fd)
                raise
            print(f"earlyphase: warning: {self.path.parent} cannot be locked here ({err.strerror}); "
                  f"do not let another process work on it at the same time", file=sys.stderr)
        self.fd = fd
        return True


def take_free(run_dirs: dict) -> tuple[dict, list]:
    """{key: run dir} -> ({key: RunLock held}, [keys another process holds]), without waiting for any."""
    held, busy = {}, []
    for key, run_dir in run_dirs.items():
        lock = RunLock(run_dir)
        if lock.try_acquire():
            held[key] = lock
        else:
            busy.append(key)
    return held, busy


def release_all(held) -> None:
    for lock in held:
        lock.release()
