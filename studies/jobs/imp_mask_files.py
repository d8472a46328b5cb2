"""`earlyphase imp`, masks on disk: each part's mask.pt (written atomically before it trains, read back checked
against the architecture) and density.json."""

from __future__ import annotations

from pathlib import Path

from earlyphase.imp import masks as imp_masks
from earlyphase.imp.pruning import global_magnitude_prune

from ..engine import checkpoints
from ..engine.errors import UsageError
from ..engine.run_dir import final_file, load_bound
from .imp_setup import ImpRun


def load_mask(path: Path, r: ImpRun) -> dict:
    """A part's mask.pt, checked against the architecture and, once its part finished, against the sha256 its
    summary.json recorded (another seed's or width's mask, copied in, is refused)."""
    mask = load_bound(path)
    try:
        imp_masks.check_mask(mask, r.template, r.names)
    except ValueError as err:
        raise UsageError(f"{path} does not fit this run ({err}); move it away to recompute it") from None
    return mask


def ensure_mask(part_dir: Path, r: ImpRun, compute) -> dict:
    """The part's mask: read from mask.pt if written earlier, else computed and written (atomically)."""
    path = part_dir / "mask.pt"
    if path.exists():
        mask = load_mask(path, r)
    else:
        mask = compute()
        part_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.save_atomic(mask, path)
    if not (part_dir / "density.json").exists():
        checkpoints.write_json_atomic(part_dir / "density.json", imp_masks.density_report(mask))
    return mask


def trunk_mask(r: ImpRun, level: int) -> dict:
    if level == 0:
        return ensure_mask(r.out / "level_0", r, lambda: r.base_mask)

    def prune():
        prev = r.out / f"level_{level - 1}"
        weights = load_bound(final_file(prev))["model"]
        try:
            return global_magnitude_prune(weights, load_mask(prev / "mask.pt", r), r.cfg.prune_fraction)
        except ValueError as err:
            raise UsageError(f"cannot prune {prev / 'final.pt'}: {err}") from None

    return ensure_mask(r.out / f"level_{level}", r, prune)
