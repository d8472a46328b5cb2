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


def load_mask(path: Path, imp_run: ImpRun) -> dict:
    """A part's mask.pt, checked against the architecture and, once its part finished, against the sha256 its
    summary.json recorded (another seed's or width's mask, copied in, is refused)."""
    mask = load_bound(path)
    try:
        imp_masks.check_mask(mask, imp_run.template, imp_run.names)
    except ValueError as err:
        raise UsageError(f"{path} does not fit this run ({err}); move it away to recompute it") from None
    return mask


def ensure_mask(part_dir: Path, imp_run: ImpRun, compute) -> dict:
    """The part's mask: read from mask.pt if written earlier, else computed and written (atomically)."""
    path = part_dir / "mask.pt"
    if path.exists():
        mask = load_mask(path, imp_run)
    else:
        mask = compute()
        part_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.save_atomic(mask, path)
    if not (part_dir / "density.json").exists():
        checkpoints.write_json_atomic(part_dir / "density.json", imp_masks.density_report(mask))
    return mask


def trunk_mask(imp_run: ImpRun, level: int) -> dict:
    if level == 0:
        return ensure_mask(imp_run.out / "level_0", imp_run, lambda: imp_run.base_mask)

    def prune():
        prev = imp_run.out / f"level_{level - 1}"
        weights = load_bound(final_file(prev))["model"]
        try:
            return global_magnitude_prune(weights, load_mask(prev / "mask.pt", imp_run), imp_run.cfg.prune_fraction)
        except ValueError as err:
            raise UsageError(f"cannot prune {prev / 'final.pt'}: {err}") from None

    return ensure_mask(imp_run.out / f"level_{level}", imp_run, prune)
