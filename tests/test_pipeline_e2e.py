"""End to end: `dvc repro` of a tiny profile in a temporary git repository, with DVC itself."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TASKS = ("vision", "text", "speech")
SCHEDULES = ("fixed", "step", "cosine", "plateau", "greedy", "schedulefree", "prodigy", "adaptive")
ABLATIONS = ("adaptive_noraise", "adaptive_epoch", "adaptive_pairraise")

# The smallest settings that still train every task for real.
TINY = {
    "common": {"seeds": [0], "threads": 1, "epochs": 2},
    "grid": {"multipliers": [1, 3], "extra_seeds": [], "workers": 2, "ablation_multipliers": [1, 3]},
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


ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def _run(args, cwd):
    proc = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _wait_for_queue(dvc, work, names, timeout_s=1200):
    """Poll `dvc queue status` until the named experiments are done; return the status table."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = _run(dvc + ["queue", "status"], work)
        rows = {}
        for line in status.splitlines():
            words = line.split()
            for name in set(names) & set(words):
                rows[name] = next((w for w in words if w in ("Queued", "Running", "Success", "Failed")), "?")
        if len(rows) == len(names) and all(state in ("Success", "Failed") for state in rows.values()):
            return rows, status
        assert time.monotonic() < deadline, f"queue still busy after {timeout_s}s:\n{status}"
        time.sleep(5)


def _ran(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


def tiny_lab(work: Path, remote: Path | None = None) -> Path:
    """The tiny profile of the lab (dvc.yaml, stages/, src/, params.yaml with TINY laid over) in a fresh git
    repository with DVC, committed; with ``remote``, a default DVC remote there (in the committed config)."""
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
    _run(["git", "init", "-q", "-b", "main"], work)
    _run(dvc + ["init", "-q"], work)
    if remote is not None:
        _run(dvc + ["remote", "add", "-d", "storage", str(remote)], work)
    _run(GIT + ["add", "-A"], work)
    _run(GIT + ["commit", "-qm", "tiny lab"], work)
    return work


@pytest.mark.slow
def test_dvc_repro_tiny_profile(tmp_path):
    work = tiny_lab(tmp_path / "lab")
    dvc = [sys.executable, "-m", "dvc"]

    first = _run(dvc + ["repro"], work)
    assert _ran(first) == {f"{s}@{t}" for s in ("prepare", "train") for t in TASKS} | {"compare"}

    comparison = json.loads((work / "metrics" / "comparison.json").read_text())
    assert set(comparison) == {*TASKS, "profile"}
    summary = json.loads((work / "metrics" / "summary.json").read_text())
    assert set(summary) == set(TASKS) and all(set(summary[t]) == set(SCHEDULES) for t in TASKS)
    for task in TASKS:
        entry = comparison[task]
        assert entry["metric"] == ("wer" if task == "speech" else "accuracy")
        assert entry["higher_is_better"] is (task != "speech")
        assert set(entry["schedules"]) == set(SCHEDULES)
        for v in entry["schedules"].values():
            assert v["seeds"] == 1 and set(v["grid"]) == {"1x", "3x"}
            assert v["tuned"]["multiplier"] in (1.0, 3.0) and v["gap_to_best_tuned"] is not None
            for key in ("test_metric", "best_val_loss", "train_seconds"):
                assert set(v[key]) >= {"mean", "std"}
            for key in ("epochs_to_target", "seconds_to_target"):
                assert set(v[key]) >= {"mean", "std", "reached"}
            assert v["test_metric"]["mean"] is not None
        for name in (f"val_loss_{task}", f"lr_{task}"):
            assert (work / "plots" / f"{name}.png").stat().st_size > 10_000
        assert set(entry["ablations"]) == set(ABLATIONS)
        assert set(entry["adaptive_vs"]) == (set(SCHEDULES) - {"adaptive"}) | set(ABLATIONS)
        # every ablation at both of grid.ablation_multipliers, paired with adaptive there
        assert {m: set(v) for m, v in entry["ablation_verdicts"].items()} == {
            "1x": set(ABLATIONS),
            "3x": set(ABLATIONS),
        }
        assert entry["aims"]["rank"] in range(1, len(SCHEDULES) + 1)
        assert entry["schedules"]["adaptive"]["relative_to_fixed"]["seconds_per_epoch"] > 0
    for name in ("time_to_target", "overhead"):
        assert (work / "plots" / f"{name}.png").stat().st_size > 10_000
    assert "| schedule" in (work / "metrics" / "comparison.md").read_text()
    assert (work / "metrics" / "vision" / "adaptive" / "3x" / "0.json").exists()
    assert (work / "live" / "text" / "cosine" / "1x" / "seed0" / "plots" / "metrics" / "val" / "loss.tsv").exists()
    assert (work / "plots" / "curves" / "speech_lr.csv").read_text().startswith("epoch," + ",".join(SCHEDULES))

    # nothing changed: nothing runs
    assert _ran(_run(dvc + ["repro"], work)) == set()

    # the baseline, committed as a user would: dvc.lock, curves, metrics, plots
    _run(GIT + ["add", "-A"], work)
    _run(GIT + ["commit", "-qm", "baseline results"], work)
    assert "plots/" not in _run(["git", "status", "--porcelain"], work)

    # README recipe: a sweep queued, then run by two workers; each re-runs only what its override touches
    names = ("factor-07", "factor-03")
    for name, factor in zip(names, ("0.7", "0.3")):
        _run(dvc + ["exp", "run", "--queue", "-n", name, "-S", f"schedules.adaptive.factor={factor}"], work)
    # and one that fails: a failed queued experiment shows as Failed, and its log holds the stage's error line
    _run(dvc + ["exp", "run", "--queue", "-n", "negative-lr", "-S", "common.lr=-1"], work)
    _run(dvc + ["queue", "start", "-j", "2"], work)
    states, status = _wait_for_queue(dvc, work, (*names, "negative-lr"))
    assert states == {"factor-07": "Success", "factor-03": "Success", "negative-lr": "Failed"}, status
    failed = subprocess.run(dvc + ["queue", "logs", "negative-lr"], cwd=work, env=ENV, capture_output=True, text=True)
    assert "error: common.lr = -1.0: must be > 0" in failed.stdout + failed.stderr, failed.stdout + failed.stderr
    shown = json.loads(_run(dvc + ["exp", "show", "--json"], work))
    exps = {e["name"]: e for baseline in shown for e in (baseline.get("experiments") or [])}
    assert set(names) <= set(exps), exps.keys()
    # README recipe: `dvc exp show` trimmed (--keep is anchored at the start of a column name)
    table = _run(
        dvc
        + [
            "exp",
            "show",
            "--csv",
            "--drop",
            ".*",
            "--keep",
            r"Experiment|.*\.factor$|vision\.[a-z]+\.default$",
        ],
        work,
    )
    header = table.splitlines()[0].split(",")
    assert header[0] == "Experiment" and "schedules.adaptive.factor" in header
    assert {h for h in header if h.endswith(".default")} == {f"vision.{s}.default" for s in SCHEDULES}
    log = _run(dvc + ["queue", "logs", names[0]], work)
    # a schedule's knob: every task's train stage and compare re-run, prepare does not
    assert _ran(log) == {f"train@{t}" for t in TASKS} | {"compare"}

    # README recipe: the sweep's table (workspace + each experiment, from their committed comparison.json)
    _run([sys.executable, "-m", "adaptive_lr.report", "sweep", *names, "-o", "sweep.json"], work)
    swept = json.loads((work / "sweep.json").read_text())
    assert list(swept["runs"]) == ["default", *names] and swept["runs"]["factor-07"]["lr"]["vision"] == 3e-3
    for task in TASKS:
        for s, v in swept["tasks"][task]["schedules"].items():
            assert set(v["by_run"]) == {"default", *names} and v["worst_gap"] >= 0, (task, s)
        # only adaptive's factor changed: every other schedule has the same result in all three
        assert swept["tasks"][task]["schedules"]["fixed"]["worst_gap"] == 0

    # README recipe: `dvc plots diff` of the two experiments as images, and DVC's own page drawing offline
    from adaptive_lr.report import html_template, plots_diff_specs, render_plots

    specs = plots_diff_specs(list(names), root=work)
    rows = specs["val_loss_vision"]["data"]["values"]
    assert {r["rev"] for r in rows} == set(names) and {r["field"] for r in rows} == set(SCHEDULES)
    assert sorted({int(float(r["epoch"])) for r in rows}) == [1, 2]  # x = epoch
    images = render_plots(specs, work / "dvc_plots" / "images")
    assert {p.stem for p in images} == {f"{s}_{t}" for s in ("val_loss", "lr") for t in TASKS}
    assert all(p.stat().st_size > 20_000 for p in images)
    template = html_template(work / ".dvc" / "plots" / "offline.html")
    _run(dvc + ["plots", "diff", *names, "--html-template", str(template), "-o", "dvc_plots"], work)
    page = (work / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "<script src=" not in page

    # a single override in the workspace: the train stages re-run, and train only the changed schedule's runs
    # (the others are rewritten from their kept states); compare runs
    again = _run(dvc + ["exp", "run", "-S", "schedules.step.gamma=0.5"], work)
    assert _ran(again) == {f"train@{t}" for t in TASKS} | {"compare"}
    assert "[vision/step 1x seed 0] epoch  1/2" in again and "[vision/fixed 1x seed 0] epoch" not in again
    assert "[vision/fixed 1x seed 0] resumed after epoch 2 (finished: rewriting its outputs)" in again

    # the CI report: metric and param changes against main, the headline, the plots
    report = _run([sys.executable, "-m", "adaptive_lr.report", "ci", "--base", "main", "-o", "report.md"], work)
    assert "schedules.step.gamma" in report and "| metrics/" in report and "![overhead](plots/overhead.png)" in report
    assert (work / "report.md").read_text().strip() == report.strip()

    # keep an experiment: as a branch, or applied to the workspace
    _run(dvc + ["exp", "branch", names[0], "keep-factor-07"], work)
    assert "keep-factor-07" in _run(["git", "branch", "--list"], work)
    _run(dvc + ["exp", "apply", names[1]], work)
    assert yaml.safe_load((work / "params.yaml").read_text())["schedules"]["adaptive"]["factor"] == 0.3
