"""Choose AdaptiveLR's defaults on validation data only: train candidate knob sets, report validation figures.

Every candidate (a JSON object of ``schedules.adaptive`` overrides, optionally with ``lr`` for the
task's initial LR) is trained on every task and seed given, with the default profile's data and
settings, and scored by its best *validation* loss relative to the same seed's ``fixed`` run
(committed in ``live/<task>/fixed/seed<k>/result.json``). The test split is never read.

    python tools/tune_adaptive.py '{"patience": 4}' '{"patience": 4, "increase": 1.5}' --seeds 0 1

The score is the mean over tasks and seeds of log(best val loss / fixed's best val loss): below 0
is better than fixed. docs/ALGORITHM.md records which runs chose the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from adaptive_lr.config import load_params
from adaptive_lr.tasks import get_task
from adaptive_lr.train import train_one


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", nargs="+", help="JSON objects of schedules.adaptive overrides ('{}' = params.yaml)")
    ap.add_argument("--tasks", nargs="+", default=["vision", "text", "speech"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = ap.parse_args(argv)
    params = load_params()
    rows = []
    for text in args.candidates:
        over = json.loads(text)
        logs, cells = [], []
        for task in args.tasks:
            cfg = params.tasks[task]
            knob_over = {k: v for k, v in over.items() if k != "lr"}
            cfg = replace(cfg, lr=over.get("lr", cfg.lr))
            knobs = replace(params.schedules["adaptive"], **knob_over)
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    r = train_one(
                        get_task(task, cfg),
                        cfg,
                        "adaptive",
                        knobs,
                        seed,
                        Path("data") / task,
                        Path(tmp) / "run",
                        Path(tmp) / "live",
                        log=lambda s: None,
                    )
                fixed = json.loads(Path(f"live/{task}/fixed/seed{seed}/result.json").read_text())["best_val_loss"]
                logs.append(math.log(r.best_val_loss / fixed))
                cells.append(f"{task}/{seed} {r.best_val_loss:.3f} (fixed {fixed:.3f})")
                print(
                    f"{text} {task} seed {seed}: best val loss {r.best_val_loss:.4f} (fixed {fixed:.4f}), "
                    f"val metric {r.best_val_metric:.4f}, probes {r.probes}, "
                    f"lr trace {[[p, f'{lr:.1e}'] for p, lr in r.lr_trace]}",
                    flush=True,
                )
        rows.append((sum(logs) / len(logs), text, cells))
    print("\nscore (mean log(best val / fixed's), lower is better), candidate, per task/seed:")
    for score, text, cells in sorted(rows):
        print(f"{score:+.3f}  {text}  " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
