"""What each DVC stage does, as functions the thin scripts in ``stages/`` call."""

from __future__ import annotations

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
from adaptive_lr.grid import DEFAULT, mult_dir, runs_of, select_tuned
from adaptive_lr.records import EvalRecord, RunResult, read_json_object
from adaptive_lr.scheduler import load_changing_state
from adaptive_lr.tasks import get_task
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
    from adaptive_lr.schedules import REGISTRY

    parts = Path(path).parts
    if len(parts) < 2 or parts[1].startswith("."):  # a stage's temporary or resume files: no stage's output
        return None
    if parts[0] == DATA.name:
        return f"prepare@{parts[1]}"
    if len(parts) >= 3 and parts[0] in (RUNS.name, LIVE.name, METRICS.name):
        stage = "evaluate" if parts[0] == METRICS.name else "train"
        # the ablations of adaptive are cells of their own stages (dvc.yaml: train_ablation, evaluate_ablation)
        return f"{stage}{'' if parts[2] in REGISTRY else '_ablation'}@{parts[1]}-{parts[2]}"
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

    def dirs(self) -> tuple[Path, Path, Path]:
        """Checkpoint folder, dvclive folder, resume state of the run."""
        rel = Path(self.task) / self.schedule / mult_dir(self.multiplier)
        return (
            self.root / RUNS / rel / f"seed{self.seed}",
            self.root / LIVE / rel / f"seed{self.seed}",
            self.root / RUNS / RESUME / rel / f"seed{self.seed}.pt",
        )


def run_job(job: RunJob) -> RunResult:
    """Train one run (or rewrite the outputs of a finished one from its kept state: no training)."""
    _threads(job.cfg)
    run_dir, live_dir, resume_path = job.dirs()
    if distributed.is_main():
        for d in (run_dir, live_dir):
            shutil.rmtree(d, ignore_errors=True)
    return train_one(
        get_task(job.task, job.cfg),
        job.cfg,
        job.schedule,
        job.knobs,
        job.seed,
        job.root / DATA / job.task,
        run_dir,
        live_dir,
        log,
        resume_path=resume_path,
        multiplier=job.multiplier,
    )


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


def train_jobs(workers: Workers, jobs: list[RunJob], tag: str) -> dict[tuple[float, int], RunResult]:
    """Train ``jobs`` with ``workers``; their results by (multiplier, seed)."""
    out: dict[tuple[float, int], RunResult] = {}

    def done(job: RunJob, r: RunResult) -> None:
        out[(job.multiplier, job.seed)] = r
        if distributed.is_main():
            log(
                f"[train {job.where} seed {job.seed}] best val/loss {r.best_val_loss:.4f} at epoch {r.best_epoch}, "
                f"{r.epochs_run} epochs, {r.usage.get('wall_seconds', 0.0):.1f}s ({len(out)}/{len(jobs)} of {tag})"
            )

    workers.run(run_job, jobs, done)
    return out


def cell_multipliers(params: Params, schedule: str) -> tuple[float, ...]:
    """The multipliers a cell trains at: the grid's; an ablation of adaptive at 1x only."""
    return (DEFAULT,) if schedule in params.ablations else params.grid.multipliers


def cell_extra_seeds(params: Params, schedule: str) -> tuple[int, ...]:
    """The extra seeds of a cell (at 1x and at its tuned multiplier); an ablation runs ``common.seeds`` only."""
    return () if schedule in params.ablations else params.grid.extra_seeds


def base_lr(cfg: TaskConfig, knobs: Any) -> float:
    """The LR the multipliers multiply: the task's, or the schedule's own (Prodigy's lr 1.0)."""
    return float(getattr(knobs, "lr", cfg.lr))


def train_cell(params: Params, task: str, schedule: str, root: Path = Path(".")) -> dict[tuple[float, int], RunResult]:
    """Train one task x schedule cell over the grid; checkpoints under runs/, curves under live/.

    First ``common.seeds`` at every multiplier and ``grid.extra_seeds`` at 1x (an ablation of adaptive: 1x and
    ``common.seeds`` only); then the tuned
    multiplier (lowest mean best validation loss over ``common.seeds``: :func:`grid.select_tuned`)
    gets ``grid.extra_seeds`` too. ``live/<task>/<schedule>/grid.json`` records the runs and the tuned
    point. A finished run's state is kept under runs/.resume (outside the stage's outputs), so a
    re-run after adding a seed or a multiplier trains only the new runs and rewrites the others.
    Under torchrun every rank runs this (the runs one after another); only rank 0 writes the outputs.
    """
    cfg = cell_config(params, task, schedule)
    knobs = params.schedules[schedule]
    mults = cell_multipliers(params, schedule)
    workers = params.grid.workers if cfg.nproc == 1 else 1

    def jobs(pairs) -> list[RunJob]:
        return [RunJob(task, schedule, replace(cfg, lr=cfg.lr * m), knobs, m, seed, root) for m, seed in pairs]

    tag = f"{task}/{schedule}"
    extra = cell_extra_seeds(params, schedule)
    first = runs_of(mults, cfg.seeds, extra, None)
    log(f"[train {tag}] {len(first)} runs at {', '.join(map(mult_dir, mults))} ({workers} worker(s))")
    with Workers(workers) as pool:
        results = train_jobs(pool, jobs(first), tag)
        tuned = select_tuned({m: [results[(m, s)].best_val_loss for s in cfg.seeds] for m in mults})
        more = [pair for pair in runs_of(mults, cfg.seeds, extra, tuned) if pair not in results]
        log(f"[train {tag}] tuned on validation: {mult_dir(tuned)}; {len(more)} more run(s) there")
        results |= train_jobs(pool, jobs(more), tag)
    distributed.world_from_env().barrier()
    if distributed.is_main():
        runs = [[m, s] for m, s in results]
        write_json(
            {"base_lr": base_lr(cfg, knobs), "multipliers": list(mults), "tuned": tuned, "runs": runs},
            root / LIVE / task / schedule / GRID_FILE,
        )
        _remove_other_runs(root, task, schedule, {(mult_dir(m), f"seed{s}") for m, s in results})
    return results


def _remove_other_runs(root: Path, task: str, schedule: str, keep: set[tuple[str, str]]) -> None:
    """Delete run folders of the cell that are not in the current grid (a multiplier or seed taken out)."""
    for top in (RUNS, LIVE):
        cell = root / top / task / schedule
        for d in cell.glob("*x/seed*"):
            if (d.parent.name, d.name) not in keep:
                shutil.rmtree(d, ignore_errors=True)


def train_stage(params: Params, task: str, schedule: str, script: str) -> None:
    """The train stage: :func:`train_cell` in this process, or ``script`` through torchrun.

    With ``nproc`` > 1 and no torchrun around us yet, ``script`` (stages/train.py) is started
    again by ``torchrun --standalone --nproc_per_node=<nproc>`` with the same arguments; each of
    those processes then runs :func:`train_cell` as a rank of one DDP run.
    """
    cfg = task_config(params, task)
    if not distributed.needs_launch(cfg.nproc):
        try:
            train_cell(params, task, schedule)
        finally:
            distributed.shutdown()  # leave the process group train_one joined (if any)
        return
    command = distributed.torchrun_command(cfg.nproc, [script, task, schedule])
    log(f"[train {task}/{schedule}] {cfg.nproc} processes: {' '.join(command)}")
    code = distributed.launch(cfg.nproc, [script, task, schedule])
    if code != 0:
        raise SystemExit(code)


@dataclass(frozen=True)
class EvalJob:
    """The test evaluation of one run's best checkpoint."""

    task: str
    schedule: str
    cfg: TaskConfig
    multiplier: float
    seed: int
    lr: float  # the run's initial LR
    root: Path


def evaluate_run(job: EvalJob) -> EvalRecord:
    """Test metrics of one run's best checkpoint, written to metrics/<task>/<schedule>/<mult>x/<seed>.json."""
    _threads(job.cfg)
    t = get_task(job.task, job.cfg)
    device = resolve_device(job.cfg.device)
    stage = producer(RUNS / job.task / job.schedule)
    test = t.load(job.root / DATA / job.task, "test")  # read first: a bad test split is named even without a checkpoint
    rel = Path(job.task) / job.schedule / mult_dir(job.multiplier)
    ckpt_path = job.root / RUNS / rel / f"seed{job.seed}" / "model.pt"
    train = RunResult.from_json(job.root / LIVE / rel / f"seed{job.seed}" / "result.json", stage)
    if train.best_epoch and not ckpt_path.exists():
        raise DataError(f"{ckpt_path}: missing (the run has a best epoch, {train.best_epoch}); run `dvc repro {stage}`")
    # diverged before any finite validation loss: no checkpoint, nothing to evaluate
    tested: dict = {"test_loss": None, "test_metric": None}
    if ckpt_path.exists():
        torch.manual_seed(job.seed)
        model = t.build_model()
        try:
            load_changing_state(model, torch.load(ckpt_path, weights_only=False)["model"])
        except Exception as exc:  # truncated, foreign, or from another model size
            why = " ".join(str(exc).split())[:200]
            raise DataError(f"{ckpt_path}: unusable ({why}); run `dvc repro -f {stage}`") from exc
        model.to(device)
        batches = t.batches(test, job.cfg.batch_size, False, torch.Generator().manual_seed(0))
        ev = evaluate(t, model, batches, device, job.cfg.amp)
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
        lr=job.lr,
        metric=t.metric,
        **tested,
    )
    write_json(record.to_dict(), job.root / METRICS / rel / f"{job.seed}.json")
    return record


def evaluate_cell(params: Params, task: str, schedule: str, root: Path = Path(".")) -> list[EvalRecord]:
    """Test-split metrics of each run's best checkpoint into metrics/<task>/<schedule>/<mult>x/<seed>.json.

    The runs are the ones the train stage recorded in live/<task>/<schedule>/grid.json; ``grid.workers``
    processes evaluate them side by side.
    """
    cfg = cell_config(params, task, schedule)
    _threads(cfg)
    stage = producer(RUNS / task / schedule)
    path = root / LIVE / task / schedule / GRID_FILE
    cell = read_json_object(path, stage)
    try:
        runs = [(float(m), int(seed)) for m, seed in cell["runs"]]
        base = float(cell["base_lr"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a grid record ({exc}); run `dvc repro -f {stage}`") from exc
    shutil.rmtree(root / METRICS / task / schedule, ignore_errors=True)  # other runs' files, leftovers
    jobs = [EvalJob(task, schedule, cfg, m, seed, base * m, root) for m, seed in runs]
    out: dict[tuple[float, int], EvalRecord] = {}

    def done(job: EvalJob, record: EvalRecord) -> None:
        out[(job.multiplier, job.seed)] = record
        value, loss = record.test_metric, record.test_loss
        log(
            f"[evaluate {task}/{schedule}/{mult_dir(job.multiplier)} seed {job.seed}] test/{record.metric} "
            f"{value if value is None else round(value, 4)} test/loss {loss if loss is None else round(loss, 4)}"
        )

    with Workers(params.grid.workers if len(jobs) > 1 else 1) as pool:
        pool.run(evaluate_run, jobs, done)
    return [out[run] for run in runs]


def run_stage(fn: Callable[[], object]) -> None:
    """Run a stage body; bad params or data stop with one readable line and exit code 2.

    A missing input file in the pipeline's folders (another stage's output) is bad data too:
    the line says which stage writes it.
    """
    try:
        fn()
    except (ParamsError, DataError) as exc:
        message = str(exc)
    except FileNotFoundError as exc:
        stage = producer(Path(exc.filename)) if exc.filename else None
        if stage is None:
            raise
        message = f"{exc.filename}: missing; run `dvc repro {stage}`"
    else:
        return
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)  # one line, whatever the message holds
    sys.exit(2)


def main_args(argv: list[str], names: tuple[str, ...], usage: str) -> list[str]:
    """Positional stage arguments, or a usage line and exit code 2."""
    if len(argv) != len(names):
        print(f"usage: {usage}", file=sys.stderr)
        sys.exit(2)
    return argv


__all__ = ["prepare", "train_cell", "train_stage", "evaluate_cell", "run_stage", "load_params", "main_args"]
