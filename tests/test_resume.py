"""Per-epoch resume: a train stage killed with SIGKILL mid-run, run again, ends where an uninterrupted one does."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from clock import without_clock

from adaptive_lr.config import load_params
from adaptive_lr.tasks import get_task
from adaptive_lr.train import train_one

REPO = Path(__file__).resolve().parents[1]
# fields of result.json that are clock readings (they differ between any two runs)


def make_project(path: Path) -> Path:
    """A copy of the stages and library with a small vision profile: 2 seeds x 6 epochs of adaptive."""
    path.mkdir()
    for item in ("stages", "src"):
        shutil.copytree(REPO / item, path / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["common"].update(seeds=[0, 1], threads=1)
    params["grid"] = {"multipliers": [1], "extra_seeds": [], "workers": 1}  # one run after another: a known order
    params["schedules"], params["ablations"] = {"adaptive": params["schedules"]["adaptive"]}, {}
    params["tasks"]["vision"].update(epochs=6, patience=10, data={"n_train": 400, "n_test": 40}, model={"width": 8})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage(path, "prepare", "vision")
    return path


def stage(cwd: Path, name: str, *args: str, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [sys.executable, f"stages/{name}.py", *args]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def outcome(project: Path, seed: int) -> tuple[dict, dict, dict]:
    """(result.json without clock readings, best checkpoint tensors, test metrics) of one seed."""
    result = json.loads((project / f"live/vision/adaptive/1x/seed{seed}/result.json").read_text())
    ckpt = torch.load(project / f"runs/vision/adaptive/1x/seed{seed}/model.pt", weights_only=False)
    metrics = json.loads((project / f"metrics/vision/adaptive/1x/{seed}.json").read_text())
    return without_clock(result), ckpt["model"], metrics


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_ends_like_an_uninterrupted_run(tmp_path):
    ref = make_project(tmp_path / "ref")
    stage(ref, "train", "vision")

    work = make_project(tmp_path / "work")
    state = work / "runs/.resume/vision/adaptive/1x/seed1.pt"
    proc = stage(work, "train", "vision", popen=True)
    deadline = time.monotonic() + 300
    while not state.exists():  # seed 0 is done and seed 1 has finished an epoch
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "live/vision/adaptive/1x/seed1/result.json").exists()  # it really was cut short

    rerun = stage(work, "train", "vision").stdout
    assert "[vision/adaptive 1x seed 0] resumed after epoch 6 (finished: rewriting its outputs)" in rerun
    assert "[vision/adaptive 1x seed 1] resumed after epoch" in rerun
    # finished runs keep their (slim) state: a later re-run of the cell rewrites them without training
    assert all(torch.load(state.parent / f"seed{k}.pt", weights_only=False)["done"] for k in (0, 1))

    for seed in (0, 1):
        want_result, want_model, want_metrics = outcome(ref, seed)
        got_result, got_model, got_metrics = outcome(work, seed)
        assert got_result == want_result  # val losses, LR trace, best epoch, probes: exactly
        assert want_model.keys() == got_model.keys()
        assert all(torch.equal(want_model[k], got_model[k]) for k in want_model)
        for k in ("test_metric", "test_loss", "best_val_loss", "best_epoch", "epochs_run"):
            assert got_metrics[k] == want_metrics[k], k
        # the dvclive curves were continued, not restarted: one row per epoch, the same values
        for curve in ("val/loss.tsv", "lr.tsv", "train/loss.tsv"):
            want = (ref / f"live/vision/adaptive/1x/seed{seed}/plots/metrics/{curve}").read_text()
            got = (work / f"live/vision/adaptive/1x/seed{seed}/plots/metrics/{curve}").read_text()
            assert got == want, curve
    assert len(want_result["val_loss"]) == 6


def _train(cfg, knobs, data, tmp_path, resume, log):
    return train_one(
        get_task("vision", cfg), cfg, "adaptive", knobs, 0, data, tmp_path / "run", tmp_path / "live", log, resume
    )


def test_a_state_from_other_settings_or_unreadable_is_not_resumed(tiny_vision_cfg, tmp_path):
    prepared = tmp_path / "data"
    get_task("vision", tiny_vision_cfg).prepare(prepared, seed=0)
    knobs = load_params(REPO / "params.yaml").schedules["adaptive"]
    resume = tmp_path / "state.pt"
    first = _train(tiny_vision_cfg, knobs, prepared, tmp_path, resume, lambda m: None)
    assert resume.exists() and torch.load(resume, weights_only=False)["done"]

    lines = []
    again = _train(tiny_vision_cfg, knobs, prepared, tmp_path, resume, lines.append)
    assert any("(finished: rewriting its outputs)" in line for line in lines)
    assert again.val_loss == first.val_loss and again.usage == first.usage

    import dataclasses

    lines.clear()
    other = dataclasses.replace(knobs, patience=1)
    _train(tiny_vision_cfg, other, prepared, tmp_path, resume, lines.append)
    assert any("saved by a run with other settings, data or code; starting afresh" in line for line in lines)

    resume.write_bytes(b"not a checkpoint")
    lines.clear()
    r = _train(tiny_vision_cfg, knobs, prepared, tmp_path, resume, lines.append)
    assert any("unreadable resume state" in line for line in lines)
    assert r.val_loss == first.val_loss and all(math.isfinite(v) for v in r.val_loss)
