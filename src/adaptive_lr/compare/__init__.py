"""The compare stage: aggregate every run over seeds into statistics, tables, JSON and plots.

``stats`` holds the pure statistics, ``aggregate`` reads the runs' records and aggregates them,
``markdown`` writes the tables and ``plots`` the PNGs; :func:`compare` does all of it.
"""

from __future__ import annotations

from pathlib import Path

from adaptive_lr.compare.aggregate import (
    AVERAGED_FIELDS,
    BASELINE,
    EPOCHS_AIM,
    OURS,
    SCHEDULE_ORDER,
    aims,
    collect,
    load_results,
    schedule_names,
)
from adaptive_lr.compare.markdown import (
    best_schedule,
    format_diverged,
    format_mean_std,
    format_number,
    headline,
    to_markdown,
)
from adaptive_lr.compare.plots import plot, pyplot, save_png
from adaptive_lr.compare.stats import CONFIDENCE, mean_std, paired, ratio, time_to_target
from adaptive_lr.config import Params
from adaptive_lr.files import atomic_write, remove_leftovers, write_json


def compare(params: Params, root: Path = Path(".")) -> dict:
    """Write metrics/comparison.json, metrics/comparison.md and the PNGs in plots/."""
    for folder in (root / "metrics", root / "plots"):
        remove_leftovers(folder)
    results = load_results(params, root)  # read once, for the statistics and for the curves
    comparison = collect(params, root, results)
    plot(comparison, results, root)
    md = to_markdown(comparison)
    atomic_write(root / "metrics" / "comparison.md", md)
    write_json(comparison, root / "metrics" / "comparison.json")
    print(md, flush=True)
    return comparison


__all__ = [
    "AVERAGED_FIELDS",
    "BASELINE",
    "CONFIDENCE",
    "EPOCHS_AIM",
    "OURS",
    "SCHEDULE_ORDER",
    "aims",
    "best_schedule",
    "collect",
    "compare",
    "format_diverged",
    "format_mean_std",
    "format_number",
    "headline",
    "load_results",
    "mean_std",
    "paired",
    "plot",
    "pyplot",
    "ratio",
    "save_png",
    "schedule_names",
    "time_to_target",
    "to_markdown",
]
