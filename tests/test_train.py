"""The training loop on a real (tiny) task: curves, checkpoint, determinism, divergence."""

import json
from dataclasses import replace

import pytest
import torch

from adaptive_lr import schedules
from adaptive_lr.tasks import get_task
from adaptive_lr.train import train_one


@pytest.fixture
def prepared(tmp_path, tiny_vision_cfg):
    task = get_task("vision", tiny_vision_cfg)
    task.prepare(tmp_path / "data", seed=0)
    return task, tmp_path


def _run(task, cfg, schedule, root, name, **knobs):
    return train_one(
        task, cfg, schedule, schedules.knobs_of(schedule, knobs), 0, root / "data", root / name / "run", root / name / "live", log=lambda s: None
    )


def test_loop_logs_curves_and_saves_best_checkpoint(prepared, tiny_vision_cfg):
    task, root = prepared
    r = _run(task, tiny_vision_cfg, "adaptive", root, "a")
    assert r.epochs_run == 2 and len(r.val_loss) == 2 and r.best_val_loss == min(r.val_loss)
    ckpt = torch.load(root / "a" / "run" / "model.pt")
    assert ckpt["epoch"] == r.best_epoch
    metrics = root / "a" / "live" / "plots" / "metrics"
    for name in ("train/loss.tsv", "val/loss.tsv", "val/accuracy.tsv", "lr.tsv", "time/train_s.tsv", "time/val_s.tsv", "time/sched_s.tsv"):
        lines = (metrics / name).read_text().splitlines()
        assert len(lines) == 3 and [line.split("\t")[0] for line in lines[1:]] == ["1", "2"], name  # step = epoch
    result = json.loads((root / "a" / "live" / "result.json").read_text())
    assert result["schedule"] == "adaptive" and result["diverged_epoch"] is None
    assert not (root / "a" / "run" / "result.json").exists()


def test_loop_measures_where_the_time_goes(prepared, tiny_vision_cfg):
    task, root = prepared
    r = _run(task, tiny_vision_cfg, "adaptive", root, "t")
    u = r.usage
    assert r.optim_seconds > 0 and r.val_seconds > 0 and r.sched_seconds > 0
    # the parts are disjoint slices of the run's wall time
    assert r.optim_seconds + r.val_seconds + r.sched_seconds <= u["wall_seconds"]
    assert r.sched_seconds < r.optim_seconds
    assert 0 < u["cpu_seconds"] and 0 < u["cpu_util"] <= torch.get_num_threads() + 0.5
    assert u["peak_rss_mb"] > 50 and u["gpu_peak_mb"] is None and u["gpu_util"] is None


def test_same_seed_same_curves(prepared, tiny_vision_cfg):
    task, root = prepared
    a = _run(task, tiny_vision_cfg, "cosine", root, "a")
    b = _run(task, tiny_vision_cfg, "cosine", root, "b")
    assert a.val_loss == b.val_loss and a.lr == b.lr


def test_divergence_is_recorded_not_raised(prepared, tiny_vision_cfg):
    task, root = prepared
    r = _run(task, replace(tiny_vision_cfg, lr=1e30, amp=False), "fixed", root, "d")
    assert r.diverged_epoch == 1


def test_early_stopping_uses_patience(prepared, tiny_vision_cfg):
    task, root = prepared
    # with a zero LR nothing improves after the first epoch
    r = _run(task, replace(tiny_vision_cfg, lr=1e-12, epochs=6, patience=2), "fixed", root, "e")
    assert r.stopped_early and r.epochs_run < 6
