"""Answers across k and across pretraining length, from synthetic records with planted answers."""

import json
import math
import statistics

import pytest

from earlyphase.studies import cli
from earlyphase.studies.reporting import report

from conftest import T_975_2, write_imp, write_stability

DENSE = {0: 0.950, 1: 0.960, 2: 0.955}  # each seed's dense network
NOISE = {0: 0.000, 1: 0.002, 2: -0.002}  # per-seed wobble of a difference
# ticket minus dense at 50%, 25%, 12.5% for each k: at 25% tickets match from k = 6 on, at 12.5% from k = 12 on
GAP_BY_K = {0: (-0.004, -0.050, -0.100), 2: (-0.005, -0.030, -0.080), 6: (0.000, -0.002, -0.040),
            12: (0.001, 0.001, -0.003)}
# rotation minus rewinding to the same k, at every pruned density: short at 2it, matching from 6it on
ROTATION_GAP = {2: -0.040, 6: -0.001, 12: 0.002}


def ticket(seed, k, gaps):
    return [DENSE[seed]] + [DENSE[seed] + g + NOISE[seed] for g in gaps]


@pytest.fixture
def sweep(tmp_path):
    """A rewind-step sweep (reset and rewinding to 2, 6, 12) and rotation at budgets 2, 6, 12, three seeds."""
    root = tmp_path / "runs"
    for seed in range(3):
        for k, gaps in GAP_BY_K.items():
            write_imp(root, f"imp_k{k}_{seed}", seed, ticket(seed, k, gaps), k=k)
        for k, gap in ROTATION_GAP.items():
            rotation = ticket(seed, k, [g + gap for g in GAP_BY_K[k]])
            write_imp(root, f"imp_rot{k}_{seed}", seed, rotation, k=k, pretext="rotation")
    return root


def test_smallest_matching_k_per_density_with_its_interval(sweep, tmp_path):
    data = json.loads((report.write_report([sweep], tmp_path / "rep") / "report.json").read_text())
    (answer,) = data["by_k"]
    assert answer["densities"] == [0.5, 0.25, 0.125] and answer["margin"] == 0.01
    smallest = {row["density"]: row["k"] for row in answer["smallest_matching_k"]}
    assert smallest == {0.5: 0, 0.25: 6, 0.125: 12}
    # the bootstrap over seeds: at 25% and 12.5% the planted gaps are far from the margin next to the seeds' wobble,
    # so every resample finds the same smallest k; at 50% k = 0 matches by a hair (gaps -0.4 and -0.5 points at k = 0
    # and 2, interval low about -0.9), so resamples that draw the lowest seed twice move it to 6
    assert {row["density"]: (row["bootstrap"]["low"], row["bootstrap"]["high"])
            for row in answer["smallest_matching_k"]} == {0.5: (0, 6), 0.25: (6, 6), 0.125: (12, 12)}
    # by hand: ticket - dense at 25%, k = 2: -0.03 + noise per seed, mean -0.03, t interval over 3 seeds
    d = next(p for p in answer["vs_dense"] if p["k"] == 2 and p["density"] == 0.25)
    diffs = [-0.030 + NOISE[s] for s in range(3)]
    half = T_975_2 * statistics.stdev(diffs) / math.sqrt(3)
    assert d["mean"] == pytest.approx(-0.03) and d["low"] == pytest.approx(-0.03 - half)
    assert d["verdict"] == "falls short" and d["n"] == 3
    assert next(p for p in answer["vs_dense"] if p["k"] == 6 and p["density"] == 0.25)["verdict"] == "matches"
    # the dense band: every seed's level 0, once
    assert answer["dense"]["mean"] == pytest.approx(statistics.fmean(DENSE.values()))
    # against reset: rewinding to 12 minus reset at 12.5% is +0.097, paired, identical per seed -> zero width
    r = next(p for p in answer["vs_reset"] if p["k"] == 12 and p["density"] == 0.125)
    assert r["mean"] == pytest.approx(0.097) and r["called"]
    assert {p["label"] for p in answer["pretext"]} == {"rotation 2it", "rotation 6it", "rotation 12it"}
    text = " ".join(data["findings"])
    assert "tickets match the dense network (the 95% interval of ticket minus the same seed's dense network lies " \
           "above -1 point (3.6 of the 360 test images)) at 50% from k = 0it" in text
    assert "at 25% from k = 6it (-0.20 [" in text and "at 12.5% from k = 12it (-0.30 [" in text


def test_a_wider_margin_moves_the_answer(sweep, tmp_path, capsys):
    out = tmp_path / "rep"
    assert cli.main(["report", str(sweep), "-o", str(out), "--match_margin=5"]) == 0
    data = json.loads((out / "report.json").read_text())
    smallest = {row["density"]: row["k"] for row in data["by_k"][0]["smallest_matching_k"]}
    assert smallest == {0.5: 0, 0.25: 2, 0.125: 6}  # -3 points at k = 2 and -4 at k = 6 now lie within 5
    assert "above -5 points" in " ".join(data["findings"])
    for bad in ("--match_margin=-1", "--match_margin=nan", "--match_margin=lots"):
        assert cli.main(["report", str(sweep), "-o", str(out), bad]) == 2
        assert "--match_margin" in capsys.readouterr().err


def test_a_task_matches_rewinding_from_a_budget_on(sweep, tmp_path):
    data = json.loads((report.write_report([sweep], tmp_path / "rep") / "report.json").read_text())
    (series,) = data["by_budget"]
    assert series["task"] == "rotation" and [b["budget"] for b in series["budgets"]] == ["2it", "6it", "12it"]
    assert [b["reference"] for b in series["budgets"]] == ["rewind 2it", "rewind 6it", "rewind 12it"]
    assert [b["verdict"] for b in series["budgets"]] == ["falls short", "matches", "matches"]
    short = series["budgets"][0]["differences"]
    assert [d["mean"] for d in short] == pytest.approx([-0.04] * 3) and all(d["high"] < 0 for d in short)
    assert [p["label"] for p in series["reset_points"]] == ["reset"] * 3
    text = " ".join(data["findings"])
    assert "**rotation** against supervised rewinding to the same k" in text
    assert "matches at 6it, 12it, from 6it on; falls short at 2it (at 50%: -4.00" in text


def test_figures_tables_and_the_html_show_the_answers(sweep, tmp_path):
    out = report.write_report([sweep], tmp_path / "rep")
    for name in ("accuracy_vs_k.png", "pretext_vs_budget.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert md.index("accuracy_vs_k.png") < md.index("accuracy_vs_density.png")
    assert "## Across k" in md and "## Across pretraining length" in md
    row = next(line for line in md.splitlines() if line.startswith("| 6it | rewind 6it |") and "matches" in line)
    assert row.split(" | ")[3].startswith("-0.20 [") and row.endswith("-4.00 [-4.50, -3.50] short |")
    assert "Smallest k that matches: 50%: 0it; 25%: 6it; 12.5%: 12it." in md
    budget_row = next(line for line in md.splitlines() if line.startswith("| 2it | 2it | rewind 2it |"))
    assert budget_row.endswith("| falls short | - |")
    # the dense networks beside each budget (rotation's own against rewind k's), and each setting said once
    assert budget_row.split(" | ")[3] == "95.50 ± 0.50 vs 95.50 ± 0.50: +0.00 [+0.00, +0.00]"
    assert md.count("Setting: reset, rewind 2it") == 1
    # every figure has a caption saying what it answers; the per-seed accuracies close the report
    for number, name in enumerate(("accuracy_vs_k.png", "pretext_vs_budget.png"), 1):
        assert f"*Figure {number} ({name}). " in md
    seeds = md.split("## Per-seed accuracy")[1]
    row = next(line for line in seeds.split("**rotation 2it**")[1].splitlines() if line.startswith("| 3 (12.5%) |"))
    expected = [f"{100 * (DENSE[s] - 0.08 - 0.04 + NOISE[s]):.2f}" for s in range(3)]  # GAP_BY_K[2] + ROTATION_GAP[2]
    assert row == "| 3 (12.5%) | " + " | ".join(expected) + " |"
    page = (out / "report.html").read_text()
    assert '<div class="toc">' in page and 'href="#per-seed-accuracy"' in page and "white-space:nowrap" in page


def test_figures_mark_differences_by_verdict():
    from earlyphase.studies.reporting.figure_marks import mark

    row = {"n": 3, "mean": 0.0, "low": -0.005, "high": 0.005}
    assert mark(row, 0.01) == "matches" and mark(row, 0.001) == "undetermined"
    assert mark(row | {"low": 0.001}, 0.01) == "exceeds"
    assert mark(row | {"low": -0.03, "high": -0.02}, 0.01) == "falls short"
    assert mark(row | {"n": 2}, 0.01) == "too few seeds" and mark(row | {"low": None}, 0.01) == "too few seeds"
    # a shortfall inside the margin matches: the verdict the report states, not "the interval excludes 0"
    assert mark(row | {"low": -0.004, "high": -0.001}, 0.01) == "matches"


def test_stability_verdicts_are_set_beside_each_budget(sweep, tmp_path):
    default = "bn=interpolate,points=11"
    for seed in range(3):
        for k in ROTATION_GAP:
            write_stability(sweep / f"imp_rot{k}_{seed}", 0, {default: 9.0 + seed})  # unstable at every budget
            write_stability(sweep / f"imp_k{k}_{seed}", 0, {default: 9.0 + seed if k < 12 else 0.5 + 0.1 * seed})
    data = json.loads((report.write_report([sweep], tmp_path / "rep") / "report.json").read_text())
    budgets = data["by_budget"][0]["budgets"]
    assert [(b["stability"]["task"], b["stability"]["reference"]) for b in budgets] == [
        ("unstable", "unstable"), ("unstable", "unstable"), ("unstable", "stable")]
    assert ("agrees with rewind k's at 2 of 3 budgets (2it: unstable; 6it: unstable; 12it: unstable vs stable)"
            in " ".join(data["findings"]))


def test_two_seeds_conclude_nothing_across_k_or_budget(sweep, tmp_path):
    for run in sweep.glob("imp_*_2"):
        for f in run.iterdir():
            f.unlink()
        run.rmdir()
    data = json.loads((report.write_report([sweep], tmp_path / "rep") / "report.json").read_text())
    assert data["findings"][0].startswith("Across k: 2 seeds per k, too few to say from which k")
    assert [b["verdict"] for b in data["by_budget"][0]["budgets"]] == ["too few seeds"] * 3
    assert "nothing can be concluded at any budget" in data["findings"][1]


def test_one_k_and_one_budget_draw_neither_figure(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write_imp(root, f"imp_a{seed}", seed, ticket(seed, 6, GAP_BY_K[6]), k=6)
        write_imp(root, f"imp_r{seed}", seed, ticket(seed, 6, GAP_BY_K[6]), k=6, pretext="rotation")
    out = report.write_report([root], tmp_path / "rep")
    data = json.loads((out / "report.json").read_text())
    assert data["by_k"] == [] and data["by_budget"] == []
    assert not (out / "accuracy_vs_k.png").exists() and not (out / "pretext_vs_budget.png").exists()


def test_verdicts_say_how_sure_they_are(sweep, tmp_path):
    """Each interval carries the smallest difference its seeds could detect and the seeds a 1-point margin needs
    (by hand from the t distribution), Holm's correction runs over every interval the findings rest on, and the
    report states what was held equal."""
    from scipy import stats

    data = json.loads((report.write_report([sweep], tmp_path / "rep") / "report.json").read_text())
    (answer,) = data["by_k"]
    d = next(p for p in answer["vs_dense"] if p["k"] == 2 and p["density"] == 0.25)
    sd = statistics.stdev([-0.030 + NOISE[s] for s in range(3)])
    factor = lambda n: stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)  # noqa: E731
    assert d["detectable"] == pytest.approx(factor(3) * sd / math.sqrt(3))
    need = next(n for n in range(2, 1000) if factor(n) * sd / math.sqrt(n) <= 0.01)
    assert d["seeds_for_margin"] == need and factor(need - 1) * sd / math.sqrt(need - 1) > 0.01
    # the equivalence p of "above -1 point": one-sided t test of mean + margin
    assert d["p_match"] == pytest.approx(stats.t.sf((d["mean"] + 0.01) / (sd / math.sqrt(3)), 2))
    # Holm over the family: the comparisons' pruned differences and the tickets against their dense networks
    family = data["family"]
    tested = [x for c in data["comparisons"] for x in c["differences"] if x["level"] >= 1 and x["n"] >= 3]
    dense = [p for p in answer["vs_dense"] if p["n"] >= 3]
    assert family["intervals"] == len(tested) + len(dense) and family["dense"] == len(dense)
    ps = [x["p"] for x in tested] + [p["p_match"] for p in dense]
    holm = [x["p_holm"] for x in tested] + [p["p_holm"] for p in dense]
    order = sorted(range(len(ps)), key=ps.__getitem__)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        assert holm[i] == pytest.approx(running)
    assert family["called_holm"] <= family["called"] and family["matches_holm"] <= family["matches"]
    assert all("detectable" in x for c in data["comparisons"] for x in c["differences"])
    text = " ".join(data["findings"])
    assert f"With Holm's correction over all {family['intervals']}," in text
    assert "the smallest difference these seeds could detect at 12.5% is" in text
    # what was held equal: T, each k in iterations, epochs and share of T, T - k, the rate at k, the threads
    (held,) = data["held_equal"]
    assert held["T"] == 60 and held["threads"] == [2]
    rows = {row["k"]: row for row in held["k"]}
    assert sorted(rows) == [0, 2, 6, 12] and rows[12]["share_of_T"] == pytest.approx(0.2)
    assert rows[12]["supervised_iterations_per_level"] == 48 and rows[12]["lr_at_k"] == pytest.approx(0.1)
    assert "Held equal (" in text and "k = 12it (20% of T, every level trains T - k = 48it from lr 0.1)" in text


def test_a_pretext_condition_beside_its_own_dense_network(sweep, tmp_path):
    """random_labels damages the dense network (50% against ~95.5%): the report says so beside its shortfall, and
    gives each ticket minus its own dense network (paired by seed)."""
    own_gaps = (-0.010, -0.020, -0.030)  # each ticket against its own (damaged) dense network
    for seed in range(3):
        for k in (2, 6):
            dense = 0.50 + NOISE[seed]
            write_imp(sweep, f"imp_rl{k}_{seed}", seed, [dense] + [dense + g for g in own_gaps], k=k,
                      pretext="random_labels")
    data = json.loads((report.write_report([sweep], tmp_path / "rep") / "report.json").read_text())
    (series,) = [s for s in data["by_budget"] if s["task"] == "random_labels"]
    first = series["budgets"][0]
    assert first["dense"]["mean"] == pytest.approx(0.50) and first["reference_dense"]["mean"] == pytest.approx(0.955)
    assert first["dense_difference"]["called"] and first["dense_difference"]["mean"] == pytest.approx(-0.455)
    assert [d["mean"] for d in first["vs_own_dense"]] == pytest.approx(list(own_gaps))
    text = " ".join(data["findings"])
    assert "Its own dense network is already worse than rewind k's at 2it (50.0% vs 95.5%" in text
    assert "Its dense network (level 0) already trails rewind k's by -45.50 points" in text


def test_an_unstable_smallest_k_gets_a_wide_bootstrap_interval():
    """One seed far off at k = 0, another at k = 6: resampling seeds moves the smallest matching k from 0 to none."""
    from earlyphase.studies.reporting.paired import bootstrap_smallest_k

    by_k = {0: {0: -0.05, 1: 0.0, 2: -0.001}, 6: {0: 0.0, 1: -0.03, 2: 0.0}}
    assert bootstrap_smallest_k(by_k, 0.01) == (0, None)
    assert bootstrap_smallest_k({0: {0: 0.0, 1: 0.0}}, 0.01) == (0, 0)  # no spread: every resample matches at 0
    assert bootstrap_smallest_k({0: {0: 0.0}}, 0.01) == (None, None)  # one seed: no interval at all


def test_a_shortfall_sentence_names_a_larger_uncalled_one():
    from earlyphase.studies.reporting import across

    budget = {"differences": [
        {"density": 0.25, "mean": -0.1093, "low": -0.20, "high": -0.01, "verdict": "falls short"},
        {"density": 0.015625, "mean": -0.2074, "low": -0.60, "high": 0.20, "verdict": "undetermined"}]}
    text = across._worst(budget)
    assert text.startswith("at 25%: -10.93 [-20.00, -1.00]")
    assert "larger in the mean at 1.56%, -20.74 [-60.00, +20.00], but not called there" in text
