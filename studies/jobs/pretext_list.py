"""`earlyphase pretext list`: every discovered pretext task, its description, options and distribution.

A plugin that fails to load is listed with its error (the others are unaffected); the exit status is
0 either way, since listing succeeded. A task with a step of its own (momentum teachers: byol, moco, dino) is
marked, since it trains with eager steps on CUDA and alone under --concurrent_engine=vmap.
"""

from __future__ import annotations

from earlyphase.pretext import registry
from earlyphase.pretext.base import declared_options, has_own_step

from . import arguments
from .arguments import PRETEXT_USAGE as USAGE
from .pretrain import flag_for

OWN_STEP = ("steps its own way (modules, forward or after_step of its own): eager steps on CUDA (no whole-step "
            "graph), trained alone beside a vmap stack")


def describe_options(plugin: registry.Plugin) -> str:
    """The task's option flags with their defaults (`--pretext_args=key=value` sets them too)."""
    flags = []
    for key, declared in declared_options(plugin.task).items():
        flag = flag_for(plugin.name, key)
        flags.append(f"--{flag}={declared.default}" if flag else f"--pretext_args={key}={declared.default}")
    return "options: " + ("  ".join(flags) if flags else "none")


def listing() -> str:
    plugins = registry.discover()
    if not plugins:
        return f"no pretext tasks installed (entry point group {registry.GROUP})"
    width = max(len(p.name) for p in plugins)
    lines = []
    for p in plugins:
        if p.task is None:
            lines.append(f"{p.name:<{width}}  BROKEN {p.error}  [{p.distribution}: {p.target}]")
        else:
            labels = "" if p.task.uses_labels else " (no true labels)"
            lines.append(f"{p.name:<{width}}  {p.description}{labels}  [{p.distribution}]")
            lines.append(f"{'':<{width}}    {describe_options(p)}")
            if has_own_step(p.task):
                lines.append(f"{'':<{width}}    {OWN_STEP}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE + "\n\nlists the pretext tasks found through the entry point group " + registry.GROUP)
        return 0
    arguments.pretext(argv)
    print(listing())
    return 0
