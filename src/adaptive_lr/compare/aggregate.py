"""Every run's records aggregated over seeds: one entry per task, one per schedule inside, and the aims."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from adaptive_lr.compare.stats import mean_std, paired, ratio, time_to_target
from adaptive_lr.config import Params
from adaptive_lr.pipeline import LIVE, METRICS, producer
from adaptive_lr.records import EvalRecord, RunResult
from adaptive_lr.schedules import REGISTRY
from adaptive_lr.tasks import task_class

SCHEDULE_ORDER = tuple(REGISTRY)  # the schedules in the registry's order; other names (ablations) after them
OURS, BASELINE = "adaptive", "fixed"  # the schedule under test, and the one overhead is relative to
EPOCHS_AIM = 0.8  # the lab's aim: reach the target in at most 0.8x the epochs of the best other schedule
# per-run fields averaged over seeds: every field evaluate always writes except who ran (task, schedule,
# seed, metric) and the divergence epoch (counted instead); the test metric first
AVERAGED_FIELDS = (
    "test_metric",
    *(
        k
        for k in EvalRecord.required_keys()
        if k not in ("task", "schedule", "seed", "metric", "test_metric", "diverged_epoch")
    ),
)
# per-seed values kept in the comparison beside the averages
PER_SEED_FIELDS = (
    "test_metric",
    "test_loss",
    "best_val_loss",
    "best_epoch",
    "epochs_to_target",
    "seconds_to_target",
    "train_seconds",
    "diverged_epoch",
)
# overhead fields reported relative to BASELINE as a ratio of means
RELATIVE_FIELDS = (
    "train_seconds",
    "seconds_per_epoch",
    "val_seconds",
    "sched_seconds",
    "cpu_util",
    "peak_rss_mb",
    "gpu_peak_mb",
    "gpu_util",
)


def schedule_names(params: Params) -> list[str]:
    """The schedules and ablations of ``params``: the registry's order first, then the others as listed."""
    known = [s for s in SCHEDULE_ORDER if s in params.schedules]
    return known + [s for s in params.schedules if s not in SCHEDULE_ORDER]


def _aggregate(runs: list[dict]) -> dict[str, Any]:
    reached = sum(r["epochs_to_target"] is not None for r in runs)
    out: dict[str, Any] = {"seeds": len(runs)}
    for key in AVERAGED_FIELDS:
        out[key] = mean_std([r[key] for r in runs])
    out["epochs_to_target"] = {**mean_std([r["epochs_to_target"] for r in runs]), "reached": reached}
    out["seconds_to_target"] = {**mean_std([r["seconds_to_target"] for r in runs]), "reached": reached}
    total = out["train_seconds"]["mean"]
    out["val_share"] = ratio(out["val_seconds"]["mean"], total)
    out["sched_share"] = ratio(out["sched_seconds"]["mean"], total)
    # the cost of in-epoch probes and of the scheduler's own logic, per second of optimisation
    out["probe_cost"] = ratio(out["probe_seconds"]["mean"], out["optim_seconds"]["mean"])
    out["sched_cost"] = ratio(out["sched_seconds"]["mean"], out["optim_seconds"]["mean"])
    out["diverged"] = sum(r["diverged_epoch"] is not None for r in runs)
    out["per_seed"] = {str(r["seed"]): {k: r[k] for k in PER_SEED_FIELDS} for r in runs}
    return out


def load_results(params: Params, root: Path = Path(".")) -> dict[str, dict[str, list[RunResult]]]:
    """Every run's ``result.json`` (the training loop's per-epoch record): task -> schedule -> one per seed."""
    out: dict[str, dict[str, list[RunResult]]] = {}
    for task, cfg in params.tasks.items():
        out[task] = {}
        for s in schedule_names(params):
            paths = [LIVE / task / s / f"seed{seed}" / "result.json" for seed in cfg.seeds]
            out[task][s] = [RunResult.from_json(root / path, producer(path)) for path in paths]
    return out


def collect(params: Params, root: Path = Path("."), results: dict | None = None) -> dict[str, Any]:
    """The comparison: one entry per task, one per schedule inside, aggregated over seeds.

    ``results`` is :func:`load_results`' output when the caller has it already. The metric
    and whether higher is better come from the task's class.
    """
    results = results if results is not None else load_results(params, root)
    out: dict[str, Any] = {}
    for task, cfg in params.tasks.items():
        entry: dict[str, Any] = {"target_val_loss": cfg.target_val_loss, "schedules": {}}
        cls = task_class(task)
        entry["metric"], entry["higher_is_better"] = cls.metric, cls.higher_is_better
        for schedule in schedule_names(params):
            runs = []
            for seed, r in zip(cfg.seeds, results[task][schedule]):
                path = METRICS / task / schedule / f"{seed}.json"
                m = EvalRecord.from_json(root / path, producer(path))
                epochs, seconds = time_to_target(r.val_loss, r.elapsed, cfg.target_val_loss)
                runs.append({**asdict(m), "epochs_to_target": epochs, "seconds_to_target": seconds})
            entry["schedules"][schedule] = _aggregate(runs)
        entry["ablations"] = {a: entry["schedules"].pop(a) for a in params.ablations}
        scheds = entry["schedules"]
        if BASELINE in scheds:
            for v in [*scheds.values(), *entry["ablations"].values()]:
                v["relative_to_fixed"] = {k: ratio(v[k]["mean"], scheds[BASELINE][k]["mean"]) for k in RELATIVE_FIELDS}
        if OURS in scheds:
            ours = {s: v["test_metric"] for s, v in scheds[OURS]["per_seed"].items()}
            entry[f"{OURS}_vs"] = {
                other: {
                    "test_metric": paired(
                        ours,
                        {s: v["test_metric"] for s, v in runs["per_seed"].items()},
                        entry["higher_is_better"],
                    )
                }
                for other, runs in [*scheds.items(), *entry["ablations"].items()]
                if other != OURS
            }
            entry["aims"] = aims(entry)
        out[task] = entry
    return out


def aims(entry: dict) -> dict[str, Any]:
    """Where ours stands against the lab's two aims on one task.

    ``rank``: place of ours by mean test metric among the schedules (1 = first; ties share it). ``epochs_ratio``:
    ours' mean epochs to target / the fewest of any other schedule that reached it with every
    seed (None when ours did not reach it with every seed, or no other did).
    """
    scheds = entry["schedules"]
    means = {s: v["test_metric"]["mean"] for s, v in scheds.items() if v["test_metric"]["mean"] is not None}
    order = sorted(means, key=means.get, reverse=entry["higher_is_better"])
    sign = 1 if entry["higher_is_better"] else -1
    # ties share a rank: ours' place is one more than the number of schedules strictly better
    rank = 1 + sum(sign * (m - means[OURS]) > 1e-12 for s, m in means.items() if s != OURS) if OURS in means else None
    full = {
        s: v["epochs_to_target"]["mean"] for s, v in scheds.items() if v["epochs_to_target"]["reached"] == v["seeds"]
    }
    others = {s: e for s, e in full.items() if s != OURS}
    fastest = min(others, key=others.get) if others else None
    epochs_ratio = ratio(full.get(OURS), others[fastest]) if fastest else None
    return {
        "rank": rank,
        "of": len(order),
        "first": rank == 1,
        "best_other": next((s for s in order if s != OURS), None),
        "fastest_other_to_target": fastest,
        "epochs_ratio": epochs_ratio,
        "epochs_aim_met": epochs_ratio is not None and epochs_ratio <= EPOCHS_AIM,
    }
