"""Aggregation and statistics on synthetic runs with known answers."""

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from adaptive_lr.compare import aims, collect, compare, mean_std, paired, time_to_target, to_markdown
from adaptive_lr.config import Params, TaskConfig
from adaptive_lr.errors import DataError
from adaptive_lr.files import write_json
from adaptive_lr.records import EvalRecord, RunResult

REPO = Path(__file__).resolve().parents[1]


def test_time_to_target_is_the_first_epoch_at_or_below_target():
    assert time_to_target([1.0, 0.6, 0.5, 0.4], [2.0, 4.0, 6.0, 8.0], 0.5) == (3, 6.0)


def test_a_run_that_never_reaches_the_target_is_not_reached():
    assert time_to_target([1.0, 0.9, None], [1.0, 2.0, 3.0], 0.5) == (None, None)


def test_a_non_finite_loss_never_counts_as_reaching_the_target():
    assert time_to_target([float("nan"), float("-inf"), 0.4], [1.0, 2.0, 3.0], 0.5) == (3, 3.0)


def test_mean_std_ignores_missing_values():
    assert mean_std([1.0, 3.0, None]) == {"mean": 2.0, "std": pytest.approx(2**0.5)}
    assert mean_std([None]) == {"mean": None, "std": None}


def test_paired_difference_interval_and_test_by_hand():
    # d = (0.1, 0.1, 0.05): mean 1/12, sd 0.05/sqrt(3), se 0.05/3, t = 5 with 2 degrees of freedom
    ours, theirs = {"0": 0.9, "1": 0.8, "2": 0.85}, {"0": 0.8, "1": 0.7, "2": 0.8}
    p = paired(ours, theirs, higher_is_better=True)
    half = 4.302652729911275 * 0.05 / 3  # t(0.975, df=2)
    assert p["n"] == 3 and p["diff"] == pytest.approx(1 / 12)
    assert p["ci"] == [pytest.approx(1 / 12 - half), pytest.approx(1 / 12 + half)]
    assert p["p_value"] == pytest.approx(1 - 5 / math.sqrt(27))  # two-sided t tail for df = 2
    assert p["verdict"] == "better"
    assert paired(theirs, ours, higher_is_better=True)["verdict"] == "worse"


def test_paired_lower_is_better_for_wer():
    ours, theirs = {"0": 0.20, "1": 0.25, "2": 0.22}, {"0": 0.30, "1": 0.36, "2": 0.31}
    assert paired(ours, theirs, higher_is_better=False)["verdict"] == "better"
    assert paired(theirs, ours, higher_is_better=False)["verdict"] == "worse"


def test_paired_overlapping_runs_are_not_distinguishable():
    p = paired({"0": 0.80, "1": 0.90, "2": 0.85}, {"0": 0.85, "1": 0.84, "2": 0.86}, higher_is_better=True)
    assert p["ci"][0] < 0 < p["ci"][1] and p["verdict"] == "not distinguishable"


def test_paired_constant_difference_has_a_point_interval_and_no_p_value():
    p = paired({"0": 0.9, "1": 0.8}, {"0": 0.8, "1": 0.7}, higher_is_better=True)
    assert p["ci"] == [pytest.approx(0.1), pytest.approx(0.1)] and p["p_value"] is None and p["verdict"] == "better"


def test_paired_uses_only_seeds_both_have_and_needs_two():
    p = paired({"0": 0.9, "1": None, "2": 0.7}, {"0": 0.5, "1": 0.5}, higher_is_better=True)
    assert p == {
        "n": 1,
        "diff": pytest.approx(0.4),
        "ci": [None, None],
        "p_value": None,
        "verdict": "not distinguishable",
    }


def _write_runs(root, curves, test_metric, task="vision", metric="accuracy"):
    """live/ and metrics/ files as train and evaluate write them, through their records."""
    for schedule, per_seed in curves.items():
        for seed, curve in enumerate(per_seed):
            slow = 2.0 if schedule == "adaptive" else 1.0
            run = RunResult(
                task,
                schedule,
                seed,
                epochs_run=3,
                best_epoch=3,
                best_val_loss=min(curve),
                optim_seconds=24.0 * slow,
                val_seconds=3.0 * slow,
                sched_seconds=0.3 * slow,
                probe_seconds=1.2 * slow if schedule.startswith("adaptive") else 0.0,
                probes=6,
                val_loss=curve,
                elapsed=[10.0, 20.0, 30.0],
                lr=[1e-3, 1e-3, 1e-4],
                usage={
                    "wall_seconds": 30.0 * slow,
                    "cpu_util": 1.5,
                    "peak_rss_mb": 400.0,
                    "gpu_peak_mb": None,
                    "gpu_util": None,
                },
            )
            write_json(asdict(run), root / "live" / task / schedule / f"seed{seed}" / "result.json")
            record = EvalRecord.from_run(
                run,
                task=task,
                schedule=schedule,
                seed=seed,
                metric=metric,
                test_loss=1.0,
                test_metric=test_metric(schedule, seed),
            )
            write_json(record.to_dict(), root / "metrics" / task / schedule / f"{seed}.json")


@pytest.fixture
def synthetic(tmp_path):
    cfg = TaskConfig(task="vision", seeds=(0, 1, 2), target_val_loss=0.5)
    params = Params(
        profile="default",
        tasks={"vision": cfg},
        schedules={"fixed": None, "adaptive": None, "adaptive_noraise": None},
        ablations=("adaptive_noraise",),
    )
    curves = {
        "fixed": ([0.9, 0.7, 0.6], [0.8, 0.7, 0.55], [0.8, 0.6, 0.6]),
        "adaptive": ([0.8, 0.5, 0.4], [0.7, 0.45, 0.3], [0.9, 0.6, 0.45]),
        "adaptive_noraise": ([0.9, 0.7, 0.6], [0.8, 0.7, 0.55], [0.8, 0.6, 0.6]),
    }
    _write_runs(tmp_path, curves, lambda s, seed: 0.8 + 0.05 * seed + (0.05 if s == "adaptive" else 0))
    return params, tmp_path


def test_collect_on_synthetic_runs(synthetic):
    params, root = synthetic
    out = collect(params, root)["vision"]
    assert out["metric"] == "accuracy" and out["higher_is_better"] is True and out["target_val_loss"] == 0.5
    fixed, ours = out["schedules"]["fixed"], out["schedules"]["adaptive"]
    assert fixed["epochs_to_target"] == {"mean": None, "std": None, "reached": 0}
    assert ours["epochs_to_target"] == {
        "mean": pytest.approx(7 / 3),
        "std": pytest.approx(0.57735, abs=1e-5),
        "reached": 3,
    }
    assert ours["seconds_to_target"]["mean"] == pytest.approx(70 / 3)
    assert ours["test_metric"]["mean"] == pytest.approx(0.9)
    assert ours["relative_to_fixed"]["train_seconds"] == 2.0 and ours["relative_to_fixed"]["peak_rss_mb"] == 1.0
    assert ours["relative_to_fixed"]["gpu_peak_mb"] is None
    assert ours["val_share"] == pytest.approx(0.1) and ours["sched_share"] == pytest.approx(0.01)
    verdict = out["adaptive_vs"]["fixed"]["test_metric"]
    assert verdict["diff"] == pytest.approx(0.05) and verdict["verdict"] == "better" and verdict["p_value"] is None
    assert ours["probe_cost"] == pytest.approx(0.05) and fixed["probe_cost"] == 0.0
    # ablations are reported apart from the schedules, and paired with ours like them
    assert set(out["schedules"]) == {"fixed", "adaptive"} and set(out["ablations"]) == {"adaptive_noraise"}
    assert out["adaptive_vs"]["adaptive_noraise"]["test_metric"]["verdict"] == "better"
    # ours is first of two; the epochs ratio needs another schedule that reached the target with every seed
    assert out["aims"] == {
        "rank": 1,
        "of": 2,
        "first": True,
        "best_other": "fixed",
        "fastest_other_to_target": None,
        "epochs_ratio": None,
        "epochs_aim_met": False,
    }
    # a tie shares the rank: equal means put ours first together with the other
    tied = {**out, "schedules": {**out["schedules"], "fixed": {**fixed, "test_metric": dict(ours["test_metric"])}}}
    assert aims(tied)["rank"] == 1 and aims(tied)["first"] is True
    md = to_markdown({"vision": out})
    assert "**adaptive**" in md and "(0/3)" in md and "adaptive vs fixed" in md and "2.00x" in md
    assert "Ablations on vision" in md and "adaptive_noraise" in md and "Aims on vision: adaptive is 1 of 2" in md


def test_compare_writes_json_markdown_and_every_plot(synthetic):
    params, root = synthetic
    compare(params, root)
    assert json.loads((root / "metrics" / "comparison.json").read_text())["vision"]["adaptive_vs"]["fixed"]
    assert "## Headline" in (root / "metrics" / "comparison.md").read_text()
    for name in ("val_loss_vision", "lr_vision", "time_to_target", "overhead", "ablations"):
        assert (root / "plots" / f"{name}.png").stat().st_size > 10_000, name
    assert not list(root.rglob("*.tmp"))


# ----------------------------------------------------------------------------- the records compare reads


def test_the_direction_of_the_metric_comes_from_the_task(tmp_path):
    cfg = TaskConfig(task="speech", seeds=(0, 1, 2), target_val_loss=0.5)
    params = Params(profile="default", tasks={"speech": cfg}, schedules={"fixed": None, "adaptive": None})
    curves = {"fixed": ([0.9, 0.7, 0.6],) * 3, "adaptive": ([0.8, 0.5, 0.4],) * 3}
    _write_runs(tmp_path, curves, lambda s, seed: 0.3 - 0.01 * seed - (0.05 if s == "adaptive" else 0), "speech", "wer")
    out = collect(params, tmp_path)["speech"]
    assert out["metric"] == "wer" and out["higher_is_better"] is False
    assert out["adaptive_vs"]["fixed"]["test_metric"]["verdict"] == "better" and out["aims"]["rank"] == 1


def test_an_evaluated_record_keeps_the_layout_of_its_file(tmp_path):
    run = RunResult(
        "speech",
        "cosine",
        1,
        epochs_run=4,
        best_val_loss=1.5,
        usage={"wall_seconds": 8.0, "cpu_util": 1.0, "peak_rss_mb": 300.0, "gpu_peak_mb": None, "gpu_util": None},
    )
    tested = EvalRecord.from_run(
        run,
        task="speech",
        schedule="cosine",
        seed=1,
        metric="wer",
        test_loss=2.0,
        test_metric=0.4,
        eval_seconds=0.5,
        eval_samples_per_s=100.0,
        test_samples=50,
    )
    keys = list(tested.to_dict())
    assert keys[:10] == [
        "task",
        "schedule",
        "seed",
        "metric",
        "test_loss",
        "test_metric",
        "test_wer",
        "eval_seconds",
        "eval_samples_per_s",
        "test_samples",
    ]
    assert tested.to_dict()["test_wer"] == 0.4 and tested.seconds_per_epoch == 2.0
    diverged = EvalRecord.from_run(
        run, task="speech", schedule="cosine", seed=1, metric="wer", test_loss=None, test_metric=None
    )
    assert list(diverged.to_dict()) == [k for k in keys if not k.startswith(("eval_", "test_samples"))]
    write_json(diverged.to_dict(), tmp_path / "1.json")
    assert EvalRecord.from_json(tmp_path / "1.json", "evaluate@speech-cosine") == diverged


def test_committed_records_read_back_and_write_the_same_bytes(tmp_path):
    pairs = [(EvalRecord, p, lambda r: r.to_dict()) for p in sorted((REPO / "metrics").glob("*/*/*.json"))]
    pairs += [(RunResult, p, asdict) for p in sorted((REPO / "live").glob("*/*/seed*/result.json"))]
    if not pairs:
        pytest.skip("no committed records")
    for cls, path, to_json in pairs:
        write_json(to_json(cls.from_json(path, "the stage")), tmp_path / "out.json")
        assert (tmp_path / "out.json").read_bytes() == path.read_bytes(), path


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: p.unlink(), r"metrics/vision/fixed/0\.json: missing; run `dvc repro evaluate@vision-fixed`"),
        (
            lambda p: p.write_text(p.read_text()[:40]),
            r"metrics/vision/fixed/0\.json: unreadable JSON \(.+\); run `dvc repro -f evaluate@vision-fixed`",
        ),
        (
            lambda p: p.write_text("[1, 2]"),
            r"metrics/vision/fixed/0\.json: not a JSON object; run `dvc repro -f evaluate@vision-fixed`",
        ),
        (
            lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "probes"})),
            r"metrics/vision/fixed/0\.json: lacks probes; run `dvc repro -f evaluate@vision-fixed`",
        ),
    ],
    ids=["missing", "truncated", "a-list", "lacks-a-key"],
)
def test_a_bad_metrics_file_names_the_stage_to_rerun(synthetic, damage, expected):
    params, root = synthetic
    damage(root / "metrics" / "vision" / "fixed" / "0.json")
    with pytest.raises(DataError, match=expected):
        collect(params, root)


def test_a_bad_result_file_names_the_train_stage(synthetic):
    params, root = synthetic
    shutil.copy(
        root / "metrics" / "vision" / "adaptive_noraise" / "1.json",
        root / "live" / "vision" / "adaptive_noraise" / "seed1" / "result.json",
    )
    lacks = "best_val_metric, stopped_early, val_loss, elapsed, lr, lr_trace, usage, checkpoint_seconds"
    with pytest.raises(
        DataError,
        match=rf"seed1/result\.json: lacks {lacks}; run `dvc repro -f "
        r"train_ablation@vision-adaptive_noraise`$",
    ):
        collect(params, root)
