"""Where one pipeline run's time goes, per task: process start, set-up, training, validation, resume states.

What it measures, for each task of params.yaml (default profile, one torch thread, as a grid worker
runs it): the start of a stage process (the interpreter, the lab's imports and the task's module;
libraries a model needs, such as transformers, are imported when it is first built: in ``setup``),
then one ``train_one`` call as the train stage makes
it (schedule ``fixed`` or ``--schedule``, the resume state written after every epoch) split into

* ``setup``: data loading, model and optimizer construction, dvclive, and writing the outputs
  (the call's wall time minus the parts below);
* ``train``: the optimisation steps, data loading included (``RunResult.optim_seconds``);
* ``val``: end-of-epoch validation; ``probes`` and ``sched``: in-epoch probes and schedule logic;
* ``resume``: writing the per-epoch resume states (``RunResult.checkpoint_seconds``);

and ``test``: loading the best checkpoint and evaluating it on the test split, as the train stage
does. ``run total`` is setup + train + val + probes + sched + resume + test; a stage pays the process
start once for all the runs it trains (a task's ~160 runs, in two worker processes).

Run: ``python bench/run_breakdown.py`` (every task, 1 repeat; about 1 min here); ``--tasks vision``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import REPO, TASKS, machine, pipeline_run, prepared, table

from adaptive_lr.config import load_params
from adaptive_lr.scheduler import load_changing_state
from adaptive_lr.tasks import get_task
from adaptive_lr.train import evaluate, resolve_device

PARTS = ("setup", "train", "val", "probes", "sched", "resume", "test")


def process_start(task: str, repeats: int) -> float:
    """Median seconds to start a stage process and import what the stage imports for ``task``."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'src')!r}); import torch; torch.set_num_threads(1); "
        "import adaptive_lr.pipeline, adaptive_lr.train, dvclive; "
        f"import adaptive_lr.tasks.{task}.task"
    )
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_run(task_name: str, params, schedule: str, data_dir: Path, scratch: Path, i: int) -> dict[str, float]:
    """One run as the train stage makes it, then its test evaluation (which the train stage makes right after)."""
    cfg = params.tasks[task_name]
    task = get_task(task_name, cfg)
    r, call = pipeline_run(task, cfg, schedule, params.schedules[schedule], 0, data_dir, scratch, i)
    parts = {
        "train": r.optim_seconds,
        "val": r.val_seconds,
        "probes": r.probe_seconds,
        "sched": r.sched_seconds,
        "resume": r.checkpoint_seconds,
    }
    parts["setup"] = call - sum(parts.values())
    start = time.perf_counter()
    model = task.build_model()
    load_changing_state(model, torch.load(scratch / f"run{i}" / "model.pt", weights_only=False)["model"])
    device = resolve_device(cfg.device)
    test = task.load(data_dir, "test")
    evaluate(task, model.to(device), task.batches(test, cfg.batch_size, False, torch.Generator()), device, cfg.amp)
    parts["test"] = time.perf_counter() - start
    parts["epochs"] = r.epochs_run
    return parts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks (default: all)")
    parser.add_argument("--schedule", default="fixed", help="schedule of params.yaml (default: fixed)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per task; medians (default: 1)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="params file")
    parser.add_argument("--epochs", type=int, default=None, help="epoch budget (default: params.yaml's)")
    parser.add_argument("--n-train", type=int, default=None, help="cap on train+val examples (default: params.yaml's)")
    parser.add_argument("--n-test", type=int, default=None, help="test examples (default: params.yaml's)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    params = load_params(args.params)
    for name, cfg in params.tasks.items():
        data = {**cfg.data, **{k: v for k, v in (("n_train", args.n_train), ("n_test", args.n_test)) if v}}
        params.tasks[name] = replace(cfg, epochs=args.epochs or cfg.epochs, data=data)
    if args.schedule not in params.schedules:
        parser.error(f"params.yaml has no schedules.{args.schedule}")
    torch.set_num_threads(1)
    print(f"run_breakdown: one run per task as the pipeline makes it (schedule {args.schedule}, 1 thread)")
    print(machine())
    rows = []
    for name in args.tasks:
        cfg = params.tasks[name]
        with prepared(get_task(name, cfg), cfg, None) as (data_dir, scratch, data_line):
            print(data_line)
            one_run(name, params, args.schedule, data_dir, scratch, -1)  # warm-up: first-call costs land nowhere
            runs = [one_run(name, params, args.schedule, data_dir, scratch, i) for i in range(args.repeats)]
        start = process_start(name, max(args.repeats, 3))
        med = {p: statistics.median(r[p] for r in runs) for p in PARTS}
        total = sum(med.values())
        rows.append(
            [
                name,
                f"{start:.2f}",
                int(runs[0]["epochs"]),
                *(f"{med[p]:.2f} ({100 * med[p] / total:.0f}%)" for p in PARTS),
                f"{total:.2f}",
            ]
        )
    print()
    print(table(["task", "process start s", "epochs", *(f"{p} s" for p in PARTS), "run total s"], rows))
    for row in rows:
        print(f"ratio train/run total ({row[0]}): {float(row[4].split()[0]) / float(row[-1]):.3f}x")


if __name__ == "__main__":
    main()
