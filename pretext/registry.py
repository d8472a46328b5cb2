"""Discovery of pretext tasks through Python entry points (group `earlyphase.pretext`).

Every task, built-in or third-party, is an entry point `name = "module:Class"` in its distribution's
metadata; earlyphase registers its own tasks in its pyproject.toml exactly as a plugin would. The entry
point's name is the task's name on the command line. Nothing is imported until asked for: `names()`
reads metadata only, `load(name)` imports one task, and `discover()` imports all of them, catching any
failure (an exception, or an exit at import) so that one broken plugin is reported (name, distribution, error)
while the others still work. A name is one task's: earlyphase's own declaration of a name comes first, and any
other declaration of it is reported as a duplicate and never loaded, so a plugin cannot take a built-in's runs.
Option defaults must be bool, int, float or str (a list would make no flag); a task declaring another is broken.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # finding the names imports no task (nor torch)
    from .base import PretextTask

GROUP = "earlyphase.pretext"


@dataclass(frozen=True)
class Plugin:
    name: str
    target: str  # "module:attribute"
    distribution: str  # "name version" of the distribution that declares it
    task: type[PretextTask] | None  # the PretextTask subclass, or None when it failed to load
    error: str | None = None  # why it failed to load

    @property
    def description(self) -> str:
        return self.task.description if self.task else ""


OWN = "earlyphase"  # the distribution whose tasks are built in: a plugin cannot take one of their names
OPTION_TYPES = (bool, int, float, str)


def _entry_points(group: str) -> list[EntryPoint]:
    """By name, earlyphase's own declaration of a name first (so a plugin never shadows a built-in task)."""
    return sorted(entry_points(group=group), key=lambda ep: (ep.name, _distribution(ep).split()[0] != OWN))


def _check_options(task: type) -> None:
    """Every declared option's default is a bool, int, float or str (what flags, run names and configs hold)."""
    from .options import declared_options

    for key, option in declared_options(task).items():
        if type(option.default) not in OPTION_TYPES:
            raise TypeError(f"option {key!r} has default {option.default!r} ({type(option.default).__name__}); "
                            f"options take bool, int, float or str")


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist else "unknown distribution"


def _load(ep: EntryPoint) -> Plugin:
    try:
        task = ep.load()
        from .base import PretextTask  # torch: imported with the first task loaded, not with the names

        if not (isinstance(task, type) and issubclass(task, PretextTask)):
            raise TypeError(f"{ep.value} is not a subclass of earlyphase.pretext.base.PretextTask")
        _check_options(task)
    except (Exception, SystemExit) as err:  # a plugin may fail in any way at import (even exit): report it
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return Plugin(ep.name, ep.value, _distribution(ep), None, f"{type(err).__name__}: {message}".rstrip(": "))
    return Plugin(ep.name, ep.value, _distribution(ep), task)


def names(group: str = GROUP) -> list[str]:
    """The declared task names (from metadata; nothing is imported)."""
    return sorted({ep.name for ep in _entry_points(group)})


def discover(group: str = GROUP) -> list[Plugin]:
    """Every declared task, loaded; a second declaration of a name is reported as an error, not loaded."""
    plugins: list[Plugin] = []
    seen: dict[str, str] = {}
    for ep in _entry_points(group):
        if ep.name in seen:
            plugins.append(Plugin(ep.name, ep.value, _distribution(ep), None,
                                  f"duplicate name: {seen[ep.name]} already provides {ep.name!r}; this one is ignored"
                                  " (rename it)"))
            continue
        seen[ep.name] = _distribution(ep)
        plugins.append(_load(ep))
    return plugins


def load(name: str, group: str = GROUP) -> Plugin:
    """The task called `name`; ValueError (one line) when it is unknown or fails to load."""
    matches = [ep for ep in _entry_points(group) if ep.name == name]
    if not matches:
        available = ", ".join(names(group)) or "none installed"
        raise ValueError(f"unknown pretext {name!r}: choose one of {available}")
    plugin = _load(matches[0])
    if plugin.task is None:
        raise ValueError(f"pretext {name!r} (from {plugin.distribution}) failed to load: {plugin.error}")
    return plugin
