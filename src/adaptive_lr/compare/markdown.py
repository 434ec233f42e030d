"""The comparison as markdown: the headline table, per-task tables, and the number formats they use."""

from __future__ import annotations

from adaptive_lr.compare.aggregate import BASELINE, CONVERGED_SHARE, EPOCHS_AIM, OURS, tasks_of
from adaptive_lr.compare.stats import CONFIDENCE, WORST_VALUE
from adaptive_lr.grid import mult_dir


def format_mean_std(ms: dict, digits: int = 3) -> str:
    """``mean ± std`` of a :func:`~adaptive_lr.compare.stats.mean_std` result, or ``-`` when there is no mean."""
    if ms["mean"] is None:
        return "-"
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def format_number(x: float | None, fmt: str = "{:.2f}") -> str:
    """``x`` in format ``fmt``, or ``-`` when there is no value."""
    return "-" if x is None else fmt.format(x)


def format_diverged(v: dict) -> str:
    """How many seeds of a schedule diverged, and at which epochs."""
    epochs = [str(r["diverged_epoch"]) for r in v["per_seed"].values() if r["diverged_epoch"] is not None]
    return f"{len(epochs)} (epoch {', '.join(epochs)})" if epochs else "0"


def best_schedule(entry: dict) -> str | None:
    """The schedule with the best mean test metric on one task (None when none has one)."""
    means = {s: v["test_metric"]["mean"] for s, v in entry["schedules"].items() if v["test_metric"]["mean"] is not None}
    return (max if entry["higher_is_better"] else min)(means, key=means.get) if means else None


def _direction(entry: dict) -> str:
    return "↑" if entry["higher_is_better"] else "↓"


def _to_target(v: dict) -> str:
    """Epochs to target (mean ± std) and how many seeds reached it."""
    return f"{format_mean_std(v['epochs_to_target'], 1)} ({v['epochs_to_target']['reached']}/{v['seeds']})"


def headline(comparison: dict) -> str:
    """One table: test metric (mean ± std) of every schedule on every task at 1x, the best in bold."""
    from tabulate import tabulate

    comparison = tasks_of(comparison)
    tasks = list(comparison)
    best = {t: best_schedule(comparison[t]) for t in tasks}
    schedules = list(dict.fromkeys(s for t in tasks for s in comparison[t]["schedules"]))
    rows = []
    for s in schedules:
        row = [s]
        for t in tasks:
            v = comparison[t]["schedules"].get(s)
            cell = format_mean_std(v["test_metric"]) if v else "-"
            row.append(f"**{cell}**" if s == best[t] else cell)
        rows.append(row)
    headers = ["schedule"] + [f"{t} test {comparison[t]['metric']} ({_direction(comparison[t])})" for t in tasks]
    return tabulate(rows, headers=headers, tablefmt="github")


def to_markdown(comparison: dict) -> str:
    """Readable tables per task: quality and convergence, overhead, the paired verdicts (at 1x), then the grid:
    tuned vs default vs worst, the budget check and the paired verdicts at the tuned points."""
    worst = ", ".join(f"{m} {v:g}" for m, v in WORST_VALUE.items())
    lines = [
        "# Comparison of learning-rate schedules",
        "",
        "Every schedule runs at a grid of initial-LR multipliers of the task's base LR. The tables down to the",
        "aims are at the default point, 1x. Mean ± std over seeds. Test metric on the held-out test split; convergence",
        "measured on the validation split against each task's pre-set `target_val_loss` (runs that never reach it are",
        "counted in *reached*, not averaged as their last epoch). Overhead ratios are mean / mean of `fixed`.",
        "",
        "The grid tables: a schedule's *tuned* multiplier has the lowest mean best validation loss over the seeds",
        "every multiplier has (validation only); its test metric is over every seed run there. *Worst*: the",
        "multiplier with the worst mean test metric. A run that diverged before any checkpoint scores the metric's",
        f"worst value ({worst}). *Gap*: worst vs the task's best tuned schedule, positive = worse.",
        "",
        "## Headline: test metric at 1x",
        "",
        headline(comparison),
    ]
    tasks = tasks_of(comparison)
    for task, entry in tasks.items():
        lines += _quality_table(task, entry) + _overhead_table(task, entry)
        if f"{OURS}_vs" in entry:
            lines += _paired_table(entry)
        if entry.get("ablations"):
            lines += _ablation_table(task, entry)
        if entry.get("ablation_verdicts"):
            lines += _ablation_verdicts_table(task, entry)
        if "aims" in entry:
            lines += _aims_line(task, entry)
        lines += _tuned_table(task, entry) + _budget_table(task, entry)
        if "verdicts_tuned" in entry:
            lines += _verdicts_tables(entry)
        lines += [
            "",
            f"![validation loss, {task}](../plots/val_loss_{task}.png)",
            f"![learning rate, {task}](../plots/lr_{task}.png)",
            f"![sensitivity to the initial LR, {task}](../plots/sensitivity_{task}.png)",
        ]
    lines += ["", "![time to target](../plots/time_to_target.png)", "![overhead](../plots/overhead.png)"]
    if any(entry.get("ablations") for entry in tasks.values()):
        lines.append("![ablations](../plots/ablations.png)")
    if "profile" in comparison:
        lines += [
            "",
            "Performance profile: per schedule, the fraction of its (task, multiplier) settings whose mean test",
            "metric is within tau of the task's best tuned schedule.",
            "",
            "![performance profile](../plots/profile.png)",
        ]
    return "\n".join(lines) + "\n"


def format_point(point: dict, digits: int = 3) -> str:
    """A grid point's test metric: ``mean ± std (n)``, n the seeds run there."""
    return f"{format_mean_std(point['test_metric'], digits)} ({len(point['seeds'])})"


def _tuned_table(task: str, entry: dict) -> list[str]:
    """Per schedule: the tuned multiplier and test metric there, at 1x, and at the worst multiplier; the gap."""
    rows = []
    for s, v in entry["schedules"].items():
        best = v["tuned"]["test_metric"]["mean"] is not None and v["tuned"]["test_metric"]["mean"] == entry.get(
            "best_tuned"
        )
        tuned = format_point(v["tuned"])
        rows.append(
            [
                f"**{s}**" if best else s,
                mult_dir(v["tuned"]["multiplier"]),
                f"**{tuned}**" if best else tuned,
                format_point(v["default"]),
                f"{format_point(v['worst'])} @ {mult_dir(v['worst']['multiplier'])}",
                format_number(v["gap_to_best_tuned"], "{:+.3f}"),
            ]
        )
    headers = [
        "schedule",
        "tuned",
        f"test {entry['metric']} at tuned (n)",
        "at 1x (n)",
        "worst (n) @ multiplier",
        "gap to best tuned",
    ]
    return [
        "",
        f"Tuned vs default vs worst on {task} (test {entry['metric']}, {_direction(entry)}):",
        "",
        _table(rows, headers, disable_numparse=True),
    ]


def _budget_table(task: str, entry: dict) -> list[str]:
    """The budget check at each schedule's tuned point: best epoch against the budget, target reached."""
    b = entry["budget"]
    rows = [
        [
            s,
            mult_dir(v["multiplier"]),
            format_number(v["best_epoch"], "{:.1f}"),
            format_number(v["epochs_run"], "{:.1f}"),
            format_number(v["share"], "{:.0%}"),
            format_number(b["targets_reached"].get(s), "{:.0%}"),
        ]
        for s, v in b["schedules"].items()
    ]
    headers = ["schedule", "tuned", "best epoch", "epochs run", "best epoch / budget", "target reached"]
    converged = {True: "yes", False: "no", None: f"- (no {BASELINE})"}[b["fixed_converged"]]
    reached = "; ".join(f"{s} {b['targets_reached'][s]:.0%}" for s in ("cosine", "step") if s in b["targets_reached"])
    return [
        "",
        f"Budget check on {task} ({b['epochs']} epochs; each schedule at its tuned multiplier, every seed there):",
        "",
        _table(rows, headers, disable_numparse=True),
        "",
        f"{BASELINE} converged (mean best epoch ≤ {CONVERGED_SHARE:.0%} of the budget): {converged}. "
        f"Seeds that reached the target val loss {entry['target_val_loss']}: {reached or '-'}.",
    ]


def _paired_row(label: str, p: dict) -> list:
    return [
        label,
        p["n"],
        format_number(p["diff"], "{:+.3f}"),
        "-" if p["ci"][0] is None else f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]",
        format_number(p["p_value"], "{:.3f}"),
        p["verdict"],
    ]


def _verdicts_tables(entry: dict) -> list[str]:
    """The paired verdicts of ours at each multiplier vs every other schedule at its tuned point, and at 1x."""
    headers = ["pair", "seeds", "diff", "95% CI", "p", "verdict"]

    def label(v: dict, peer: str) -> str:
        return f"{OURS}@{mult_dir(v['multiplier'])} vs {peer}@{mult_dir(v['peer_multiplier'])}"

    tuned = [
        _paired_row(label(v, peer), v["test_metric"])
        for vs in entry["verdicts_tuned"].values()
        for peer, v in vs.items()
    ]
    default = [_paired_row(label(v, peer), v["test_metric"]) for peer, v in entry["verdicts_default"].items()]
    what = (
        f"test {entry['metric']} ({OURS} − other; {CONFIDENCE:.0%} t interval, paired t-test; no test metric = worst)"
    )
    return [
        "",
        f"Paired over seeds at the tuned points, {what}:",
        "",
        _table(tuned, headers, disable_numparse=True),
        "",
        f"Paired over seeds at 1x, {what}:",
        "",
        _table(default, headers, disable_numparse=True),
    ]


def _table(rows: list, headers: list, **kw) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", **kw)


def _quality_table(task: str, entry: dict) -> list[str]:
    """Test metric, convergence and divergence per schedule; the best schedule in bold."""
    metric, hib, best = entry["metric"], entry["higher_is_better"], best_schedule(entry)
    rows = []
    for s, v in entry["schedules"].items():
        tm = format_mean_std(v["test_metric"])
        rows.append(
            [
                f"**{s}**" if s == best else s,
                f"**{tm}**" if s == best else tm,
                format_mean_std(v["test_loss"]),
                f"{format_mean_std(v['best_val_loss'])} @ {format_number(v['best_epoch']['mean'], '{:.1f}')}",
                _to_target(v),
                format_mean_std(v["seconds_to_target"], 1),
                format_diverged(v),
            ]
        )
    headers = [
        "schedule",
        f"test {metric}",
        "test loss",
        "best val loss @ epoch",
        "epochs to target (reached)",
        "seconds to target",
        "diverged",
    ]
    return [
        "",
        f"## {task} (test {metric}, {'higher' if hib else 'lower'} is better; "
        f"target val loss {entry['target_val_loss']})",
        "",
        _table(rows, headers),
    ]


def _overhead_table(task: str, entry: dict) -> list[str]:
    """Wall time, the shares of validation, probes and scheduler, CPU and memory (GPU where measured)."""
    gpu = any(v["gpu_peak_mb"]["mean"] is not None for v in entry["schedules"].values())
    rows = []
    for s, v in entry["schedules"].items():
        rel = v.get("relative_to_fixed", {})
        row = [
            s,
            format_mean_std(v["train_seconds"], 1),
            format_number(rel.get("train_seconds"), "{:.2f}x"),
            format_mean_std(v["seconds_per_epoch"], 2),
            format_number(v["val_share"], "{:.1%}"),
            format_number(v["probe_cost"], "{:.1%}"),
            format_number(v["sched_share"], "{:.2%}"),
            format_number(v["cpu_util"]["mean"]),
            format_number(v["peak_rss_mb"]["mean"], "{:.0f}"),
            format_number(rel.get("peak_rss_mb"), "{:.2f}x"),
        ]
        if gpu:
            row += [
                format_number(v["gpu_peak_mb"]["mean"], "{:.0f}"),
                format_number(v["gpu_util"]["mean"], "{:.0f}%"),
            ]
        rows.append(row)
    headers = [
        "schedule",
        "train s",
        "x fixed",
        "s / epoch",
        "validation",
        "probes / optim",
        "scheduler",
        "CPU (cores)",
        "peak RSS MiB",
        "x fixed",
    ]
    if gpu:
        headers += ["GPU peak MiB", "GPU util"]
    return [
        "",
        f"Overhead on {task} (validation and scheduler: share of training time; "
        "probes: in-epoch probe seconds per optimisation second):",
        "",
        _table(rows, headers),
    ]


def _paired_table(entry: dict) -> list[str]:
    """The paired verdicts of our schedule against every other one."""
    rows = [_paired_row(f"{OURS} vs {other}", v["test_metric"]) for other, v in entry[f"{OURS}_vs"].items()]
    return [
        "",
        f"Paired over seeds, test {entry['metric']} ({OURS} − other; {CONFIDENCE:.0%} t interval, paired t-test):",
        "",
        _table(rows, ["pair", "seeds", "diff", "95% CI", "p", "verdict"], disable_numparse=True),
    ]


def _ablation_table(task: str, entry: dict) -> list[str]:
    """Our schedule and each ablation of it, with the paired difference."""
    vs = entry.get(f"{OURS}_vs", {})
    rows = [
        [
            a,
            format_mean_std(v["test_metric"]),
            _to_target(v),
            format_mean_std(v["best_val_loss"]),
            format_diverged(v),
            format_number(vs.get(a, {}).get("test_metric", {}).get("diff"), "{:+.3f}"),
            vs.get(a, {}).get("test_metric", {}).get("verdict", "-"),
        ]
        for a, v in [(OURS, entry["schedules"][OURS]), *entry["ablations"].items()]
    ]
    headers = [
        "variant",
        f"test {entry['metric']}",
        "epochs to target (reached)",
        "best val loss",
        "diverged",
        "diff",
        "verdict",
    ]
    return [
        "",
        f"Ablations on {task}: {OURS} with one part switched off ({OURS} − ablation, paired):",
        "",
        _table(rows, headers, disable_numparse=True),
    ]


def _ablation_verdicts_table(task: str, entry: dict) -> list[str]:
    """Ours vs each ablation at every multiplier the ablations ran at, paired over seeds."""
    ours = entry["schedules"][OURS]["grid"]
    rows = [
        [
            mult,
            a,
            format_mean_std(ours[mult]["test_metric"]),
            format_mean_std(entry["ablations"][a]["grid"][mult]["test_metric"]),
            *_paired_row("", v["test_metric"])[1:],
        ]
        for mult, by_ablation in entry["ablation_verdicts"].items()
        for a, v in by_ablation.items()
    ]
    headers = ["LR", "ablation", f"{OURS} test {entry['metric']}", f"ablation test {entry['metric']}"]
    return [
        "",
        f"Ablations on {task} at each multiplier they ran at ({OURS} − ablation, paired over the seeds both have; "
        f"{OURS} over every seed it has there):",
        "",
        _table(rows, [*headers, "seeds", "diff", "95% CI", "p", "verdict"], disable_numparse=True),
    ]


def _aims_line(task: str, entry: dict) -> list[str]:
    """Where our schedule ranks, and its epochs to target against the fastest other schedule."""
    a = entry["aims"]
    if a["epochs_ratio"] is None:
        ratio = f"not measurable (not every seed of {OURS} reached the target)"
    else:
        ratio = f"{a['epochs_ratio']:.2f}x ({a['fastest_other_to_target']})"
    if a["rank"] is None:
        place = "has no test metric (every seed diverged)"
    else:
        place = f"is {a['rank']} of {a['of']}"
    return [
        "",
        f"Aims on {task}: {OURS} {place} on test {entry['metric']} (best other: {a['best_other']}); "
        f"epochs to target vs the fastest other schedule: {ratio}. Aims: first, and ≤ {EPOCHS_AIM}x.",
    ]
