"""What the adaptive schedule's in-epoch validation probes cost, next to their budget and a fixed run.

What it measures: ``adaptive_lr.train.train_one`` with the ``adaptive`` schedule (params.yaml
``schedules.adaptive``: ``probes`` validation probes inside each epoch from epoch 2, each on the
first ``probe_size`` of the validation batches, capped by ``probe_budget``) and with ``fixed``
(no probes), alternating runs on the same task, data and seed. Per epoch it reads the loop's own
timings (the run's dvclive ``time/*_s`` curves) and sums epochs 2 onwards, where probes run:

* ``val/optim``: end-of-epoch validation seconds over optimisation seconds (every schedule has it);
* ``probe/optim``: in-epoch probe seconds over optimisation seconds (adaptive only);
* ``sched/optim``: the schedule's own logic (``AdaptiveLR.step`` and friends) over optimisation.

How to read it: ``probe/optim`` is the probes' measured cost; ``probe_budget`` is the share the
loop allows, counted in forward passes (a probe batch = 1, a training step = 3; see
``adaptive_lr.train.TRAIN_STEP_FORWARDS``), and ``planned`` is the share the planned probes use in
that unit. ``measured / planned`` above 1 means a probe costs more seconds than the forward-pass
count assumes; ``a training step = N probe batches`` is the measured exchange rate (the budget
assumes 3). ``adaptive/fixed optim samples/s`` shows whether probing slows the training steps
themselves. The ratios are medians over the repeats.

Run: ``python bench/probe_share.py`` (vision, params.yaml's default profile, 3 epochs, 2 repeats).
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace
from pathlib import Path

import torch
from _common import add_common_args, check_positive, machine, make_task, median, prepared, table

from adaptive_lr import schedules
from adaptive_lr.train import TRAIN_STEP_FORWARDS, probes_per_epoch, train_one

PARTS = ("train_s", "val_s", "probe_s", "sched_s")


def per_epoch(live_dir: Path, name: str) -> list[float]:
    """One ``time/<name>`` value per epoch from a run's dvclive curve (RunResult holds totals only)."""
    with open(live_dir / "plots" / "metrics" / "time" / f"{name}.tsv", newline="") as fh:
        return [float(row[name]) for row in csv.DictReader(fh, delimiter="\t")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser, epochs=3, repeats=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default: 0)")
    parser.add_argument(
        "--probe-budget",
        type=float,
        default=None,
        help="override schedules.adaptive.probe_budget, in [0, 1] (default: params.yaml's)",
    )
    args = parser.parse_args(argv)
    check_positive(parser, repeats=args.repeats, threads=args.threads, n_train=args.n_train, batch_size=args.batch_size)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: probes start in epoch 2")
    params, cfg, task = make_task(args)
    knobs = {"adaptive": params.schedules["adaptive"], "fixed": params.schedules["fixed"]}
    if args.probe_budget is not None:
        if not 0 <= args.probe_budget <= 1:
            parser.error(f"--probe-budget must lie in [0, 1], got {args.probe_budget}")
        knobs["adaptive"] = replace(knobs["adaptive"], probe_budget=args.probe_budget)

    with prepared(task, cfg, args.data_dir) as (data_dir, scratch, data_line):
        train_set, val_set = task.load(data_dir, "train"), task.load(data_dir, "val")
        steps = len(task.batches(train_set, cfg.batch_size, True, torch.Generator()))
        n_val = len(task.batches(val_set, cfg.batch_size, False, torch.Generator()))
        # the probe plan, from the loop's own rule (a dummy parameter: the plan does not depend on the model)
        plan = schedules.build(
            knobs["adaptive"], [torch.nn.Parameter(torch.zeros(1))], schedules.Context(cfg.lr, 0.0, cfg.epochs, steps)
        )
        n_probe = plan.probe_batches(n_val)
        probes = probes_per_epoch(plan, steps, n_probe)
        planned = probes * n_probe / (TRAIN_STEP_FORWARDS * steps)
        k = knobs["adaptive"]
        print("probe_share: in-epoch validation probes of the adaptive schedule, next to their budget and a fixed run")
        print(f"task: {task.name} ({cfg.source}, profile {params.profile})")
        print(data_line)
        print(
            f"run: {args.epochs} epochs x {len(train_set)} training samples ({steps} steps of batch {cfg.batch_size}), "
            f"{len(val_set)} validation samples ({n_val} batches), seed {args.seed}; "
            f"{args.repeats} repeat(s) of each, interleaved, median"
        )
        print(
            f"adaptive knobs: probes {k.probes}, probe_size {k.probe_size}, probe_budget {k.probe_budget} -> "
            f"{probes} probe(s) per epoch of {n_probe} batch(es), from epoch 2"
        )
        print(machine())

        parts: dict[str, dict[str, list[float]]] = {s: {p: [] for p in PARTS + ("probes",)} for s in knobs}
        for i in range(args.repeats):
            for name in ("adaptive", "fixed") if i % 2 == 0 else ("fixed", "adaptive"):
                live = scratch / f"{name}{i}" / "live"
                r = train_one(
                    task,
                    cfg,
                    name,
                    knobs[name],
                    args.seed,
                    data_dir,
                    scratch / f"{name}{i}" / "run",
                    live,
                    log=lambda s: None,
                    progress=False,  # as the pipeline runs it
                )
                for p in PARTS:
                    parts[name][p].append(sum(per_epoch(live, p)[1:]))  # epochs 2.. (probes start there)
                parts[name]["probes"].append(r.probes)

    med = {s: {p: median(v) for p, v in d.items()} for s, d in parts.items()}
    samples = (args.epochs - 1) * len(train_set)
    rows = []
    for s, m in med.items():
        o = m["train_s"]
        rows.append(
            [
                s,
                f"{samples / o:.1f}",
                f"{o:.2f}",
                f"{m['val_s']:.2f}",
                f"{m['probe_s']:.2f}",
                f"{m['sched_s']:.4f}",
                f"{m['probes']:g}",
                f"{m['val_s'] / o:.4f}",
                f"{m['probe_s'] / o:.4f}",
                f"{m['sched_s'] / o:.6f}",
            ]
        )
    print()
    print(f"epochs 2..{args.epochs} (where probes run), seconds are medians over the repeats:")
    print(
        table(
            [
                "schedule",
                "optim samples/s",
                "optim s",
                "val s",
                "probe s",
                "sched s",
                "probes",
                "val/optim",
                "probe/optim",
                "sched/optim",
            ],
            rows,
        )
    )
    a, f = med["adaptive"], med["fixed"]
    measured = a["probe_s"] / a["train_s"]
    print()
    print(
        f"ratio probe/optim (adaptive): {measured:.4f}x  "
        f"(probe_budget {k.probe_budget:g}; planned, in forward passes: {planned:.4f}x)"
    )
    if planned > 0 and a["probes"] > 0:
        print(f"ratio measured/planned probe share: {measured / planned:.2f}x")
        rate = (a["train_s"] / (steps * (args.epochs - 1))) / (a["probe_s"] / (a["probes"] * n_probe))
        print(
            f"ratio a training step / a probe batch, in seconds: {rate:.2f}x  "
            f"(the budget assumes {TRAIN_STEP_FORWARDS:g}x)"
        )
    print(f"ratio sched/optim (adaptive): {a['sched_s'] / a['train_s']:.6f}x")
    print(f"ratio val/optim: adaptive {a['val_s'] / a['train_s']:.4f}x, fixed {f['val_s'] / f['train_s']:.4f}x")
    print(
        f"ratio (val+probe+sched)/optim: adaptive {(a['val_s'] + a['probe_s'] + a['sched_s']) / a['train_s']:.4f}x, "
        f"fixed {(f['val_s'] + f['probe_s'] + f['sched_s']) / f['train_s']:.4f}x"
    )
    print(f"ratio adaptive/fixed optim samples/s: {f['train_s'] / a['train_s']:.3f}x")


if __name__ == "__main__":
    main()
