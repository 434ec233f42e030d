"""The CI report outside a git repository, and the plots-diff parsing of DVC's JSON rows."""

import json
import subprocess

import pytest

from adaptive_lr.report import ReportError, ci_report, plot_diff_png


def test_ci_report_without_git_still_reports_the_comparison(tmp_path):
    (tmp_path / "metrics").mkdir()
    entry = {
        "metric": "accuracy",
        "higher_is_better": True,
        "schedules": {
            "fixed": {"test_metric": {"mean": 0.8, "std": 0.01}},
            "adaptive": {"test_metric": {"mean": 0.9, "std": 0.02}},
        },
    }
    (tmp_path / "metrics" / "comparison.json").write_text(json.dumps({"vision": entry}))
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "overhead.png").write_bytes(b"png")
    assert subprocess.run(["git", "rev-parse"], cwd=tmp_path, capture_output=True).returncode != 0
    md = ci_report(root=tmp_path)
    assert "diffs skipped" in md and "**0.900 ± 0.020**" in md and "![overhead](plots/overhead.png)" in md
    with pytest.raises(ReportError, match="not found"):
        ci_report(base="main", root=tmp_path)  # a base the user names must exist


def test_plots_diff_png_refuses_empty_data(tmp_path):
    with pytest.raises(ReportError, match="no data"):
        plot_diff_png({}, tmp_path / "x.png")
