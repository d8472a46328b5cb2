import json
import statistics

import pytest

from earlyphase.studies import cli, report


def write_imp(root, name, config, accuracies, densities=(1.0, 0.5, 0.25, 0.125), controls=None):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"kind": "imp", "levels": len(accuracies) - 1, **config}))
    tickets = [{"level": i, "kind": "trunk", "density": densities[i], "test_accuracy": a, "seed": config["seed"]}
               for i, a in enumerate(accuracies)]
    for kind, accs in (controls or {}).items():
        tickets += [{"level": i + 1, "kind": kind, "density": densities[i + 1], "test_accuracy": a, "seed": config["seed"]}
                    for i, a in enumerate(accs)]
    (d / "tickets.json").write_text(json.dumps(tickets))
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    write_imp(root, "imp_r0", {"seed": 0, "rewind_step": "24it"}, [0.90, 0.90, 0.88, 0.80],
              controls={"random_reinit": [0.85, 0.70, 0.50]})
    write_imp(root, "imp_r1", {"seed": 1, "rewind_step": "24it"}, [0.92, 0.90, 0.86, 0.82],
              controls={"random_reinit": [0.87, 0.72, 0.52]})
    write_imp(root, "imp_z0", {"seed": 0, "rewind_step": "0it"}, [0.90, 0.89, 0.80, 0.60])
    write_imp(root, "imp_z1", {"seed": 1, "rewind_step": "0it"}, [0.92, 0.85, 0.78, 0.64])
    pre = root / "pretrain_x"
    pre.mkdir()
    (pre / "config.json").write_text(json.dumps({"kind": "pretrain", "pretext": "rotation", "pretrain_steps": "400it", "seed": 0}))
    write_imp(root, "imp_p0", {"seed": 0, "rewind_step": "500it", "rewind_from": str(pre)}, [0.91, 0.89, 0.87, 0.81])
    broken = root / "imp_broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"kind": "imp", "seed": 2, "rewind_step": "0it", "levels": 3}))
    partial = write_imp(root, "imp_z2", {"seed": 2, "rewind_step": "0it"}, [0.9, 0.8])
    cfg = json.loads((partial / "config.json").read_text())
    (partial / "config.json").write_text(json.dumps({**cfg, "levels": 3}))
    return root


def test_conditions_are_derived_from_configs(runs):
    conditions, incomplete = report.collect(runs)
    assert [c.label for c in conditions] == ["reset", "rewind 24it", "rotation 400it"]
    assert {i["run"].split("/")[-1] for i in incomplete} == {"imp_broken", "imp_z2"}
    assert any("levels [2, 3] not finished" in i["why"] for i in incomplete)


def test_aggregation_has_known_answers(runs):
    conditions, _ = report.collect(runs)
    reset = conditions[0]
    points = report.curve(reset.records)
    level2 = points[2]
    # three seeds at level 2? no: seed 2 stopped at level 1, so level 2 has seeds 0 and 1
    assert level2["n"] == 2 and level2["mean"] == pytest.approx(0.79) and level2["std"] == pytest.approx(statistics.stdev([0.80, 0.78]))
    assert points[1]["n"] == 3 and points[1]["mean"] == pytest.approx((0.89 + 0.85 + 0.8) / 3)
    ref = report.pick_reference(conditions, None)
    assert ref.label == "rewind 24it"
    rows = report.density_table(conditions, ref, densities=(1.0, 0.3, 0.1))
    by = {(r["condition"], r["target"]): r for r in rows}
    assert by[("reset", 0.3)]["level"] == 2  # 0.25 is nearer 0.3 than 0.5 on a log scale
    assert by[("reset", 0.1)]["diff"] == pytest.approx(0.62 - 0.81)
    assert by[("reset", 0.1)]["within_std"] is False
    assert by[("rotation 400it", 0.1)]["diff"] == pytest.approx(0.81 - 0.81)
    assert by[("rotation 400it", 0.1)]["within_std"] is True
    assert "diff" not in by[("rewind 24it", 1.0)]
    reinit = report.curve(ref.records, "random_reinit")
    assert [p["level"] for p in reinit] == [1, 2, 3] and reinit[2]["mean"] == pytest.approx(0.51)


def test_report_files_hold_the_numbers(runs, tmp_path, capsys):
    out = tmp_path / "rep"
    assert cli.main(["report", str(runs), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    md = (out / "report.md").read_text()
    assert "| rewind 24it | 100.0% | 100.0% | 0 | 91.00 +- 1.41 | 2 |" in md
    assert "79.00 +- 1.41" in md and "random_reinit" in md and "imp_broken" in md
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "91.00 +- 1.41" in page
    assert (out / "accuracy_vs_density.png").read_bytes()[:4] == b"\x89PNG"


def test_report_errors(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "none")]) == 2
    assert "no runs folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "no IMP runs" in capsys.readouterr().err
