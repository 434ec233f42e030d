"""The one training loop: any task, any schedule, one seed.

It never looks at the test split: early stopping, the best checkpoint and every
validation-driven schedule see the validation split only.
"""

from __future__ import annotations

import gc
import hashlib
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
    checkpoint_seconds: float = 0.0  # writing the per-epoch resume state (not in `elapsed`)


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
) -> RunResult:
    """Train ``task`` with ``schedule_name`` for one seed.

    Writes the best checkpoint to ``run_dir/model.pt``, and the dvclive curves (step = epoch)
    and ``result.json`` (a :class:`RunResult`) to ``live_dir``. Under torchrun every rank trains its
    share of each batch (:mod:`adaptive_lr.distributed`) and only rank 0 logs and writes.

    With ``resume_path``, the whole state of the run (model, optimizer and schedule, the best state,
    RNG states, the curves so far) is saved there at the end of every epoch, and a run that finds
    a state of the same run there (same task settings, knobs, seed, data and code) continues from
    it, to the same result as an uninterrupted run; a finished run's state is kept too, so a re-run
    rewrites its outputs without training. The caller deletes the state when it is no longer needed.
    Under torchrun each rank keeps its own state (its RNG streams differ): ``<stem>.rank<r>.pt``.
    """
    from dvclive import Live

    # free whatever the previous run in this process left in reference cycles (ours, torch's or
    # transformers'), or its model and optimizer count in this run's peak RSS
    gc.collect()
    world = distributed.setup(resolve_device(cfg.device))  # a single process unless under torchrun
    device = world.device
    log = log if world.is_main else (lambda msg: None)
    generator = seed_everything(seed)
    val_generator = torch.Generator().manual_seed(seed)
    train_set, val_set = task.load(data_dir, "train"), task.load(data_dir, "val")
    train_batches = world.shard(task.batches(train_set, cfg.batch_size, True, generator), train=True)
    val_batches = world.shard(task.batches(val_set, cfg.batch_size, False, val_generator), train=False)
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

    rows: list[dict[str, float]] = []  # what dvclive logged at each epoch (a resumed run logs it again)
    first_epoch, done, before = 1, False, {}
    if resume_path is not None and world.size > 1:
        resume_path = resume_path.with_name(f"{resume_path.stem}.rank{world.rank}{resume_path.suffix}")
    key = run_key(task, cfg, schedule_name, knobs, seed, data_dir) if resume_path is not None else ""
    saved = load_run_state(resume_path, key, log, tag) if resume_path is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        sched.load_state_dict(saved["schedule"])
        best.loss, best.state = saved["best_loss"], saved["best_state"]
        result = RunResult(**saved["result"])
        rows, done, before = saved["rows"], saved["done"], saved["usage"]
        first_epoch = result.epochs_run + 1
        set_rng_state(saved["rng"], generator, val_generator)
        log(f"{tag} resumed after epoch {result.epochs_run}" + (" (finished: rewriting its outputs)" if done else ""))
    else:
        note_lr(0.0)

    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) if world.is_main else distributed.NullLive()
    for epoch, row in enumerate(rows, start=1):
        log_epoch(live, epoch, row)
    meter = UsageMeter(device).start()
    start = time.perf_counter()
    ckpt_s = 0.0  # writing the resume state is not training: kept out of the seconds-to-target clock
    elapsed0 = result.elapsed[-1] if result.elapsed else 0.0

    def save_state(finished: bool) -> float:
        t = time.perf_counter()
        state = {
            "key": key, "done": finished, "model": model.state_dict(), "schedule": sched.state_dict(),
            "best_loss": best.loss, "best_state": best.state, "result": asdict(result), "rows": rows,
            "usage": result.usage if finished else combine_usage(before, meter.stop()),
            "rng": rng_state(generator, val_generator),
        }
        save_torch(state, resume_path)
        return time.perf_counter() - t

    if probes and not done:
        log(f"{tag} {probes} validation probe(s) per epoch from epoch 2, on {n_probe_batches} of {len(val_batches)} validation batches")
    try:
        for epoch in range(first_epoch, cfg.epochs + 1) if not done else ():
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
            elapsed = elapsed0 + time.perf_counter() - start - ckpt_s

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
            rows.append({
                "train/loss": loss_sum / max(n_batches, 1), "val/loss": val_loss,
                metric_key: val.metric if val is not None else math.nan, "lr": lr_used,
                "time/train_s": train_s, "time/val_s": val_s, "time/probe_s": probe_s, "time/sched_s": sched_s,
                "time/elapsed_s": elapsed,
            })
            log_epoch(live, epoch, rows[-1])
            log(
                f"{tag} epoch {epoch:>2}/{cfg.epochs} train/loss {loss_sum / max(n_batches, 1):.4f} "
                f"val/loss {val_loss:.4f} {metric_key} {val.metric if val is not None else math.nan:.4f} "
                f"lr {lr_used:.2e}->{sched.lr:.2e} {train_s + val_s + probe_s + sched_s:.1f}s"
            )
            if epoch - result.best_epoch >= cfg.patience:
                result.stopped_early = True
                log(f"{tag} early stop: no better val/loss for {cfg.patience} epochs")
                break
            if resume_path is not None and epoch < cfg.epochs:
                ckpt_s += save_state(False)
    finally:
        live.end()
    result.checkpoint_seconds += ckpt_s
    result.usage = combine_usage(before, meter.stop()) if not done else before
    if resume_path is not None and not done:
        save_state(True)

    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if best.state is not None:
            save_torch({"model": best.state["model"], "epoch": result.best_epoch, "val_loss": result.best_val_loss}, run_dir / "model.pt")
        write_json(asdict(result), live_dir / "result.json")
    return result


def log_epoch(live, epoch: int, row: dict[str, float]) -> None:
    """One epoch's metrics into dvclive, at step = epoch (x = epoch in `dvc plots`)."""
    live.step = epoch
    for name, value in row.items():
        live.log_metric(name, value)
    live.next_step()


# resume ---------------------------------------------------------------------------------
def run_key(task: Task, cfg: TaskConfig, schedule_name: str, knobs: Any, seed: int, data_dir: Path) -> str:
    """What a saved run state must match to be continued: settings, knobs, seed, data files and our code."""
    h = hashlib.sha256(repr((task.name, cfg, schedule_name, knobs, seed, torch.__version__)).encode())
    package = Path(__file__).resolve().parent
    for path in sorted(Path(data_dir).rglob("*")) + sorted(package.rglob("*.py")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def load_run_state(path: Path, key: str, log: Callable[[str], None], tag: str) -> dict | None:
    """The saved state at ``path`` if it belongs to this run (``key``), else None (and the file is removed)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:  # a state that cannot be read is no state: start afresh
        log(f"{tag} {path}: unreadable resume state ({type(exc).__name__}); starting afresh")
        path.unlink()
        return None
    if state.get("key") != key:
        log(f"{tag} {path}: saved by a run with other settings, data or code; starting afresh")
        path.unlink()
        return None
    return state


def rng_state(*generators: torch.Generator) -> dict:
    """Every random state a run draws from: Python, NumPy, torch (CPU and CUDA) and the loop's generators."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict, *generators: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)


def combine_usage(before: dict, after: dict) -> dict:
    """The machine cost of a run done in two parts (before and after a resume)."""
    if not before:
        return after
    out = dict(after)
    out["wall_seconds"] = before["wall_seconds"] + after["wall_seconds"]
    out["cpu_seconds"] = before["cpu_seconds"] + after["cpu_seconds"]
    out["cpu_util"] = out["cpu_seconds"] / out["wall_seconds"] if out["wall_seconds"] > 0 else None
    for k in ("peak_rss_mb", "gpu_peak_mb"):
        values = [v for v in (before.get(k), after.get(k)) if v is not None]
        out[k] = max(values) if values else None
    out["gpu_util"] = after["gpu_util"] if after.get("gpu_util") is not None else before.get("gpu_util")
    return out
