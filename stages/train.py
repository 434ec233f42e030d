"""DVC stage train@<task>: every run of every schedule and ablation; checkpoints in runs/, dvclive curves in
live/, test metrics of each best checkpoint in metrics/."""

import sys
from pathlib import Path

# the library of *this* tree: a queued `dvc exp run` executes in a copy of the repository, and an
# editable install would otherwise import the workspace's src/, whatever the experiment's code is
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adaptive_lr.pipeline import load_params, main_args, run_stage, train_stage

if __name__ == "__main__":
    (task,) = main_args(sys.argv[1:], ("task",), "python stages/train.py <task>")
    # tasks.<task>.nproc > 1: re-runs this script through torchrun (one DDP run of nproc processes)
    run_stage(lambda: train_stage(load_params(), task, __file__))
