"""The comparison's PNGs in plots/: validation loss and LR per task (at 1x), time to target, overhead, ablations;
sensitivity to the initial LR per task, and the performance profile across tasks."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from adaptive_lr.compare.aggregate import OURS, tasks_of
from adaptive_lr.compare.markdown import format_number
from adaptive_lr.files import atomic_write
from adaptive_lr.grid import DEFAULT, mult_dir


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Render a matplotlib figure to PNG in memory and write it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def _stack(curves: list[list]) -> np.ndarray:
    """Per-seed curves of unequal length (early stopping) as a NaN-padded array."""
    arr = np.full((len(curves), max(len(c) for c in curves)), np.nan)
    for i, c in enumerate(curves):
        arr[i, : len(c)] = [np.nan if v is None else v for v in c]
    return arr


def _nanstats(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (diverged runs) stay NaN
        return np.nanmean(arr, 0), np.nanmin(arr, 0), np.nanmax(arr, 0)


def _style(schedule: str) -> dict:
    return {"linewidth": 2.4, "color": "black"} if schedule == OURS else {"linewidth": 1.4}


CURVES = ("val_loss", "lr")  # the per-epoch series of RunResult that dvc.yaml's top-level plots show


def write_curves(comparison: dict, runs: dict, root: Path) -> list[Path]:
    """plots/curves/<task>_<series>.csv for `dvc plots show/diff`: per epoch, one column per schedule, the mean
    over its seeds at its tuned multiplier (empty after a run stopped early)."""
    paths = []
    for task, entry in tasks_of(comparison).items():
        schedules = list(entry["schedules"])  # registry order, ablations left out
        for series in CURVES:
            columns = {}
            for s in schedules:
                tuned = entry["schedules"][s]["tuned"]["multiplier"]
                curves = [getattr(r.result, series) for r in runs[task][s] if r.multiplier == tuned]
                columns[s], _, _ = _nanstats(_stack(curves))
            rows = max(len(c) for c in columns.values())
            lines = [",".join(["epoch", *schedules])]
            for i in range(rows):
                cells = [
                    "" if i >= len(columns[s]) or not np.isfinite(columns[s][i]) else f"{columns[s][i]:.6g}"
                    for s in schedules
                ]
                lines.append(",".join([str(i + 1), *cells]))
            path = root / "plots" / "curves" / f"{task}_{series}.csv"
            atomic_write(path, "\n".join(lines) + "\n")
            paths.append(path)
    return paths


def plot(comparison: dict, runs: dict, root: Path) -> list[Path]:
    """PNGs in plots/: per task validation loss (vs epoch and vs seconds) and LR at 1x, and the sensitivity to
    the initial LR; time to target; overhead; ablations; the performance profile.

    ``runs`` is :func:`~adaptive_lr.compare.aggregate.load_runs`' output (the per-epoch curves).
    """
    plt = pyplot()
    import matplotlib.ticker

    paths = []
    profile = comparison.get("profile")
    comparison = tasks_of(comparison)
    for task, entry in comparison.items():
        # the schedules only, at 1x: the ablations have their own plot (plots/ablations.png)
        curves = {
            s: [r.result for r in task_runs if r.multiplier == DEFAULT]
            for s, task_runs in runs[task].items()
            if s in entry["schedules"]
        }
        n_seeds = len(next(iter(curves.values())))
        fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110, sharey=True)
        for s, results in curves.items():
            mean, lo, hi = _nanstats(_stack([r.val_loss for r in results]))
            seconds, _, _ = _nanstats(_stack([r.elapsed for r in results]))
            x = np.arange(1, len(mean) + 1)
            (line,) = by_epoch.plot(x, mean, label=s, **_style(s))
            by_epoch.fill_between(x, lo, hi, alpha=0.08, color=line.get_color())
            by_time.plot(seconds, mean, label=s, **_style(s))
            by_time.fill_between(seconds, lo, hi, alpha=0.08, color=line.get_color())
        by_time_label = "wall seconds since the start of training (mean over seeds)"
        for ax, xlabel in ((by_epoch, "epoch"), (by_time, by_time_label)):
            ax.axhline(entry["target_val_loss"], color="grey", linestyle=":", linewidth=1, label="target")
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
        by_epoch.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        by_epoch.set_yscale("log")  # early epochs' losses are several times the late ones
        by_epoch.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        by_epoch.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
        by_epoch.set_ylabel("validation loss (log scale)")
        by_epoch.legend(fontsize=8, ncol=2)
        fig.suptitle(f"{task}: validation loss, mean over {n_seeds} seeds (band = min..max)")
        fig.tight_layout()
        paths.append(save_png(fig, root / "plots" / f"val_loss_{task}.png"))

        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for s, results in curves.items():
            style = {**_style(s), "alpha": 0.8}
            for i, r in enumerate(results):
                # every LR the schedule set, at its position in epochs (0 = start), held until the next
                trace = r.lr_trace or [[e, v] for e, v in enumerate(r.lr)]
                x, y = [p[0] for p in trace] + [len(r.val_loss)], [p[1] for p in trace] + [trace[-1][1]]
                (line,) = ax.step(x, y, where="post", label=s if i == 0 else None, **style)
                style["color"] = line.get_color()  # every seed of a schedule in one colour
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epochs of training")
        ax.set_ylabel("learning rate")
        ax.set_title(f"{task}: learning rate, one line per seed")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        paths.append(save_png(fig, root / "plots" / f"lr_{task}.png"))
        paths.append(_plot_sensitivity(task, entry, root))
    paths.append(_plot_time_to_target(comparison, root))
    paths.append(_plot_overhead(comparison, root))
    if all(entry.get("ablations") and OURS in entry["schedules"] for entry in comparison.values()):
        paths.append(_plot_ablations(comparison, root))
    if profile is not None:
        paths.append(_plot_profile(profile, root))
    return paths


def _plot_sensitivity(task: str, entry: dict, root: Path) -> Path:
    """Test metric vs initial-LR multiplier (log x), one line per schedule: mean, band = ± std over seeds.

    A hollow ring marks each schedule's tuned multiplier.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
    for s, v in entry["schedules"].items():
        points = sorted(v["grid"].values(), key=lambda g: g["multiplier"])
        x = np.array([g["multiplier"] for g in points])
        mean = np.array([np.nan if g["test_metric"]["mean"] is None else g["test_metric"]["mean"] for g in points])
        std = np.array([g["test_metric"]["std"] or 0.0 for g in points])
        (line,) = ax.plot(x, mean, marker="o", markersize=4, label=s, **_style(s))
        # the band stays within the metric's range (accuracy 0..1, WER from 0)
        hi = np.minimum(mean + std, 1.0) if entry["higher_is_better"] else mean + std
        ax.fill_between(x, np.maximum(mean - std, 0.0), hi, alpha=0.1, color=line.get_color())
        tuned = v["grid"][mult_dir(v["tuned"]["multiplier"])]
        if tuned["test_metric"]["mean"] is not None:
            ax.plot(
                [tuned["multiplier"]],
                [tuned["test_metric"]["mean"]],
                marker="o",
                markersize=11,
                markerfacecolor="none",
                color=line.get_color(),
            )
    ax.set_xscale("log")
    ticks = sorted({g["multiplier"] for v in entry["schedules"].values() for g in v["grid"].values()})
    ax.set_xticks(ticks, [mult_dir(m) for m in ticks])
    ax.minorticks_off()
    ax.set_xlabel("initial LR, multiple of the task's base LR (log scale)")
    ax.set_ylabel(f"test {entry['metric']} ({'↑' if entry['higher_is_better'] else '↓'})")
    ax.set_title(f"{task}: sensitivity to the initial LR (mean ± std over seeds; ring = tuned)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save_png(fig, root / "plots" / f"sensitivity_{task}.png")


def _plot_profile(profile: dict, root: Path) -> Path:
    """The performance profile: per schedule, the fraction of settings within tau of the best tuned, vs tau."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
    for s, fractions in profile["schedules"].items():
        ax.step(profile["tau"], fractions, where="post", label=s, **_style(s))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau: gap to the task's best tuned mean test metric (metric units, worse direction)")
    ax.set_ylabel("fraction of (task, multiplier) settings")
    ax.set_title("Performance profile across tasks and initial LRs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    return save_png(fig, root / "plots" / "profile.png")


def _barh_panels(comparison: dict, bars, xlabel: str, title, path: Path) -> Path:
    """One panel per task of horizontal bars (mean ± std) with a text label at each bar's end.

    ``bars(entry)`` gives ``[(name, mean or None, std or None, label), ...]``; ``title(task, entry)`` the panel title.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(comparison), figsize=(5 * len(comparison), 4.2), dpi=110, squeeze=False)
    for ax, (task, entry) in zip(axes[0], comparison.items()):
        rows = bars(entry)
        names = [r[0] for r in rows]
        y = np.arange(len(rows))
        ends = [(m or 0) + (sd or 0) for _, m, sd, _ in rows]
        colors = ["black" if n.split(" ")[0] == OURS else f"C{i}" for i, n in enumerate(names)]
        ax.barh(
            y,
            [m or 0 for _, m, _, _ in rows],
            xerr=[sd or 0 for _, _, sd, _ in rows],
            color=colors,
            alpha=0.8,
            ecolor="grey",
            capsize=3,
        )
        for i, (_, _, _, label) in enumerate(rows):
            ax.text(ends[i], i, label, va="center", fontsize=8)
        ax.set_xlim(0, max(ends + [1e-9]) * 1.35)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(title(task, entry))
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return save_png(fig, path)


def _plot_time_to_target(comparison: dict, root: Path) -> Path:
    def bars(entry):
        out = []
        for s, v in entry["schedules"].items():
            t = v["seconds_to_target"]
            label = f" {t['reached']}/{v['seeds']} reached" if t["mean"] is not None else " never reached"
            out.append((s, t["mean"], t["std"], label))
        return out

    return _barh_panels(
        comparison,
        bars,
        "seconds to target (mean ± std of runs that reached it)",
        lambda task, entry: f"{task}: target {entry['target_val_loss']}",
        root / "plots" / "time_to_target.png",
    )


def _plot_ablations(comparison: dict, root: Path) -> Path:
    def bars(entry):
        # every multiplier the ablations ran at: ours and each ablation there, side by side
        mults = list(next(iter(entry["ablations"].values()))["grid"])
        variants = {OURS: entry["schedules"][OURS], **entry["ablations"]}
        metrics = {(a, m): v["grid"][m]["test_metric"] for m in mults for a, v in variants.items()}
        label = (lambda a, m: f"{a} {m}") if len(mults) > 1 else (lambda a, m: a)
        return [
            (label(a, m), tm["mean"], tm["std"], f" {format_number(tm['mean'], '{:.3f}')}")
            for (a, m), tm in metrics.items()
        ]

    return _barh_panels(
        comparison,
        bars,
        "test metric (mean ± std over seeds)",
        lambda task, entry: f"{task}: ablations, test {entry['metric']} ({'↑' if entry['higher_is_better'] else '↓'})",
        root / "plots" / "ablations.png",
    )


def _plot_overhead(comparison: dict, root: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(comparison), figsize=(5 * len(comparison), 4.2), dpi=110, squeeze=False)
    parts = (
        ("optim_seconds", "optimisation"),
        ("val_seconds", "validation"),
        ("probe_seconds", "in-epoch probes"),
        ("sched_seconds", "scheduler logic"),
    )
    for ax, (task, entry) in zip(axes[0], comparison.items()):
        names = list(entry["schedules"])
        y = np.arange(len(names))
        left = np.zeros(len(names))
        for i, (key, label) in enumerate(parts):
            per_epoch = np.array(
                [
                    (v[key]["mean"] or 0) / max(v["epochs_run"]["mean"] or 1, 1)
                    for v in (entry["schedules"][s] for s in names)
                ]
            )
            ax.barh(y, per_epoch, left=left, label=label, color=f"C{i}")
            left += per_epoch
        for i, s in enumerate(names):
            rel = entry["schedules"][s].get("relative_to_fixed", {}).get("seconds_per_epoch")
            if rel is not None:
                ax.text(left[i], i, f" {rel:.2f}x", va="center", fontsize=8)
        ax.set_xlim(0, max(left.max(), 1e-9) * 1.18)  # every run diverged: no time to show
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("seconds per epoch (mean over seeds); label: x fixed")
        ax.set_title(f"{task}: where the time goes")
        ax.grid(alpha=0.3, axis="x")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=len(parts), fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_png(fig, root / "plots" / "overhead.png")
