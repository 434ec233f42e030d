"""DVC stage prepare@<task>: build data/<task>/ (train, val, test) from params.yaml."""

import sys
from pathlib import Path

# the library of *this* tree: a queued `dvc exp run` executes in a copy of the repository, and an
# editable install would otherwise import the workspace's src/, whatever the experiment's code is
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adaptive_lr.pipeline import load_params, main_args, prepare, run_stage

if __name__ == "__main__":
    (task,) = main_args(sys.argv[1:], ("task",), "python stages/prepare.py <task>")
    run_stage(lambda: prepare(load_params(), task))
