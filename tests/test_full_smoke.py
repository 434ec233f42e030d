"""bench/full_smoke.py: profile full's code path (local parquet in the hub schemas, the real model classes) runs.

At --tiny the models and inputs are shrunk but every step is the real one: hub-schema parquet read
through `source: local`, pretrained-style folders loaded with from_pretrained, pipeline.prepare,
train_cell (adaptive, with probes; then the test split), one process per task.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "full_smoke.py"
TASKS = ("vision", "text", "speech")


@pytest.mark.slow  # about 30 s: three fresh processes importing torch, datasets and transformers
def test_tiny_smoke_passes_every_task(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert any(line.startswith("machine:") for line in lines)
    for task in TASKS:
        assert f"[{task}] pass" in lines, out.stdout[-4000:]
        assert [line for line in lines if re.match(rf"{task}\s+pass\s", line)], out.stdout  # its row of the table
        (ratio,) = [line for line in lines if line.startswith(f"ratio steps/s ({task}):")]
        value = float(re.search(r"(\d+(?:\.\d+)?)x\b", ratio).group(1))
        assert math.isfinite(value) and value > 0, ratio
    assert "GPU-hours estimate inputs" in out.stdout
    # the pipeline really ran: probes in epoch 2, a test evaluation, speech's max_seconds filter and caps
    assert "validation probe(s) per epoch from epoch 2" in out.stdout
    assert re.search(r"\[train speech/adaptive/1x seed 0\] best val/loss .+; test/wer ", out.stdout)
    assert "prepared {'train': 32, 'val': 8, 'test': 8}" in out.stdout
    assert not list(tmp_path.iterdir())  # nothing left in the working folder


def test_bad_steps_is_a_usage_error(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "1", "--epochs", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 2 and "--steps (1) must be >= --epochs (2)" in out.stderr
