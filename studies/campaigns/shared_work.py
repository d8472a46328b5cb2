"""How the processes of `earlyphase study --jobs=J` share a study: each walks the same list of items (the units,
then the crossed pairs) and takes the first one that no process holds, so no process idles while work is left.

(A fixed share, worker I taking items I, I+J, ..., left one process waiting ~15 s for the other's last unit on the
quick study, and the crossing could not start before every unit was done.)

An item is held by a claim, `study_HASH/claims/ITEM/.lock` (locks.RunLock: the kernel releases it when its holder
dies, kill -9 included; the next process to take the item resumes its runs from their checkpoints). A crossed pair
needs its two units; a process passes through the units another process trained (it finds them finished; the
parent records their run directories). A worker prefers its own share (items I, I+J, ...: the processes rarely
reach for the same claim) and then takes any free item. Only when every item it may take is held by another
process does it wait, holding no lock, for the first of them (so no deadlock, as in locks.py). Each training still
holds its run directory's lock, so a sweep or another study sharing the runs folder never trains a run twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..engine.locks import RunLock
from ..engine.schedule import Job


@dataclass(frozen=True)
class Item:
    """One unit of shared work: `name` names its claim (unit-3, pair-5), `needs` the items it waits for, `job` makes
    the scheduler job that does it (or passes through it, finished)."""

    name: str
    needs: tuple[str, ...]
    job: Callable[[], Job]


def walk(items: list[Item], claims: Path, worker: int = 0, workers: int = 1) -> Job:
    """Every item done (by this process, or found done) in an order that never waits while a free item is left."""
    names = {item.name for item in items}
    if len(names) != len(items) or any(need not in names for item in items for need in item.needs):
        raise ValueError("shared work: item names must be unique and every need one of them")
    order = items[worker::workers] + [item for n, item in enumerate(items) if n % workers != worker]
    done: set[str] = set()
    while order:
        ready = [item for item in order if set(item.needs) <= done]
        if not ready:
            raise ValueError("shared work: the items' needs form a cycle")
        free = next(((item, claim) for item in ready if (claim := _claim(claims, item)).try_acquire()), None)
        if free is None:  # every ready item is held by another process: wait for the first, holding nothing
            free = ready[0], _claim(claims, ready[0])
            free[1].acquire()
        item, claim = free
        try:
            yield from item.job()
        finally:
            claim.release()
        order.remove(item)
        done.add(item.name)


def _claim(claims: Path, item: Item) -> RunLock:
    return RunLock(claims / item.name, doing="working on")
