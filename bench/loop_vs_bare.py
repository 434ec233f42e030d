"""The project's training loop against a bare PyTorch loop on the same model, data and seed.

What it measures: ``adaptive_lr.train.train_one`` as the pipeline runs it (the ``fixed`` schedule,
constant LR with Adam, by default; ``--schedule adaptive`` adds its in-epoch probes; the per-epoch
resume state written after every epoch, unless ``--no-resume``), and a plain for-loop (forward and
loss, ``zero_grad``, ``backward``, Adam ``step``; no checks, no logging, no per-step sync) on the
same task: the same ``task.build_model()``, the same prepared data and batches (``task.batches``,
so the same data loading), batch size, LR, autocast and seed.
Both run the same epochs with a validation pass at the end of each; the runs alternate (bare,
loop, loop, bare, ...) so that noise from the machine hits both alike, and each figure is the
median over the repeats.

How to read it:

* ``optim samples/s``: training samples per second of the optimisation part only: for the loop,
  ``RunResult.optim_seconds`` (each epoch's training batches, data loading included, without
  validation, probes and schedule logic); for the bare loop, the same span timed the same way.
* ``ratio loop/bare, optimisation``: loop samples/s over bare samples/s. 1.00x = no overhead;
  the target is at least 0.9x. The per-pair range shows how noisy the machine was.
* ``epochs wall``: training plus end-of-epoch validation (the loop's optim + val + probe + sched
  seconds and the resume-state writes; the bare loop's train + val seconds). Its ratio, bare
  seconds over loop seconds, is the loop's whole per-epoch cost; the aim is at least 0.95x.
* ``whole call``: the whole function call, setup included (data loading, model, dvclive files,
  checkpoint); its ratio, bare seconds over loop seconds, shows the fixed cost per run.
* ``last val/loss``: both runs should print (almost) the same value: they did the same work.

On a GPU the bare loop synchronises only at the end of each epoch, while the loop reads the loss
every step (``float(loss)``), so there the ratio includes the cost of that sync.

Run: ``python bench/loop_vs_bare.py`` (vision, params.yaml's default profile, 2 epochs, 5 repeats).
"""

from __future__ import annotations

import argparse
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _common import (
    add_common_args,
    check_positive,
    epochs_wall,
    machine,
    make_task,
    median,
    pipeline_run,
    prepared,
    table,
)

from adaptive_lr import schedules
from adaptive_lr.config import TaskConfig
from adaptive_lr.tasks.base import Task, to_device
from adaptive_lr.train import autocast_for, resolve_device, seed_everything


@dataclass
class Timing:
    """One run of either variant."""

    optim_s: float = 0.0
    epochs_s: float = 0.0  # optimisation + validation (+ probes and schedule logic for the loop)
    call_s: float = 0.0
    epochs: int = 0
    val_loss: list = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count(batch: dict) -> int:
    return next(v for v in batch.values() if torch.is_tensor(v)).shape[0]


def bare_run(task: Task, cfg: TaskConfig, seed: int, data_dir: Path, max_steps: int | None = None) -> Timing:
    """A plain PyTorch loop over the same data and model as ``train_one`` (same order of seeding)."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    generator = seed_everything(seed)
    train_set, val_set = task.load(data_dir, "train"), task.load(data_dir, "val")
    train_batches = task.batches(train_set, cfg.batch_size, True, generator)
    val_batches = task.batches(val_set, cfg.batch_size, False, torch.Generator().manual_seed(seed))
    model = task.build_model().to(device)
    # the schedules' Adam (the multi-tensor update): the ratio measures the loop, not the optimizer's implementation
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    out = Timing()
    for _ in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        for step, batch in enumerate(train_batches):
            if max_steps is not None and step >= max_steps:
                break
            batch = to_device(batch, device)
            with autocast_for(device, cfg.amp):
                loss = task.loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        t1 = time.perf_counter()
        if max_steps is not None:
            return out
        model.eval()
        total, n = torch.zeros((), device=device), 0
        with torch.no_grad(), autocast_for(device, cfg.amp):
            for batch in val_batches:
                batch = to_device(batch, device)
                count = _count(batch)
                total += task.loss(model, batch).float() * count
                n += count
        out.val_loss.append(float(total) / max(n, 1))
        out.optim_s += t1 - t0
        out.epochs_s += time.perf_counter() - t0
        out.epochs += 1
    out.call_s = time.perf_counter() - start
    return out


def loop_run(
    task: Task, cfg: TaskConfig, schedule: str, knobs, seed: int, data_dir: Path, scratch: Path, i: int, resume: bool
) -> Timing:
    """``train_one`` as the pipeline runs it; its checkpoint, curves and resume states go to ``scratch``."""
    r, call_s = pipeline_run(task, cfg, schedule, knobs, seed, data_dir, scratch, i, resume)
    return Timing(
        r.optim_seconds,
        epochs_wall(r),
        call_s,
        r.epochs_run,
        r.val_loss,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser, epochs=2, repeats=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of both runs (default: 0)")
    parser.add_argument(
        "--schedule", choices=tuple(schedules.REGISTRY), default="fixed", help="the loop's schedule (default: fixed)"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="no per-epoch resume states (the pipeline writes them)"
    )
    args = parser.parse_args(argv)
    check_positive(
        parser,
        epochs=args.epochs,
        repeats=args.repeats,
        threads=args.threads,
        n_train=args.n_train,
        batch_size=args.batch_size,
    )
    params, cfg, task = make_task(args)
    if args.schedule not in params.schedules:
        parser.error(f"params.yaml has no schedules.{args.schedule}")
    knobs = params.schedules[args.schedule]

    with prepared(task, cfg, args.data_dir) as (data_dir, scratch, data_line):
        n_train = len(task.load(data_dir, "train"))
        device = resolve_device(cfg.device)
        n_params = sum(p.numel() for p in task.build_model().parameters())
        resume = "off" if args.no_resume else "on, every epoch"
        print(
            f"loop_vs_bare: adaptive_lr.train.train_one (schedule {args.schedule}, resume states {resume}) "
            "vs a bare PyTorch loop, same model/data/seed"
        )
        print(f"task: {task.name} ({cfg.source}, profile {params.profile}), model {n_params / 1e6:.2f}M parameters")
        print(data_line)
        print(
            f"run: {args.epochs} epoch(s) x {n_train} training samples, batch {cfg.batch_size}, Adam lr {cfg.lr:g}, "
            f"amp {cfg.amp}, device {device.type}, seed {args.seed}; "
            f"{args.repeats} repeat(s) of each, interleaved, median"
        )
        print(machine())

        importlib.import_module("dvclive")  # train_one imports it: its one-off import cost lands in no run

        bare_run(task, cfg, args.seed, data_dir, max_steps=3)  # warm-up: first-call kernel setup, caches
        runs: dict[str, list[Timing]] = {"bare": [], "loop": []}
        for i in range(args.repeats):
            order = ("bare", "loop") if i % 2 == 0 else ("loop", "bare")  # ABBA: neither always goes first
            for name in order:
                if name == "bare":
                    runs[name].append(bare_run(task, cfg, args.seed, data_dir))
                else:
                    runs[name].append(
                        loop_run(task, cfg, args.schedule, knobs, args.seed, data_dir, scratch, i, not args.no_resume)
                    )

    def rate(t: Timing) -> float:
        return t.epochs * n_train / t.optim_s

    rows = []
    for name, ts in runs.items():
        rates = [rate(t) for t in ts]
        rows.append(
            [
                name,
                f"{median(rates):.1f}",
                f"{min(rates):.1f}",
                f"{max(rates):.1f}",
                f"{median([t.optim_s for t in ts]):.2f}",
                f"{median([t.epochs_s for t in ts]):.2f}",
                f"{median([t.call_s for t in ts]):.2f}",
                f"{ts[-1].val_loss[-1]:.4f}" if ts[-1].val_loss else "n/a",
            ]
        )
    print()
    print(
        table(
            ["variant", "optim samples/s", "min", "max", "optim s", "epochs wall s", "whole call s", "last val/loss"],
            rows,
        )
    )
    bare, loop = runs["bare"], runs["loop"]
    optim = median([rate(t) for t in loop]) / median([rate(t) for t in bare])
    pairs = [rate(lt) / rate(bt) for lt, bt in zip(loop, bare)]
    epochs = median([t.epochs_s for t in bare]) / median([t.epochs_s for t in loop])
    call = median([t.call_s for t in bare]) / median([t.call_s for t in loop])
    print()
    print(
        f"ratio loop/bare, optimisation samples/s: {optim:.3f}x  "
        f"(per pair {min(pairs):.3f}x..{max(pairs):.3f}x; aim: >= 0.9x)"
    )
    print(
        f"ratio loop/bare, epochs wall incl. validation and resume states (bare s / loop s): {epochs:.3f}x "
        "(aim: >= 0.95x)"
    )
    print(f"ratio loop/bare, whole call incl. setup (bare s / loop s): {call:.3f}x")


if __name__ == "__main__":
    main()
