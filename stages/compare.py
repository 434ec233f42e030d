"""DVC stage compare: metrics/comparison.{json,md} and plots/*.png over every task x schedule x seed."""

from adaptive_lr.compare import compare
from adaptive_lr.pipeline import load_params, run_stage

if __name__ == "__main__":
    run_stage(lambda: compare(load_params()))
