"""What the report's figures draw the same way: a paired difference marked by its verdict, the seeds behind it, the
matching bound, an axis of the k values run labelled as the text labels them, legends outside the data.

Verdict marks (a difference to its reference, `margin` the matching bound):
  ▲ filled  exceeds       the interval lies above 0
  ● filled  matches       the interval lies above -margin (and not above 0)
  ▼ filled  falls short   the interval lies below 0 and reaches below -margin
  ○ hollow  undetermined  none of these
  ×         too few seeds fewer than MIN_SEEDS seeds (no interval is judged)
With up to SEED_DOTS seeds, each seed's own difference is a small dot beside its mean.
"""

from __future__ import annotations

from .paired import verdict_rule

MARKS = {"exceeds": ("^", True), "matches": ("o", True), "falls short": ("v", True), "undetermined": ("o", False),
         "too few seeds": ("x", True)}
SEED_DOTS = 10


def mark(row: dict, margin: float) -> str:
    """The verdict a figure marks: matches is split into exceeds (above 0) and matches (above -margin only)."""
    verdict = verdict_rule(row.get("n", 0), row.get("low"), row.get("high"), margin)
    return "exceeds" if verdict == "matches" and row["low"] > 0 else verdict


def differences(ax, rows: list[dict], x_of, colour, margin: float, seeds: bool = True) -> None:
    """Paired differences (dicts with mean, low, high, n, values; fractions) at x_of(row): interval bars, the
    verdict's mark and, with few seeds, each seed's difference as a dot."""
    for row in rows:
        x, y = x_of(row), 100 * row["mean"]
        if row.get("low") is not None:
            ax.errorbar([x], [y], yerr=[[y - 100 * row["low"]], [100 * row["high"] - y]], fmt="none", ecolor=colour,
                        capsize=3, lw=1, zorder=2)
        shape, filled = MARKS[mark(row, margin)]
        ax.plot([x], [y], shape, ms=6, color=colour, markerfacecolor=colour if filled else "white", zorder=3)
        values = row.get("values") or []
        if seeds and 1 < len(values) <= SEED_DOTS:
            ax.plot([x] * len(values), [100 * v for v in values], ".", ms=3, color=colour, alpha=0.45, zorder=1)


def bound(ax, margin: float) -> None:
    """0 and the matching bound -margin."""
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(-100 * margin, color="grey", ls=":", lw=1)


def verdict_handles(seeds: bool = True) -> list:
    """Legend entries for the marks (black: colour codes the density or condition)."""
    from matplotlib.lines import Line2D

    out = [Line2D([], [], ls="none", marker=shape, color="black", markerfacecolor="black" if filled else "white",
                  label=verdict) for verdict, (shape, filled) in MARKS.items()]
    out.append(Line2D([], [], color="grey", ls=":", label="matching bound (-margin)"))
    if seeds:
        out.append(Line2D([], [], ls="none", marker=".", color="black", alpha=0.45, label="one seed"))
    return out


def outside(ax, handles=None, title: str | None = None) -> None:
    """The axes' legend to its right, where it covers no data."""
    kwargs = {"handles": handles} if handles is not None else {}
    ax.legend(**kwargs, fontsize=7, title=title, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0, framealpha=0.9)


def k_axis(ax, labels: dict[int, str], xlabel: str = "k") -> None:
    """A symlog axis of k with a tick at each k run, labelled as the text labels it (`2ep`, `23it`, `0it`)."""
    import matplotlib.ticker

    ks = sorted(labels)
    positive = [k for k in ks if k > 0]
    ax.set_xscale("symlog", linthresh=positive[0] if positive else 1, linscale=0.6)
    ax.set_xticks(ks, [labels[k] for k in ks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    low, high = (min(ks), max(ks)) if ks else (0, 1)
    ax.set_xlim(low - (0.5 * positive[0] if positive and low == 0 else 0.25 * max(low, 1)), high * 1.5 + 0.5)
    ax.set_xlabel(xlabel, fontsize=8)


def shared_y(axes, values: list[float], pad: float = 0.08) -> None:
    """One y range for all `axes` (points), covering `values` with a margin."""
    values = [v for v in values if v is not None]
    if not values:
        return
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    for ax in axes:
        ax.set_ylim(low - pad * span, high + pad * span)


def row_extent(rows: list[dict], margin: float = 0.0) -> list[float]:
    """The y values (points) a set of difference rows draws: intervals, seeds, 0 and the bound."""
    out = [0.0, -100 * margin]
    for r in rows:
        out += [100 * r["mean"]] + [100 * r[k] for k in ("low", "high") if r.get(k) is not None]
        values = r.get("values") or []
        out += [100 * v for v in values] if len(values) <= SEED_DOTS else []
    return out
