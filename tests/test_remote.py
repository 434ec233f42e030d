"""The DVC remote round trip, with DVC and git themselves: a clone pulls the results and reproduces nothing,
and an experiment made in one clone is seen in another."""

from __future__ import annotations

import configparser
import json
import sys
from pathlib import Path

import pytest
import yaml
from clock import without_clock
from test_pipeline_e2e import GIT, _ran, _run, tiny_lab

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def test_the_repository_has_a_default_remote():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    default = config.get("core", "remote", fallback=None)
    assert default, ".dvc/config names no default remote"
    assert config.get(f"'remote \"{default}\"'", "url", fallback=None), f"remote {default!r} has no url"


@pytest.mark.slow
def test_a_clone_pulls_the_results_and_reproduces_nothing(tmp_path):
    remote = tmp_path / "remote"
    work = tiny_lab(tmp_path / "lab", remote)
    _run(DVC + ["repro"], work)
    _run(GIT + ["add", "-A"], work)
    _run(GIT + ["commit", "-qm", "results"], work)
    _run(DVC + ["push", "--run-cache"], work)
    assert any(remote.rglob("*")), "nothing was pushed"

    # a newcomer: clone, pull, and the pipeline is up to date without training
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    assert not (clone / "runs").exists()
    _run(DVC + ["pull"], clone)
    assert (clone / "runs" / "vision" / "adaptive" / "1x" / "seed0" / "model.pt").exists()
    assert (clone / "data" / "speech").is_dir()
    assert "Data and pipelines are up to date" in _run(DVC + ["status"], clone)
    assert _ran(_run(DVC + ["repro"], clone)) == set()

    # experiments are shared through the git remote (refs) and the DVC remote (outputs)
    _run(DVC + ["exp", "run", "-n", "gamma-05", "-S", "schedules.step.gamma=0.5"], clone)
    _run(DVC + ["exp", "push", "origin", "gamma-05"], clone)
    other = tmp_path / "other"
    _run(["git", "clone", "-q", str(work), str(other)], tmp_path)
    _run(DVC + ["exp", "pull", "origin", "gamma-05"], other)
    shown = json.loads(_run(DVC + ["exp", "show", "--json"], other))
    exps = {e["name"]: e for baseline in shown for e in (baseline.get("experiments") or [])}
    assert "gamma-05" in exps, list(exps)
    _run(DVC + ["exp", "apply", "gamma-05"], other)
    assert yaml.safe_load((other / "params.yaml").read_text())["schedules"]["step"]["gamma"] == 0.5
    _run(DVC + ["checkout"], other)  # the experiment's checkpoints come from the DVC remote
    assert (other / "runs" / "vision" / "step" / "1x" / "seed0" / "model.pt").exists()


@pytest.mark.slow
def test_the_grid_sharded_across_two_machines_equals_one_machine(tmp_path):
    """README recipe "The grid across machines": each machine reproduces its tasks' train stages and pushes
    the run cache; one machine pulls it, and its `dvc repro` restores every train stage (no training) and
    runs compare. The comparison equals a single machine's, clock readings aside."""
    remote = tmp_path / "remote"
    lab = tiny_lab(tmp_path / "lab", remote)
    origin = tmp_path / "origin.git"
    _run(["git", "clone", "-q", "--bare", str(lab), str(origin)], tmp_path)
    shards = {"a": ["train@vision"], "b": ["train@text", "train@speech"]}
    for name, stages in shards.items():
        machine = tmp_path / name
        _run(["git", "clone", "-q", str(origin), str(machine)], tmp_path)
        assert _ran(_run(DVC + ["repro", *stages], machine)) == {
            *stages,
            *(s.replace("train", "prepare") for s in stages),
        }
        _run(DVC + ["push", "--run-cache"], machine)

    collector = tmp_path / "collector"
    _run(["git", "clone", "-q", str(origin), str(collector)], tmp_path)
    # the run-cache entries (no dvc.lock here yet: nothing to check out), then the outputs they name
    _run(DVC + ["fetch", "--run-cache"], collector)
    out = _run(DVC + ["repro", "--pull"], collector)
    assert _ran(out) == {"compare"}, out[-3000:]
    for task in ("vision", "text", "speech"):
        assert f"Stage 'train@{task}' is cached - skipping run, checking out outputs" in out

    _run(DVC + ["repro"], lab)  # one machine, everything
    sharded = json.loads((collector / "metrics" / "comparison.json").read_text())
    single = json.loads((lab / "metrics" / "comparison.json").read_text())
    assert without_clock(sharded) == without_clock(single)
