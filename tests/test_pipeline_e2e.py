"""End to end: `dvc repro` of a tiny profile in a temporary git repository, with DVC itself."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TASKS = ("vision", "text", "speech")
SCHEDULES = ("fixed", "step", "cosine", "plateau", "greedy", "schedulefree", "adaptive")

# The smallest settings that still train every task for real.
TINY = {
    "common": {"seeds": [0], "threads": 1, "epochs": 2},
    "tasks": {
        "vision": {"epochs": 2, "data": {"n_train": 60, "n_test": 30}, "model": {"width": 8}},
        "text": {"epochs": 1, "data": {"n_train": 20, "n_test": 10, "max_length": 12}, "model": {"num_layers": 1}},
        "speech": {"epochs": 1, "data": {"n_train": 40, "n_test": 10}},
    },
}


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def _run(args, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _ran(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.mark.slow
def test_dvc_repro_tiny_profile(tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    for item in ("dvc.yaml", "stages", "src"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, work / item)
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (work / ".gitignore").write_text("/data/\n/runs/\n__pycache__/\n")
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], work)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], work)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny lab"], work)
    _run(dvc + ["init", "-q"], work)

    first = _run(dvc + ["repro"], work)
    expected = {f"prepare@{t}" for t in TASKS} | {f"{s}@{t}-{k}" for s in ("train", "evaluate") for t in TASKS for k in SCHEDULES} | {"compare"}
    assert _ran(first) == expected

    comparison = json.loads((work / "metrics" / "comparison.json").read_text())
    assert set(comparison) == set(TASKS)
    for task, entry in comparison.items():
        assert entry["metric"] == ("wer" if task == "speech" else "accuracy")
        assert entry["higher_is_better"] is (task != "speech")
        assert set(entry["schedules"]) == set(SCHEDULES)
        for v in entry["schedules"].values():
            assert v["seeds"] == 1
            for key in ("test_metric", "best_val_loss", "train_seconds"):
                assert set(v[key]) >= {"mean", "std"}
            for key in ("epochs_to_target", "seconds_to_target"):
                assert set(v[key]) >= {"mean", "std", "reached"}
            assert v["test_metric"]["mean"] is not None
        assert (work / "plots" / f"val_loss_{task}.png").stat().st_size > 10_000
    assert "| schedule" in (work / "metrics" / "comparison.md").read_text()
    assert (work / "metrics" / "vision" / "adaptive" / "0.json").exists()
    assert (work / "live" / "text" / "cosine" / "seed0" / "plots" / "metrics" / "val" / "loss.tsv").exists()

    # nothing changed: nothing runs
    assert _ran(_run(dvc + ["repro"], work)) == set()

    # one schedule's knob changed: only its cells and compare run
    params["schedules"]["step"]["gamma"] = 0.5
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = _run(dvc + ["repro"], work)
    assert _ran(again) == {f"{s}@{t}-step" for s in ("train", "evaluate") for t in TASKS} | {"compare"}
