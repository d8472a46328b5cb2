"""What a report reads: IMP runs below one or more folders, grouped into conditions by their own configs.

Every number comes from files under the folders given (a study directory, or runs folders such as the
ones sweep agents on several machines wrote): a copied or moved folder reports its own data. Runs are
identified by their directory name (`imp_HASH`, which names the run's config); the same run found in two
folders is merged record by record (a level finished in one copy and not the other counts once), and two
different records of one part (same level and kind) are refused.

A condition is what differs between runs *besides* the seed: how the rewind point was made, derived from
each IMP run's config.json by jobs.identity (reset, `rewind K`, `rotation 400it`); everything else among the
config's option fields is the condition's *setting*, and conditions are only ever compared within one setting
(reporting.paired). Fields that cannot change a result (platform fields: paths, device, logging, scheduling,
which levels or controls to run) name neither. Runs made before pretraining counted as the run's first k steps
(their config has no `rewind_step_it`) are listed as excluded, never compared.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..engine import bound, records
from ..engine.errors import UsageError
from ..jobs.flags import split_list
from ..jobs.identity import identify, recorded_imp_run_name


@dataclass
class Condition:
    label: str
    kind: str  # reset, rewind or pretext
    k: int | None  # the rewind step in iterations: every pruned level trains [k, T)
    setting: str  # canonical JSON of everything but the condition (comparisons stay within one)
    details: dict  # the setting's fields plus the condition's own
    budget: str = ""  # the step string that names k (the rewind step, or the pretraining's length)
    task: str | None = None  # the pretext task of a pretext condition
    records: list = field(default_factory=list)  # ticket records, each with "seed"
    runs: list = field(default_factory=list)  # IMP run directories (Path)
    run_of_seed: dict = field(default_factory=dict)  # {seed: its IMP run directory} (the first found)
    stability: list = field(default_factory=list)  # stability results, each with "seed", "level" and "setting"


def _study_runs(study_dir: Path, study: dict) -> tuple[list[Path], list[dict]]:
    """(a study's IMP runs, its units not finished yet). Runs resolve inside the folder that holds the study
    (study.json keeps them relative to it)."""
    runs, pending = [], []
    for unit in study["units"]:
        if "imp_dir" not in unit:
            pending.append({"run": str(study_dir), "condition": unit.get("condition"), "seed": unit.get("seed"),
                            "why": "this unit of the study has not finished: rerun the study to finish it"})
            continue
        path = Path(unit["imp_dir"])
        local = study_dir.parent / (path.name if path.is_absolute() else path)  # a copy reports its own runs
        runs.append(local if local.is_dir() or not path.is_absolute() else path)
    return list(dict.fromkeys(runs)), pending


def imp_runs(folder: Path) -> tuple[list[Path], list[dict]]:
    """(the IMP runs below a folder, units known to be missing): an IMP run directory itself, a study's own runs
    (its study.json), else every imp_* below the folder."""
    folder = Path(folder)
    if folder.name.startswith("imp_") and (folder / "config.json").is_file():
        return [folder], []
    study = records.read(folder / "study.json", records.STUDY, missing_ok=True,
                         fix="move it away and rerun the study to rewrite it")
    if study is not None:
        return _study_runs(folder, study)
    return [p.parent for p in sorted(folder.rglob("imp_*/config.json"))], []


def _merge(first: list[dict], second: list[dict], where: tuple[Path, Path]) -> list[dict]:
    """The records of one run found in two folders, merged by (level, kind); a conflict is refused."""
    merged = {(r.get("level"), r.get("kind")): r for r in first}
    for r in second:
        key = (r.get("level"), r.get("kind"))
        if key in merged and merged[key] != r:
            raise UsageError(f"two different records of one run: level {key[0]} {key[1]} in {where[0]} and {where[1]} "
                             f"differ; keep one copy of {where[0].name}")
        merged.setdefault(key, r)
    return sorted(merged.values(), key=lambda r: (r.get("level", 0), r.get("kind") != "trunk"))


def _tickets(run: Path) -> list[dict] | None:
    return records.read(run / "tickets.json", records.TICKETS, missing_ok=True,
                        fix="move it away and rerun `earlyphase imp` on that run to rewrite it")


def collect(folders) -> tuple[list[Condition], list[dict]]:
    """Conditions with their ticket records, and the runs not (or not fully) in them, each with why."""
    found: dict[str, tuple[Path, dict, list]] = {}
    incomplete = []
    for folder in folders:
        runs, pending = imp_runs(folder)
        incomplete += pending
        for run in runs:
            config = records.read(run / "config.json", records.IMP_CONFIG, missing_ok=True,
                                  fix="move the run away or rerun the command that made it")
            if config is None:
                incomplete.append({"run": str(run), "why": "no config.json (not started, or not an IMP run)"})
                continue
            named = recorded_imp_run_name(config)
            if HASH_NAMED.fullmatch(run.name) and named != run.name:
                incomplete.append({"run": str(run), "seed": config.get("seed"), "excluded": True,
                                   "why": f"its config.json names another run ({named}): it was edited after the run "
                                          f"(or copied under another name); put back the config it ran with, or move "
                                          f"the run away"})
                continue
            tickets = _tickets(run)
            if run.name in found:
                first_run, first_config, first_tickets = found[run.name]
                if tickets and first_tickets:
                    tickets = _merge(first_tickets, tickets, (first_run, run))
                found[run.name] = (first_run, first_config, tickets or first_tickets)
            else:
                found[run.name] = (run, config, tickets)
    conditions: dict[str, Condition] = {}
    for run, config, tickets in found.values():
        if config.get("rewind_from") and config.get("rewind_step_it") is None:
            incomplete.append({"run": str(run), "seed": config.get("seed"), "excluded": True,
                               "why": "made before pretraining counted as the run's first k steps (its levels trained "
                                      "[0, T)): not comparable; rerun it with this version"})
            continue
        who = identify(config, tickets or [])
        label = who.label
        key = json.dumps(who.details, sort_keys=True, default=str)
        cond = conditions.setdefault(key, Condition(label, who.kind, who.k, json.dumps(who.setting, sort_keys=True,
                                                                                       default=str), who.details,
                                                    budget=who.budget, task=who.task))
        if not tickets:
            incomplete.append({"run": str(run), "condition": label, "seed": config.get("seed"),
                               "why": "no finished level yet (no tickets.json)"})
            continue
        tickets, problems = verified(run, tickets)
        incomplete += [{"run": str(run / p["part"]), "condition": label, "seed": config.get("seed"), "why": p["why"]}
                       for p in problems]
        cond.runs.append(run)
        cond.run_of_seed.setdefault(config.get("seed"), run)
        cond.records += [{**r, "seed": r.get("seed", config.get("seed"))} for r in tickets]
        cond.stability += stability_results(run, config.get("seed"))
        why = _missing(config, tickets)
        if why:
            incomplete.append({"run": str(run), "condition": label, "seed": config.get("seed"), "why": why})
    result = list(conditions.values())
    _disambiguate(result)
    order = {"reset": 0, "rewind": 1, "pretext": 2}
    return sorted(result, key=lambda c: (order[c.kind], c.k or 0, c.label)), incomplete


MANIFEST = "records_manifest.json"  # in a run's records from W&B: the sha256 of each part's final.pt
HASH_NAMED = re.compile(r"imp_[0-9a-f]{12}")  # a run directory as earlyphase names it (hand-made names are trusted)


def verified(run: Path, tickets: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the records whose part is intact, each with `verified_by`, and the problems): a record's part must hold its
    summary.json with the same test accuracy and a final.pt whose archive checks out (CRCs, no unpickling), so a
    report never shows a number whose run lost its weights. Records from W&B come without weights: there the sha256
    that the run's records manifest lists for the part's final.pt stands in (it was taken from an intact file).
    Records that name no part directory are taken as they are."""
    manifest = records.read(run / MANIFEST, records.MANIFEST, missing_ok=True,
                            fix="download the run's records again (earlyphase report --wandb)") or {}
    hashes = manifest.get("final_sha256")
    good, problems = [], []
    for record in tickets:
        part = record.get("run_dir")
        if part is None:
            good.append(record)
            continue
        why, by = _part_problem(run / part, record, (hashes or {}).get(part))
        if why:
            problems.append({"part": part, "why": why})
        else:
            good.append({**record, "verified_by": by})
    return good, problems


def _part_problem(part: Path, record: dict, sha256: str | None) -> tuple[str | None, str]:
    """(what is wrong with a record's part or None, how it was verified: final.pt or manifest)."""
    try:
        summary = records.read(part / "summary.json", records.SUMMARY, missing_ok=True,
                               fix="move it and final.pt away and rerun `earlyphase imp` on the run")
    except UsageError as err:  # a damaged part is listed with its fix, the rest is reported
        return str(err), ""
    if summary is None or summary["test_accuracy"] != record["test_accuracy"]:
        return "its summary.json is missing or disagrees with tickets.json: rerun `earlyphase imp` on the run", ""
    final = part / "final.pt"
    if not final.exists() and sha256:
        return None, "manifest"
    try:
        with zipfile.ZipFile(final) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile):
        bad = "the archive"
    digest = bound.sha256(final) if bad is None else None
    if bad is None and sha256 and digest != sha256:
        bad = "not the file its records manifest lists"
    if bad is None and bound.differs(summary, "final.pt", digest):
        bad = "not the file its run wrote: its sha256 differs from the one summary.json recorded; copied from " \
              "another run?"
    if bad is not None:
        return (f"its final.pt is missing or corrupt ({bad}): move final.pt and summary.json away and rerun "
                f"`earlyphase imp` on the run to train that part again"), ""
    return None, "final.pt"


def stability_results(run: Path, seed) -> list[dict]:
    """The instability analyses of an IMP run (level_L/stability*/stability.json), one record per path setting."""
    out = []
    for path in sorted(Path(run).glob("level_*/stability*/stability.json")):
        results = records.read(path, records.STABILITY, fix="move it away and rerun the run to redo the analysis")
        out += [{**r, "seed": seed, "setting": setting, "copy": path.parent.name} for setting, r in results.items()]
    return out


def _disambiguate(conditions: list[Condition]) -> None:
    """Conditions that share a label (same rewind point, other settings or options): the one in the most common
    setting keeps it, the others add what differs, e.g. `rotation 24it [training_steps=120it]`."""
    common = max(set(c.setting for c in conditions), key=[c.setting for c in conditions].count, default=None)
    for label in {c.label for c in conditions}:
        same = sorted((c for c in conditions if c.label == label), key=lambda c: c.setting != common)
        views = {id(c): _view(c.details) for c in same}
        if len(same) > 1 and len({c.setting for c in same}) == 1:  # one setting: the task's options tell them apart,
            for c in same:  # and every one of them says its own (`random_labels 6it [fraction=0.25]`)
                shown = {k: v for k, v in views[id(c)].items() if k.startswith(OPTION)
                         and any(views[id(o)].get(k) != v for o in same)}
                if shown:
                    named = ", ".join(f"{k.removeprefix(OPTION)}={_flat(v)}" for k, v in sorted(shown.items()))
                    c.label = f"{label} [{named}]"
            same = [c for c in same if c.label == label]
        for c in same[1:]:
            base, view = views[id(same[0])], views[id(c)]
            differs = [f"{k.removeprefix(OPTION)}={_flat(view.get(k))}" for k in sorted(set(base) | set(view))
                       if base.get(k) != view.get(k)]
            suffix = ", ".join(differs) if differs and len(", ".join(differs)) <= 60 else \
                hashlib.sha256(json.dumps(c.details, sort_keys=True, default=str).encode()).hexdigest()[:6]
            c.label = f"{label} [{suffix}]"


OPTION = "option "  # a task option's entry in _view


def _view(details: dict) -> dict:
    """A condition's details with its task's options as entries of their own (`option fraction`)."""
    pretext = dict(details.get("pretext") or {})
    options = pretext.pop("options", None) or {}
    return {**{k: v for k, v in details.items() if k != "pretext"}, **({"pretext": pretext} if pretext else {}),
            **{f"{OPTION}{k}": v for k, v in options.items()}}


def _flat(value) -> str:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)


def _missing(config: dict, tickets: list[dict]) -> str:
    done = {r["level"] for r in tickets if r.get("kind") == "trunk"}
    missing = sorted(set(range(int(config.get("levels", 0)) + 1)) - done)
    controls = split_list(str(config.get("controls") or "")) + list(config.get("perturb_kinds") or [])
    missing_controls = [(lvl, c) for lvl in sorted(done - {0}) for c in controls
                        if not any(r["level"] == lvl and r["kind"] == c for r in tickets)]
    why = []
    if missing:
        why.append(f"levels {missing} not finished")
    if missing_controls:
        why.append(f"{len(missing_controls)} controls not finished")
    return "; ".join(why)


def curve(records: list[dict], kind: str = "trunk") -> list[dict]:
    """Per level: mean density, mean and sample std of the accuracy over seeds, and n."""
    out = []
    for level in sorted({r["level"] for r in records if r["kind"] == kind}):
        rows = [r for r in records if r["kind"] == kind and r["level"] == level and r.get("test_accuracy") is not None]
        if rows:
            accs = [r["test_accuracy"] for r in rows]
            out.append({"level": level, "density": statistics.fmean(r["density"] for r in rows),
                        "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else None,
                        "n": len(rows)})
    return out


def by_setting(conditions: list[Condition]) -> list[list[Condition]]:
    """The conditions grouped by setting (first-seen order): comparisons never cross a group."""
    groups: dict[str, list[Condition]] = {}
    for c in conditions:
        groups.setdefault(c.setting, []).append(c)
    return list(groups.values())


def by_seed(records: list[dict], level: int, kind: str = "trunk") -> dict:
    """{seed: (accuracy, density)} of one level and kind."""
    return {r["seed"]: (r["test_accuracy"], r["density"]) for r in records
            if r["level"] == level and r["kind"] == kind and r.get("test_accuracy") is not None}
