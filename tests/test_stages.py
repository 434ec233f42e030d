"""The stage scripts import the library of their own tree, not whatever `adaptive_lr` is installed.

A queued `dvc exp run` executes in a copy of the repository; with the package installed in
editable mode, a plain import would run the *workspace's* src/ instead of the experiment's.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", sorted(p.name for p in (REPO / "stages").glob("*.py")))
def test_stage_imports_its_own_tree(tmp_path, stage):
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "stages", copy / "stages")
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    script = str(copy / "stages" / stage)
    code = f"import runpy; runpy.run_path({script!r}); import adaptive_lr; print(adaptive_lr.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert Path(out.strip()).resolve().is_relative_to(copy.resolve()), out
