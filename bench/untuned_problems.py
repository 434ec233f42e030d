"""The study's protocol on problem families AdaptiveLR was not tuned on: tabular data with label noise, 1-D signals.

Its knobs were chosen on the validation loss of the study's three tasks (vision, text, speech).
This script runs the same protocol on two other families, registered tasks the default study does
not run (:mod:`adaptive_lr.tasks.tabular`, :mod:`adaptive_lr.tasks.signal`):

* every schedule of params.yaml (their knobs as they are there, adaptive's included; no ablations)
  at every multiplier of ``grid.multipliers`` with ``common.seeds``, then ``grid.extra_seeds`` at
  1x and at each schedule's tuned multiplier (lowest mean best validation loss), all through the
  pipeline's own functions (:func:`adaptive_lr.pipeline.train_task`, ``grid.workers`` processes);
* then the comparison's own aggregation (:func:`adaptive_lr.compare.collect`), from which it prints,
  per family: each schedule's tuned point, 1x and worst point (test accuracy, mean over seeds),
  its worst gap to the best tuned schedule, and AdaptiveLR's gap to the best tuned schedule at
  every multiplier next to GreedyLR's and Prodigy's.

The families' settings are :data:`FAMILIES` (a ``tasks`` block in params.yaml's form; the budget
rule of the study: fixed's best validation loss before the last quarter of the epochs). With
``--json PATH`` the comparison's entries of the two families are written there as well.

Run: ``python bench/untuned_problems.py`` (~480 runs of a few seconds; ~10 min here with 2 workers);
``--tiny`` for a quick check of the path (2 multipliers, 1 seed, 2 epochs, 2 schedules).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import REPO, machine

from adaptive_lr import pipeline
from adaptive_lr.compare import collect
from adaptive_lr.config import load_params
from adaptive_lr.grid import mult_dir

# the families, in params.yaml's `tasks` form; targets: a validation loss fixed at 1x reaches a few epochs in
FAMILIES = {
    "tabular": {
        "lr": 1.0e-3,
        "batch_size": 32,
        "epochs": 16,
        "patience": 4,
        "data": {"n_train": 2000, "n_test": 1000, "label_noise": 0.2},
        "model": {"hidden": 128, "layers": 2},
    },
    "signal": {
        "lr": 1.0e-3,
        "batch_size": 32,
        "epochs": 16,
        "patience": 4,
        "data": {"n_train": 1600, "n_test": 800, "noise": 0.6},
        "model": {"channels": 16},
    },
}
TARGETS = {"tabular": 1.0, "signal": 0.5}


def family_params(raw: dict, tiny: bool, out: Path, args: argparse.Namespace | None = None) -> Path:
    """params.yaml with its tasks replaced by the families (no ablations), written to ``out``; ``args``' subset
    options (schedules, multipliers, seeds, families) applied."""
    raw = {**raw, "profile": "default", "tasks": json.loads(json.dumps(FAMILIES)), "targets": dict(TARGETS)}
    raw["ablations"] = {}
    raw["grid"] = {k: v for k, v in raw["grid"].items() if k != "ablation_multipliers"}  # no ablations to place
    raw["profiles"] = {"default": {}}
    if args is not None and args.schedules:
        raw["schedules"] = {k: v for k, v in raw["schedules"].items() if k in args.schedules.split(",")}
    if args is not None and args.multipliers:
        raw["grid"] = {**raw["grid"], "multipliers": [float(m) for m in args.multipliers.split(",")]}
    if args is not None and args.seeds:
        raw["common"] = {**raw["common"], "seeds": [int(s) for s in args.seeds.split(",")]}
        raw["grid"] = {**raw["grid"], "extra_seeds": []}
    if args is not None and args.families:
        raw["tasks"] = {k: v for k, v in raw["tasks"].items() if k in args.families.split(",")}
    if tiny:
        raw["grid"] = {**raw["grid"], "multipliers": [1, 10], "extra_seeds": []}
        raw["common"] = {**raw["common"], "seeds": [0]}
        raw["schedules"] = {k: v for k, v in raw["schedules"].items() if k in ("fixed", "adaptive")}
        for task in raw["tasks"].values():
            task["epochs"] = 2
            task["data"] = {**task["data"], "n_train": 200, "n_test": 100}
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def report(comparison: dict, multipliers: list[float]) -> str:
    """Per family: the tuned / 1x / worst table and adaptive's gap at every multiplier (test accuracy)."""
    lines = []
    for task, entry in comparison.items():
        if task == "profile":
            continue
        best = entry["best_tuned"]
        lines += [
            f"## {task}: best tuned test accuracy {fmt(best)}",
            "",
            "| schedule | tuned (multiplier) | 1x | worst (multiplier) | worst gap to best tuned |",
            "|---|---|---|---|---|",
        ]
        for name, v in entry["schedules"].items():
            tuned, default, worst = v["tuned"], v["default"], v["worst"]
            lines.append(
                f"| {name} | {fmt(tuned['test_metric']['mean'])} ({tuned['multiplier']:g}x) "
                f"| {fmt(default['test_metric']['mean'])} | {fmt(worst['test_metric']['mean'])} "
                f"({worst['multiplier']:g}x) | {fmt(v['gap_to_best_tuned'], 3)} |"
            )
        shares = entry["budget"]["schedules"]
        lines += [
            "",
            f"budget ({entry['budget']['epochs']} epochs): best epoch / budget at the tuned point: "
            + ", ".join(f"{k} {v['share']:.2f}" for k, v in shares.items()),
        ]
        lines += ["", "gap to the best tuned schedule at each multiplier (positive: below it)", ""]
        lines += ["| schedule | " + " | ".join(f"{m:g}x" for m in multipliers) + " |"]
        lines += ["|---|" + "---|" * len(multipliers)]
        for name in ("adaptive", "greedy", "prodigy"):
            if name in entry["schedules"]:
                grid = entry["schedules"][name]["grid"]
                cells = [
                    fmt(best - grid[mult_dir(m)]["test_metric"]["mean"]) if mult_dir(m) in grid else "-"
                    for m in multipliers
                ]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a quick check of the path (2 multipliers, 1 seed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the families' comparison entries here")
    parser.add_argument(
        "--keep", type=Path, default=None, help="train in this folder and keep it (default: a temp one)"
    )
    parser.add_argument("--families", default=None, help="a subset of the families, comma-separated")
    parser.add_argument("--schedules", default=None, help="a subset of params.yaml's schedules, comma-separated")
    parser.add_argument("--multipliers", default=None, help="instead of grid.multipliers, comma-separated")
    parser.add_argument("--seeds", default=None, help="instead of common.seeds (no extra seeds), comma-separated")
    args = parser.parse_args(argv)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="untuned-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        params = load_params(family_params(raw, args.tiny, root / "params.yaml", args))
        start = time.perf_counter()
        for task in params.tasks:
            pipeline.prepare(params, task, root)
            pipeline.train_task(params, task, root)
        comparison = collect(params, root)
        seconds = time.perf_counter() - start
    print(report(comparison, list(params.grid.multipliers)))
    print(f"{len(comparison) - 1} families trained and compared in {seconds:.0f} s")
    print(machine())
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in comparison.items() if k != "profile"}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
