"""The pull-request workflow (.github/workflows/cml.yaml): valid for GitHub, and the commands it runs exist here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "cml.yaml"
CHECK = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")


def lint(path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with GitHub's workflow schema, which the package ships (no network)."""
    return subprocess.run(
        [CHECK, "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(CHECK is None, reason="check-jsonschema is not installed (requirements.txt pins it)")
def test_the_workflow_is_a_valid_github_workflow(tmp_path):
    proc = lint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the check can fail: a job without steps or runs-on is rejected
    broken = yaml.safe_load(WORKFLOW.read_text())
    del broken["jobs"]["report"]["runs-on"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert lint(tmp_path / "broken.yaml").returncode != 0


def test_the_workflow_runs_commands_this_repository_has():
    spec = yaml.safe_load(WORKFLOW.read_text())
    assert spec[True]["pull_request"] is None  # PyYAML reads the key `on` as True
    steps = spec["jobs"]["report"]["steps"]
    script = "\n".join(step.get("run", "") for step in steps)
    makefile = (REPO / "Makefile").read_text()
    for target in re.findall(r"\bmake (\w+)", script):
        assert re.search(rf"^{target}:", makefile, re.M), f"make {target}: no such target"
    for command in re.findall(r"-m adaptive_lr\.report (\S+)", script):
        proc = subprocess.run(
            [sys.executable, "-m", "adaptive_lr.report", command, "--help"], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"adaptive_lr.report {command}: {proc.stderr}"
    assert "cml comment create" in script and "report.md" in script
    assert any(step.get("uses", "").startswith("iterative/setup-cml@") for step in steps)
