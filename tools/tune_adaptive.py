"""Choose AdaptiveLR's knobs on validation only: candidates over the initial-LR grid against the best tuned peer.

Every candidate (a JSON object of ``schedules.adaptive`` overrides; '{}' = params.yaml as it is) is
trained on every task, every multiplier of ``grid.multipliers`` and every seed given, with the default
profile's data and settings (``grid.workers`` processes, one thread each, as the train stage). Its score
per task and multiplier is log(mean best *validation* loss / the best tuned peer's), where the best tuned
peer's loss is the lowest mean best validation loss over ``common.seeds`` of any other schedule at any
multiplier, read from the committed study (``live/<task>/<schedule>/<m>x/seed<k>/result.json``). Two
scores per candidate: *worst*, the mean over tasks of the worst multiplier's log ratio (the shape of the
aim: close to the best tuned peer from every initial LR), and *mean*, the mean over tasks and
multipliers. 0 would match the best tuned peer everywhere. The test split is never read.

    python tools/tune_adaptive.py '{}' '{"factor": 0.5, "patience": 8}' --seeds 0 1

docs/ALGORITHM.md records the runs that chose the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from adaptive_lr.config import load_params
from adaptive_lr.grid import mult_dir
from adaptive_lr.pipeline import Workers, task_config
from adaptive_lr.schedules import ABLATED


def best_tuned_peer(params, task: str, root: Path = Path(".")) -> tuple[str, float, float]:
    """(schedule, multiplier, mean best validation loss) of the committed study's best tuned peer of adaptive."""
    best = ("", math.nan, math.inf)
    for name in params.schedules:
        if name == ABLATED or name in params.ablations:
            continue
        for m in params.grid.multipliers:
            losses = []
            for seed in task_config(params, task).seeds:
                path = root / "live" / task / name / mult_dir(m) / f"seed{seed}" / "result.json"
                if not path.exists():
                    raise SystemExit(f"error: {path} is missing: run `dvc repro` (or `dvc pull`) first")
                loss = json.loads(path.read_text())["best_val_loss"]
                losses.append(loss if loss is not None and math.isfinite(loss) else math.inf)
            mean = statistics.fmean(losses)
            if mean < best[2]:
                best = (name, m, mean)
    return best


def _train(job: tuple[str, dict, str, float, int]) -> tuple[str, str, float, int, float]:
    import torch

    from adaptive_lr.tasks import get_task
    from adaptive_lr.train import train_one

    text, over, task, m, seed = job
    params = load_params()
    cfg = task_config(params, task)
    torch.set_num_threads(max(cfg.threads, 1))
    cfg = replace(cfg, lr=cfg.lr * m)
    knobs = replace(params.schedules["adaptive"], **over)
    with tempfile.TemporaryDirectory() as tmp:
        r = train_one(
            get_task(task, cfg),
            cfg,
            "adaptive",
            knobs,
            seed,
            Path("data") / task,
            Path(tmp) / "run",
            Path(tmp) / "live",
            log=lambda s: None,
            multiplier=m,
            progress=False,
        )
    loss = r.best_val_loss if r.best_val_loss is not None and math.isfinite(r.best_val_loss) else math.inf
    print(f"{text} {task} {m:g}x seed {seed}: best val loss {loss:.4f}, val metric {r.best_val_metric:.4f}", flush=True)
    return text, task, m, seed, loss


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", nargs="+", help="JSON objects of schedules.adaptive overrides ('{}' = params.yaml)")
    ap.add_argument("--tasks", nargs="+", default=["vision", "text", "speech"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = ap.parse_args(argv)
    params = load_params()
    peers = {task: best_tuned_peer(params, task) for task in args.tasks}
    for task, (name, m, loss) in peers.items():
        print(f"{task}: best tuned peer {name} at {m:g}x, mean best val loss {loss:.4f}")
    mults = params.grid.multipliers
    jobs = [
        (text, json.loads(text), task, m, seed)
        for text in args.candidates
        for task in args.tasks
        for m in mults
        for seed in args.seeds
    ]
    done: list[tuple[str, str, float, int, float]] = []
    with Workers(params.grid.workers) as pool:  # the train stage's processes: one torch thread each
        pool.run(_train, jobs, lambda job, result: done.append(result))
    print(
        "\nmean best val loss per task at " + " / ".join(f"{m:g}x" for m in mults) + "; log(loss / best tuned peer's):"
    )
    print("| candidate | " + " | ".join(args.tasks) + " | worst | mean |")
    for text in args.candidates:
        cells, worst, logs = [], [], []
        for task in args.tasks:
            row, task_logs = [], []
            for m in mults:
                mean = statistics.fmean(r[4] for r in done if r[0] == text and r[1] == task and r[2] == m)
                task_logs.append(math.log(mean / peers[task][2]))
                row.append(f"{mean:.3f}")
            cells.append(" / ".join(row))
            worst.append(max(task_logs))
            logs += task_logs
        print(
            f"| `{text}` | "
            + " | ".join(cells)
            + f" | {statistics.fmean(worst):+.3f} | {statistics.fmean(logs):+.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
