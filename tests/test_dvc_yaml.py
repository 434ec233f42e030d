"""dvc.yaml's top-level plots cover every run the pipeline makes (DVC reads them in the e2e test)."""

from pathlib import Path

import yaml

from adaptive_lr.config import load_params
from adaptive_lr.tasks import get_task

REPO = Path(__file__).resolve().parents[1]


def test_top_level_plots_list_every_task_schedule_and_seed():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    matrix = spec["stages"]["train"]["matrix"]
    params = load_params(REPO / "params.yaml")
    schedules = set(params.schedules) - set(params.ablations)
    assert set(matrix["task"]) == set(params.tasks) and set(matrix["schedule"]) == schedules
    for stage in ("train_ablation", "evaluate_ablation"):
        ablate = spec["stages"][stage]["matrix"]
        assert set(ablate["task"]) == set(params.tasks) and set(ablate["ablation"]) == set(params.ablations), stage
    plots = {k: v for item in spec["plots"] for k, v in item.items()}
    expected = set()
    for task in matrix["task"]:
        metric = get_task(task, params.tasks[task]).metric
        for plot_id, field in ((f"val_loss_{task}", "loss"), (f"val_{metric}_{task}", metric)):
            expected.add(plot_id)
            assert plots[plot_id]["x"] == "step" and plots[plot_id]["x_label"] == "epoch"
            assert plots[plot_id]["y"] == {
                f"live/{task}/{s}/seed{seed}/plots/metrics/val/{field}.tsv": field
                for s in matrix["schedule"]
                for seed in params.tasks[task].seeds
            }, plot_id
    assert set(plots) == expected
