"""The one training loop: any task, any schedule, one seed.

It never looks at the test split: early stopping, the best checkpoint and every
validation-driven schedule see the validation split only.
"""

from __future__ import annotations

import copy
import gc
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from adaptive_lr import schedules
from adaptive_lr.config import TaskConfig
from adaptive_lr.files import save_torch, write_json
from adaptive_lr.tasks.base import Task, to_device
from adaptive_lr.usage import UsageMeter

GPU_SAMPLE_EVERY = 25  # batches between GPU utilisation samples (CUDA only)


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
    """Loss, its standard error over batches, the task metric and timing of one pass over a split."""

    loss: float
    stderr: float
    metric: float
    seconds: float
    samples: int


def evaluate(task: Task, model: torch.nn.Module, batches, device: torch.device, amp: bool) -> Evaluation:
    """Mean loss and metric of ``model`` over ``batches`` (eval mode, no grad)."""
    start = time.perf_counter()
    model.eval()
    total, count, batch_means, preds, refs = 0.0, 0, [], [], []
    with torch.no_grad(), autocast_for(device, amp):
        for batch in batches:
            out = task.evaluate_batch(model, to_device(batch, device))
            total += out.loss_sum
            count += out.count
            batch_means.append(out.loss_sum / max(out.count, 1))
            preds += out.predictions
            refs += out.references
    loss = total / max(count, 1)
    stderr = float(np.std(batch_means, ddof=1) / math.sqrt(len(batch_means))) if len(batch_means) > 1 else 0.0
    return Evaluation(loss, stderr, task.score(preds, refs), time.perf_counter() - start, count)


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
    val_seconds: float = 0.0
    sched_seconds: float = 0.0
    diverged_epoch: int | None = None
    stopped_early: bool = False
    # per epoch (1-based position i-1): validation loss and wall seconds since the start
    val_loss: list = field(default_factory=list)
    elapsed: list = field(default_factory=list)
    lr: list = field(default_factory=list)
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
    and ``result.json`` (a :class:`RunResult`) to ``live_dir``.
    """
    from dvclive import Live

    # the previous run in this process may leave reference cycles (a schedule's restore hook refers
    # back to the schedule): free them now, or its model and optimizer count in this run's peak RSS
    gc.collect()
    device = resolve_device(cfg.device)
    generator = seed_everything(seed)
    train_set, val_set = task.load(data_dir, "train"), task.load(data_dir, "val")
    train_batches = task.batches(train_set, cfg.batch_size, True, generator)
    val_batches = task.batches(val_set, cfg.batch_size, False, torch.Generator().manual_seed(seed))
    model = task.build_model().to(device)
    steps_per_epoch = len(train_batches)

    best_state: dict[str, Any] = {}

    def restore_best() -> None:
        # divergence recovery for schedules that ask for it: back to the best weights and optimizer state
        if best_state:
            model.load_state_dict(best_state["model"])
            sched.optimizer.load_state_dict(best_state["optimizer"])

    ctx = schedules.Context(cfg.lr, cfg.weight_decay, cfg.epochs, steps_per_epoch, restore_best)
    sched = schedules.build(schedule_name, knobs, model.parameters(), ctx)
    result = RunResult(task.name, schedule_name, seed)
    tag = f"[{task.name}/{schedule_name} seed {seed}]"
    metric_key = f"val/{task.metric}"

    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    meter = UsageMeter(device).start()
    start = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            lr_used = sched.lr
            t0 = time.perf_counter()
            model.train()
            sched.train_mode()
            loss_sum, n_batches, finite, sched_s = 0.0, 0, True, 0.0
            for batch in train_batches:
                batch = to_device(batch, device)
                with autocast_for(device, cfg.amp):
                    loss = task.loss(model, batch)
                if not torch.isfinite(loss):
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
            train_s = time.perf_counter() - t0 - sched_s
            sched.eval_mode()
            val = evaluate(task, model, val_batches, device, cfg.amp) if finite else None
            val_loss = val.loss if val is not None else math.nan
            val_s = val.seconds if val is not None else 0.0
            result.epochs_run = epoch
            elapsed = time.perf_counter() - start

            if not math.isfinite(val_loss) and not (sched.recovers and best_state):
                result.diverged_epoch = epoch
                log(f"{tag} epoch {epoch}: loss is not finite; run recorded as diverged")
                break
            if math.isfinite(val_loss) and val_loss < result.best_val_loss:
                result.best_val_loss, result.best_val_metric, result.best_epoch = val_loss, val.metric, epoch
                best_state = {
                    "model": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}),
                    "optimizer": copy.deepcopy(sched.optimizer.state_dict()),
                }
            t_sched = time.perf_counter()
            sched.after_validation(val_loss, val.stderr if val is not None else 0.0)
            sched_s += time.perf_counter() - t_sched
            result.optim_seconds += train_s
            result.val_seconds += val_s
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
            live.log_metric("time/sched_s", sched_s)
            live.log_metric("time/elapsed_s", elapsed)
            live.next_step()
            log(
                f"{tag} epoch {epoch:>2}/{cfg.epochs} train/loss {loss_sum / max(n_batches, 1):.4f} "
                f"val/loss {val_loss:.4f} {metric_key} {val.metric if val is not None else math.nan:.4f} "
                f"lr {lr_used:.2e} {train_s + val_s + sched_s:.1f}s"
            )
            if epoch - result.best_epoch >= cfg.patience:
                result.stopped_early = True
                log(f"{tag} early stop: no better val/loss for {cfg.patience} epochs")
                break
    finally:
        live.end()
    result.usage = meter.stop()

    run_dir.mkdir(parents=True, exist_ok=True)
    if best_state:
        save_torch({"model": best_state["model"], "epoch": result.best_epoch, "val_loss": result.best_val_loss}, run_dir / "model.pt")
    write_json(asdict(result), live_dir / "result.json")
    return result
