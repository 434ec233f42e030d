"""What each DVC stage does, as functions the thin scripts in ``stages/`` call."""

from __future__ import annotations

import errno
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from adaptive_lr import distributed
from adaptive_lr.config import Params, ParamsError, TaskConfig, load_params
from adaptive_lr.errors import DataError
from adaptive_lr.files import write_json
from adaptive_lr.grid import mult_dir, runs_of, select_tuned
from adaptive_lr.records import EvalRecord, RunResult
from adaptive_lr.scheduler import load_changing_state
from adaptive_lr.tasks import get_task
from adaptive_lr.tasks.base import Task
from adaptive_lr.train import evaluate, resolve_device, train_one

DATA, RUNS, LIVE, METRICS, PLOTS = Path("data"), Path("runs"), Path("live"), Path("metrics"), Path("plots")
RESUME = ".resume"  # runs/.resume/<task>/<schedule>/<mult>x/seed<k>.pt: the state of a run (kept once finished)
GRID_FILE = "grid.json"  # live/<task>/<schedule>/grid.json: the cell's runs and its tuned multiplier


def log(msg: str) -> None:
    """Progress lines go to stdout, flushed, so `dvc repro` shows them as they happen."""
    print(msg, flush=True)


def _threads(cfg: TaskConfig) -> None:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)


def task_config(params: Params, task: str) -> TaskConfig:
    if task not in params.tasks:
        raise ParamsError(f"task {task!r}: not in params.yaml tasks ({', '.join(params.tasks)})")
    return params.tasks[task]


def cell_config(params: Params, task: str, schedule: str) -> TaskConfig:
    """The settings of one task x schedule cell (a schedule or an ablation), or ParamsError naming the bad name."""
    cfg = task_config(params, task)
    if schedule not in params.schedules:
        raise ParamsError(
            f"schedule {schedule!r}: not in params.yaml schedules or ablations ({', '.join(params.schedules)})"
        )
    return cfg


def producer(path: Path) -> str | None:
    """The DVC stage that writes ``path`` (relative to the repository root); None outside the pipeline's folders."""
    parts = Path(path).parts
    if len(parts) < 2 or parts[1].startswith("."):  # a stage's temporary or resume files: no stage's output
        return None
    if parts[0] == DATA.name:
        return f"prepare@{parts[1]}"
    if len(parts) >= 3 and parts[0] in (RUNS.name, LIVE.name, METRICS.name):
        # train@<task> writes every run's checkpoint (runs/), curves (live/) and test metrics (metrics/)
        return f"train@{parts[1]}"
    return None


def prepare(params: Params, task: str, root: Path = Path(".")) -> dict[str, int]:
    """Build ``data/<task>/`` in a temporary folder, then move it into place."""
    cfg = task_config(params, task)
    _threads(cfg)
    out = root / DATA / task
    start = time.perf_counter()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; prepare@{task} writes a folder there: move the file away")
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f".{task}.*"):  # what a killed run of this stage left
        shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{task}."))  # same disk: the rename is atomic
    try:
        sizes = get_task(task, cfg).prepare(tmp, cfg.data_seed)
        empty = [s for s, n in sizes.items() if n == 0]
        if empty:
            raise DataError(f"prepare@{task}: empty split(s) {empty}; check tasks.{task}.data")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(
        f"[prepare {task}] {cfg.source}: "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + f" ({time.perf_counter() - start:.1f}s)"
    )
    return sizes


@dataclass(frozen=True)
class RunJob:
    """One training run of a cell: the task's settings at one LR multiplier, one seed."""

    task: str
    schedule: str
    cfg: TaskConfig  # lr already times the multiplier
    knobs: Any
    multiplier: float
    seed: int
    root: Path

    @property
    def where(self) -> str:
        return f"{self.task}/{self.schedule}/{mult_dir(self.multiplier)}"

    @property
    def initial_lr(self) -> float:
        """The run's initial LR: the multiplier times the task's LR, or times the schedule's own (Prodigy's lr)."""
        own = getattr(self.knobs, "lr", None)
        return self.cfg.lr if own is None else float(own) * self.multiplier

    def dirs(self) -> RunPaths:
        return run_paths(self.root, self.task, self.schedule, self.multiplier, self.seed)


@dataclass(frozen=True)
class RunPaths:
    """Where one run's files go: checkpoint folder, dvclive folder, test metrics, resume state."""

    run: Path
    live: Path
    metrics: Path
    resume: Path


def run_paths(root: Path, task: str, schedule: str, multiplier: float, seed: int) -> RunPaths:
    """The files of run (``multiplier``, ``seed``) of cell ``task`` x ``schedule`` under ``root``."""
    rel = Path(task) / schedule / mult_dir(multiplier)
    return RunPaths(
        run=root / RUNS / rel / f"seed{seed}",
        live=root / LIVE / rel / f"seed{seed}",
        metrics=root / METRICS / rel / f"{seed}.json",
        resume=root / RUNS / RESUME / rel / f"seed{seed}.pt",
    )


def run_job(job: RunJob) -> tuple[RunResult, EvalRecord | None]:
    """Train one run (or rewrite the outputs of a finished one from its kept state: no training), then test it.

    The test split is read only here, after training, to evaluate the run's best checkpoint (the one
    chosen on validation) into metrics/<task>/<schedule>/<mult>x/<seed>.json; nothing that training
    or the choice of the tuned multiplier reads comes from it.
    """
    _threads(job.cfg)
    paths = job.dirs()
    if distributed.is_main():
        for d in (paths.run, paths.live):
            shutil.rmtree(d, ignore_errors=True)
        paths.metrics.unlink(missing_ok=True)
    task = get_task(job.task, job.cfg)
    result = train_one(
        task,
        job.cfg,
        job.schedule,
        job.knobs,
        job.seed,
        job.root / DATA / job.task,
        paths.run,
        paths.live,
        log,
        resume_path=paths.resume,
        multiplier=job.multiplier,
        progress=False,  # the stage's log is one printed line per epoch, in a terminal or not
    )
    if not distributed.is_main():
        return result, None
    return result, test_run(job, task, result)


def _start_worker(src: str) -> None:
    sys.path.insert(0, src)  # the library of this tree, as stages/*.py import it


class Workers:
    """``n`` processes that run a stage's jobs side by side (``n`` <= 1: this process runs them in order).

    A job is the same whichever process runs it (its own seeds, ``common.threads`` torch threads),
    so no result depends on ``n``. The processes are started once per stage, fresh (spawn), with the
    library of this tree on their path.
    """

    def __init__(self, n: int):
        self.n, self.pool = n, None

    def __enter__(self) -> Workers:
        if self.n > 1:
            src = str(Path(__file__).resolve().parents[1])
            self.pool = ProcessPoolExecutor(
                self.n, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(src,)
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def run(self, fn: Callable, jobs: list, done: Callable) -> None:
        """``done(job, fn(job))`` for every job, as each finishes; the first error stops the rest."""
        if self.pool is None:
            for job in jobs:
                done(job, fn(job))
            return
        futures = {self.pool.submit(fn, job): job for job in jobs}
        try:
            for future in as_completed(futures):
                done(futures[future], future.result())
        finally:
            for future in futures:
                future.cancel()


def train_jobs(workers: Workers, jobs: list[RunJob], tag: str) -> dict[tuple[str, float, int], RunResult]:
    """Train and test ``jobs`` with ``workers``; their training results by (schedule, multiplier, seed)."""
    out: dict[tuple[str, float, int], RunResult] = {}

    def done(job: RunJob, pair: tuple[RunResult, EvalRecord | None]) -> None:
        r, record = pair
        out[(job.schedule, job.multiplier, job.seed)] = r
        if record is not None:
            log(
                f"[train {job.where} seed {job.seed}] best val/loss {r.best_val_loss:.4f} at epoch {r.best_epoch}, "
                f"{r.epochs_run} epochs, {r.usage.get('wall_seconds', 0.0):.1f}s; test/{record.metric} "
                f"{_rounded(record.test_metric)} ({len(out)}/{len(jobs)} of {tag})"
            )

    workers.run(run_job, jobs, done)
    return out


def cell_multipliers(params: Params, schedule: str) -> tuple[float, ...]:
    """The multipliers a cell trains at: the grid's; an ablation of adaptive at ``grid.ablation_multipliers``."""
    return params.grid.ablation_multipliers if schedule in params.ablations else params.grid.multipliers


def cell_extra_seeds(params: Params, schedule: str) -> tuple[int, ...]:
    """The extra seeds of a cell (at 1x and at its tuned multiplier); an ablation runs ``common.seeds`` only."""
    return () if schedule in params.ablations else params.grid.extra_seeds


def base_lr(cfg: TaskConfig, knobs: Any) -> float:
    """The LR the multipliers multiply: the task's, or the schedule's own (Prodigy's lr 1.0)."""
    return float(getattr(knobs, "lr", cfg.lr))


def train_cells(
    params: Params, task: str, schedules: list[str], root: Path = Path(".")
) -> dict[str, dict[tuple[float, int], RunResult]]:
    """Train cells ``task`` x each of ``schedules`` over the grid, in one pool of ``grid.workers`` processes.

    Each run writes its best checkpoint under runs/, its curves under live/ and its test metrics under
    metrics/ (:func:`run_job`). Per cell: first ``common.seeds`` at every multiplier and ``grid.extra_seeds``
    at 1x (an ablation of adaptive: ``common.seeds`` at ``grid.ablation_multipliers`` only); then the tuned
    multiplier (lowest mean best validation loss over ``common.seeds``: :func:`grid.select_tuned`) gets
    ``grid.extra_seeds`` too.
    ``live/<task>/<schedule>/grid.json`` records the cell's runs and its tuned point. A finished run's
    state is kept under runs/.resume (outside the stage's outputs), so a re-run after adding a seed, a
    multiplier or a schedule, or after changing one schedule's knobs, trains only the new or changed runs
    and rewrites the others from their states. Under torchrun every rank runs this (the runs one after
    another); only rank 0 writes the outputs.
    """
    cfg = task_config(params, task)
    for schedule in schedules:
        cell_config(params, task, schedule)
    workers = params.grid.workers if cfg.nproc == 1 else 1

    def jobs(schedule: str, pairs) -> list[RunJob]:
        knobs = params.schedules[schedule]
        return [RunJob(task, schedule, replace(cfg, lr=cfg.lr * m), knobs, m, seed, root) for m, seed in pairs]

    mults = {s: cell_multipliers(params, s) for s in schedules}
    extra = {s: cell_extra_seeds(params, s) for s in schedules}
    first = [job for s in schedules for job in jobs(s, runs_of(mults[s], cfg.seeds, extra[s], None))]
    log(
        f"[train {task}] {len(first)} runs of {len(schedules)} schedule(s), then more seeds at each one's tuned "
        f"multiplier ({workers} worker(s))"
    )
    if distributed.is_main():  # every run writes its test metrics again; nothing else stays there
        for schedule in schedules:
            shutil.rmtree(root / METRICS / task / schedule, ignore_errors=True)
    tuned: dict[str, float] = {}
    with Workers(workers) as pool:
        done = train_jobs(pool, first, task)
        results = {s: {(m, seed): r for (name, m, seed), r in done.items() if name == s} for s in schedules}
        more = []
        for s in schedules:
            tuned[s] = select_tuned({m: [results[s][(m, seed)].best_val_loss for seed in cfg.seeds] for m in mults[s]})
            pairs = [pair for pair in runs_of(mults[s], cfg.seeds, extra[s], tuned[s]) if pair not in results[s]]
            log(f"[train {task}/{s}] tuned on validation: {mult_dir(tuned[s])}; {len(pairs)} more run(s) there")
            more += jobs(s, pairs)
        for (name, m, seed), r in train_jobs(pool, more, task).items():
            results[name][(m, seed)] = r
    distributed.world_from_env().barrier()
    if distributed.is_main():
        for s in schedules:
            runs = [[m, seed] for m, seed in results[s]]
            write_json(
                {
                    "base_lr": base_lr(cfg, params.schedules[s]),
                    "multipliers": list(mults[s]),
                    "tuned": tuned[s],
                    "runs": runs,
                },
                root / LIVE / task / s / GRID_FILE,
            )
            _remove_other_runs(root, task, s, {(mult_dir(m), f"seed{seed}") for m, seed in results[s]})
    return results


def _remove_other_runs(root: Path, task: str, schedule: str, keep: set[tuple[str, str]]) -> None:
    """Delete run folders of the cell that are not in the current grid (a multiplier or seed taken out)."""
    for top in (RUNS, LIVE):
        cell = root / top / task / schedule
        for d in cell.glob("*x/seed*"):
            if (d.parent.name, d.name) not in keep:
                shutil.rmtree(d, ignore_errors=True)


def train_cell(params: Params, task: str, schedule: str, root: Path = Path(".")) -> dict[tuple[float, int], RunResult]:
    """Train one task x schedule cell (:func:`train_cells`); its results by (multiplier, seed)."""
    return train_cells(params, task, [schedule], root)[schedule]


def train_task(params: Params, task: str, root: Path = Path(".")) -> dict[str, dict[tuple[float, int], RunResult]]:
    """The train stage of ``task``: every schedule and ablation of params.yaml (:func:`train_cells`).

    Cells of schedules no longer in params.yaml are removed from runs/, live/ and metrics/.
    """
    names = list(params.schedules)
    results = train_cells(params, task, names, root)
    if distributed.is_main():
        for top in (RUNS, LIVE, METRICS):
            for old in (root / top / task).glob("*"):
                if old.is_dir() and old.name not in names:
                    shutil.rmtree(old, ignore_errors=True)
    return results


def train_stage(params: Params, task: str, script: str) -> None:
    """The train stage of ``task``: :func:`train_task` in this process, or ``script`` through torchrun.

    With ``nproc`` > 1 and no torchrun around us yet, ``script`` (stages/train.py) is started
    again by ``torchrun --standalone --nproc_per_node=<nproc>`` with the same arguments; each of
    those processes then runs :func:`train_task`, every run as one DDP run of all the ranks.
    """
    cfg = task_config(params, task)
    if not distributed.needs_launch(cfg.nproc):
        try:
            train_task(params, task)
        finally:
            distributed.shutdown()  # leave the process group train_one joined (if any)
        return
    command = distributed.torchrun_command(cfg.nproc, [script, task])
    log(f"[train {task}] {cfg.nproc} processes: {' '.join(command)}")
    code = distributed.launch(cfg.nproc, [script, task])
    if code != 0:
        raise SystemExit(code)


def _rounded(value: float | None) -> float | None:
    return value if value is None else round(value, 4)


def test_run(job: RunJob, task: Task, train: RunResult) -> EvalRecord:
    """Test metrics of the run's best checkpoint (read back from its file), written to its metrics file."""
    paths = job.dirs()
    stage = producer(RUNS / job.task / job.schedule)
    test = task.load(job.root / DATA / job.task, "test")
    ckpt_path = paths.run / "model.pt"
    # diverged before any finite validation loss: no checkpoint, nothing to evaluate
    tested: dict = {"test_loss": None, "test_metric": None}
    if ckpt_path.exists():
        torch.manual_seed(job.seed)
        model = task.build_model()
        try:
            load_changing_state(model, torch.load(ckpt_path, weights_only=False)["model"])
        except Exception as exc:  # truncated or from another model size
            why = " ".join(str(exc).split())[:200]
            raise DataError(f"{ckpt_path}: unusable ({why}); run `dvc repro -f {stage}`") from exc
        device = resolve_device(job.cfg.device)
        model.to(device)
        batches = task.batches(test, job.cfg.batch_size, False, torch.Generator().manual_seed(0))
        ev = evaluate(task, model, batches, device, job.cfg.amp)
        tested = {
            "test_loss": ev.loss,
            "test_metric": ev.metric,
            "eval_seconds": ev.seconds,
            "eval_samples_per_s": ev.n_samples / max(ev.seconds, 1e-9),
            "test_samples": ev.n_samples,
        }
    record = EvalRecord.from_run(
        train,
        task=job.task,
        schedule=job.schedule,
        seed=job.seed,
        multiplier=job.multiplier,
        lr=job.initial_lr,
        metric=task.metric,
        **tested,
    )
    write_json(record.to_dict(), paths.metrics)
    return record


def run_stage(fn: Callable[[], object]) -> None:
    """Run a stage body; bad params or data stop with one readable line and exit code 2.

    A missing input file in the pipeline's folders (another stage's output) is bad data too:
    the line says which stage writes it. Any other failure to read or write a path (permissions, a
    file where a folder goes, a full disk) is one line naming the path and what to do.
    """
    params = Path("params.yaml")
    before = _fingerprint(params)
    try:
        fn()
        if _fingerprint(params) != before:
            raise ParamsError(
                f"params.yaml changed while {_stage_name()} ran; its outputs were made with the earlier values "
                "and DVC would record the new ones: run `dvc repro` again"
            )
    except (ParamsError, DataError) as exc:
        message = str(exc)
    except FileNotFoundError as exc:
        stage = producer(Path(exc.filename)) if exc.filename else None
        if stage is None:
            raise
        message = f"{exc.filename}: missing; run `dvc repro {stage}`"
    except OSError as exc:  # where a stage reads or writes: permissions, a file in a folder's place, a full disk
        if not exc.filename:
            raise
        message = f"{exc.filename}: {exc.strerror or exc}; {_os_hint(exc)}"
    else:
        return
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)  # one line, whatever the message holds
    sys.exit(2)


def _fingerprint(path: Path) -> bytes | None:
    """The bytes of ``path`` (None when it cannot be read): what a stage compares before and after its work."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def _stage_name() -> str:
    """``<script>@<args>`` as dvc.yaml names the stage running in this process (``train@vision``)."""
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "the stage"
    return f"{script}@{'-'.join(sys.argv[1:])}" if len(sys.argv) > 1 else script


def _os_hint(exc: OSError) -> str:
    """What to do about an OSError on a path, by its errno."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the stage cannot write there: check the folder's owner and permissions (or a read-only disk)"
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return "the disk is full (or a file-size or quota limit was hit): free space and run the stage again"
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        return "a file or folder is in the way of what the stage writes: move it away and run the stage again"
    return "fix the path and run the stage again"


def main_args(argv: list[str], names: tuple[str, ...], usage: str) -> list[str]:
    """Positional stage arguments, or a usage line and exit code 2."""
    if len(argv) != len(names):
        print(f"usage: {usage}", file=sys.stderr)
        sys.exit(2)
    return argv


__all__ = ["prepare", "train_task", "train_cells", "train_cell", "train_stage", "run_stage", "load_params", "main_args"]
