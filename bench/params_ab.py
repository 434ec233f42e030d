"""What a change of params.yaml costs per epoch: the pipeline's loop with params.yaml (A) and with overrides (B).

What it measures: ``adaptive_lr.train.train_one`` as the pipeline runs it (one torch thread, the
resume state written every epoch, schedule ``fixed`` unless ``--schedule``) on one task, with the
settings of params.yaml (A) and with the same settings changed by ``--set KEY=VALUE`` (B: a dotted
params.yaml key and a YAML value, e.g. ``--set tasks.speech.model.pos_conv_kernel=64``; give it several
times). Each variant prepares its own data (the overrides may change it), the runs alternate (A, B, B,
A, ...) so that the machine's drift hits both alike, and each figure is the median over the repeats.
Patience is set past the budget, so every run does ``--epochs`` epochs.

How to read it:

* ``optim s/epoch``: the optimisation part of an epoch (``RunResult.optim_seconds`` over the epochs:
  training batches, data loading included); ``epoch wall s``: that plus validation, probes, the
  schedule's logic and the resume-state write, what a pipeline run pays per epoch.
* ``ratio B/A``: B's seconds over A's; below 1x B is cheaper. A change that also changes how many
  epochs a run needs (a model that learns faster) is judged by its learning curves, not here:
  ``last val/loss`` only shows that the runs did real work.

Run: ``python bench/params_ab.py --task speech --set tasks.speech.model.pos_conv_kernel=64``
(3 epochs, 3 repeats: about 1 min on speech here).
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from _common import (
    add_common_args,
    check_positive,
    epochs_wall,
    machine,
    median,
    pipeline_run,
    prepared,
    table,
    task_config,
)

from adaptive_lr import schedules
from adaptive_lr.errors import ParamsError
from adaptive_lr.tasks import get_task


@dataclass
class Timing:
    """One run of either variant, per epoch."""

    optim_s: float
    epoch_s: float
    call_s: float
    last_val_loss: float


def override(raw: dict, assignment: str) -> dict:
    """``raw`` (params.yaml as read) with ``KEY=VALUE`` applied; KEY must exist, VALUE is YAML."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ParamsError(f"--set {assignment!r}: expected KEY=VALUE, e.g. tasks.speech.epochs=24")
    out = copy.deepcopy(raw)
    node, parts = out, key.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ParamsError(f"--set {key}: params.yaml has no mapping {'.'.join(parts[: i + 1])}")
        node = node[part]
    if parts[-1] not in node:
        raise ParamsError(f"--set {key}: params.yaml has no key {key} (known here: {', '.join(sorted(node))})")
    node[parts[-1]] = yaml.safe_load(value)
    return out


def one_run(task, cfg, schedule: str, knobs, data_dir: Path, scratch: Path, i: int) -> Timing:
    """One pipeline run (resume state on), per-epoch figures."""
    r, call = pipeline_run(task, cfg, schedule, knobs, 0, data_dir, scratch, i)
    epochs = max(r.epochs_run, 1)
    return Timing(
        r.optim_seconds / epochs, epochs_wall(r) / epochs, call, r.val_loss[-1] if r.val_loss else float("nan")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser, epochs=3, repeats=3)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        required=True,
        metavar="KEY=VALUE",
        help="variant B: a params.yaml key (dotted) and its YAML value; repeat for several",
    )
    parser.add_argument(
        "--schedule", choices=tuple(schedules.REGISTRY), default="fixed", help="the runs' schedule (default: fixed)"
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
    torch.set_num_threads(args.threads)
    raw_b = yaml.safe_load(args.params.read_text())
    try:
        for assignment in args.sets:
            raw_b = override(raw_b, assignment)
    except ParamsError as e:
        parser.error(str(e))

    cfg_a = task_config(args)[1]
    with prepared(get_task(args.task, cfg_a), cfg_a, args.data_dir) as (data_a, scratch, line_a):
        file_b = scratch / "params_b.yaml"
        file_b.write_text(yaml.safe_dump(raw_b, sort_keys=False))
        variants = {}
        for name, path in (("A", args.params), ("B", file_b)):
            try:
                params, cfg = task_config(argparse.Namespace(**{**vars(args), "params": path}))
            except ParamsError as e:
                parser.error(f"variant {name}: {e}")
            if args.schedule not in params.schedules:
                parser.error(f"params.yaml has no schedules.{args.schedule}")
            variants[name] = (get_task(args.task, cfg), cfg, params.schedules[args.schedule])
        task_b, cfg_b, _ = variants["B"]
        if args.data_dir is None and cfg_b.data != variants["A"][1].data:
            data_b = scratch / "data_b"
            task_b.prepare(data_b, cfg_b.data_seed)
        else:
            data_b = data_a
        data = {"A": data_a, "B": data_b}

        print(f"params_ab: train_one (schedule {args.schedule}, resume states on) with params.yaml (A) and B = A with:")
        for assignment in args.sets:
            print(f"  {assignment}")
        print(line_a + ("" if data_b == data_a else "; B prepared its own data"))
        print(f"run: {args.task}, {args.epochs} epoch(s), {args.repeats} repeat(s) of each, interleaved, median")
        print(machine())

        runs: dict[str, list[Timing]] = {"A": [], "B": []}
        for i in range(args.repeats):
            for name in ("A", "B") if i % 2 == 0 else ("B", "A"):  # ABBA: neither always goes first
                task, cfg, knobs = variants[name]
                k = sum(len(ts) for ts in runs.values())  # each run its own folders and resume state
                runs[name].append(one_run(task, cfg, args.schedule, knobs, data[name], scratch, k))

    rows = [
        [
            name,
            f"{median([t.optim_s for t in ts]):.3f}",
            f"{median([t.epoch_s for t in ts]):.3f}",
            f"{median([t.call_s for t in ts]):.2f}",
            f"{ts[-1].last_val_loss:.4f}",
        ]
        for name, ts in runs.items()
    ]
    print()
    print(table(["variant", "optim s/epoch", "epoch wall s", "whole call s", "last val/loss"], rows))
    a, b = runs["A"], runs["B"]
    pairs = [tb.optim_s / ta.optim_s for ta, tb in zip(a, b)]
    optim = median([t.optim_s for t in b]) / median([t.optim_s for t in a])
    print()
    print(
        f"ratio B/A, optimisation seconds per epoch: {optim:.3f}x"
        f"  (per pair {min(pairs):.3f}x..{max(pairs):.3f}x; below 1x: B is cheaper)"
    )
    print(
        "ratio B/A, epoch wall incl. validation and resume states: "
        f"{median([t.epoch_s for t in b]) / median([t.epoch_s for t in a]):.3f}x"
    )


if __name__ == "__main__":
    main()
