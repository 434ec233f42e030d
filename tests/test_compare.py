"""Aggregation rules on synthetic runs with known answers."""

import json

import pytest

from adaptive_lr.compare import collect, mean_std, time_to_target, to_markdown
from adaptive_lr.config import Params, TaskConfig


def test_time_to_target_is_the_first_epoch_at_or_below_target():
    assert time_to_target([1.0, 0.6, 0.5, 0.4], [2.0, 4.0, 6.0, 8.0], 0.5) == (3, 6.0)


def test_a_run_that_never_reaches_the_target_is_not_reached():
    assert time_to_target([1.0, 0.9, None], [1.0, 2.0, 3.0], 0.5) == (None, None)


def test_mean_std_ignores_missing_values():
    assert mean_std([1.0, 3.0, None]) == {"mean": 2.0, "std": pytest.approx(2**0.5)}
    assert mean_std([None]) == {"mean": None, "std": None}


def test_collect_on_synthetic_runs(tmp_path):
    cfg = TaskConfig(task="vision", seeds=(0, 1), target_val_loss=0.5)
    params = Params(profile="default", tasks={"vision": cfg}, schedules={"fixed": None, "adaptive": None})
    curves = {"fixed": ([0.9, 0.7, 0.6], [0.8, 0.7, 0.55]), "adaptive": ([0.8, 0.5, 0.4], [0.7, 0.45, 0.3])}
    for schedule, per_seed in curves.items():
        for seed, curve in enumerate(per_seed):
            live = tmp_path / "live" / "vision" / schedule / f"seed{seed}"
            live.mkdir(parents=True)
            (live / "result.json").write_text(json.dumps({"val_loss": curve, "elapsed": [10.0, 20.0, 30.0]}))
            m = tmp_path / "metrics" / "vision" / schedule
            m.mkdir(parents=True, exist_ok=True)
            acc = 0.8 + 0.1 * seed + (0.05 if schedule == "adaptive" else 0)
            (m / f"{seed}.json").write_text(json.dumps({
                "metric": "accuracy", "seed": seed, "test_metric": acc, "test_loss": 1.0, "best_val_loss": min(curve),
                "best_epoch": 3, "train_seconds": 30.0, "diverged_epoch": None,
            }))
    out = collect(params, tmp_path)["vision"]
    assert out["metric"] == "accuracy" and out["higher_is_better"] is True and out["target_val_loss"] == 0.5
    fixed, ours = out["schedules"]["fixed"], out["schedules"]["adaptive"]
    assert fixed["epochs_to_target"] == {"mean": None, "std": None, "reached": 0}
    assert ours["epochs_to_target"] == {"mean": 2.0, "std": 0.0, "reached": 2}
    assert ours["seconds_to_target"]["mean"] == 20.0
    assert ours["test_metric"]["mean"] == pytest.approx(0.9)
    md = to_markdown({"vision": out})
    assert "**adaptive**" in md and "(0/2)" in md
