"""The initial-LR grid: every schedule trains at multipliers of its task's base LR.

Pure Python (no torch, no numpy): the train stage imports it to plan its runs, the compare stage to
read them back. ``mult_dir`` names a multiplier's folder (``metrics/<task>/<schedule>/<mult>x/``,
``live/<task>/<schedule>/<mult>x/seed<k>/``); ``select_tuned`` picks a schedule's tuned multiplier
from validation losses only; ``runs_of`` lists the (multiplier, seed) runs of one task x schedule cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

DEFAULT = 1.0  # the default point: the task's base LR itself


def mult_dir(m: float) -> str:
    """The folder name of multiplier ``m``: ``0.1x``, ``0.3x``, ``1x``, ``3x``, ``10x``."""
    return f"{m:g}x"


def _mean_or_inf(values: Sequence[float | None]) -> float:
    """The mean of ``values``; +inf when there are none or one is None or not finite (a diverged run)."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return math.inf
    return math.fsum(values) / len(values)


def select_tuned(val_losses: Mapping[float, Sequence[float | None]]) -> float:
    """The tuned multiplier: the one with the lowest mean best *validation* loss over the given seeds.

    ``val_losses`` maps each multiplier to the best validation loss of each seed run there; callers
    pass only the grid seeds (the ones every multiplier has), so that every mean is over the same
    seeds. The choice sees validation losses only, never a test metric: the test split stays held
    out for reporting the tuned point.

    A None or non-finite loss (a diverged run) makes its multiplier's mean +inf. Equal means go to
    the multiplier closest to 1 in log distance, then to the smaller one. When every mean is +inf,
    1.0 if it is in the grid, else the smallest multiplier.
    """
    if not val_losses:
        raise ValueError("select_tuned: no multipliers")
    if any(not m > 0 for m in val_losses):
        raise ValueError(f"select_tuned: multipliers must be > 0, got {sorted(val_losses)}")
    means = {m: _mean_or_inf(v) for m, v in val_losses.items()}
    if all(math.isinf(v) for v in means.values()):
        return DEFAULT if DEFAULT in means else min(means)
    return min(means, key=lambda m: (means[m], abs(math.log(m)), m))


def runs_of(
    multipliers: Iterable[float], seeds: Iterable[int], extra_seeds: Iterable[int], tuned: float | None
) -> list[tuple[float, int]]:
    """The (multiplier, seed) runs of one task x schedule cell, in a stable order without duplicates.

    Every multiplier x ``seeds`` (the grid), then ``extra_seeds`` at 1.0 (when the grid has it), then,
    when ``tuned`` is given (it must be one of ``multipliers``), ``extra_seeds`` at ``tuned``.
    """
    multipliers, seeds, extra_seeds = list(multipliers), list(seeds), list(extra_seeds)
    if tuned is not None and tuned not in multipliers:
        raise ValueError(f"runs_of: tuned multiplier {tuned!r} is not in the grid {multipliers}")
    pairs = [(m, s) for m in multipliers for s in seeds]
    if DEFAULT in multipliers:
        pairs += [(DEFAULT, s) for s in extra_seeds]
    if tuned is not None:
        pairs += [(tuned, s) for s in extra_seeds]
    return list(dict.fromkeys((float(m), int(s)) for m, s in pairs))
