"""DVC stage train@<task>-<schedule>: train every seed; checkpoints in runs/, dvclive curves in live/."""

import sys

from adaptive_lr.pipeline import load_params, main_args, run_stage, train_cell

if __name__ == "__main__":
    task, schedule = main_args(sys.argv[1:], ("task", "schedule"), "python stages/train.py <task> <schedule>")
    run_stage(lambda: train_cell(load_params(), task, schedule))
