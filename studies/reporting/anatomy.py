"""The rewind points' anatomy (report.json `anatomy`, anatomy.png): how far each condition's starting weights lie
from its like-for-like reference's and from the initialisation, and how much its masks share with the reference's.

From files the runs already wrote (no training): an IMP run's rewind point is its `level_0/weights_{k}it.pt` (for a
pretext condition the pretrained point, saved as level 0 starts at k; for rewinding the dense run at k; for reset the
initialisation), and its masks are `level_L/mask.pt`. For every comparison of the report's like-for-like kind (a task
against `rewind k`, rewinding against reset) and every seed both have:
- whole network and per prunable layer: the relative L2 distance ||w_C - w_R|| / ||w_R||, the cosine similarity and
  the share of weights whose sign agrees; against the initialisation (the reference run's `weights_0it.pt`, the same
  seed's initialisation: a pretext task's backbone starts from it too, its head may differ in shape and is then left
  out), the relative distance and the share of signs changed (the paper's early-phase statistics), for the condition
  and for the reference;
- at each pruned level both have: the masks' overlap (Jaccard, kept weights in both / kept in either), whole and per
  layer, beside what two independent random masks of those densities share in expectation (d1 d2 / (d1 + d2 - d1 d2)).
Means over seeds with 95% t intervals (reporting.across.mean_interval). Runs whose weights are not on this machine
(records from W&B) have no anatomy; the report says so.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.errors import UsageError
from .across import mean_interval
from .findings import density
from .paired import Comparison

QUESTIONS = ("pretext", "rewind_vs_reset")
WHOLE = ("dist_reference", "cos_reference", "sign_agree_reference", "dist_init", "sign_changed_init",
         "reference_dist_init", "reference_sign_changed_init")


def _weights_at(run: Path, k: int, load) -> dict | None:
    """An IMP run's dense weights at step k (level_0's weights file), or None where this machine has none."""
    from ..engine.run_dir import weights_file

    return load(weights_file(run / "level_0", k))


def _load(path: Path) -> dict | None:
    from ..engine.run_dir import load_bound

    if not path.is_file():
        return None
    saved = load_bound(path)
    return saved.get("model", saved) if isinstance(saved, dict) else None


class _Loaded:
    """The files one anatomy reads, each loaded and checked against its run once (a reference run serves every
    condition compared with it); a file that fails its check fails every time it is asked for."""

    def __init__(self) -> None:
        self.files: dict[Path, tuple] = {}

    def __call__(self, path: Path) -> dict | None:
        if path not in self.files:
            try:
                self.files[path] = (_load(path), None)
            except UsageError as err:
                self.files[path] = (None, err)
        state, err = self.files[path]
        if err is not None:
            raise err
        return state


def _weights(state: dict, names: list[str]):
    return {n: state[n].double().flatten() for n in names if n in state}


def _relative(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _sign_share(a, b, same: bool) -> float:
    return float(((a.sign() == b.sign()) if same else (a.sign() != b.sign())).double().mean())


def _stats(a, b, z) -> dict:
    """The condition's weights `a` against the reference's `b` and, where given, both against the initialisation
    `z` (flat tensors of one layer, or of the whole network)."""
    import torch

    out = {"dist_reference": _relative(a, b),
           "cos_reference": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
           "sign_agree_reference": _sign_share(a, b, same=True)}
    if z is not None:
        out |= {"dist_init": _relative(a, z), "sign_changed_init": _sign_share(a, z, same=False),
                "reference_dist_init": _relative(b, z), "reference_sign_changed_init": _sign_share(b, z, same=False)}
    return out


def _pair_stats(c_w: dict, r_w: dict, init: dict | None) -> dict:
    """Whole-network and per-layer statistics of one seed (layers both hold with one shape; the initialisation
    where it has the layer in that shape too, the whole network over those layers)."""
    import torch

    names = [n for n in r_w if n in c_w and c_w[n].shape == r_w[n].shape]
    with_init = [n for n in names if init is not None and n in init and init[n].shape == c_w[n].shape]
    per_layer = {n: _stats(c_w[n], r_w[n], init[n] if n in with_init else None) for n in names}
    whole = _stats(torch.cat([c_w[n] for n in names]), torch.cat([r_w[n] for n in names]), None)
    if with_init:
        whole |= {k: v for k, v in _stats(torch.cat([c_w[n] for n in with_init]),
                                          torch.cat([r_w[n] for n in with_init]),
                                          torch.cat([init[n] for n in with_init])).items() if "init" in k}
    return {"whole": whole, "layers": per_layer}


def random_jaccard(d1: float, d2: float) -> float:
    """The expected Jaccard overlap of two independent random masks keeping shares d1 and d2 of the weights."""
    both = d1 * d2
    return both / (d1 + d2 - both) if d1 + d2 - both > 0 else 0.0


def _mask_overlap(a: dict, b: dict) -> dict:
    layers, inter_all, union_all = {}, 0, 0
    for n in a:
        if n not in b or a[n].shape != b[n].shape:
            continue
        x, y = a[n].bool(), b[n].bool()
        inter, union = int((x & y).sum()), int((x | y).sum())
        inter_all, union_all = inter_all + inter, union_all + union
        layers[n] = {"jaccard": inter / union if union else 1.0,
                     "random": random_jaccard(float(x.double().mean()), float(y.double().mean()))}
    kept_a = sum(int(a[n].bool().sum()) for n in layers) / max(1, sum(a[n].numel() for n in layers))
    kept_b = sum(int(b[n].bool().sum()) for n in layers) / max(1, sum(b[n].numel() for n in layers))
    return {"jaccard": inter_all / union_all if union_all else 1.0, "random": random_jaccard(kept_a, kept_b),
            "density": kept_a, "layers": layers}


def _summarise(per_seed: list[dict], keys) -> dict:
    return {k: mean_interval([s[k] for s in per_seed if k in s]) for k in keys if any(k in s for s in per_seed)}


def comparison_anatomy(c: Comparison, load: _Loaded | None = None) -> dict | None:
    """The anatomy of one like-for-like comparison, or None without weights on this machine."""
    load = load or _Loaded()
    subject, reference = c.subject.run_of_seed, c.reference.run_of_seed
    per_seed, masks = [], {}
    for seed in sorted(s for s in subject if s in reference and s is not None):
        c_run, r_run = Path(subject[seed]), Path(reference[seed])
        try:
            c_state = _weights_at(c_run, c.subject.k, load)
            r_state = _weights_at(r_run, c.reference.k, load)
            init = _weights_at(r_run, 0, load)
        except UsageError:  # a file not bound to its run: left out here, named by the ticket checks
            continue
        mask0 = _load_mask(r_run / "level_0" / "mask.pt", load)  # level 0's mask names the prunable layers
        if c_state is None or r_state is None or mask0 is None:
            continue
        names = sorted(mask0)
        stats = _pair_stats(_weights(c_state, names), _weights(r_state, names),
                            _weights(init, names) if init is not None else None)
        per_seed.append({"seed": seed, **stats})
        for level in sorted({int(p.parent.name.split("_")[1]) for p in c_run.glob("level_*/mask.pt")} - {0}):
            a, b = (_load_mask(run / f"level_{level}" / "mask.pt", load) for run in (c_run, r_run))
            if a is not None and b is not None:
                masks.setdefault(level, []).append(_mask_overlap(a, b))
    if not per_seed:
        return None
    layer_names = sorted(set.intersection(*(set(s["layers"]) for s in per_seed)))
    return {"subject": c.subject_label, "reference": c.reference_label, "question": c.question,
            "seeds": [s["seed"] for s in per_seed], "n": len(per_seed),
            "whole": _summarise([s["whole"] for s in per_seed], WHOLE),
            "layers": [{"name": n, **_summarise([s["layers"][n] for s in per_seed], WHOLE)} for n in layer_names],
            "masks": [{"level": level, "density": sum(o["density"] for o in overlaps) / len(overlaps),
                       "jaccard": mean_interval([o["jaccard"] for o in overlaps]),
                       "random": sum(o["random"] for o in overlaps) / len(overlaps),
                       "layers": [{"name": n, "jaccard": mean_interval([o["layers"][n]["jaccard"] for o in overlaps]),
                                   "random": sum(o["layers"][n]["random"] for o in overlaps) / len(overlaps)}
                                  for n in sorted(overlaps[0]["layers"])]}
                      for level, overlaps in sorted(masks.items())]}


def _load_mask(path: Path, load) -> dict | None:
    try:
        return load(path)
    except UsageError:
        return None


def anatomy(found: list[Comparison]) -> list[dict]:
    """Every like-for-like comparison's anatomy (those with weights on this machine)."""
    load = _Loaded()
    return [a for a in (comparison_anatomy(c, load) for c in found if c.question in QUESTIONS) if a is not None]


def _cell(m: dict | None, scale: float = 1.0, digits: int = 3) -> str:
    if not m:
        return "-"
    text = f"{scale * m['mean']:.{digits}f}"
    return text + (f" [{scale * m['low']:.{digits}f}, {scale * m['high']:.{digits}f}]" if m.get("low") is not None
                   else "")


def table(found_anatomy: list[dict]) -> list[str]:
    """The report's section: whole-network distances and mask overlaps per comparison."""
    if not found_anatomy:
        return []
    lines = ["## Rewind points and masks against the reference", "",
             "Each condition's rewind point against its like-for-like reference's (same seed) and against the "
             "initialisation: relative L2 distance, cosine similarity, share of signs that agree (or changed), mean "
             "over seeds with its 95% interval; then the masks' overlap (Jaccard) at each pruned level beside two "
             "independent random masks of the same densities. Per layer: report.json `anatomy`.", "",
             "| condition | reference | n | distance to ref | cosine to ref | signs agree with ref | distance from "
             "init | signs changed from init | ref: distance from init | ref: signs changed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a in found_anatomy:
        w = a["whole"]
        lines.append(f"| {a['subject']} | {a['reference']} | {a['n']} | {_cell(w.get('dist_reference'))} | "
                     f"{_cell(w.get('cos_reference'))} | {_cell(w.get('sign_agree_reference'))} | "
                     f"{_cell(w.get('dist_init'))} | {_cell(w.get('sign_changed_init'))} | "
                     f"{_cell(w.get('reference_dist_init'))} | {_cell(w.get('reference_sign_changed_init'))} |")
    levels = sorted({m["level"] for a in found_anatomy for m in a["masks"]})
    if levels:
        shown = {m["level"]: m["density"] for a in found_anatomy for m in a["masks"]}
        lines += ["", "Mask overlap with the reference's mask (Jaccard; in brackets: two random masks of these "
                      "densities).", "",
                  "| condition | reference | " + " | ".join(f"level {lvl} ({density(shown[lvl])})" for lvl in levels)
                  + " |", "|---|---|" + "---|" * len(levels)]
        for a in found_anatomy:
            by_level = {m["level"]: m for m in a["masks"]}
            cells = [f"{_cell(by_level[lvl]['jaccard'])} ({by_level[lvl]['random']:.3f})" if lvl in by_level else "-"
                     for lvl in levels]
            lines.append(f"| {a['subject']} | {a['reference']} | " + " | ".join(cells) + " |")
    return lines + [""]


def sentences(found_anatomy: list[dict]) -> list[str]:
    out = []
    for a in found_anatomy:
        w, deepest = a["whole"], (a["masks"][-1] if a["masks"] else None)
        text = (f"**{a['subject']}**'s rewind point lies at relative distance "
                f"{_cell(w.get('dist_reference'), digits=2)} from **{a['reference']}**'s (cosine "
                f"{_cell(w.get('cos_reference'), digits=2)}; n = {a['n']})")
        if w.get("dist_init") and w.get("reference_dist_init"):
            text += (f"; from the initialisation it moved {_cell(w['dist_init'], digits=2)} against the reference's "
                     f"{_cell(w['reference_dist_init'], digits=2)}")
        if deepest:
            text += (f". At {density(deepest['density'])} their masks overlap {_cell(deepest['jaccard'], digits=2)} "
                     f"(Jaccard; two random masks: {deepest['random']:.2f})")
        out.append(text + ".")
    return out


def figure(found_anatomy: list[dict], path) -> bool:
    """anatomy.png: left, each condition's distance to its reference's rewind point and from the initialisation;
    right, the masks' overlap with the reference's against density, beside random masks."""
    if not found_anatomy:
        return False
    from . import figure_marks
    from .plotting import finish, pyplot

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    labels = [f"{a['subject']}\nvs {a['reference']}" for a in found_anatomy]
    for j, (key, name, colour) in enumerate((("dist_reference", "distance to the reference's rewind point", "tab:blue"),
                                             ("dist_init", "distance from the initialisation", "tab:orange"),
                                             ("reference_dist_init", "reference: distance from the initialisation",
                                              "grey"))):
        xs, ys, lo, hi = [], [], [], []
        for i, a in enumerate(found_anatomy):
            m = a["whole"].get(key)
            if m:
                xs.append(i + (j - 1) * 0.22)
                ys.append(m["mean"])
                lo.append(m["mean"] - (m["low"] if m["low"] is not None else m["mean"]))
                hi.append((m["high"] if m["high"] is not None else m["mean"]) - m["mean"])
        left.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color=colour, capsize=3, label=name)
    left.set_xticks(range(len(labels)), labels, fontsize=7)
    left.set_ylabel("relative L2 distance", fontsize=8)
    left.set_title("Rewind points: distance to the reference's and from the initialisation", fontsize=9)
    figure_marks.outside(left)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, a in enumerate(found_anatomy):
        if not a["masks"]:
            continue
        colour = colours[i % len(colours)]
        x = [100 * m["density"] for m in a["masks"]]
        right.errorbar(x, [m["jaccard"]["mean"] for m in a["masks"]],
                       yerr=[[m["jaccard"]["mean"] - (m["jaccard"]["low"] if m["jaccard"]["low"] is not None
                                                      else m["jaccard"]["mean"]) for m in a["masks"]],
                             [(m["jaccard"]["high"] if m["jaccard"]["high"] is not None else m["jaccard"]["mean"])
                              - m["jaccard"]["mean"] for m in a["masks"]]],
                       fmt="-o", ms=4, color=colour, capsize=2, label=f"{a['subject']} vs {a['reference']}")
        right.plot(x, [m["random"] for m in a["masks"]], ":", color=colour, lw=1)
    right.plot([], [], ":", color="black", label="two random masks")
    right.set_xscale("log")
    shown = sorted({m["level"]: 100 * m["density"] for a in found_anatomy for m in a["masks"]}.values())
    right.set_xticks(shown, [f"{d:.3g}" for d in shown])
    right.xaxis.set_minor_formatter(plt.NullFormatter())
    right.invert_xaxis()
    right.set_xlabel("weights remaining (%)", fontsize=8)
    right.set_ylabel("mask overlap (Jaccard)", fontsize=8)
    right.set_title("Masks: overlap with the reference's at each level", fontsize=9)
    right.set_ylim(0, 1.02)
    figure_marks.outside(right)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return finish(plt, fig, path, "Why a condition falls short: its starting weights and its masks against the "
                  "reference's")
