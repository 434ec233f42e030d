"""The bench scripts run from anywhere on the tiniest settings and print ratios that parse.

No assertion on the figures themselves: they are timings, which vary with the machine's load.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
RATIO = re.compile(r"(\d+(?:\.\d+)?)x\b")

# the smallest runs that still go through every code path (probe_share: a budget that allows probes)
TINY = {
    "loop_vs_bare.py": ["--epochs", "1", "--repeats", "1", "--n-train", "100", "--n-test", "30", "--batch-size", "16"],
    "run_breakdown.py": ["--tasks", "vision", "--epochs", "1", "--repeats", "1", "--n-train", "100", "--n-test", "30"],
    "step_cost.py": ["--sizes", "4", "16", "--length", "5", "--repeats", "1", "--train-steps", "1", "--width", "4"],
    "full_smoke.py": ["--tiny"],
    "params_ab.py": [
        "--epochs",
        "1",
        "--repeats",
        "1",
        "--n-train",
        "100",
        "--n-test",
        "30",
        "--set",
        "tasks.vision.model.width=4",
    ],
    "probe_share.py": [
        "--epochs",
        "2",
        "--repeats",
        "1",
        "--n-train",
        "100",
        "--n-test",
        "30",
        "--batch-size",
        "16",
        "--probe-budget",
        "1",
    ],
}
# the line whose ratio is the script's headline figure
HEADLINE = {
    "loop_vs_bare.py": "ratio loop/bare, optimisation samples/s:",
    "run_breakdown.py": "ratio train/run total (vision):",
    "step_cost.py": "ratio AdaptiveLR.step(float) / ReduceLROnPlateau.step(float):",
    "probe_share.py": "ratio probe/optim (adaptive):",
    "full_smoke.py": "ratio steps/s (vision):",
    "params_ab.py": "ratio B/A, optimisation seconds per epoch:",
}


def _run(tmp_path, script, *args):
    # from a foreign folder: the scripts find their params and library through their own path
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


# scripts that run a study rather than time something: their tiny run prints its tables
STUDIES = {"untuned_problems.py": ["--tiny"]}


def test_every_bench_script_has_a_smoke_test():
    assert sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")) == sorted({**TINY, **STUDIES})


def test_untuned_problems_runs_the_protocol_on_both_families(tmp_path):
    out = _run(tmp_path, "untuned_problems.py", "--tiny", "--json", str(tmp_path / "families.json"))
    assert out.returncode == 0, out.stderr
    for family in ("tabular", "signal"):
        assert f"## {family}: best tuned test accuracy 0." in out.stdout
    assert "| adaptive | " in out.stdout and "budget (2 epochs)" in out.stdout
    assert "machine:" in out.stdout
    families = json.loads((tmp_path / "families.json").read_text())
    assert set(families) == {"tabular", "signal"}
    assert set(families["tabular"]["schedules"]) == {"fixed", "adaptive"}  # the tiny subset
    assert [p.name for p in tmp_path.iterdir()] == ["families.json"]  # nothing else left behind


@pytest.mark.parametrize("script", sorted(TINY))
def test_help_says_what_it_measures(tmp_path, script):
    out = _run(tmp_path, script, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "--repeats" in out.stdout


@pytest.mark.parametrize("script", sorted(TINY))
def test_tiny_run_prints_finite_positive_ratios(tmp_path, script):
    out = _run(tmp_path, script, *TINY[script])
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("ratio ")]
    values = [float(v) for line in lines for v in RATIO.findall(line)]
    assert lines and values and all(math.isfinite(v) and v >= 0 for v in values), out.stdout
    (headline,) = [line for line in lines if line.startswith(HEADLINE[script])]
    assert float(RATIO.findall(headline)[0]) > 0, headline
    assert "machine:" in out.stdout  # figures come with where they were measured
    assert not list(tmp_path.iterdir())  # nothing left behind in the working folder


def test_bad_option_is_a_usage_error(tmp_path):
    out = _run(tmp_path, "probe_share.py", "--epochs", "1")
    assert out.returncode == 2 and "--epochs must be >= 2" in out.stderr


def test_params_ab_names_a_key_params_yaml_does_not_have(tmp_path):
    out = _run(tmp_path, "params_ab.py", "--set", "tasks.vision.model.widht=4")
    assert out.returncode == 2, out.stdout
    assert "--set tasks.vision.model.widht: params.yaml has no key tasks.vision.model.widht" in out.stderr
    assert "width" in out.stderr  # the keys it does have
