"""The compare stage: aggregate every run over seeds into tables, JSON and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_lr.config import Params
from adaptive_lr.train import write_json

SCHEDULE_ORDER = ("fixed", "step", "cosine", "plateau", "greedy", "schedulefree", "adaptive")


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


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def collect(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """The comparison: one entry per task, one per schedule inside, aggregated over seeds."""
    out: dict[str, Any] = {}
    for task, cfg in params.tasks.items():
        entry: dict[str, Any] = {"target_val_loss": cfg.target_val_loss, "schedules": {}}
        for schedule in [s for s in SCHEDULE_ORDER if s in params.schedules] + [
            s for s in params.schedules if s not in SCHEDULE_ORDER
        ]:
            runs = []
            for seed in cfg.seeds:
                m = _read(root / "metrics" / task / schedule / f"{seed}.json")
                r = _read(root / "live" / task / schedule / f"seed{seed}" / "result.json")
                epochs, seconds = time_to_target(r["val_loss"], r["elapsed"], cfg.target_val_loss)
                runs.append({**m, "epochs_to_target": epochs, "seconds_to_target": seconds, "curve": r})
            entry["metric"] = runs[0]["metric"]
            entry["higher_is_better"] = runs[0]["metric"] != "wer"
            reached = sum(r["epochs_to_target"] is not None for r in runs)
            entry["schedules"][schedule] = {
                "seeds": len(runs),
                "test_metric": mean_std([r["test_metric"] for r in runs]),
                "test_loss": mean_std([r["test_loss"] for r in runs]),
                "best_val_loss": mean_std([r["best_val_loss"] for r in runs]),
                "best_epoch": mean_std([r["best_epoch"] for r in runs]),
                "epochs_to_target": {**mean_std([r["epochs_to_target"] for r in runs]), "reached": reached},
                "seconds_to_target": {**mean_std([r["seconds_to_target"] for r in runs]), "reached": reached},
                "train_seconds": mean_std([r["train_seconds"] for r in runs]),
                "diverged": sum(r["diverged_epoch"] is not None for r in runs),
                "per_seed": {
                    str(r["seed"]): {k: r[k] for k in ("test_metric", "test_loss", "best_val_loss", "epochs_to_target", "seconds_to_target", "train_seconds", "diverged_epoch")}
                    for r in runs
                },
            }
        out[task] = entry
    return out


def _fmt(ms: dict, digits: int = 3) -> str:
    if ms["mean"] is None:
        return "-"
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def to_markdown(comparison: dict) -> str:
    """Readable tables: one per task, the best test metric in bold."""
    from tabulate import tabulate

    lines = ["# Comparison of learning-rate schedules", ""]
    lines.append("Mean ± std over seeds. Test metric on the held-out test split; convergence measured on the")
    lines.append("validation split against each task's pre-set `target_val_loss` (runs that never reach it are")
    lines.append("counted in *reached*, not averaged as their last epoch).")
    for task, entry in comparison.items():
        metric, hib = entry["metric"], entry["higher_is_better"]
        means = {s: v["test_metric"]["mean"] for s, v in entry["schedules"].items() if v["test_metric"]["mean"] is not None}
        best = (max if hib else min)(means, key=means.get) if means else None
        rows = []
        for s, v in entry["schedules"].items():
            tm = _fmt(v["test_metric"])
            rows.append([
                f"**{s}**" if s == best else s,
                f"**{tm}**" if s == best else tm,
                _fmt(v["test_loss"]),
                _fmt(v["best_val_loss"]),
                f"{_fmt(v['epochs_to_target'], 1)} ({v['epochs_to_target']['reached']}/{v['seeds']})",
                f"{_fmt(v['seconds_to_target'], 1)}",
                _fmt(v["train_seconds"], 1),
                v["diverged"],
            ])
        lines += ["", f"## {task} (test {metric}, {'higher' if hib else 'lower'} is better; target val loss {entry['target_val_loss']})", ""]
        lines.append(tabulate(rows, headers=["schedule", f"test {metric}", "test loss", "best val loss", "epochs to target (reached)", "seconds to target", "train s", "diverged"], tablefmt="github"))
        lines += ["", f"![validation loss, {task}](../plots/val_loss_{task}.png)"]
    return "\n".join(lines) + "\n"


def plot(comparison: dict, root: Path, params: Params) -> list[Path]:
    """One PNG per task: validation loss per epoch, mean over seeds with a min-max band, every schedule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    paths = []
    (root / "plots").mkdir(parents=True, exist_ok=True)
    for task, entry in comparison.items():
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
        for schedule in entry["schedules"]:
            curves = [
                _read(root / "live" / task / schedule / f"seed{seed}" / "result.json")["val_loss"]
                for seed in params.tasks[task].seeds
            ]
            n = max(len(c) for c in curves)
            arr = np.full((len(curves), n), np.nan)
            for i, c in enumerate(curves):
                arr[i, : len(c)] = [np.nan if v is None else v for v in c]
            x = np.arange(1, n + 1)
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean, lo, hi = np.nanmean(arr, 0), np.nanmin(arr, 0), np.nanmax(arr, 0)
            style = {"linewidth": 2.4, "color": "black"} if schedule == "adaptive" else {"linewidth": 1.4}
            (line,) = ax.plot(x, mean, label=schedule, **style)
            ax.fill_between(x, lo, hi, alpha=0.12, color=line.get_color())
        ax.axhline(entry["target_val_loss"], color="grey", linestyle=":", linewidth=1, label="target")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss")
        ax.set_title(f"{task}: validation loss (mean over seeds, band = min..max)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        path = root / "plots" / f"val_loss_{task}.png"
        tmp = path.with_name(f".{path.stem}.tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(path)
        paths.append(path)
    return paths


def compare(params: Params, root: Path = Path(".")) -> dict:
    """Write metrics/comparison.json, metrics/comparison.md and plots/val_loss_<task>.png."""
    comparison = collect(params, root)
    write_json(comparison, root / "metrics" / "comparison.json")
    md = root / "metrics" / "comparison.md"
    tmp = md.with_name(".comparison.md.tmp")
    tmp.write_text(to_markdown(comparison))
    tmp.replace(md)
    plot(comparison, root, params)
    print(to_markdown(comparison), flush=True)
    return comparison
