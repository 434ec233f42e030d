"""Every run's records aggregated over seeds: one entry per task, one per schedule inside, and the aims.

Every schedule runs at a grid of initial-LR multipliers (:mod:`adaptive_lr.grid`). The fields that
predate the grid (test metric, convergence, overhead, ``adaptive_vs``, aims) are over the runs at 1x,
the default point, so they keep their meaning; ``grid``, ``tuned``, ``default``, ``worst``,
``gap_to_best_tuned``, ``budget``, ``verdicts_tuned``, ``verdicts_default`` and the top-level
``profile`` cover the grid. In those, a run without a test metric (it diverged before any finite
validation loss) scores the metric's worst value (accuracy 0.0, WER 1.0): a diverged setting counts
against its schedule instead of dropping out of the mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaptive_lr.compare.stats import (
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
from adaptive_lr.errors import DataError
from adaptive_lr.grid import DEFAULT, mult_dir, runs_of, select_tuned
from adaptive_lr.pipeline import cell_extra_seeds, cell_multipliers, producer, run_paths
from adaptive_lr.records import EvalRecord, RunResult
from adaptive_lr.schedules import REGISTRY
from adaptive_lr.tasks import task_class

SCHEDULE_ORDER = tuple(REGISTRY)  # the schedules in the registry's order; other names (ablations) after them
OURS, BASELINE = "adaptive", "fixed"  # the schedule under test, and the one overhead is relative to
EPOCHS_AIM = 0.8  # the lab's aim: reach the target in at most 0.8x the epochs of the best other schedule
# per-run fields averaged over seeds: every field evaluate always writes except who ran (task, schedule,
# seed, multiplier, lr, metric) and the divergence epoch (counted instead); the test metric first
AVERAGED_FIELDS = (
    "test_metric",
    *(
        k
        for k in EvalRecord.required_keys()
        if k not in ("task", "schedule", "seed", "multiplier", "lr", "metric", "test_metric", "diverged_epoch")
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


# the budget check: fixed has converged when its mean best epoch (at its tuned point) is within this share of the budget
CONVERGED_SHARE = 0.75
# the performance profile's tolerances, in the metric's units (0 to 0.5 in steps of 0.01)
PROFILE_TAUS = tuple(round(0.01 * i, 2) for i in range(51))
# keys of the comparison that are no task
TOP_LEVEL = ("profile",)


def schedule_names(params: Params) -> list[str]:
    """The schedules and ablations of ``params``: the registry's order first, then the others as listed."""
    known = [s for s in SCHEDULE_ORDER if s in params.schedules]
    return known + [s for s in params.schedules if s not in SCHEDULE_ORDER]


def tasks_of(comparison: dict) -> dict[str, dict]:
    """The per-task entries of a comparison (its top-level keys other than :data:`TOP_LEVEL`, such as ``profile``)."""
    return {k: v for k, v in comparison.items() if k not in TOP_LEVEL}


@dataclass(frozen=True)
class Run:
    """One run of a task x schedule cell: its grid point, its evaluation record and its training result."""

    multiplier: float
    seed: int
    record: EvalRecord
    result: RunResult


def _read_run(task: str, schedule: str, m: float, seed: int, root: Path) -> Run:
    """The evaluation record and ``result.json`` of one run; DataError (naming file and stage) if bad."""
    where = run_paths(Path(), task, schedule, m, seed)  # relative: errors name the path from the repository root
    path, live = where.metrics, where.live / "result.json"
    record = EvalRecord.from_json(root / path, producer(path))
    if mult_dir(record.multiplier) != mult_dir(m) or record.seed != seed:
        raise DataError(
            f"{path}: holds multiplier {record.multiplier!r} and seed {record.seed!r}, not the "
            f"{mult_dir(m)} and {seed} of its path; run `dvc repro -f {producer(path)}`"
        )
    return Run(m, seed, record, RunResult.from_json(root / live, producer(live)))


def load_cell(params: Params, task: str, schedule: str, root: Path = Path(".")) -> list[Run]:
    """Every run of one task x schedule cell, as the train stage plans them, by multiplier then seed.

    The task's seeds (``common.seeds``) at each of the cell's multipliers (an ablation: ``grid.ablation_multipliers``);
    then ``grid.extra_seeds`` (none for an ablation) at 1x and at the tuned multiplier, which is chosen here as train
    chooses it (:func:`~adaptive_lr.grid.select_tuned` over the task's seeds' best validation
    losses). A file that is missing or bad raises DataError naming it and the stage that writes it,
    as does a record whose multiplier or seed is not the one its path says.
    """
    seeds, mults = params.tasks[task].seeds, cell_multipliers(params, schedule)
    runs = {(m, s): _read_run(task, schedule, m, s, root) for m, s in runs_of(mults, seeds, (), None)}
    tuned = select_tuned({m: [runs[(m, s)].record.best_val_loss for s in seeds] for m in mults})
    for m, s in runs_of(mults, seeds, cell_extra_seeds(params, schedule), tuned):
        if (m, s) not in runs:
            runs[(m, s)] = _read_run(task, schedule, m, s, root)
    return [runs[pair] for pair in sorted(runs)]


def load_runs(params: Params, root: Path = Path(".")) -> dict[str, dict[str, list[Run]]]:
    """Every run's evaluation record and ``result.json``: task -> schedule -> runs (:func:`load_cell`)."""
    return {task: {s: load_cell(params, task, s, root) for s in schedule_names(params)} for task in params.tasks}


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


def _grid(by_mult: dict[float, list[dict]], worst: float) -> dict[str, Any]:
    """One entry per multiplier: its LR, test metric and best validation loss over the seeds run there.

    The test metric's mean and std score a run without a test metric (diverged before any checkpoint)
    as ``worst``, the metric's worst value; ``scored_worst`` counts those runs, ``diverged`` every run
    that diverged (some of them had a checkpoint to test). The best validation loss is over the runs
    that have one.
    """
    return {
        mult_dir(m): {
            "multiplier": m,
            "lr": rows[0]["lr"],
            "test_metric": mean_std(scored([r["test_metric"] for r in rows], worst)),
            "best_val_loss": mean_std([r["best_val_loss"] for r in rows]),
            "seeds": [r["seed"] for r in rows],
            "diverged": sum(r["diverged_epoch"] is not None for r in rows),
            "scored_worst": sum(r["test_metric"] is None for r in rows),
        }
        for m, rows in by_mult.items()
    }


def tuned_multiplier(by_mult: dict[float, list[dict]], seeds: tuple[int, ...]) -> float:
    """:func:`~adaptive_lr.grid.select_tuned` over the best validation losses of ``seeds``: the grid seeds (the
    task's seeds, run at every multiplier), the extra seeds left out as the train stage leaves them out.

    Validation only: the test metric never enters the choice.
    """
    return select_tuned({m: [r["best_val_loss"] for r in rows if r["seed"] in seeds] for m, rows in by_mult.items()})


def _point(grid: dict, m: float) -> dict[str, Any]:
    g = grid[mult_dir(m)]
    return {"multiplier": m, "test_metric": g["test_metric"], "seeds": g["seeds"]}


def _grid_fields(
    by_mult: dict[float, list[dict]], seeds: tuple[int, ...], worst: float, higher_is_better: bool
) -> dict[str, Any]:
    """``grid`` and the ``tuned``, ``default`` (1x) and ``worst`` points of one schedule."""
    grid = _grid(by_mult, worst)
    sign = 1 if higher_is_better else -1
    # the worst point by mean test metric; equal means: the first multiplier
    worst_m = min(by_mult, key=lambda m: sign * grid[mult_dir(m)]["test_metric"]["mean"])
    return {
        "grid": grid,
        "tuned": _point(grid, tuned_multiplier(by_mult, seeds)),
        "default": _point(grid, DEFAULT),
        "worst": _point(grid, worst_m),
    }


def _scores(rows: list[dict], worst: float) -> dict[str, float]:
    """Per seed (as a string), the test metric, a run without one scoring ``worst``."""
    return {str(r["seed"]): v for r, v in zip(rows, scored([r["test_metric"] for r in rows], worst))}


def _paired_runs(
    rows: dict[str, dict[float, list[dict]]], m: float, other: str, other_m: float, worst: float, hib: bool
) -> dict[str, Any]:
    """Ours at ``m`` vs ``other`` at ``other_m``, paired over the seeds both have (no test metric: ``worst``)."""
    return paired(_scores(rows[OURS][m], worst), _scores(rows[other][other_m], worst), hib)


def _verdicts(
    rows: dict[str, dict[float, list[dict]]], entry: dict, worst: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Paired verdicts of ours (runs without a test metric scored ``worst``), over the seeds both have.

    At tuned points: ours at each of its multipliers vs every other schedule at that schedule's tuned
    multiplier (key: ours' multiplier, then the other). At 1x: ours vs every other schedule at 1x.
    """
    scheds, hib = entry["schedules"], entry["higher_is_better"]
    peers = [s for s in scheds if s != OURS]

    def verdict(m: float, peer: str, pm: float) -> dict[str, Any]:
        return {"multiplier": m, "peer_multiplier": pm, "test_metric": _paired_runs(rows, m, peer, pm, worst, hib)}

    tuned = {mult_dir(m): {p: verdict(m, p, scheds[p]["tuned"]["multiplier"]) for p in peers} for m in rows[OURS]}
    return tuned, {p: verdict(DEFAULT, p, DEFAULT) for p in peers}


def _ablation_verdicts(rows: dict[str, dict[float, list[dict]]], entry: dict, worst: float) -> dict[str, Any]:
    """Ours vs each ablation at each multiplier the ablation ran at, paired over the seeds both have there
    (key: the multiplier, then the ablation; runs without a test metric scored ``worst``)."""
    hib, ablations = entry["higher_is_better"], entry["ablations"]
    return {
        mult_dir(m): {
            a: {"multiplier": m, "test_metric": _paired_runs(rows, m, a, m, worst, hib)}
            for a in ablations
            if m in rows[a]
        }
        for m in sorted({m for a in ablations for m in rows[a]})
    }


def budget(entry: dict, rows: dict[str, dict[float, list[dict]]], epochs: int) -> dict[str, Any]:
    """Was the epoch budget enough? Every schedule at its tuned point, over all seeds there.

    ``schedules``: mean best epoch, mean epochs run and the best epoch's share of the budget.
    ``fixed_converged``: fixed's mean best epoch is within :data:`CONVERGED_SHARE` of the budget (None
    without fixed). ``targets_reached``: per schedule, the fraction of seeds that reached the task's
    target validation loss (cosine and step, whose decay spans the budget, are the ones to watch).
    """
    out: dict[str, Any] = {"epochs": epochs, "schedules": {}, "fixed_converged": None, "targets_reached": {}}
    for s, v in entry["schedules"].items():
        at = rows[s][v["tuned"]["multiplier"]]
        best = mean_std([r["best_epoch"] for r in at])["mean"]
        out["schedules"][s] = {
            "multiplier": v["tuned"]["multiplier"],
            "best_epoch": best,
            "epochs_run": mean_std([r["epochs_run"] for r in at])["mean"],
            "share": ratio(best, epochs),
        }
        out["targets_reached"][s] = sum(r["epochs_to_target"] is not None for r in at) / len(at)
    if BASELINE in out["schedules"]:
        out["fixed_converged"] = out["schedules"][BASELINE]["best_epoch"] <= CONVERGED_SHARE * epochs
    return out


def collect(params: Params, root: Path = Path("."), runs: dict | None = None) -> dict[str, Any]:
    """The comparison: one entry per task, one per schedule inside, aggregated over seeds; and ``profile``.

    ``runs`` is :func:`load_runs`' output when the caller has it already. The metric and whether
    higher is better come from the task's class; the target validation loss and the epoch budget
    from the task's settings (``target_val_loss``, ``epochs``).
    """
    runs = runs if runs is not None else load_runs(params, root)
    out: dict[str, Any] = {}
    for task, cfg in params.tasks.items():
        entry: dict[str, Any] = {"target_val_loss": cfg.target_val_loss, "schedules": {}}
        cls = task_class(task)
        entry["metric"], entry["higher_is_better"] = cls.metric, cls.higher_is_better
        worst = worst_value(cls.metric)
        rows: dict[str, dict[float, list[dict]]] = {}
        for schedule in schedule_names(params):
            rows[schedule] = {}
            for run in runs[task][schedule]:
                r = run.result
                epochs, seconds = time_to_target(r.val_loss, r.elapsed, cfg.target_val_loss)
                row = {**asdict(run.record), "epochs_to_target": epochs, "seconds_to_target": seconds}
                rows[schedule].setdefault(run.multiplier, []).append(row)
            entry["schedules"][schedule] = {
                **_aggregate(rows[schedule][DEFAULT]),
                **_grid_fields(rows[schedule], cfg.seeds, worst, entry["higher_is_better"]),
            }
        entry["ablations"] = {a: entry["schedules"].pop(a) for a in params.ablations}
        scheds = entry["schedules"]
        best_tuned = _best([v["tuned"]["test_metric"]["mean"] for v in scheds.values()], entry["higher_is_better"])
        for v in [*scheds.values(), *entry["ablations"].values()]:
            v["gap_to_best_tuned"] = gap(best_tuned, v["worst"]["test_metric"]["mean"], entry["higher_is_better"])
        entry["best_tuned"] = best_tuned
        if BASELINE in scheds:
            for v in [*scheds.values(), *entry["ablations"].values()]:
                v["relative_to_fixed"] = {k: ratio(v[k]["mean"], scheds[BASELINE][k]["mean"]) for k in RELATIVE_FIELDS}
        if OURS in scheds:
            ours = {s: v["test_metric"] for s, v in scheds[OURS]["per_seed"].items()}
            entry[f"{OURS}_vs"] = {
                other: {
                    "test_metric": paired(
                        ours,
                        {s: v["test_metric"] for s, v in theirs["per_seed"].items()},
                        entry["higher_is_better"],
                    )
                }
                for other, theirs in [*scheds.items(), *entry["ablations"].items()]
                if other != OURS
            }
            entry["verdicts_tuned"], entry["verdicts_default"] = _verdicts(rows, entry, worst)
            entry["ablation_verdicts"] = _ablation_verdicts(rows, entry, worst)
            entry["aims"] = aims(entry)
        entry["budget"] = budget(entry, rows, cfg.epochs)
        out[task] = entry
    out["profile"] = profile(out)
    return out


def _best(values: list, higher_is_better: bool) -> float | None:
    """The best of ``values`` that are not None (None when there are none)."""
    values = [v for v in values if v is not None]
    return (max if higher_is_better else min)(values) if values else None


def profile(comparison: dict, taus: tuple[float, ...] = PROFILE_TAUS) -> dict[str, Any]:
    """A performance profile across tasks (as AlgoPerf's): how often each schedule is near the best tuned one.

    For each schedule (ablations apart), the fraction of its (task, multiplier) settings whose mean
    test metric is within tau of the task's best tuned mean test metric (``best_tuned``), tau in
    the metric's units, worse-direction aware (:func:`~adaptive_lr.compare.stats.gap`).
    """
    gaps: dict[str, list[float]] = {}
    for entry in tasks_of(comparison).values():
        for s, v in entry["schedules"].items():
            gs = gaps.setdefault(s, [])
            for g in v["grid"].values():
                d = gap(entry["best_tuned"], g["test_metric"]["mean"], entry["higher_is_better"])
                if d is not None:
                    gs.append(d)
    return {"tau": list(taus), "schedules": performance_profile(gaps, list(taus))}


def summary(comparison: dict, digits: int = 4) -> dict[str, dict[str, dict[str, float | None]]]:
    """The compact figures DVC shows (``metrics/summary.json``): task -> schedule -> means, no timing.

    Per schedule (ablations apart): the tuned multiplier, the mean test metric at the tuned, default
    (1x) and worst points, and the gap of the worst to the task's best tuned schedule (positive = worse).
    """

    def r(x: float | None) -> float | None:
        return None if x is None else round(float(x), digits)

    return {
        task: {
            s: {
                "tuned_multiplier": r(v["tuned"]["multiplier"]),
                "tuned": r(v["tuned"]["test_metric"]["mean"]),
                "default": r(v["default"]["test_metric"]["mean"]),
                "worst": r(v["worst"]["test_metric"]["mean"]),
                "gap_to_best_tuned": r(v["gap_to_best_tuned"]),
            }
            for s, v in entry["schedules"].items()
        }
        for task, entry in tasks_of(comparison).items()
    }


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
