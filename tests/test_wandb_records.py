"""What W&B receives, read from the offline run files the real wandb library writes, and the report built from
W&B records alone (the records laid out as `artifact.download()` lays them out; the API listing itself needs a
live server and is exercised here through a stand-in with the public API's shape)."""

import hashlib
import json
import time
from pathlib import Path

import pytest

from earlyphase.studies import cli
from earlyphase.studies.reporting import report, wandb_source

from conftest import one_line_error, run_cli
from wandb_files import download_layout, offline_runs

FLAGS = ["--width=2", "--training_steps=2ep", "--milestone_steps=1ep", "--levels=1", "--rewind_step=3it",
        "--pretrain_steps=3it", "--batch_size=256", "--eval_every=1", "--stability=0"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One offline study: reset and rotation (with rewinding to its k), seeds 0-2, stability of every point."""
    out = tmp_path_factory.mktemp("wandb") / "runs"
    code = cli.main(["study", "--conditions=reset,rotation", "--seeds=0,1,2", *FLAGS, f"--out={out}",
                     "--wandb=offline"])
    assert code == 0
    return out


def records_artifacts(runs):
    """{run directory name: its last records artifact (and the offline run that logged it)}."""
    last = {}
    for run in runs:
        for artifact in run.artifacts:
            if artifact.type == "earlyphase-records":
                last[artifact.name] = (artifact, run)
    return last


def test_every_imp_run_logs_its_records_as_one_artifact_inside_out(study):
    runs = offline_runs(study)
    last = records_artifacts(runs)
    imp_dirs = sorted(p.name for p in study.glob("imp_*"))
    assert sorted(last) == imp_dirs and len(imp_dirs) == 9  # reset, rewind 3it, rotation 3it x 3 seeds
    for name, (artifact, run) in last.items():
        files = run.artifact_files(artifact)
        assert sorted(files) == ["config.json", "level_0/density.json", "level_0/stability/stability.json",
                                 "level_0/stability/summary.json", "level_0/summary.json", "level_1/density.json",
                                 "level_1/summary.json", "records_manifest.json", "tickets.json"]
        for entry, local in files.items():
            assert local.resolve().is_relative_to(study.resolve())  # what `wandb sync` reads stays under --out
            if entry != "records_manifest.json":
                assert local.read_bytes() == (study / name / entry).read_bytes()
        manifest = json.loads(files["records_manifest.json"].read_text())
        assert sorted(manifest["final_sha256"]) == ["level_0", "level_0/stability", "level_1"]
        final = study / name / "level_1" / "final.pt"
        assert manifest["final_sha256"]["level_1"] == hashlib.sha256(final.read_bytes()).hexdigest()
        assert not any(f.endswith("final.pt") for f in files)  # no weights unless --wandb_weights
        assert run.job_type == "level" and run.config["level"] == 1  # logged by its last level's run


def test_level_runs_carry_the_resolved_config_and_the_conditions_identity(study):
    runs = [r for r in offline_runs(study) if r.job_type in ("level", "control", "stability")]
    rotation = [r for r in runs if r.config["condition"] == "rotation 3it"]
    assert len(rotation) == 3 * 3  # level 0, level 1 and the stability copy, 3 seeds
    for run in runs:
        config = run.config
        assert (config["lr"], config["momentum"], config["weight_decay"], config["gamma"]) == (0.1, 0.9, 1e-4, 0.1)
        assert not {"out", "data_dir", "rewind_from", "mask"} & set(config)
        assert str(study) not in json.dumps(config) and str(study) not in json.dumps(run.summary)
        for key in ("condition", "condition_kind", "k", "budget", "seed", "level", "part", "density"):
            assert run.summary[key] == config[key], key
        if config["part"] == "trunk":  # the summary is the ticket's record
            tickets = json.loads((study / config["run"] / "tickets.json").read_text())
            mine = next(t for t in tickets if t["level"] == config["level"] and t["kind"] == "trunk")
            assert run.summary["test_accuracy"] == mine["test_accuracy"] and run.summary["density"] == mine["density"]
            assert run.summary["ticket/trunk/test_accuracy"] == mine["test_accuracy"]
    level1 = next(r for r in rotation if r.config["level"] == 1 and r.config["seed"] == 2)
    assert (level1.config["task"], level1.config["budget"], level1.config["k"]) == ("rotation", "3it", 3)
    assert level1.config["condition_kind"] == "pretext" and level1.config["part"] == "trunk"
    assert any(m.glob_name == "ticket/*" and m.step_metric == "ticket/density" for m in level1.metrics)
    table = json.loads(next((level1.folder / "files" / "media" / "table").glob("tickets_*.json")).read_text())
    assert table["columns"] == ["level", "kind", "density", "test_accuracy", "seed", "condition", "k", "budget"]
    assert {row[4] for row in table["data"]} == {2} and {row[5] for row in table["data"]} == {"rotation 3it"}
    pretrain = [r for r in offline_runs(study) if r.job_type == "pretrain"]
    assert len(pretrain) == 3 and all(r.summary["condition"] == "rotation 3it" for r in pretrain)


def test_the_report_is_logged_back_as_a_run(study):
    (run,) = [r for r in offline_runs(study) if r.job_type == "report"]
    assert run.summary["report/_type"] == "html-file" and run.summary["findings_table/_type"] == "table-file"
    assert {"figures/accuracy_vs_density/_type", "figures/accuracy_vs_k/_type"} <= set(run.summary)
    data = json.loads(next((study).glob("study_*/report/report.json")).read_text())
    assert run.summary["findings"] == "\n".join(data["findings"])
    # why a condition falls short, as numbers W&B compares runs by
    (row,) = [r for r in data["crossed"] if r["subject"].startswith("rotation")]
    key = f"crossed/{row['subject']} vs {row['reference']}/level_{row['level']}"
    assert run.summary[f"{key}/weights"] == row["weights"]["mean"] and f"{key}/interaction" in run.summary
    (a,) = [a for a in data["anatomy"] if a["subject"].startswith("rotation")]
    assert run.summary[f"anatomy/{a['subject']} vs {a['reference']}/dist_reference"] == \
        a["whole"]["dist_reference"]["mean"]
    (artifact,) = [a for a in run.artifacts if a.type == "earlyphase-report"]
    assert json.loads(run.artifact_files(artifact)["report.json"].read_text()) == data


def test_a_report_from_the_artifacts_alone_equals_the_local_one(study, tmp_path):
    local = json.loads((report.write_report([study], tmp_path / "local") / "report.json").read_text())
    downloaded = [download_layout(artifact, tmp_path / "dl" / name)
                  for name, (artifact, _) in records_artifacts(offline_runs(study)).items()]
    assert not list((tmp_path / "dl").rglob("*.pt"))
    remote_dir = report.write_report(downloaded, tmp_path / "remote")
    remote = json.loads((remote_dir / "report.json").read_text())
    # the same report, but what needs the runs' weights (crossed tickets, the anatomy), which it says it lacks
    split = [s for s in local["findings"] if "(crossed tickets:" in s or "'s rewind point lies at" in s]
    assert local["crossed"] and local["anatomy"] and split and not remote["crossed"] and not remote["anatomy"]
    assert [s for s in remote["findings"] if "carry no weights" not in s] == [s for s in local["findings"]
                                                                              if s not in split]
    assert {k: v for k, v in remote.items() if k not in ("crossed", "anatomy", "findings")} == {
        k: v for k, v in local.items() if k not in ("crossed", "anatomy", "findings")}
    assert local["by_k"] and local["stability"]
    md = (remote_dir / "report.md").read_text()
    assert "by the sha256 their run's records manifest lists" in md
    # a record whose part the manifest does not vouch for is not shown
    manifest = downloaded[0] / "records_manifest.json"
    manifest.write_text(json.dumps({"final_sha256": {}}))
    data = json.loads((report.write_report(downloaded, tmp_path / "remote2") / "report.json").read_text())
    assert any("final.pt is missing or corrupt" in i["why"] for i in data["incomplete"])


def test_a_rerun_logs_no_records_again_and_the_same_content_makes_the_same_artifact(study, capsys):
    before = offline_runs(study)
    args = ["study", "--conditions=reset,rotation", "--seeds=0,1,2", *FLAGS, f"--out={study}", "--wandb=offline"]
    assert cli.main(args) == 0
    new = offline_runs(study)[len(before):]
    assert [r.job_type for r in new] == ["report"]  # every part finished earlier: only the report is logged
    for marker in (study / "wandb" / "earlyphase-logged").iterdir():
        marker.unlink()
    assert cli.main(args) == 0
    relogged = records_artifacts(offline_runs(study)[len(before) + 1:])
    first = records_artifacts(before)
    assert sorted(relogged) == sorted(first)
    assert all(relogged[n][0].digest == first[n][0].digest for n in first)  # W&B makes no new version
    capsys.readouterr()


def test_under_a_sweep_agent_one_unit_logs_into_the_agents_run_with_keys_w_and_b_can_group(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    out = tmp_path / "runs"
    assert cli.main(["study", "--conditions=rewind", "--seeds=1", *FLAGS, f"--out={out}", "--wandb=offline"]) == 0
    (run,) = offline_runs(out)
    assert run.config["condition"] == "rewind 3it" and run.config["seed"] == 1 and run.config["k"] == 3
    assert not {"level", "part", "density"} & set(run.config)  # the unit's identity, not its last part's
    keys = set().union(*run.history)
    assert {"level_0/trunk/test_accuracy", "level_1/trunk/test_accuracy", "level_1/trunk/step"} <= keys
    assert not any("seed" in k for k in keys)
    assert run.summary["level_1/density"] == pytest.approx(0.25, abs=0.01)
    assert any(m.glob_name == "level_1/trunk/*" and m.step_metric == "level_1/trunk/step" for m in run.metrics)
    assert [a.type for a in run.artifacts].count("earlyphase-records") >= 1
    assert "report/report/_type" in run.summary and "report/findings" in run.summary


def test_several_units_under_an_agent_are_prefixed_and_say_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    out = tmp_path / "runs"
    assert cli.main(["study", "--conditions=rewind", "--seeds=0,1", *FLAGS, f"--out={out}", "--wandb=offline"]) == 0
    (run,) = offline_runs(out)
    assert {"rewind seed 0/level_1/trunk/test_accuracy", "rewind seed 1/level_1/trunk/test_accuracy"} <= set().union(
        *run.history)
    assert capsys.readouterr().err.count("W&B cannot group them across seeds") == 1


def test_nothing_is_staged_outside_out(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    out = tmp_path / "runs"
    assert cli.main(["imp", *FLAGS[:2], "--levels=1", "--rewind_step=0it", "--batch_size=256", f"--out={out}",
                     "--wandb=offline"]) == 0
    assert not list(home.rglob("*staging*"))
    for run in offline_runs(out):
        for artifact in run.artifacts:
            for local in run.artifact_files(artifact).values():
                assert local.resolve().is_relative_to(out.resolve()) and local.is_file()


# ---------------------------------------------------------------------------------------------- from W&B
class FakeArtifact:
    """What the public API hands back for a logged artifact: name:version, type, digest, download(root)."""

    def __init__(self, artifact, version="v0"):
        self.name, self.type, self.digest, self.version = f"{artifact.name}:{version}", artifact.type, \
            artifact.digest, version
        self.source, self.downloads = artifact, 0

    def download(self, root):
        self.downloads += 1
        download_layout(self.source, root)
        return root


class FakeApi:
    def __init__(self, artifacts):
        self.artifacts = {a.name.split(":")[0]: a for a in artifacts}

    def artifact_collections(self, project, type_name):
        assert type_name == "earlyphase-records"
        return [type("C", (), {"name": n}) for n in self.artifacts]

    def runs(self, path, filters):
        assert filters == {"sweep": "abc"}
        return [type("R", (), {"logged_artifacts": lambda self, a=a: [a]})() for a in self.artifacts.values()]

    def artifact(self, name, type=None):
        return self.artifacts[name.rsplit("/", 1)[1].split(":")[0]]


def test_report_from_w_and_b_downloads_once_into_the_cache_and_equals_the_local_report(study, tmp_path, monkeypatch,
                                                                                       capsys):
    fakes = [FakeArtifact(a) for a, _ in records_artifacts(offline_runs(study)).values()]
    monkeypatch.setattr(wandb_source, "connect", lambda: FakeApi(fakes))
    cache, out = tmp_path / "cache", tmp_path / "rep"
    for path in ("me/proj", "me/proj/abc"):
        code, stdout, _ = run_cli(["report", f"--wandb={path}", f"--wandb_cache={cache}", "-o", str(out)], capsys)
        assert code == 0 and stdout.strip().splitlines()[-1] == str(out)
    assert all(f.downloads == 1 for f in fakes)  # the second listing found every digest in the cache
    assert sorted(p.name for p in (cache / "me" / "proj").iterdir()) == sorted(p.name for p in study.glob("imp_*"))
    local = json.loads((report.write_report([study], tmp_path / "local") / "report.json").read_text())
    remote = json.loads((out / "report.json").read_text())
    weightless = ("crossed", "anatomy", "findings")  # what needs the runs' weights (the test above pins them)
    assert {k: v for k, v in remote.items() if k not in weightless} == {
        k: v for k, v in local.items() if k not in weightless}
    fakes[0].digest = "changed"  # a newer version replaces the cached run whole
    assert run_cli(["report", "--wandb=me/proj", f"--wandb_cache={cache}", "-o", str(out)], capsys)[0] == 0
    assert fakes[0].downloads == 2 and not list((cache / "me" / "proj").glob(".*"))
    # an edited cache (issue 29 §4): the run's records are downloaded again, never used as edited
    tickets = next((cache / "me" / "proj").glob("imp_*/tickets.json"))
    edited = json.loads(tickets.read_text())
    edited[-1]["test_accuracy"] = 0.999
    tickets.write_text(json.dumps(edited))
    code, _, err = run_cli(["report", "--wandb=me/proj", f"--wandb_cache={cache}", "-o", str(out)], capsys)
    assert code == 0 and "differ from what W&B gave" in err
    assert json.loads((out / "report.json").read_text()) == remote and json.loads(tickets.read_text()) != edited


def test_bad_w_and_b_input_is_one_line(tmp_path, monkeypatch, capsys):
    import wandb

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    code, _, err = run_cli(["report", "--wandb=me/proj", "-o", str(tmp_path / "r")], capsys)
    one_line_error(code, err, "W&B: cannot connect", "wandb login")
    code, _, err = run_cli(["report", "--wandb=not a path"], capsys)
    one_line_error(code, err, "--wandb=not a path", "ENTITY/PROJECT")

    class Unknown(FakeApi):
        def artifact_collections(self, project, type_name):
            raise wandb.errors.CommError("project not found\nmore")

    monkeypatch.setattr(wandb_source, "connect", lambda: Unknown([]))
    code, _, err = run_cli(["report", "--wandb=me/nope"], capsys)
    one_line_error(code, err, "cannot list the earlyphase records of me/nope", "project not found")
    monkeypatch.setattr(wandb_source, "connect", lambda: FakeApi([]))
    code, _, err = run_cli(["report", "--wandb=me/empty"], capsys)
    one_line_error(code, err, "me/empty holds no earlyphase runs")
    assert not (tmp_path / "r").exists() and not Path("reports").joinpath("me_empty").exists()


def test_an_unreachable_server_is_one_line_within_the_timeout(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: refused
    started = time.monotonic()
    code, _, err = run_cli(["report", "--wandb=me/proj", "-o", str(tmp_path / "r")], capsys)
    one_line_error(code, err, "W&B: cannot connect")
    assert time.monotonic() - started < 3 * wandb_source.INIT_TIMEOUT_S


def test_wandb_log_without_w_and_b_is_refused_before_any_work(study, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    code, _, err = run_cli(["report", str(study), "-o", str(tmp_path / "r"), "--wandb_log"], capsys)
    one_line_error(code, err, "--wandb_log: W&B is off here")
    assert not (tmp_path / "r").exists()
    code, _, err = run_cli(["report", str(study), "-o", str(tmp_path / "r"), "--wandb_log=offline"], capsys)
    assert code == 0
    (run,) = [r for r in offline_runs(tmp_path / "r") if r.job_type == "report"]
    assert run.summary["report/_type"] == "html-file"
