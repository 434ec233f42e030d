"""The compare stage: aggregate every run over seeds into statistics, tables, JSON and plots.

``stats`` holds the pure statistics, ``aggregate`` reads the runs' records and aggregates them,
``markdown`` writes the tables and ``plots`` the PNGs; :func:`compare` does all of it.
"""

from __future__ import annotations

from pathlib import Path

from adaptive_lr.compare.aggregate import (
    AVERAGED_FIELDS,
    BASELINE,
    CONVERGED_SHARE,
    EPOCHS_AIM,
    OURS,
    PROFILE_TAUS,
    SCHEDULE_ORDER,
    Run,
    aims,
    budget,
    collect,
    load_cell,
    load_runs,
    profile,
    schedule_names,
    summary,
    tasks_of,
    tuned_multiplier,
)
from adaptive_lr.compare.markdown import (
    best_schedule,
    format_diverged,
    format_mean_std,
    format_number,
    headline,
    to_markdown,
)
from adaptive_lr.compare.plots import plot, pyplot, save_png, write_curves
from adaptive_lr.compare.stats import (
    CONFIDENCE,
    WORST_VALUE,
    gap,
    mean_std,
    paired,
    performance_profile,
    ratio,
    scored,
    time_to_target,
    worst_value,
)
from adaptive_lr.config import Params
from adaptive_lr.files import atomic_write, remove_leftovers, write_json


def compare(params: Params, root: Path = Path(".")) -> dict:
    """Write metrics/comparison.json, metrics/summary.json, metrics/comparison.md and the PNGs in plots/.

    Reads every run of every task x schedule (and ablation) of ``params`` under ``metrics/`` and ``live/``:
    ``params.grid``'s multipliers and extra seeds, the tasks' seeds (:func:`~adaptive_lr.compare.aggregate.load_cell`).
    """
    for folder in (root / "metrics", root / "plots"):
        remove_leftovers(folder)
    runs = load_runs(params, root)  # read once, for the statistics and for the curves
    comparison = collect(params, root, runs)
    plot(comparison, runs, root)
    write_curves(comparison, runs, root)
    md = to_markdown(comparison)
    atomic_write(root / "metrics" / "comparison.md", md)
    write_json(comparison, root / "metrics" / "comparison.json")
    write_json(summary(comparison), root / "metrics" / "summary.json")
    print(md, flush=True)
    return comparison


__all__ = [
    "AVERAGED_FIELDS",
    "BASELINE",
    "CONFIDENCE",
    "CONVERGED_SHARE",
    "EPOCHS_AIM",
    "OURS",
    "PROFILE_TAUS",
    "Run",
    "SCHEDULE_ORDER",
    "WORST_VALUE",
    "aims",
    "best_schedule",
    "budget",
    "collect",
    "compare",
    "format_diverged",
    "format_mean_std",
    "format_number",
    "gap",
    "headline",
    "load_cell",
    "load_runs",
    "mean_std",
    "paired",
    "performance_profile",
    "plot",
    "profile",
    "pyplot",
    "ratio",
    "save_png",
    "schedule_names",
    "scored",
    "summary",
    "tasks_of",
    "time_to_target",
    "to_markdown",
    "write_curves",
    "tuned_multiplier",
    "worst_value",
]
