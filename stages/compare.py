"""DVC stage compare: metrics/comparison.{json,md} and plots/*.png over every task x schedule x seed."""

import sys
from pathlib import Path

# the library of *this* tree: a queued `dvc exp run` executes in a copy of the repository, and an
# editable install would otherwise import the workspace's src/, whatever the experiment's code is
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adaptive_lr.compare import compare
from adaptive_lr.pipeline import load_params, run_stage

if __name__ == "__main__":
    run_stage(lambda: compare(load_params()))
