"""The one training loop: any task, any schedule, one seed.

It never looks at the test split: early stopping, the best checkpoint and every
validation-driven schedule see the validation split only.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from adaptive_lr import distributed, schedules
from adaptive_lr.config import TaskConfig
from adaptive_lr.files import save_torch, write_json
from adaptive_lr.scheduler import BestState
from adaptive_lr.tasks.base import Task, to_device
from adaptive_lr.usage import UsageMeter

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
        raise RuntimeError("device: cuda was asked for but torch sees no CUDA GPU; use device: auto or cpu")
    return torch.device(name)


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast on CPU (AMX) and on CUDA GPUs that support it; a no-op otherwise."""
    if not amp:
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
    def samples(self) -> int:
        return len(self.losses)


def evaluate(
    task: Task, model: torch.nn.Module, batches, device: torch.device, amp: bool,
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


def probes_per_epoch(sched: schedules.Schedule, steps_per_epoch: int, n_probe_batches: int) -> int:
    """In-epoch probes per epoch: as many as the schedule asks for, within its budget.

    ``n`` probes of ``k`` batches cost ``n * k`` forward passes against ``3 * steps`` for the epoch's
    training (:data:`TRAIN_STEP_FORWARDS`); the budget is ``probe_budget`` of the latter. The seconds
    they really take are measured (``probe_seconds``) and reported beside the budget.
    """
    if sched.probes <= 0 or n_probe_batches <= 0:
        return 0
    affordable = math.floor(sched.probe_budget * TRAIN_STEP_FORWARDS * steps_per_epoch / n_probe_batches + 1e-9)
    return max(0, min(sched.probes, affordable, steps_per_epoch - 1))


@dataclass
class RunResult:
    """What a training run leaves for evaluation and comparison."""

    task: str
    schedule: str
    seed: int
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_val_metric: float = math.nan
    # where the time went: optimisation steps, validation passes, the schedule's own logic
    optim_seconds: float = 0.0
    val_seconds: float = 0.0  # end-of-epoch validation passes (every schedule has them)
    probe_seconds: float = 0.0  # in-epoch validation probes (schedules with probes only)
    sched_seconds: float = 0.0
    probes: int = 0  # in-epoch probes run
    diverged_epoch: int | None = None
    stopped_early: bool = False
    # per epoch (1-based position i-1): validation loss and wall seconds since the start
    val_loss: list = field(default_factory=list)
    elapsed: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    # every LR the schedule set: [position in epochs (epoch - 1 + fraction of its batches), lr]
    lr_trace: list = field(default_factory=list)
    # machine cost of the whole run (UsageMeter.stop): wall_seconds, cpu_util, peak_rss_mb, ...
    usage: dict = field(default_factory=dict)


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
) -> RunResult:
    """Train ``task`` with ``schedule_name`` for one seed.

    Writes the best checkpoint to ``run_dir/model.pt``, and the dvclive curves (step = epoch)
    and ``result.json`` (a :class:`RunResult`) to ``live_dir``. Under torchrun every rank trains its
    share of each batch (:mod:`adaptive_lr.distributed`) and only rank 0 logs and writes.
    """
    from dvclive import Live

    # free whatever the previous run in this process left in reference cycles (ours, torch's or
    # transformers'), or its model and optimizer count in this run's peak RSS
    gc.collect()
    world = distributed.setup(resolve_device(cfg.device))  # a single process unless under torchrun
    device = world.device
    log = log if world.is_main else (lambda msg: None)
    generator = seed_everything(seed)
    train_set, val_set = task.load(data_dir, "train"), task.load(data_dir, "val")
    train_batches = world.shard(task.batches(train_set, cfg.batch_size, True, generator), train=True)
    val_batches = world.shard(task.batches(val_set, cfg.batch_size, False, torch.Generator().manual_seed(seed)), train=False)
    model = task.build_model().to(device)
    train_model = world.wrap(model, seed)  # DDP under torchrun; evaluation uses `model`
    steps_per_epoch = len(train_batches)

    # the restore hook is bound after the optimizer exists; it refers to the optimizer, not the schedule (no cycle)
    best: BestState | None = None
    ctx = schedules.Context(cfg.lr, cfg.weight_decay, cfg.epochs, steps_per_epoch, lambda: best.restore())
    sched = schedules.build(knobs, model.parameters(), ctx)
    best = BestState(model, sched.optimizer)
    # the probe: the first validation batches, always the same samples (a paired comparison)
    n_probe_batches = sched.probe_batches(len(val_batches))
    probes = probes_per_epoch(sched, steps_per_epoch, n_probe_batches)
    probe_set = list(itertools.islice(iter(val_batches), n_probe_batches)) if probes > 0 else []
    probe_at = {round(j * steps_per_epoch / (probes + 1)) for j in range(1, probes + 1)}
    result = RunResult(task.name, schedule_name, seed)
    tag = f"[{task.name}/{schedule_name} seed {seed}]"
    metric_key = f"val/{task.metric}"

    def note_lr(position: float) -> None:
        if not result.lr_trace or result.lr_trace[-1][1] != sched.lr:
            result.lr_trace.append([round(position, 4), sched.lr])

    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) if world.is_main else distributed.NullLive()
    meter = UsageMeter(device).start()
    start = time.perf_counter()
    note_lr(0.0)
    if probes:
        log(f"{tag} {probes} validation probe(s) per epoch from epoch 2, on {n_probe_batches} of {len(val_batches)} validation batches")
    try:
        for epoch in range(1, cfg.epochs + 1):
            lr_used = sched.lr
            t0 = time.perf_counter()
            model.train()
            sched.train_mode()
            loss_sum, n_batches, finite, sched_s, probe_s = 0.0, 0, True, 0.0, 0.0
            for batch in train_batches:
                batch = to_device(batch, device)
                with autocast_for(device, cfg.amp):
                    loss = task.loss(train_model, batch)
                if not world.all_true(torch.isfinite(loss)):  # one rank's non-finite loss stops every rank
                    finite = False
                    break
                sched.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                sched.optimizer.step()
                loss_sum += float(loss.detach())  # syncs with the device, so the timings below are real
                n_batches += 1
                t_sched = time.perf_counter()
                sched.after_batch()
                sched_s += time.perf_counter() - t_sched
                if n_batches % GPU_SAMPLE_EVERY == 0:
                    meter.sample()
                # no probes in the first epoch: its validation loss is a transient (fresh weights, BatchNorm
                # statistics settling), and the first reference should come after it, at the epoch's end
                if epoch > 1 and n_batches in probe_at:
                    sched.eval_mode()
                    probe = evaluate(task, model, probe_set, device, cfg.amp, world)
                    model.train()
                    sched.train_mode()
                    probe_s += probe.seconds
                    result.probes += 1
                    t_sched = time.perf_counter()
                    sched.after_probe(probe.losses)
                    sched_s += time.perf_counter() - t_sched
                    note_lr(epoch - 1 + n_batches / steps_per_epoch)
            train_s = time.perf_counter() - t0 - sched_s - probe_s
            loss_sum = world.mean(loss_sum)  # of the ranks' shares: the mean over whole batches
            sched.eval_mode()
            val = evaluate(task, model, val_batches, device, cfg.amp, world) if finite else None
            val_loss = val.loss if val is not None else math.nan
            val_s = val.seconds if val is not None else 0.0
            result.epochs_run = epoch
            elapsed = time.perf_counter() - start

            if not math.isfinite(val_loss) and not (sched.recovers and best.state is not None):
                result.diverged_epoch = epoch
                log(f"{tag} epoch {epoch}: loss is not finite; run recorded as diverged")
                break
            if best.update(val_loss):
                result.best_val_loss, result.best_val_metric, result.best_epoch = val_loss, val.metric, epoch
            # the probe's samples are the first validation batches: the end-of-epoch pass holds them
            probe_samples = val.losses[: sum(val.batch_sizes[:n_probe_batches])] if val is not None else None
            t_sched = time.perf_counter()
            sched.after_validation(val_loss, probe_samples)
            sched_s += time.perf_counter() - t_sched
            note_lr(epoch)
            result.optim_seconds += train_s
            result.val_seconds += val_s
            result.probe_seconds += probe_s
            result.sched_seconds += sched_s

            result.val_loss.append(val_loss)
            result.elapsed.append(elapsed)
            result.lr.append(lr_used)
            live.step = epoch  # x = epoch in `dvc plots`
            live.log_metric("train/loss", loss_sum / max(n_batches, 1))
            live.log_metric("val/loss", val_loss)
            live.log_metric(metric_key, val.metric if val is not None else math.nan)
            live.log_metric("lr", lr_used)
            live.log_metric("time/train_s", train_s)
            live.log_metric("time/val_s", val_s)
            live.log_metric("time/probe_s", probe_s)
            live.log_metric("time/sched_s", sched_s)
            live.log_metric("time/elapsed_s", elapsed)
            live.next_step()
            log(
                f"{tag} epoch {epoch:>2}/{cfg.epochs} train/loss {loss_sum / max(n_batches, 1):.4f} "
                f"val/loss {val_loss:.4f} {metric_key} {val.metric if val is not None else math.nan:.4f} "
                f"lr {lr_used:.2e}->{sched.lr:.2e} {train_s + val_s + probe_s + sched_s:.1f}s"
            )
            if epoch - result.best_epoch >= cfg.patience:
                result.stopped_early = True
                log(f"{tag} early stop: no better val/loss for {cfg.patience} epochs")
                break
    finally:
        live.end()
    result.usage = meter.stop()

    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if best.state is not None:
            save_torch({"model": best.state["model"], "epoch": result.best_epoch, "val_loss": result.best_val_loss}, run_dir / "model.pt")
        write_json(asdict(result), live_dir / "result.json")
    return result
