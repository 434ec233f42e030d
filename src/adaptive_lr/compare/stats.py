"""Pure statistics over runs: time to target, mean and spread over seeds, paired comparisons, ratios, gaps to the
best and performance profiles."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CONFIDENCE = 0.95
# the worst value each metric can take: a run with no test metric (it diverged before any checkpoint) scores it
WORST_VALUE = {"accuracy": 0.0, "wer": 1.0}


def time_to_target(val_loss: list, elapsed: list, target: float) -> tuple[int | None, float | None]:
    """First epoch (1-based) whose validation loss is at or below ``target``, and the wall seconds to it.

    A run that never gets there has not reached it: (None, None), not its last epoch.
    """
    for i, loss in enumerate(val_loss):
        if loss is not None and math.isfinite(loss) and loss <= target:
            return i + 1, float(elapsed[i])
    return None, None


def mean_std(values: list) -> dict[str, float | None]:
    """Mean and sample standard deviation of the values that are not None (None when there are none)."""
    xs = np.asarray([v for v in values if v is not None], dtype=float)
    if len(xs) == 0:
        return {"mean": None, "std": None}
    return {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if len(xs) > 1 else 0.0}


def paired(ours: dict, theirs: dict, higher_is_better: bool, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Paired comparison over the seeds both have a value for (same seed = same data order and init).

    ``diff`` is ours - theirs in the metric's units, with a Student-t confidence interval of
    its mean and a paired t-test. The verdict is ``better`` or ``worse`` only when the whole
    interval lies on one side of zero, else ``not distinguishable``.
    """
    from scipy import stats

    seeds = sorted(s for s in ours if ours[s] is not None and theirs.get(s) is not None)
    d = np.asarray([ours[s] - theirs[s] for s in seeds], dtype=float)
    out: dict[str, Any] = {
        "n": len(d),
        "diff": float(d.mean()) if len(d) else None,
        "ci": [None, None],
        "p_value": None,
    }
    if len(d) < 2:
        return {**out, "verdict": "not distinguishable"}
    # differences equal up to rounding (0.9 - 0.8 vs 0.8 - 0.7) have no spread: a point interval, no t-test
    se = 0.0 if np.ptp(d) <= 1e-12 else float(d.std(ddof=1) / math.sqrt(len(d)))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1)) * se
    lo, hi = float(d.mean()) - half, float(d.mean()) + half
    if se > 0:
        out["p_value"] = float(stats.ttest_rel([ours[s] for s in seeds], [theirs[s] for s in seeds]).pvalue)
    out["ci"] = [lo, hi]
    good_lo, good_hi = (lo, hi) if higher_is_better else (-hi, -lo)
    verdict = "better" if good_lo > 0 else "worse" if good_hi < 0 else "not distinguishable"
    return {**out, "verdict": verdict}


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is 0."""
    return a / b if a is not None and b not in (None, 0) else None


def worst_value(metric: str) -> float:
    """The worst value of ``metric`` (accuracy 0.0, WER 1.0): the score of a run that has no test metric."""
    try:
        return WORST_VALUE[metric]
    except KeyError:
        raise ValueError(f"metric {metric!r}: no worst value known (known: {', '.join(WORST_VALUE)})") from None


def scored(values: list, worst: float) -> list[float]:
    """``values`` with every None (a diverged run without a test metric) replaced by ``worst``."""
    return [worst if v is None else float(v) for v in values]


def gap(best: float | None, value: float | None, higher_is_better: bool) -> float | None:
    """How much worse ``value`` is than ``best``, in the metric's units: positive = worse (None if either is None)."""
    if best is None or value is None:
        return None
    return best - value if higher_is_better else value - best


def performance_profile(gaps: dict[str, list[float]], taus: list[float]) -> dict[str, list[float]]:
    """Per schedule, the fraction of its settings whose gap to the best is at most tau, for each tau.

    ``gaps[s]`` holds one gap (:func:`gap`: positive = worse than the reference) per setting of
    schedule ``s``; a setting better than the reference (negative gap) is within every tau. An
    empty list gives fractions of 0.
    """
    eps = 1e-12  # a gap equal to tau up to rounding counts as within it
    return {s: [sum(g <= t + eps for g in gs) / len(gs) if gs else 0.0 for t in taus] for s, gs in gaps.items()}
