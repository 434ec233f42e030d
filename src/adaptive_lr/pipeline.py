"""What each DVC stage does, as functions the thin scripts in ``stages/`` call."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from adaptive_lr import distributed
from adaptive_lr.config import Params, ParamsError, TaskConfig, load_params
from adaptive_lr.errors import DataError
from adaptive_lr.files import remove_leftovers, write_json
from adaptive_lr.records import EvalRecord, RunResult
from adaptive_lr.tasks import get_task
from adaptive_lr.train import evaluate, resolve_device, train_one

DATA, RUNS, LIVE, METRICS, PLOTS = Path("data"), Path("runs"), Path("live"), Path("metrics"), Path("plots")
RESUME = ".resume"  # runs/.resume/<task>/<schedule>/seed<k>.pt: state of an unfinished train stage


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


def train_cell(params: Params, task: str, schedule: str, root: Path = Path(".")) -> list[dict]:
    """Train one task x schedule cell for every seed; checkpoints under runs/, curves under live/.

    Under torchrun every rank runs this; only rank 0 clears and writes the outputs.
    """
    cfg = cell_config(params, task, schedule)
    _threads(cfg)
    t = get_task(task, cfg)
    main = distributed.is_main()
    results = []
    # per-epoch resume states, outside the stage's outputs (DVC deletes those before re-running a stage);
    # kept until every seed of the cell is done, so a killed stage, run again, continues where it was
    resume_dir = root / RUNS / RESUME / task / schedule
    for seed in cfg.seeds:
        run_dir = root / RUNS / task / schedule / f"seed{seed}"
        live_dir = root / LIVE / task / schedule / f"seed{seed}"
        for d in (run_dir, live_dir) if main else ():
            shutil.rmtree(d, ignore_errors=True)
        r = train_one(
            t,
            cfg,
            schedule,
            params.schedules[schedule],
            seed,
            root / DATA / task,
            run_dir,
            live_dir,
            log,
            resume_path=resume_dir / f"seed{seed}.pt",
        )
        if main:
            log(
                f"[train {task}/{schedule} seed {seed}] best val/loss {r.best_val_loss:.4f} at epoch {r.best_epoch}, "
                f"{r.epochs_run} epochs, {r.usage['wall_seconds']:.1f}s"
            )
        results.append(r)
    distributed.world_from_env().barrier()  # every rank has saved its last state before rank 0 deletes them
    if main:
        shutil.rmtree(resume_dir, ignore_errors=True)
    return results


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


def evaluate_cell(params: Params, task: str, schedule: str, root: Path = Path(".")) -> list[EvalRecord]:
    """Test-split metrics of each seed's best checkpoint into metrics/<task>/<schedule>/<seed>.json."""
    cfg = cell_config(params, task, schedule)
    _threads(cfg)
    t = get_task(task, cfg)
    device = resolve_device(cfg.device)
    test = t.load(root / DATA / task, "test")
    stage = producer(RUNS / task / schedule)
    remove_leftovers(root / METRICS / task / schedule)
    out = []
    for seed in cfg.seeds:
        ckpt_path = root / RUNS / task / schedule / f"seed{seed}" / "model.pt"
        train = RunResult.from_json(root / LIVE / task / schedule / f"seed{seed}" / "result.json", stage)
        if train.best_epoch and not ckpt_path.exists():
            raise DataError(
                f"{ckpt_path}: missing (the run has a best epoch, {train.best_epoch}); run `dvc repro {stage}`"
            )
        # diverged before any finite validation loss: no checkpoint, nothing to evaluate
        tested: dict = {"test_loss": None, "test_metric": None}
        if ckpt_path.exists():
            torch.manual_seed(seed)
            model = t.build_model()
            try:
                model.load_state_dict(torch.load(ckpt_path, weights_only=False)["model"])
            except Exception as exc:  # truncated, foreign, or from another model size
                why = " ".join(str(exc).split())[:200]
                raise DataError(f"{ckpt_path}: unusable ({why}); run `dvc repro -f {stage}`") from exc
            model.to(device)
            ev = evaluate(
                t, model, t.batches(test, cfg.batch_size, False, torch.Generator().manual_seed(0)), device, cfg.amp
            )
            tested = {
                "test_loss": ev.loss,
                "test_metric": ev.metric,
                "eval_seconds": ev.seconds,
                "eval_samples_per_s": ev.n_samples / max(ev.seconds, 1e-9),
                "test_samples": ev.n_samples,
            }
        record = EvalRecord.from_run(train, task=task, schedule=schedule, seed=seed, metric=t.metric, **tested)
        write_json(record.to_dict(), root / METRICS / task / schedule / f"{seed}.json")
        m, loss = record.test_metric, record.test_loss
        log(
            f"[evaluate {task}/{schedule} seed {seed}] test/{t.metric} {m if m is None else round(m, 4)} "
            f"test/loss {loss if loss is None else round(loss, 4)}"
        )
        out.append(record)
    return out


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
