"""The grid as the pipeline runs it: the number of worker processes changes no result, adding a
multiplier trains only the new runs, and each DVC stage depends only on the params it reads."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from clock import without_clock

from adaptive_lr import pipeline
from adaptive_lr.config import load_params

REPO = Path(__file__).resolve().parents[1]


def tiny_params(root: Path, **grid) -> Path:
    """params.yaml of a tiny vision grid under ``root`` (2 epochs, 120 digits, ResNet width 4)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["common"].update(seeds=[0], threads=1, epochs=2, batch_size=16)
    raw["tasks"]["vision"].update(epochs=2, lr=1e-3, data={"n_train": 120, "n_test": 40}, model={"width": 4})
    raw["grid"] = {"multipliers": [1, 3], "extra_seeds": [1], "workers": 1, **grid}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root / "params.yaml"


def outcome(root: Path, schedule: str) -> dict:
    """Every run of the cell: result.json without clock readings, and the checkpoint's tensors."""
    out = {}
    for result in sorted((root / "live/vision" / schedule).glob("*x/seed*/result.json")):
        rel = result.parent.relative_to(root / "live")
        fields = without_clock(json.loads(result.read_text()))
        out[str(rel)] = (fields, torch.load(root / "runs" / rel / "model.pt", weights_only=False)["model"])
    return out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0] and all(torch.equal(a[k][1][t], b[k][1][t]) for t in a[k][1]) for k in a
    )


def test_the_number_of_workers_changes_no_result(tmp_path):
    results = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        params = load_params(tiny_params(root, workers=workers))
        pipeline.prepare(params, "vision", root)
        pipeline.train_cell(params, "vision", "schedulefree", root)
        results[workers] = outcome(root, "schedulefree")
    # 1x and 3x with seed 0, seed 1 at 1x and at the tuned multiplier
    assert len(results[1]) >= 3
    assert same(results[1], results[2])


def test_adding_a_multiplier_trains_only_the_new_runs(tmp_path, capsys):
    root = tmp_path / "p"
    params = load_params(tiny_params(root, multipliers=[1], extra_seeds=[]))
    pipeline.prepare(params, "vision", root)
    pipeline.train_cell(params, "vision", "fixed", root)
    before = outcome(root, "fixed")
    capsys.readouterr()
    params = load_params(tiny_params(root, multipliers=[1, 3], extra_seeds=[]))
    pipeline.train_cell(params, "vision", "fixed", root)
    log = capsys.readouterr().out
    assert "[vision/fixed 1x seed 0] resumed after epoch 2 (finished: rewriting its outputs)" in log
    assert "[vision/fixed 3x seed 0] epoch  1/2" in log and "[vision/fixed 1x seed 0] epoch" not in log
    after = outcome(root, "fixed")
    assert set(after) == {"vision/fixed/1x/seed0", "vision/fixed/3x/seed0"}
    assert same({k: after[k] for k in before}, before)
    # taking the multiplier out again removes its runs from the outputs
    params = load_params(tiny_params(root, multipliers=[1], extra_seeds=[]))
    pipeline.train_cell(params, "vision", "fixed", root)
    assert set(outcome(root, "fixed")) == {"vision/fixed/1x/seed0"}
    grid = json.loads((root / "live/vision/fixed/grid.json").read_text())
    assert grid["runs"] == [[1.0, 0]] and grid["tuned"] == 1.0


def test_an_ablation_trains_at_the_ablation_multipliers_with_the_grid_seeds(tmp_path):
    root = tmp_path / "p"
    path = tiny_params(root, multipliers=[0.3, 1, 3], extra_seeds=[1], ablation_multipliers=[0.3, 1])
    raw = yaml.safe_load(path.read_text())
    raw["ablations"] = {"adaptive_noraise": raw["ablations"]["adaptive_noraise"]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(path)
    pipeline.prepare(params, "vision", root)
    pipeline.train_cell(params, "vision", "adaptive_noraise", root)
    # seed 0 at 0.3x and 1x; no extra seed anywhere, no run at 3x
    assert set(outcome(root, "adaptive_noraise")) == {
        "vision/adaptive_noraise/0.3x/seed0",
        "vision/adaptive_noraise/1x/seed0",
    }
    assert sorted(p.name for p in (root / "metrics/vision/adaptive_noraise").iterdir()) == ["0.3x", "1x"]


def test_the_task_stage_trains_only_the_runs_whose_schedule_changed(tmp_path, capsys):
    root = tmp_path / "p"

    def params_with(gamma: float, schedules=("fixed", "step")):
        path = tiny_params(root, multipliers=[1], extra_seeds=[])
        raw = yaml.safe_load(path.read_text())
        raw["schedules"] = {s: {**raw["schedules"][s], **({"gamma": gamma} if s == "step" else {})} for s in schedules}
        raw["ablations"] = {}
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_params(path)

    params = params_with(0.1)
    pipeline.prepare(params, "vision", root)
    pipeline.train_task(params, "vision", root)
    fixed = outcome(root, "fixed")
    capsys.readouterr()
    pipeline.train_task(params_with(0.5), "vision", root)
    log = capsys.readouterr().out
    assert "[vision/fixed 1x seed 0] resumed after epoch 2 (finished: rewriting its outputs)" in log
    assert "[vision/step 1x seed 0] epoch  1/2" in log and "[vision/fixed 1x seed 0] epoch" not in log
    assert same(outcome(root, "fixed"), fixed)
    assert (root / "metrics/vision/step/1x/0.json").exists()
    # a schedule taken out of params.yaml leaves no outputs behind
    pipeline.train_task(params_with(0.5, schedules=("fixed",)), "vision", root)
    assert {p.name for top in ("runs", "live", "metrics") for p in (root / top / "vision").iterdir()} == {"fixed"}


def tracked_params(project: Path) -> dict[str, dict]:
    """For every stage DVC builds from dvc.yaml, the values of the params it depends on (DVC's own reading)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        out = {}
        for stage in repo.index.stages:
            values = {}
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    values.update(dep.read_params())
            out[stage.name] = values
    return out


def edited(project: Path, edit) -> set[str]:
    """The stages whose tracked params change when ``edit`` is applied to params.yaml."""
    text = (project / "params.yaml").read_text()
    before = tracked_params(project)
    raw = yaml.safe_load(text)
    edit(raw)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        after = tracked_params(project)
    finally:
        (project / "params.yaml").write_text(text)
    return {name for name in after if after[name] != before.get(name)}


@pytest.fixture
def project(tmp_path) -> Path:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def test_each_stage_depends_only_on_the_params_it_reads(project):
    params = load_params(project / "params.yaml")
    tasks = list(params.tasks)
    assert set(tracked_params(project)) == {f"{s}@{t}" for s in ("prepare", "train") for t in tasks} | {"compare"}

    def full_epochs(raw):
        raw["profiles"]["full"]["tasks"]["vision"]["epochs"] = 77

    def target(raw):
        raw["targets"]["vision"] = 0.77

    def greedy(raw):
        raw["schedules"]["greedy"]["factor"] = 0.77

    def vision_lr(raw):
        raw["tasks"]["vision"]["lr"] = 7.7e-4

    def multiplier(raw):
        raw["grid"]["multipliers"] = [*raw["grid"]["multipliers"], 30]

    assert edited(project, full_epochs) == set()  # another profile's block: nothing re-runs
    assert edited(project, target) == {"compare"}  # a target: compare only
    # a schedule's knob: every task's train stage re-runs, and trains only that schedule's runs (test above)
    assert edited(project, greedy) == {f"train@{t}" for t in tasks}
    assert edited(project, vision_lr) == {"prepare@vision", "train@vision", "compare"}
    # a multiplier (or a seed): every train stage re-runs, and trains only the new runs (test above)
    assert edited(project, multiplier) == {f"train@{t}" for t in tasks} | {"compare"}


def test_dvc_yaml_matrices_and_plots_follow_params(project):
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert spec["stages"]["train"]["matrix"] == {"task": "${tasks}"}
    assert spec["stages"]["prepare"]["matrix"] == {"task": "${tasks}"}
    params = load_params(REPO / "params.yaml")
    schedules = [s for s in params.schedules if s not in params.ablations]
    # compare reads every task's metrics folder
    assert {f"metrics/{t}" for t in params.tasks} <= set(spec["stages"]["compare"]["deps"])
    plots = {k: v for item in spec["plots"] if isinstance(item, dict) for k, v in item.items()}
    # compare's other figures are image plots: `dvc plots show/diff` show them too
    images = {item for item in spec["plots"] if isinstance(item, str)}
    figures = {"profile", "ablations", "time_to_target", "overhead"} | {f"sensitivity_{t}" for t in params.tasks}
    assert images == {f"plots/{name}.png" for name in figures}
    for task in params.tasks:
        for kind in ("val_loss", "lr"):
            plot = plots[f"{kind}_{task}"]
            assert plot["y"] == {f"plots/curves/{task}_{kind}.csv": schedules}, (task, kind)
