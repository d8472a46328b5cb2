"""Atomic saving and safe loading of checkpoints and weight files (`weights_only=True` always)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .errors import UsageError


def save_atomic(obj, path: Path) -> None:
    """Write to a temporary file, then rename: a kill leaves the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint; a corrupt or truncated file is a one-line UsageError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, refused object: all mean "not a good checkpoint"
        raise UsageError(f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}); "
                         f"move it away to recompute from the last good state") from None


def state_dict_cpu(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_figure_atomic(fig, path: Path, dpi: int = 110) -> None:
    """A matplotlib figure as PNG, written like every other file here: a killed report never leaves half a PNG."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path, what: str = "file"):
    """A JSON file's content, or None if it is missing; a corrupt file is a one-line UsageError naming it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"{path} is not readable JSON ({type(err).__name__}); move the {what} away (the command "
                         f"that wrote it writes it again when rerun)") from None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines log; a line cut short by a kill is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def truncate_jsonl(path: Path, keep) -> list[dict]:
    """Rewrite a JSON-lines log (atomically) with only the records for which keep(record) holds."""
    records = [r for r in read_jsonl(path) if keep(r)]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    return records
