"""The compare stage: aggregate every run over seeds into statistics, tables, JSON and plots."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_lr.config import Params
from adaptive_lr.files import atomic_write, write_json

SCHEDULE_ORDER = ("fixed", "step", "cosine", "plateau", "greedy", "schedulefree", "adaptive")
OURS, BASELINE = "adaptive", "fixed"  # the schedule under test, and the one overhead is relative to
CONFIDENCE = 0.95
# per-run fields aggregated over seeds (evaluate's metrics/<task>/<schedule>/<seed>.json, plus time to target)
RUN_FIELDS = (
    "test_metric", "test_loss", "best_val_loss", "best_epoch", "epochs_run",
    "train_seconds", "seconds_per_epoch", "optim_seconds", "val_seconds", "probe_seconds", "sched_seconds", "probes",
    "cpu_util", "peak_rss_mb", "gpu_peak_mb", "gpu_util",
)
EPOCHS_AIM = 0.8  # issue 3's aim: reach the target in at most 0.8x the epochs of the best other schedule
# overhead fields reported relative to BASELINE as a ratio of means
RELATIVE_FIELDS = ("train_seconds", "seconds_per_epoch", "val_seconds", "sched_seconds", "cpu_util", "peak_rss_mb", "gpu_peak_mb", "gpu_util")


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
    out: dict[str, Any] = {"n": len(d), "diff": float(d.mean()) if len(d) else None, "ci": [None, None], "p_value": None}
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


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _schedules(params: Params) -> list[str]:
    return [s for s in SCHEDULE_ORDER if s in params.schedules] + [s for s in params.schedules if s not in SCHEDULE_ORDER]


def _aggregate(runs: list[dict]) -> dict[str, Any]:
    reached = sum(r["epochs_to_target"] is not None for r in runs)
    out: dict[str, Any] = {"seeds": len(runs)}
    for key in RUN_FIELDS:
        out[key] = mean_std([r.get(key) for r in runs])
    out["epochs_to_target"] = {**mean_std([r["epochs_to_target"] for r in runs]), "reached": reached}
    out["seconds_to_target"] = {**mean_std([r["seconds_to_target"] for r in runs]), "reached": reached}
    total = out["train_seconds"]["mean"]
    out["val_share"] = _ratio(out["val_seconds"]["mean"], total)
    out["sched_share"] = _ratio(out["sched_seconds"]["mean"], total)
    # the cost of in-epoch probes and of the scheduler's own logic, per second of optimisation
    out["probe_cost"] = _ratio(out["probe_seconds"]["mean"], out["optim_seconds"]["mean"])
    out["sched_cost"] = _ratio(out["sched_seconds"]["mean"], out["optim_seconds"]["mean"])
    out["diverged"] = sum(r["diverged_epoch"] is not None for r in runs)
    out["per_seed"] = {
        str(r["seed"]): {k: r.get(k) for k in ("test_metric", "test_loss", "best_val_loss", "best_epoch", "epochs_to_target", "seconds_to_target", "train_seconds", "diverged_epoch")}
        for r in runs
    }
    return out


def load_results(params: Params, root: Path = Path(".")) -> dict[str, dict[str, list[dict]]]:
    """Every run's ``result.json`` (the training loop's per-epoch record): task -> schedule -> one per seed."""
    return {
        task: {s: [_read(root / "live" / task / s / f"seed{seed}" / "result.json") for seed in cfg.seeds] for s in _schedules(params)}
        for task, cfg in params.tasks.items()
    }


def collect(params: Params, root: Path = Path("."), results: dict | None = None) -> dict[str, Any]:
    """The comparison: one entry per task, one per schedule inside, aggregated over seeds.

    ``results`` is :func:`load_results`' output when the caller has it already.
    """
    results = results if results is not None else load_results(params, root)
    out: dict[str, Any] = {}
    for task, cfg in params.tasks.items():
        entry: dict[str, Any] = {"target_val_loss": cfg.target_val_loss, "schedules": {}}
        for schedule in _schedules(params):
            runs = []
            for seed, r in zip(cfg.seeds, results[task][schedule]):
                m = _read(root / "metrics" / task / schedule / f"{seed}.json")
                epochs, seconds = time_to_target(r["val_loss"], r["elapsed"], cfg.target_val_loss)
                runs.append({**m, "epochs_to_target": epochs, "seconds_to_target": seconds})
            entry["metric"] = runs[0]["metric"]
            entry["higher_is_better"] = runs[0]["metric"] != "wer"
            entry["schedules"][schedule] = _aggregate(runs)
        entry["ablations"] = {a: entry["schedules"].pop(a) for a in params.ablations}
        scheds = entry["schedules"]
        if BASELINE in scheds:
            for v in [*scheds.values(), *entry["ablations"].values()]:
                v["relative_to_fixed"] = {k: _ratio(v[k]["mean"], scheds[BASELINE][k]["mean"]) for k in RELATIVE_FIELDS}
        if OURS in scheds:
            ours = {s: v["test_metric"] for s, v in scheds[OURS]["per_seed"].items()}
            entry[f"{OURS}_vs"] = {
                other: {"test_metric": paired(ours, {s: v["test_metric"] for s, v in runs["per_seed"].items()}, entry["higher_is_better"])}
                for other, runs in [*scheds.items(), *entry["ablations"].items()] if other != OURS
            }
            entry["aims"] = aims(entry)
        out[task] = entry
    return out


def aims(entry: dict) -> dict[str, Any]:
    """Where ours stands against issue 3's two aims on one task.

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
    full = {s: v["epochs_to_target"]["mean"] for s, v in scheds.items() if v["epochs_to_target"]["reached"] == v["seeds"]}
    others = {s: e for s, e in full.items() if s != OURS}
    fastest = min(others, key=others.get) if others else None
    ratio = _ratio(full.get(OURS), others[fastest]) if fastest else None
    return {
        "rank": rank, "of": len(order), "first": rank == 1,
        "best_other": next((s for s in order if s != OURS), None),
        "fastest_other_to_target": fastest, "epochs_ratio": ratio, "epochs_aim_met": ratio is not None and ratio <= EPOCHS_AIM,
    }


# ----------------------------------------------------------------------------- markdown


def _fmt(ms: dict, digits: int = 3) -> str:
    if ms["mean"] is None:
        return "-"
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _diverged(v: dict) -> str:
    """How many seeds of a schedule diverged, and at which epochs."""
    epochs = [str(r["diverged_epoch"]) for r in v["per_seed"].values() if r["diverged_epoch"] is not None]
    return f"{len(epochs)} (epoch {', '.join(epochs)})" if epochs else "0"


def _best(entry: dict) -> str | None:
    means = {s: v["test_metric"]["mean"] for s, v in entry["schedules"].items() if v["test_metric"]["mean"] is not None}
    return (max if entry["higher_is_better"] else min)(means, key=means.get) if means else None


def headline(comparison: dict) -> str:
    """One table: test metric (mean ± std) of every schedule on every task, the best in bold."""
    from tabulate import tabulate

    tasks = list(comparison)
    best = {t: _best(comparison[t]) for t in tasks}
    schedules = list(dict.fromkeys(s for t in tasks for s in comparison[t]["schedules"]))
    rows = []
    for s in schedules:
        row = [s]
        for t in tasks:
            v = comparison[t]["schedules"].get(s)
            cell = _fmt(v["test_metric"]) if v else "-"
            row.append(f"**{cell}**" if s == best[t] else cell)
        rows.append(row)
    headers = ["schedule"] + [f"{t} test {comparison[t]['metric']} ({'↑' if comparison[t]['higher_is_better'] else '↓'})" for t in tasks]
    return tabulate(rows, headers=headers, tablefmt="github")


def to_markdown(comparison: dict) -> str:
    """Readable tables per task: quality and convergence, overhead, and the paired verdicts."""
    from tabulate import tabulate

    lines = [
        "# Comparison of learning-rate schedules", "",
        "Mean ± std over seeds. Test metric on the held-out test split; convergence measured on the",
        "validation split against each task's pre-set `target_val_loss` (runs that never reach it are",
        "counted in *reached*, not averaged as their last epoch). Overhead ratios are mean / mean of `fixed`.",
        "", "## Headline: test metric", "", headline(comparison),
    ]
    for task, entry in comparison.items():
        metric, hib, best = entry["metric"], entry["higher_is_better"], _best(entry)
        rows = []
        for s, v in entry["schedules"].items():
            tm = _fmt(v["test_metric"])
            rows.append([
                f"**{s}**" if s == best else s,
                f"**{tm}**" if s == best else tm,
                _fmt(v["test_loss"]),
                f"{_fmt(v['best_val_loss'])} @ {_num(v['best_epoch']['mean'], '{:.1f}')}",
                f"{_fmt(v['epochs_to_target'], 1)} ({v['epochs_to_target']['reached']}/{v['seeds']})",
                _fmt(v["seconds_to_target"], 1),
                _diverged(v),
            ])
        lines += ["", f"## {task} (test {metric}, {'higher' if hib else 'lower'} is better; target val loss {entry['target_val_loss']})", ""]
        lines.append(tabulate(rows, headers=["schedule", f"test {metric}", "test loss", "best val loss @ epoch", "epochs to target (reached)", "seconds to target", "diverged"], tablefmt="github"))

        gpu = any(v["gpu_peak_mb"]["mean"] is not None for v in entry["schedules"].values())
        rows = []
        for s, v in entry["schedules"].items():
            rel = v.get("relative_to_fixed", {})
            row = [
                s, _fmt(v["train_seconds"], 1), _num(rel.get("train_seconds"), "{:.2f}x"), _fmt(v["seconds_per_epoch"], 2),
                _num(v["val_share"], "{:.1%}"), _num(v["probe_cost"], "{:.1%}"), _num(v["sched_share"], "{:.2%}"),
                _num(v["cpu_util"]["mean"]), _num(v["peak_rss_mb"]["mean"], "{:.0f}"), _num(rel.get("peak_rss_mb"), "{:.2f}x"),
            ]
            if gpu:
                row += [_num(v["gpu_peak_mb"]["mean"], "{:.0f}"), _num(v["gpu_util"]["mean"], "{:.0f}%")]
            rows.append(row)
        headers = ["schedule", "train s", "x fixed", "s / epoch", "validation", "probes / optim", "scheduler", "CPU (cores)", "peak RSS MiB", "x fixed"]
        if gpu:
            headers += ["GPU peak MiB", "GPU util"]
        lines += ["", f"Overhead on {task} (validation and scheduler: share of training time; probes: in-epoch probe seconds per optimisation second):", ""]
        lines.append(tabulate(rows, headers=headers, tablefmt="github"))

        if f"{OURS}_vs" in entry:
            rows = [
                [f"{OURS} vs {other}", p["n"], _num(p["diff"], "{:+.3f}"),
                 "-" if p["ci"][0] is None else f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]", _num(p["p_value"], "{:.3f}"), p["verdict"]]
                for other, v in entry[f"{OURS}_vs"].items() for p in [v["test_metric"]]
            ]
            lines += ["", f"Paired over seeds, test {metric} ({OURS} − other; {CONFIDENCE:.0%} t interval, paired t-test):", ""]
            lines.append(tabulate(rows, headers=["pair", "seeds", "diff", "95% CI", "p", "verdict"], tablefmt="github", disable_numparse=True))
        if entry.get("ablations"):
            vs = entry.get(f"{OURS}_vs", {})
            rows = [
                [a, _fmt(v["test_metric"]), f"{_fmt(v['epochs_to_target'], 1)} ({v['epochs_to_target']['reached']}/{v['seeds']})",
                 _fmt(v["best_val_loss"]), _diverged(v),
                 _num(vs.get(a, {}).get("test_metric", {}).get("diff"), "{:+.3f}"), vs.get(a, {}).get("test_metric", {}).get("verdict", "-")]
                for a, v in [(OURS, entry["schedules"][OURS]), *entry["ablations"].items()]
            ]
            lines += ["", f"Ablations on {task}: {OURS} with one part switched off ({OURS} − ablation, paired):", ""]
            lines.append(tabulate(rows, headers=["variant", f"test {metric}", "epochs to target (reached)", "best val loss", "diverged", "diff", "verdict"], tablefmt="github", disable_numparse=True))
        if "aims" in entry:
            a = entry["aims"]
            ratio = f"not measurable (not every seed of {OURS} reached the target)" if a["epochs_ratio"] is None else f"{a['epochs_ratio']:.2f}x ({a['fastest_other_to_target']})"
            place = f"is {a['rank']} of {a['of']}" if a["rank"] is not None else "has no test metric (every seed diverged)"
            lines += ["", f"Aims on {task}: {OURS} {place} on test {metric} (best other: {a['best_other']}); epochs to target vs the fastest other schedule: {ratio}. Aims: first, and ≤ {EPOCHS_AIM}x."]
        lines += ["", f"![validation loss, {task}](../plots/val_loss_{task}.png)", f"![learning rate, {task}](../plots/lr_{task}.png)"]
    lines += ["", "![time to target](../plots/time_to_target.png)", "![overhead](../plots/overhead.png)"]
    if any(entry.get("ablations") for entry in comparison.values()):
        lines.append("![ablations](../plots/ablations.png)")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots


def pyplot():
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


def plot(comparison: dict, results: dict, root: Path) -> list[Path]:
    """PNGs in plots/: per task validation loss (vs epoch and vs seconds) and LR; time to target; overhead.

    ``results`` is :func:`load_results`' output (the per-epoch curves).
    """
    plt = pyplot()
    import matplotlib.ticker

    paths = []
    for task, entry in comparison.items():
        # the schedules only: the ablations have their own plot (plots/ablations.png)
        curves = {s: runs for s, runs in results[task].items() if s in entry["schedules"]}
        n_seeds = len(next(iter(curves.values())))
        fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110, sharey=True)
        for s, runs in curves.items():
            mean, lo, hi = _nanstats(_stack([r["val_loss"] for r in runs]))
            seconds, _, _ = _nanstats(_stack([r["elapsed"] for r in runs]))
            x = np.arange(1, len(mean) + 1)
            (line,) = by_epoch.plot(x, mean, label=s, **_style(s))
            by_epoch.fill_between(x, lo, hi, alpha=0.08, color=line.get_color())
            by_time.plot(seconds, mean, label=s, **_style(s))
            by_time.fill_between(seconds, lo, hi, alpha=0.08, color=line.get_color())
        for ax, xlabel in ((by_epoch, "epoch"), (by_time, "wall seconds since the start of training (mean over seeds)")):
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
        for s, runs in curves.items():
            style = {**_style(s), "alpha": 0.8}
            for i, r in enumerate(runs):
                # every LR the schedule set, at its position in epochs (0 = start), held until the next
                trace = r.get("lr_trace") or [[e, v] for e, v in enumerate(r["lr"])]
                x, y = [p[0] for p in trace] + [len(r["val_loss"])], [p[1] for p in trace] + [trace[-1][1]]
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
    paths.append(_plot_time_to_target(comparison, root))
    paths.append(_plot_overhead(comparison, root))
    if all(entry.get("ablations") and OURS in entry["schedules"] for entry in comparison.values()):
        paths.append(_plot_ablations(comparison, root))
    return paths


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
        colors = ["black" if n == OURS else f"C{i}" for i, n in enumerate(names)]
        ax.barh(y, [m or 0 for _, m, _, _ in rows], xerr=[sd or 0 for _, _, sd, _ in rows], color=colors, alpha=0.8, ecolor="grey", capsize=3)
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
            out.append((s, t["mean"], t["std"], f" {t['reached']}/{v['seeds']} reached" if t["mean"] is not None else " never reached"))
        return out

    return _barh_panels(
        comparison, bars, "seconds to target (mean ± std of runs that reached it)",
        lambda task, entry: f"{task}: target {entry['target_val_loss']}", root / "plots" / "time_to_target.png",
    )


def _plot_ablations(comparison: dict, root: Path) -> Path:
    def bars(entry):
        variants = {OURS: entry["schedules"][OURS], **entry["ablations"]}
        return [(a, v["test_metric"]["mean"], v["test_metric"]["std"], f" {_num(v['test_metric']['mean'], '{:.3f}')}") for a, v in variants.items()]

    return _barh_panels(
        comparison, bars, "test metric (mean ± std over seeds)",
        lambda task, entry: f"{task}: ablations, test {entry['metric']} ({'↑' if entry['higher_is_better'] else '↓'})",
        root / "plots" / "ablations.png",
    )


def _plot_overhead(comparison: dict, root: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(comparison), figsize=(5 * len(comparison), 4.2), dpi=110, squeeze=False)
    parts = (("optim_seconds", "optimisation"), ("val_seconds", "validation"), ("probe_seconds", "in-epoch probes"), ("sched_seconds", "scheduler logic"))
    for ax, (task, entry) in zip(axes[0], comparison.items()):
        names = list(entry["schedules"])
        y = np.arange(len(names))
        left = np.zeros(len(names))
        for i, (key, label) in enumerate(parts):
            per_epoch = np.array([
                (v[key]["mean"] or 0) / max(v["epochs_run"]["mean"] or 1, 1) for v in (entry["schedules"][s] for s in names)
            ])
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


def compare(params: Params, root: Path = Path(".")) -> dict:
    """Write metrics/comparison.json, metrics/comparison.md and the PNGs in plots/."""
    results = load_results(params, root)  # read once, for the statistics and for the curves
    comparison = collect(params, root, results)
    plot(comparison, results, root)
    md = to_markdown(comparison)
    atomic_write(root / "metrics" / "comparison.md", md)
    write_json(comparison, root / "metrics" / "comparison.json")
    print(md, flush=True)
    return comparison
