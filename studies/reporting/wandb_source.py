"""Run records from W&B (`earlyphase report --wandb=ENTITY/PROJECT[/SWEEP_ID]`), laid out as run directories.

Every IMP run logs its small record files as an artifact of type `earlyphase-records` named by its run
directory (jobs.wandb_log), so a project's or a sweep's comparison can be built from W&B alone, when the
agents that trained it shared no disk. Here:
- `list_records`: the latest version of every such artifact of a project (through the public API's artifact
  collections, paged by wandb) or of a sweep (the artifacts its runs logged, through `api.runs(..., filters=
  {"sweep": ID})`, paged likewise). It is thin on purpose: only a live server exercises it (not verified here;
  the README says what was).
- `fetch`: each artifact downloaded into the cache (`--wandb_cache`, default ~/.cache/earlyphase/wandb) as
  `ENTITY/PROJECT/RUN_DIR_NAME/`, exactly the run directory's layout (weights left out); an artifact whose
  digest is already there is not fetched again, a newer one replaces it whole (downloaded beside, then renamed).
  The cache is checked before it is used: the marker keeps the sha256 of every file as downloaded, and a cached
  run whose files differ (edited, damaged, added or removed) is downloaded again, with one line saying so, so a
  report never rests on records the artifact does not hold.
Errors (no API key, no network, an unknown project, a project without earlyphase records) are one line,
within the W&B timeout the logging uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from ..engine.errors import UsageError
from ..jobs.wandb_log import INIT_TIMEOUT_S, RECORDS_TYPE

DEFAULT_CACHE = "~/.cache/earlyphase/wandb"
MARKER = ".earlyphase_artifact.json"  # in a cached run directory: the artifact (name, version, digest) it holds
_PATH = re.compile(r"^([\w.-]+)/([\w.-]+)(?:/([\w-]+))?$")


def parse_path(text: str) -> tuple[str, str, str | None]:
    match = _PATH.match(text.strip())
    if not match:
        raise UsageError(f"--wandb={text}: write ENTITY/PROJECT or ENTITY/PROJECT/SWEEP_ID (as `wandb sweep` prints)")
    return match.group(1), match.group(2), match.group(3)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def connect():
    """The public API, or one line: no key (`wandb login`), or a server that does not answer in time."""
    import wandb

    try:
        return wandb.Api(timeout=INIT_TIMEOUT_S)
    except Exception as err:  # wandb raises UsageError without a key, AuthenticationError without a server
        raise UsageError(f"W&B: cannot connect ({type(err).__name__}: {_first_line(err)}); run `wandb login` (or set "
                         f"WANDB_API_KEY) on a machine that reaches the server, or report from local folders") from None


def list_records(api, entity: str, project: str, sweep: str | None) -> list:
    """The latest version of each `earlyphase-records` artifact of the project, or of the sweep's runs."""
    where = f"{entity}/{project}" + (f"/{sweep}" if sweep else "")
    try:
        if sweep:
            names = {art.name.split(":")[0] for run in api.runs(f"{entity}/{project}", filters={"sweep": sweep})
                     for art in run.logged_artifacts() if art.type == RECORDS_TYPE}
        else:
            names = {c.name for c in api.artifact_collections(f"{entity}/{project}", RECORDS_TYPE)}
        found = [api.artifact(f"{entity}/{project}/{name}:latest", type=RECORDS_TYPE) for name in sorted(names)]
    except Exception as err:  # an unknown entity, project or sweep; a server error
        raise UsageError(f"W&B: cannot list the earlyphase records of {where} ({type(err).__name__}: "
                         f"{_first_line(err)}); check the path (ENTITY/PROJECT[/SWEEP_ID])") from None
    if not found:
        raise UsageError(f"W&B: {where} holds no earlyphase runs (no artifacts of type {RECORDS_TYPE}): IMP runs log "
                         f"them at the end of each level when W&B is on; check the path, or report from local folders")
    return found


def fetch(artifacts: list, cache: Path, entity: str, project: str) -> list[Path]:
    """Each artifact as a run directory under cache/ENTITY/PROJECT/ (fetched only when its digest is new)."""
    root = Path(cache).expanduser() / entity / project
    root.mkdir(parents=True, exist_ok=True)
    runs = []
    for art in artifacts:
        name = art.name.split(":")[0]
        target = root / name
        held = _read_marker(target)
        intact = held.get("digest") == art.digest and held.get("files") == file_digests(target)
        if held.get("digest") == art.digest and not intact:
            print(f"earlyphase: the cached records of {name} differ from what W&B gave (edited or damaged since the "
                  f"download); downloading them again", file=sys.stderr)
        if not intact:
            partial = root / f".{name}.{secrets.token_hex(4)}.partial"
            try:
                art.download(root=str(partial))
                (partial / MARKER).write_text(json.dumps({"name": name, "version": art.version, "digest": art.digest,
                                                          "files": file_digests(partial)}))
                if target.exists():
                    old = root / f".{name}.{secrets.token_hex(4)}.old"
                    os.replace(target, old)
                    shutil.rmtree(old, ignore_errors=True)
                os.replace(partial, target)
            except Exception as err:
                shutil.rmtree(partial, ignore_errors=True)
                if isinstance(err, UsageError):
                    raise
                raise UsageError(f"W&B: cannot download {art.name} ({type(err).__name__}: {_first_line(err)}); "
                                 f"rerun to try again (what is cached stays)") from None
        runs.append(target)
    return runs


def file_digests(run: Path) -> dict:
    """{relative path: sha256} of every file of a cached run directory but the marker ({} when there is none)."""
    if not run.is_dir():
        return {}
    return {f.relative_to(run).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(run.rglob("*")) if f.is_file() and f.name != MARKER}


def _read_marker(run: Path) -> dict:
    try:
        return json.loads((run / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def records(text: str, cache: str | Path = DEFAULT_CACHE) -> list[Path]:
    """The run directories of ENTITY/PROJECT[/SWEEP_ID]'s records, in the cache."""
    entity, project, sweep = parse_path(text)
    api = connect()
    return fetch(list_records(api, entity, project, sweep), Path(cache), entity, project)
