"""Atomic saving and safe loading of checkpoints, weight files and JSON records (`weights_only=True` always).

Writes go to a uniquely named temporary file beside the target, then one rename: a kill leaves the old
file or the new one, never half of one, and two processes writing the same file (agents sharing an
--out) never write into each other's temporary file. A write that fails (a full disk) removes its
partial temporary file and ends in a one-line UsageError naming the file, so freeing space and rerunning
resumes; nothing has to be cleaned up by hand.
"""

from __future__ import annotations

import copy
import io
import json
import os
import secrets
from pathlib import Path

import torch

from .errors import UsageError, os_error_message


def _write_new(path: Path, data) -> None:
    """Create `path` (it must not exist) holding `data`."""
    with open(path, "xb") as f:
        f.write(data)


def _fault(err: OSError, path: Path) -> Exception:
    """The one-line UsageError for a write to `path` that failed, or the error itself if it is no user fault."""
    message = os_error_message(err, path)
    return UsageError(message) if message else err


def write_bytes_atomic(path: Path, data) -> None:
    """`data` into `path` by a temporary file and a rename; on failure the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_new(tmp, data)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _fault(err, path) from None
        raise


def save_atomic(obj, path: Path) -> None:
    """torch.save, atomically. Serialised in memory first: torch's own file writer reports a full disk as
    `RuntimeError ... unexpected pos`, a Python write reports it as ENOSPC."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getbuffer())


def is_torch_file(path: Path) -> bool:
    """Whether `path` is in torch.save's format (a zip archive), corrupt or not."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _remedy(path: Path) -> str:
    """What to do about a bad file of a run directory, by its name: what is recomputed, and what goes with it."""
    if path.name == "final.pt":
        return f"move it and summary.json beside it away (both mark the run finished) to train {path.parent} again"
    if path.name.startswith("weights_") or path.name == "rewind_point.pt":
        return f"move {path.parent} away to train it again (its weights at a step are saved only while it trains)"
    if path.name == "checkpoint.pt":
        return "move it away: the run then trains again from its start"
    return "move it away to recompute it"


def load(path: Path, map_location="cpu", given: str = "") -> dict:
    """Load a checkpoint; a corrupt or truncated file is a one-line UsageError naming it and the fix. given: the
    flag that named a file the user chose (--rewind_from, --mask): a file of another kind is then called that."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    if given and not is_torch_file(path):
        raise UsageError(f"{given}: {path} is not a PyTorch file (torch.save writes zip archives): pass a file "
                         f"that earlyphase wrote")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, refused object: all mean "not a good checkpoint"
        raise UsageError(f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}): "
                         f"{_remedy(path)}") from None


def state_dict_cpu(module: torch.nn.Module) -> dict:
    """A copy of the state dict on the CPU; a module's extra state (get_extra_state: any value weights_only
    loading accepts) is copied as it is."""
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in module.state_dict().items()}


def full_state(module: torch.nn.Module) -> dict:
    """Everything `module` holds, on the CPU: its state dict and its non-persistent buffers too (lightly's memory
    bank keeps MoCo's queue and its pointer in such buffers, which a state dict leaves out)."""
    state = state_dict_cpu(module)
    for name, buffer in module.named_buffers():
        state.setdefault(name, buffer.detach().to("cpu", copy=True))
    return state


@torch.no_grad()
def load_full_state(module: torch.nn.Module, state: dict) -> None:
    """Put back what full_state() took (the same module's state: a name or shape that differs is an error)."""
    persistent = module.state_dict().keys()
    module.load_state_dict({k: v for k, v in state.items() if k in persistent})
    buffers = dict(module.named_buffers())
    for name in state.keys() - persistent:
        if name not in buffers or buffers[name].shape != state[name].shape:
            raise ValueError(f"saved state entry {name!r} does not fit the module")
        buffers[name].copy_(state[name])


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def save_figure_atomic(fig, path: Path, dpi: int = 110) -> None:
    """A matplotlib figure as PNG, written like every other file here: a killed report never leaves half a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", bbox_inches="tight")  # legends placed outside the axes stay in
    write_bytes_atomic(path, buffer.getbuffer())


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def append_text(path: Path, text: str) -> None:
    """Append to a log; a failed write is the one-line error (a torn last line is skipped when read back)."""
    path = Path(path)
    try:
        _append(path, text)
    except OSError as err:
        raise _fault(err, path) from None


def read_json(path: Path, required: tuple = (), fix: str = "move it away to recompute it", *,
              missing_ok: bool = False, kind: type = dict):
    """A JSON record written by this program (an object, or a list with kind=list); unreadable, of another
    kind or missing a `required` key, it is a one-line UsageError naming the file and `fix`. A missing file
    is None with missing_ok."""
    path = Path(path)
    if missing_ok and not path.exists():
        return None
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end: never opened
        raise UsageError(f"{path} is not a regular file: {fix}")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:
        problem = err.strerror if isinstance(err, OSError) else (
            "nested too deeply" if isinstance(err, RecursionError) else "not valid JSON")
        raise UsageError(f"{path} is corrupt or unreadable ({problem}): {fix}") from None
    missing = [key for key in required if key not in record] if isinstance(record, (dict, list)) and \
        isinstance(record, kind) else None
    if missing is None or missing:
        what = f"not a JSON {'object' if kind is dict else 'list'}" if missing is None else f"no {missing[0]!r}"
        raise UsageError(f"{path} is corrupt ({what}): {fix}")
    return record


def read_jsonl(path: Path) -> list[dict]:
    """The records (JSON objects) of a JSON-lines log; a line cut short by a kill, or any other line that is
    not a JSON object, is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def truncate_jsonl(path: Path, keep) -> list[dict]:
    """Rewrite a JSON-lines log (atomically) with only the records for which keep(record) holds."""
    records = [r for r in read_jsonl(path) if keep(r)]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    return records
