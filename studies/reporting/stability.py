"""The report's stability section: instability per condition and level, what it says, and its figure.

Per condition and analysed level (0 = the dense network at the rewind point), the instability of the
test error over seeds: mean and 95% t interval (paired.interval). A start state is called
*stable* when the whole interval lies below STABLE_BELOW points (the LMC paper's threshold), *unstable*
when it lies above; otherwise, or with fewer than MIN_SEEDS seeds, the data cannot say. The findings set
this against the condition's tickets (Frankle et al. 2020: tickets match the dense network only from
stable rewind points): at the sparsest level, the ticket minus the same condition's dense network
(level 0), paired by seed; *short* when that interval lies below 0.
The findings and the figure use one path setting (BatchNorm mode and points): the one asked for (a study
passes its own), else the default `bn=interpolate,points=11` where present, else the most common; the
table has a part for every setting present.
"""

from __future__ import annotations

import statistics

from ..engine.checkpoints import save_figure_atomic
from ..engine.interpolation import STABLE_BELOW, PathSettings
from .findings import density, points
from .paired import MIN_SEEDS, interval, paired
from .plotting import pyplot
from .runs import Condition, by_seed

DEFAULT_SETTING = PathSettings().key()


def settings_present(conditions: list[Condition]) -> list[str]:
    return sorted({r["setting"] for c in conditions for r in c.stability})


def setting_in_use(conditions: list[Condition], wanted: str | None = None) -> str | None:
    settings = [r["setting"] for c in conditions for r in c.stability]
    if not settings:
        return None
    for preferred in (wanted, DEFAULT_SETTING):
        if preferred in settings:
            return preferred
    return max(set(settings), key=settings.count)


def summary(c: Condition, level: int, setting: str, key: str = "instability") -> dict | None:
    """Mean, interval and verdict of one condition's instability at one level."""
    values = {r["seed"]: r[key] for r in c.stability if r["level"] == level and r["setting"] == setting}
    if not values:
        return None
    mean, low, high = interval([values[seed] for seed in sorted(values)])  # seed order: one sum, however read
    n = len(values)
    if n < MIN_SEEDS:
        verdict = "too few seeds"
    elif high < STABLE_BELOW:
        verdict = "stable"
    elif low > STABLE_BELOW:
        verdict = "unstable"
    else:
        verdict = "undetermined"
    return {"level": level, "n": n, "mean": mean, "low": low, "high": high, "verdict": verdict,
            "density": statistics.fmean(r["density"] for r in c.stability if r["level"] == level)}


def levels(c: Condition, setting: str) -> list[int]:
    return sorted({r["level"] for r in c.stability if r["setting"] == setting})


def _range(s: dict) -> str:
    return f" [{s['low']:.2f}, {s['high']:.2f}]" if s["low"] is not None else ""


def table(conditions: list[Condition], wanted: str | None = None) -> list[str]:
    first = setting_in_use(conditions, wanted)
    if first is None:
        return []
    lines = ["## Stability to SGD noise", "",
             f"Instability (points): the largest test error on the linear path between two copies trained from the "
             f"start state with different data orders, minus the mean of the two endpoints' errors; mean over seeds "
             f"with its 95% interval, and the verdict (stable: the interval lies below {STABLE_BELOW:g} points). "
             f"Level 0 is the dense network at the rewind point k; level L the ticket's start. One table per path "
             f"setting (BatchNorm statistics interpolated or recomputed, points inside the path); the findings use "
             f"{first}.", ""]
    for setting in [first] + [s for s in settings_present(conditions) if s != first]:
        lines += _table(conditions, setting)
    return lines


def _table(conditions: list[Condition], setting: str) -> list[str]:
    shown = sorted({lvl for c in conditions for lvl in levels(c, setting)})
    lines = [f"Path: {setting}", "",
             "| condition | k | " + " | ".join(f"level {lvl}" for lvl in shown) + " | train subset, level 0 |",
             "|---|---|" + "---|" * (len(shown) + 1)]
    for c in conditions:
        if not levels(c, setting):
            continue
        cells = []
        for lvl in shown:
            s = summary(c, lvl, setting)
            cells.append("-" if s is None else f"{s['mean']:.2f}{_range(s)} (n = {s['n']}, {s['verdict']})")
        train = summary(c, 0, setting, "train_instability")
        cells.append("-" if train is None else f"{train['mean']:.2f}{_range(train)}")
        lines.append(f"| {c.label} | {c.k}it | " + " | ".join(cells) + " |")
    return lines + [""]


def _ticket_vs_dense(c: Condition) -> tuple[float, float | None, float | None, int, float] | None:
    """(mean, low, high, n, density) of the sparsest ticket minus the condition's dense network, paired by seed."""
    pruned = sorted({r["level"] for r in c.records if r["kind"] == "trunk" and r["level"] >= 1})
    if not pruned:
        return None
    sparse, dense = by_seed(c.records, pruned[-1]), by_seed(c.records, 0)
    seeds = sorted(set(sparse) & set(dense))
    if not seeds:
        return None
    mean, low, high = interval([sparse[s][0] - dense[s][0] for s in seeds])
    return mean, low, high, len(seeds), statistics.fmean(sparse[s][1] for s in seeds)


def sentences(conditions: list[Condition], wanted: str | None = None) -> list[str]:
    setting = setting_in_use(conditions, wanted)
    if setting is None:
        return []
    out = []
    for c in conditions:
        s = summary(c, 0, setting)
        if s is None:
            continue
        head = f"**{c.label}** (k = {c.k}it)"
        if s["verdict"] == "too few seeds":
            out.append(f"{head}: instability {s['mean']:.2f} points at its rewind point from {s['n']} seed"
                       f"{'s' * (s['n'] != 1)}, too few to say whether it is stable ({MIN_SEEDS} or more are needed).")
            continue
        verdict = {"stable": "is stable", "unstable": "is unstable",
                   "undetermined": "is neither shown stable nor unstable"}[s["verdict"]]
        text = (f"{head} {verdict} at its rewind point: instability {s['mean']:.2f} points{_range(s)} "
                f"(n = {s['n']}; stable means below {STABLE_BELOW:g}).")
        tickets = _ticket_vs_dense(c)
        if tickets is not None and tickets[3] >= MIN_SEEDS:
            mean, low, high, n, d = tickets
            short = high is not None and high < 0
            text += (f" At {density(d)}, its tickets {'fall short of' if short else 'are not shown to fall short of'} "
                     f"its dense network ({points(mean)} points [{points(low)}, {points(high)}], n = {n})")
            text += {("stable", False): ": consistent with stable rewind points giving matching tickets.",
                     ("stable", True): ": stability does not predict its tickets here.",
                     ("unstable", True): ": consistent with unstable rewind points giving tickets that fall short.",
                     ("unstable", False): ", despite the instability (a shortfall within that interval is not ruled "
                                          "out)."}.get((s["verdict"], short), ".")
        text += _damaged(c, conditions)
        out.append(text)
    return out


def _damaged(c: Condition, conditions: list[Condition]) -> str:
    """For a pretext condition whose own dense network falls short of rewinding's at the same k: a ticket measured
    against that damaged network says little about rewinding, and the sentence says so."""
    ref = next((r for r in conditions if r.kind == "rewind" and r.k == c.k and r.setting == c.setting), None)
    if c.kind != "pretext" or ref is None:
        return ""
    d = paired(by_seed(c.records, 0), by_seed(ref.records, 0), 0, same_density=False)
    if d is None or d.n < MIN_SEEDS or d.high is None or d.high >= 0:
        return ""
    return (f" Its dense network is itself {points(d.mean)} points [{points(d.low)}, {points(d.high)}] below "
            f"{ref.label}'s (n = {d.n}): pretraining damaged it, so its tickets are compared with rewinding in the "
            f"like-for-like findings, not here.")


def palette(n: int) -> list:
    """n colours that do not repeat: tab10 up to 10, tab20 up to 20, evenly spaced hues beyond."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def figure(conditions: list[Condition], path, wanted: str | None = None) -> bool:
    """stability.png: instability against k (rewinding as a line, each pretext condition a marker of its own shape
    at its own k; ticks at the k values run, labelled as the text labels them; the stable-below line labelled), and
    the test error along the path at the rewind point (mean over seeds); one colour per condition, legends outside."""
    from . import figure_marks

    setting = setting_in_use(conditions, wanted)
    if setting is None:
        return False
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4))
    measured = [c for c in conditions if summary(c, 0, setting)]
    colours = dict(zip((c.label for c in measured), palette(len(measured))))
    rewinding = sorted((c for c in measured if c.kind in ("reset", "rewind")), key=lambda c: c.k)
    if rewinding:
        s = [summary(c, 0, setting) for c in rewinding]
        left.errorbar([c.k for c in rewinding], [v["mean"] for v in s], yerr=_bars(s), fmt="-o", color="black",
                      capsize=3, label="rewinding to k (k = 0: reset)")
    for i, c in enumerate(c for c in measured if c.kind == "pretext"):
        s = summary(c, 0, setting)
        left.errorbar([c.k], [s["mean"]], yerr=_bars([s]), fmt="s^vD<>PX*"[i % 9], mfc="none", ms=7, mew=1.3,
                      color=colours[c.label], capsize=3, label=c.label)
    left.axhline(STABLE_BELOW, color="grey", ls=":", lw=0.8)
    left.annotate(f"stable below {STABLE_BELOW:g} points", (0.0, STABLE_BELOW), xycoords=("axes fraction", "data"),
                  xytext=(3, 2), textcoords="offset points", fontsize=6, color="grey", va="bottom")
    figure_marks.k_axis(left, {c.k: c.budget or f"{c.k}it" for c in measured}, "rewind step k")
    left.set_ylabel("instability (points of test error)", fontsize=8)
    left.set_title(f"Instability at the rewind point (mean, 95% interval; {setting})", fontsize=9)
    figure_marks.outside(left)
    for c in measured:
        paths = [r["path"] for r in c.stability if r["level"] == 0 and r["setting"] == setting]
        alphas = [p["alpha"] for p in paths[0]]
        mean = [100 * statistics.fmean(p[j]["test_error"] for p in paths) for j in range(len(alphas))]
        right.plot(alphas, mean, "-", marker=".", color=colours[c.label], label=f"{c.label} (n = {len(paths)})")
    right.set_xlabel("alpha (0: first copy, 1: second)", fontsize=8)
    right.set_ylabel("test error (%)", fontsize=8)
    right.set_title("Test error along the linear path, level 0", fontsize=9)
    figure_marks.outside(right)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.margins(y=0.08)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
    return True


def _bars(summaries: list[dict]) -> list[list[float]]:
    return [[s["mean"] - s["low"] if s["low"] is not None else 0 for s in summaries],
            [s["high"] - s["mean"] if s["high"] is not None else 0 for s in summaries]]


def as_json(conditions: list[Condition], wanted: str | None = None) -> dict | None:
    setting = setting_in_use(conditions, wanted)
    if setting is None:
        return None

    def of(s: str) -> list[dict]:
        return [{"label": c.label, "k": c.k, "levels": [summary(c, lvl, s) for lvl in levels(c, s)]}
                for c in conditions if levels(c, s)]

    return {"setting": setting, "threshold": STABLE_BELOW, "conditions": of(setting),
            "by_setting": {s: of(s) for s in settings_present(conditions)}}
