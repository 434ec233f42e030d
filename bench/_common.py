"""What the bench scripts share: the library of this tree, params, prepared data, tables.

Not a benchmark itself (the leading underscore keeps it out of ``bench/*.py`` listings).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the library of *this* tree, as the stage scripts do (an editable install could point elsewhere)
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from adaptive_lr.config import Params, TaskConfig, load_params  # noqa: E402
from adaptive_lr.tasks import get_task  # noqa: E402
from adaptive_lr.tasks.base import Task  # noqa: E402
from adaptive_lr.train import RunResult, train_one  # noqa: E402

# the study's tasks: those of params.yaml (the registry also holds families the study does not run)
TASKS = tuple(load_params(REPO / "params.yaml").tasks)


def add_common_args(parser: argparse.ArgumentParser, epochs: int, repeats: int) -> None:
    """The options every training bench takes (task, size of the run, repeats, threads, data)."""
    parser.add_argument("--task", choices=TASKS, default="vision", help="task of params.yaml (default: vision)")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs per run (default: {epochs})")
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"runs of each variant, interleaved (default: {repeats})"
    )
    parser.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="cap on train+val examples (tasks.<task>.data.n_train; default: params.yaml's value)",
    )
    parser.add_argument(
        "--n-test",
        type=int,
        default=None,
        help="test examples to prepare (unused by the bench; small = faster prepare)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default: params.yaml's)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default: 1, so a run beside other jobs is steadier)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="an already prepared data folder to use (e.g. data/vision, if it matches params.yaml); "
        "default: prepare into a temporary folder",
    )
    parser.add_argument(
        "--params", type=Path, default=REPO / "params.yaml", help="params file (default: the repository's)"
    )


def check_positive(parser: argparse.ArgumentParser, **values: int | None) -> None:
    """Stop with a usage error naming the option when a count is < 1."""
    for name, value in values.items():
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def task_config(args: argparse.Namespace) -> tuple[Params, TaskConfig]:
    """params.yaml's config of ``args.task`` with the bench's overrides laid on top.

    Patience is set past the epoch budget so no run stops early: every run does the same work.
    """
    params = load_params(args.params)
    cfg = params.tasks[args.task]
    data = dict(cfg.data)
    if args.n_train is not None:
        data["n_train"] = args.n_train
    if args.n_test is not None:
        data["n_test"] = args.n_test
    cfg = replace(
        cfg,
        epochs=args.epochs,
        patience=args.epochs + 1,
        data=data,
        batch_size=args.batch_size if args.batch_size is not None else cfg.batch_size,
    )
    return params, cfg


@contextlib.contextmanager
def prepared(task: Task, cfg: TaskConfig, data_dir: Path | None) -> Iterator[tuple[Path, Path, str]]:
    """(data folder, scratch folder, one line saying where the data came from).

    The scratch folder (temporary, removed afterwards) takes the runs' checkpoints and curves.
    Without ``data_dir`` the task is prepared there from ``cfg``, so a clean clone needs no `dvc repro`.
    """
    scratch = Path(tempfile.mkdtemp(prefix="adaptive_lr_bench."))
    try:
        if data_dir is not None:
            yield data_dir, scratch, f"data: {data_dir} (prepared before)"
        else:
            start = time.perf_counter()
            sizes = task.prepare(scratch / "data", cfg.data_seed)
            how = ", ".join(f"{k} {v}" for k, v in sizes.items())
            yield (
                scratch / "data",
                scratch,
                f"data: prepared {cfg.source} {task.name} ({how}) in {time.perf_counter() - start:.1f}s",
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def make_task(args: argparse.Namespace) -> tuple[Params, TaskConfig, Task]:
    """Threads set, params read, task built."""
    torch.set_num_threads(args.threads)
    params, cfg = task_config(args)
    return params, cfg, get_task(args.task, cfg)


def pipeline_run(
    task: Task,
    cfg: TaskConfig,
    schedule: str,
    knobs,
    seed: int,
    data_dir: Path,
    scratch: Path,
    i: int,
    resume: bool = True,
) -> tuple[RunResult, float]:
    """One ``train_one`` call as the train stage makes it (no log lines, no progress bar), and its wall seconds.

    Its checkpoint, curves and (with ``resume``) per-epoch resume state go to ``scratch``, numbered ``i``.
    """
    start = time.perf_counter()
    r = train_one(
        task,
        cfg,
        schedule,
        knobs,
        seed,
        data_dir,
        scratch / f"run{i}",
        scratch / f"live{i}",
        log=lambda s: None,
        resume_path=scratch / f"resume{i}.pt" if resume else None,
        progress=False,  # as the pipeline runs it
    )
    return r, time.perf_counter() - start


def epochs_wall(r: RunResult) -> float:
    """What a run's epochs cost in all: optimisation, validation, probes, the schedule's logic, resume writes."""
    return r.optim_seconds + r.val_seconds + r.probe_seconds + r.sched_seconds + r.checkpoint_seconds


def machine() -> str:
    """One line on where the numbers come from."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    return (
        f"machine: {platform.machine()} {os.cpu_count()} CPU(s), {cuda}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])
