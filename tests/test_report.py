"""The CI report outside a git repository; DVC's plots rendered offline (vl-convert; DVC's page, our template)."""

import json
import os
import subprocess
import sys

import pytest

from adaptive_lr.report import ReportError, ci_report, html_template, plots_diff_specs, render_plots


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


def test_plots_diff_refuses_empty_data(tmp_path):
    with pytest.raises(ReportError, match="no data"):
        render_plots({}, tmp_path / "images")


def _git(args, cwd):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env={**os.environ, **env})


def test_dvc_plots_render_offline_as_images_and_as_dvc_html(tmp_path):
    """A DVC project with one declared plot in two revisions: `dvc plots diff` rendered to PNG and SVG from DVC's
    own specs, and DVC's own HTML page with the offline template: no script from the network, the libraries inline."""
    _git(["init", "-q"], tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text("plots:\n  - loss:\n      x: epoch\n      y:\n        loss.csv: [a, b]\n")
    (tmp_path / "loss.csv").write_text("epoch,a,b\n1,1.0,2.0\n2,0.5,1.5\n3,0.25,1.0\n")
    _git(["add", "-A"], tmp_path)
    _git(["commit", "-qm", "one"], tmp_path)
    (tmp_path / "loss.csv").write_text("epoch,a,b\n1,0.9,2.0\n2,0.4,1.2\n3,0.2,0.8\n")

    specs = plots_diff_specs(["HEAD"], root=tmp_path)  # HEAD vs the workspace
    assert list(specs) == ["loss"]
    revs = {row["rev"] for row in specs["loss"]["data"]["values"]}
    assert revs == {"HEAD", "workspace"}
    png, svg = render_plots(specs, tmp_path / "png")[0], render_plots(specs, tmp_path / "svg", "svg")[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "<svg" in svg.read_text() and "epoch" in svg.read_text()  # the axis title DVC's template sets

    template = html_template(tmp_path / ".dvc" / "plots" / "offline.html")
    out = tmp_path / "dvc_plots"
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "diff", "HEAD", "--html-template", str(template), "-o", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    assert "<script src=" not in page and "cdn.jsdelivr" not in page  # DVC's default page loads Vega from a CDN
    assert "vegaEmbed('#" in page  # DVC's own call for its plot, served by the bundle
    assert "vegaEmbed" in template.read_text() and "{plot_divs}" in template.read_text()
