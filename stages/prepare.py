"""DVC stage prepare@<task>: build data/<task>/ (train, val, test) from params.yaml."""

import sys

from adaptive_lr.pipeline import load_params, main_args, prepare, run_stage

if __name__ == "__main__":
    (task,) = main_args(sys.argv[1:], ("task",), "python stages/prepare.py <task>")
    run_stage(lambda: prepare(load_params(), task))
