"""The one training loop: any task, any schedule, one seed.

It never looks at the test split: early stopping, the best checkpoint and every
validation-driven schedule see the validation split only.
"""

from __future__ import annotations

import functools
import gc
import itertools
import math
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptive_lr import distributed, schedules
from adaptive_lr.config import ParamsError, TaskConfig
from adaptive_lr.distributed import NullLive
from adaptive_lr.files import save_torch, write_json
from adaptive_lr.records import RunResult
from adaptive_lr.resume import Checkpointer, rng_state, run_key, set_rng_state
from adaptive_lr.scheduler import BestState, changing_state, load_changing_state
from adaptive_lr.tasks.base import Task, to_device
from adaptive_lr.usage import UsageMeter, combine_usage

GPU_SAMPLE_EVERY = 25  # batches between GPU utilisation samples (CUDA only)
# The probe budget is counted in forward passes, not seconds, so the decisions (and the run) do not
# depend on the machine's timing: a training step costs about 3 forward passes of a batch (forward
# plus backward, which is about twice the forward), a probe one forward pass per probe batch.
TRAIN_STEP_FORWARDS = 3.0


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("common.device = 'cuda': torch sees no CUDA GPU here; use device: auto or cpu")
    return torch.device(name)


@functools.cache
def cpu_runs_bf16() -> bool:
    """Does this CPU run bf16 natively (oneDNN's check: AVX-512 BF16 or AMX, or at least AVX-512 BW/VL/DQ)?

    Without it (AVX2 machines) bf16 autocast is emulated: a text or speech run of the default
    profile took 6x and 2.7x as long with it as without (AMD EPYC, AVX2, torch 2.14).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast on a CPU that runs bf16 natively (:func:`cpu_runs_bf16`) and on CUDA GPUs that support
    it, fp16 on older CUDA GPUs; a no-op otherwise (``amp`` false, or a CPU that would only emulate bf16)."""
    if not amp or (device.type == "cpu" and not cpu_runs_bf16()):
        return nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


@dataclass
class Evaluation:
    """One pass over (part of) a split: mean loss, per-sample losses, the task metric and timing."""

    loss: float
    metric: float
    seconds: float
    losses: list = field(default_factory=list)  # per-sample, in batch order
    batch_sizes: list = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return len(self.losses)


def evaluate(
    task: Task,
    model: torch.nn.Module,
    batches,
    device: torch.device,
    amp: bool,
    world: distributed.World = distributed.SINGLE,
) -> Evaluation:
    """Mean loss and metric of ``model`` over ``batches`` (eval mode, no grad).

    Under torchrun ``batches`` is this rank's share (``world.shard``); the shares are gathered, so
    every rank returns the same evaluation, in the single-process order.
    """
    start = time.perf_counter()
    model.eval()
    world.broadcast_buffers(model)
    with torch.no_grad(), autocast_for(device, amp):
        outs = [task.evaluate_batch(model, to_device(batch, device)) for batch in batches]
    outs = world.gather_batches(outs)
    losses = [x for out in outs for x in out.losses]
    sizes = [out.count for out in outs]
    preds = [x for out in outs for x in out.predictions]
    refs = [x for out in outs for x in out.references]
    loss = math.fsum(losses) / max(len(losses), 1)
    return Evaluation(loss, task.score(preds, refs), time.perf_counter() - start, losses, sizes)


def probes_per_epoch(schedule: schedules.Schedule, steps_per_epoch: int, n_probe_batches: int) -> int:
    """In-epoch probes per epoch: as many as the schedule asks for, within its budget.

    ``n`` probes of ``k`` batches cost ``n * k`` forward passes against ``3 * steps`` for the epoch's
    training (:data:`TRAIN_STEP_FORWARDS`); the budget is ``probe_budget`` of the latter. The seconds
    they really take are measured (``probe_seconds``) and reported beside the budget.
    """
    if schedule.probes <= 0 or n_probe_batches <= 0:
        return 0
    affordable = math.floor(schedule.probe_budget * TRAIN_STEP_FORWARDS * steps_per_epoch / n_probe_batches + 1e-9)
    return max(0, min(schedule.probes, affordable, steps_per_epoch - 1))


@dataclass(frozen=True)
class ProbePlan:
    """The in-epoch validation probes of a run: how many per epoch, after which batches, on which samples.

    The probe is the first ``n_batches`` validation batches, always the same samples (a paired comparison).
    """

    n_batches: int
    per_epoch: int
    after: frozenset[int]  # batch counts of an epoch after which a probe runs
    batches: list

    @classmethod
    def of(cls, schedule: schedules.Schedule, steps_per_epoch: int, val_batches) -> ProbePlan:
        n_batches = schedule.probe_batches(len(val_batches))
        per_epoch = probes_per_epoch(schedule, steps_per_epoch, n_batches)
        batches = list(itertools.islice(iter(val_batches), n_batches)) if per_epoch > 0 else []
        after = frozenset(round(j * steps_per_epoch / (per_epoch + 1)) for j in range(1, per_epoch + 1))
        return cls(n_batches, per_epoch, after, batches)

    def due(self, epoch: int, batches_done: int) -> bool:
        """No probes in the first epoch: its validation loss is a transient (fresh weights, BatchNorm
        statistics settling), and the first reference should come after it, at the epoch's end."""
        return epoch > 1 and batches_done in self.after

    def samples_in(self, val: Evaluation) -> list[float]:
        """The probe's per-sample losses inside a full validation pass (it holds the first batches)."""
        return val.losses[: sum(val.batch_sizes[: self.n_batches])]


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an open terminal (a pipe, a file or a closed stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def progress_bar(batches: Sized, label: str | None):
    """A context giving ``batches`` to iterate, behind a tqdm bar on stderr labelled ``label`` (None: no bar).

    The bar only wraps the iteration: the same batches in the same order, no random draw; it is
    cleared when the epoch ends (or breaks off), so the epoch's printed line follows on a clean line.
    """
    if label is None:
        return nullcontext(batches)
    from tqdm import tqdm

    return tqdm(batches, desc=label, total=len(batches), file=sys.stderr, leave=False, unit="batch", dynamic_ncols=True)


class Timers:
    """Seconds spent in the named parts of one epoch: ``with timers("sched"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - start


@dataclass
class RunState:
    """Everything a run carries from one epoch to the next, saved and restored as one (resume).

    ``result.epochs_run`` is the epoch it has finished; ``rows`` what dvclive logged at each epoch
    (a resumed run logs them again); ``usage`` the machine cost of the part before a resume.
    """

    model: torch.nn.Module
    schedule: schedules.Schedule
    best: BestState
    result: RunResult
    generators: tuple[torch.Generator, ...]
    rows: list[dict[str, float]] = field(default_factory=list)
    done: bool = False
    usage: dict = field(default_factory=dict)

    def epochs_left(self, epochs: int) -> range:
        return range(self.result.epochs_run + 1, epochs + 1) if not self.done else range(0)

    def note_lr(self, position: float) -> None:
        """Record the schedule's LR at ``position`` (in epochs) when it changed."""
        if not self.result.lr_trace or self.result.lr_trace[-1][1] != self.schedule.lr:
            self.result.lr_trace.append([round(position, 4), self.schedule.lr])

    def state_dict(self, done: bool, usage: dict) -> dict:
        if done:  # a finished run only rewrites its outputs (write_outputs): its best state and its record
            best = {"model": self.best.state["model"]} if self.best.state is not None else None
            return {
                "done": True,
                "best_loss": self.best.loss,
                "best_state": best,
                "result": asdict(self.result),
                "rows": self.rows,
                "usage": usage,
            }
        return {
            "done": done,
            "model": changing_state(self.model),
            "schedule": self.schedule.state_dict(),
            "best_loss": self.best.loss,
            "best_state": self.best.state,
            "result": asdict(self.result),
            "rows": self.rows,
            "usage": usage,
            "rng": rng_state(*self.generators),
        }

    def load_state_dict(self, state: dict) -> None:
        self.best.loss, self.best.state = state["best_loss"], state["best_state"]
        self.result = RunResult(**state["result"])
        self.rows, self.done, self.usage = state["rows"], state["done"], state["usage"]
        if not self.done:
            load_changing_state(self.model, state["model"])
            self.schedule.load_state_dict(state["schedule"])
            set_rng_state(state["rng"], *self.generators)


class Run:
    """The fixed parts of one run (task, settings, data, devices, probe plan) and its epoch of training."""

    def __init__(
        self,
        task: Task,
        cfg: TaskConfig,
        schedule_name: str,
        knobs: Any,
        seed: int,
        data_dir: Path,
        world: distributed.World,
        multiplier: float = 1.0,
    ):
        self.task, self.cfg, self.world = task, cfg, world
        generator = seed_everything(seed)
        val_generator = torch.Generator().manual_seed(seed)
        train_set, val_set = task.load(data_dir, "train"), task.load(data_dir, "val")
        self.train_set = train_set
        self.train_batches = world.shard(task.batches(train_set, cfg.batch_size, True, generator), train=True)
        self.val_batches = world.shard(task.batches(val_set, cfg.batch_size, False, val_generator), train=False)
        model = task.build_model().to(world.device)
        self.train_model = world.wrap(model, seed)  # DDP under torchrun; evaluation uses the model itself
        self.steps_per_epoch = len(self.train_batches)
        ctx = schedules.Context(cfg.lr, cfg.weight_decay, cfg.epochs, self.steps_per_epoch, multiplier=multiplier)
        schedule = schedules.build(knobs, model.parameters(), ctx)
        best = BestState(model, schedule.optimizer)
        schedule.bind_rollback(best.restore)
        self.plan = ProbePlan.of(schedule, self.steps_per_epoch, self.val_batches)
        result = RunResult(task.name, schedule_name, seed)
        self.state = RunState(model, schedule, best, result, (generator, val_generator))

    def resume_or_start(self, saved: dict | None, log: Callable[[str], None], tag: str) -> None:
        """Continue from a saved state of this run, or start at epoch 1 (the initial LR on the trace)."""
        s = self.state
        if saved is not None:
            s.load_state_dict(saved)
            finished = " (finished: rewriting its outputs)" if s.done else ""
            log(f"{tag} resumed after epoch {s.result.epochs_run}{finished}")
        else:
            s.note_lr(0.0)
        if self.plan.per_epoch and not s.done:
            log(
                f"{tag} {self.plan.per_epoch} validation probe(s) per epoch from epoch 2, "
                f"on {self.plan.n_batches} of {len(self.val_batches)} validation batches"
            )

    def describe(self, row: dict[str, float], timers: Timers) -> str:
        """The epoch's progress line: losses, metric, the LR it ran at -> the LR for the next, seconds."""
        losses = " ".join(f"{k} {row[k]:.4f}" for k in list(row)[:3])
        return f"{losses} lr {row['lr']:.2e}->{self.state.schedule.lr:.2e} {sum(timers.seconds.values()):.1f}s"

    def recalibrate(self) -> None:
        """BatchNorm statistics recomputed for the weights about to be evaluated, where the schedule needs it
        (Schedule-Free's averaged weights); the training batches in a fixed order, drawn from no run generator."""
        s, device = self.state, self.world.device
        if s.schedule.needs_recalibration(s.model):
            fixed = self.task.batches(self.train_set, self.cfg.batch_size, False, torch.Generator().manual_seed(0))
            with autocast_for(device, self.cfg.amp):
                s.schedule.recalibrate(
                    s.model, (lambda b=b: self.task.loss(s.model, to_device(b, device)) for b in fixed)
                )

    def evaluate(self, batches) -> Evaluation:
        return evaluate(self.task, self.state.model, batches, self.world.device, self.cfg.amp, self.world)

    def train_epoch(self, epoch: int, timers: Timers, meter: UsageMeter, bar: str | None = None) -> tuple[float, bool]:
        """One epoch of optimisation steps with the in-epoch probes; the mean training loss, and
        whether every loss was finite (one rank's non-finite loss stops every rank). With ``bar``, a
        progress bar of that label over the epoch's batches (:func:`progress_bar`; its own small
        cost counts as optimisation time)."""
        with progress_bar(self.train_batches, bar) as batches:
            return self._train_batches(batches, epoch, timers, meter)

    def _train_batches(self, batches, epoch: int, timers: Timers, meter: UsageMeter) -> tuple[float, bool]:
        s, task, cfg, device = self.state, self.task, self.cfg, self.world.device
        s.model.train()
        s.schedule.train_mode()
        loss_sum, n_batches, finite = 0.0, 0, True
        for batch in batches:
            batch = to_device(batch, device)
            with autocast_for(device, cfg.amp):
                loss = task.loss(self.train_model, batch)
            if not self.world.all_true(torch.isfinite(loss)):
                finite = False
                break
            s.schedule.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.grad_clip)
            s.schedule.optimizer.step()
            loss_sum += float(loss.detach())  # syncs with the device, so the timings are real
            n_batches += 1
            with timers("sched"):
                s.schedule.after_batch()
            if n_batches % GPU_SAMPLE_EVERY == 0:
                meter.sample()
            if self.plan.due(epoch, n_batches):
                with timers("probe"):
                    s.schedule.eval_mode()
                    self.recalibrate()
                    probe = self.evaluate(self.plan.batches)
                    s.model.train()
                    s.schedule.train_mode()
                s.result.probes += 1
                with timers("sched"):
                    s.schedule.after_probe(probe.losses)
                s.note_lr(epoch - 1 + n_batches / self.steps_per_epoch)
        return self.world.mean(loss_sum) / max(n_batches, 1), finite  # of the ranks' shares: whole batches

    def end_epoch(self, epoch: int, val: Evaluation | None, timers: Timers) -> None:
        """Keep the best state, step the schedule on the validation, and add the epoch's seconds."""
        s = self.state
        val_loss = val.loss if val is not None else math.nan
        if s.best.update(val_loss):
            s.result.best_val_loss, s.result.best_val_metric, s.result.best_epoch = val_loss, val.metric, epoch
        with timers("sched"):
            s.schedule.after_validation(val_loss, self.plan.samples_in(val) if val is not None else None)
        s.note_lr(epoch)
        for part in ("optim", "val", "probe", "sched"):
            setattr(s.result, f"{part}_seconds", getattr(s.result, f"{part}_seconds") + timers.seconds[part])

    def record_epoch(
        self, train_loss: float, val: Evaluation | None, lr: float, timers: Timers, elapsed: float
    ) -> dict[str, float]:
        """The epoch's curves into the result, and the row dvclive logs for it (kept for a resumed run)."""
        s, t = self.state, timers.seconds
        val_loss = val.loss if val is not None else math.nan
        s.result.val_loss.append(val_loss)
        s.result.elapsed.append(elapsed)
        s.result.lr.append(lr)
        s.rows.append(
            {
                "train/loss": train_loss,
                "val/loss": val_loss,
                f"val/{self.task.metric}": val.metric if val is not None else math.nan,
                "lr": lr,
                "time/train_s": t["optim"],
                "time/val_s": t["val"],
                "time/probe_s": t["probe"],
                "time/sched_s": t["sched"],
                "time/elapsed_s": elapsed,
            }
        )
        return s.rows[-1]


def open_live(live_dir: Path) -> Any:
    """A ``dvclive.Live`` logging one run into ``live_dir``; several processes may end theirs at once.

    ``Live.end()`` finishes by removing the repository's ``.dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED``
    (a signal for DVC's VS Code extension) if it exists, a check and a remove that race when two
    workers of one stage end runs at the same moment: the second remove fails with FileNotFoundError
    (a file the other just removed). Everything else ``end()`` does is done by then, so that one
    error is ignored; any other is raised.
    """
    from dvclive import Live

    class _Live(Live):
        def end(self) -> None:
            try:
                super().end()
            except FileNotFoundError as error:
                if Path(str(error.filename)).name != "DVCLIVE_STEP_COMPLETED":
                    raise

    return _Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)


def train_one(
    task: Task,
    cfg: TaskConfig,
    schedule_name: str,
    knobs: Any,
    seed: int,
    data_dir: Path,
    run_dir: Path,
    live_dir: Path,
    log: Callable[[str], None] = print,
    resume_path: Path | None = None,
    multiplier: float = 1.0,
    progress: bool | None = None,
) -> RunResult:
    """Train ``task`` with ``schedule_name`` for one seed.

    ``cfg.lr`` is the initial LR of this run (the task's base LR times ``multiplier``); a schedule
    with its own base LR (Prodigy's lr 1.0) multiplies that by ``multiplier`` instead.

    Writes the best checkpoint to ``run_dir/model.pt``, and the dvclive curves (step = epoch)
    and ``result.json`` (a :class:`RunResult`) to ``live_dir``. Under torchrun every rank trains its
    share of each batch (:mod:`adaptive_lr.distributed`) and only rank 0 logs and writes.

    With ``resume_path``, the whole state of the run (:class:`RunState`) is saved there at the end of
    every epoch, and a run that finds a state of the same run there (same task settings, knobs, seed,
    data and code) continues from it, to the same result as an uninterrupted run; a finished run's
    state is kept too, so a re-run rewrites its outputs without training. The caller deletes the state
    when it is no longer needed (:class:`adaptive_lr.resume.Checkpointer`).

    ``progress``: a progress bar of each epoch's batches on stderr (tqdm, cleared at the epoch's end):
    None shows it when stderr is a terminal, False never (the pipeline's choice), True always. It
    changes nothing in the run: the same batches, no random draw, the same result.
    """
    # free whatever the previous run in this process left in reference cycles (ours, torch's or
    # transformers'), or its model and optimizer count in this run's peak RSS
    gc.collect()
    world = distributed.setup(resolve_device(cfg.device))  # a single process unless under torchrun
    log = log if world.is_main else (lambda msg: None)
    run = Run(task, cfg, schedule_name, knobs, seed, data_dir, world, multiplier)
    s, tag = run.state, f"[{task.name}/{schedule_name} {multiplier:g}x seed {seed}]"
    show_bar = world.is_main and (is_terminal(sys.stderr) if progress is None else progress)
    key = functools.partial(run_key, task.name, cfg, schedule_name, knobs, seed, data_dir, multiplier)
    ckpt = Checkpointer(resume_path, key, world, log, tag)
    run.resume_or_start(ckpt.load(), log, tag)
    live = open_live(live_dir) if world.is_main else NullLive()
    for epoch, row in enumerate(s.rows, start=1):  # a resumed run logs the rows it had again
        log_epoch(live, epoch, row)
    meter, start, ckpt_s = UsageMeter(world.device).start(), time.perf_counter(), 0.0
    elapsed0 = s.result.elapsed[-1] if s.result.elapsed else 0.0  # resume writes are kept out of this clock
    try:
        for epoch in s.epochs_left(cfg.epochs):
            timers, lr_used, t0 = Timers(), s.schedule.lr, time.perf_counter()
            bar = f"{tag} epoch {epoch}/{cfg.epochs}" if show_bar else None
            train_loss, finite = run.train_epoch(epoch, timers, meter, bar)
            timers.seconds["optim"] = time.perf_counter() - t0 - timers.seconds["sched"] - timers.seconds["probe"]
            s.schedule.eval_mode()
            with timers("val"):
                if finite:
                    run.recalibrate()
                val = run.evaluate(run.val_batches) if finite else None
            s.result.epochs_run = epoch
            elapsed = elapsed0 + time.perf_counter() - start - ckpt_s
            if val is None or not math.isfinite(val.loss):
                if not (s.schedule.recovers and s.best.state is not None):
                    s.result.diverged_epoch = epoch
                    log(f"{tag} epoch {epoch}: loss is not finite; run recorded as diverged")
                    break
            run.end_epoch(epoch, val, timers)
            row = run.record_epoch(train_loss, val, lr_used, timers, elapsed)
            log_epoch(live, epoch, row)
            log(f"{tag} epoch {epoch:>2}/{cfg.epochs} {run.describe(row, timers)}")
            if epoch - s.result.best_epoch >= cfg.patience:
                s.result.stopped_early = True
                log(f"{tag} early stop: no better val/loss for {cfg.patience} epochs")
                break
            if ckpt.enabled and epoch < cfg.epochs:
                ckpt_s += ckpt.save(s.state_dict(False, combine_usage(s.usage, meter.stop())))
    finally:
        live.end()
    if not s.done:
        s.result.checkpoint_seconds += ckpt_s
        s.result.usage = combine_usage(s.usage, meter.stop())
        ckpt.save(s.state_dict(True, s.result.usage))
    if world.is_main:
        write_outputs(s, run_dir, live_dir)
    return s.result


def write_outputs(s: RunState, run_dir: Path, live_dir: Path) -> None:
    """The best checkpoint (``model.pt``, if any epoch had a finite validation loss) and ``result.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if s.best.state is not None:
        best = {"model": s.best.state["model"], "epoch": s.result.best_epoch, "val_loss": s.result.best_val_loss}
        save_torch(best, run_dir / "model.pt")
    write_json(asdict(s.result), live_dir / "result.json")


def log_epoch(live, epoch: int, row: dict[str, float]) -> None:
    """One epoch's metrics into dvclive, at step = epoch (x = epoch in `dvc plots`)."""
    live.step = epoch
    for name, value in row.items():
        live.log_metric(name, value)
    live.next_step()
