"""Reports around DVC, for places without a browser or a network.

``python -m adaptive_lr.report plots-diff [REV ...] [-o DIR] [--format png|svg]``
    ``dvc plots diff REV ...`` as image files, one per plot of dvc.yaml's ``plots:`` (any git
    revision or experiment name): DVC's own Vega-Lite specs (its templates, filled with every
    revision's rows, from ``dvc plots diff --json``) rendered by vl-convert, without a browser or
    a network. For pull-request comments and terminals.

``python -m adaptive_lr.report html-template [-o PATH]``
    A DVC HTML template with the Vega libraries inline (``dvc plots show/diff --html-template
    PATH``, or ``plots.html_template`` in DVC's config): DVC's own plot pages then draw offline;
    its default page loads Vega from a CDN. ``make setup`` writes it to .dvc/plots/offline.html
    and sets it in the clone's .dvc/config.local.

``python -m adaptive_lr.report sweep EXP ... [-o JSON]``
    The initial-LR sweep in one table: every schedule's mean test metric in the workspace
    (the default LRs) and in each named experiment (``dvc exp run -S ...``), each
    schedule's worst gap to its own best, and whether that stays within the robustness
    tolerance (1 point of accuracy, 0.02 WER). Reads each experiment's committed
    ``metrics/comparison.json`` and ``params.yaml`` from git.

``python -m adaptive_lr.report ci [--base REV] [--plots-diff DIR] [-o MD]``
    A pull-request-comment style report: ``dvc metrics diff`` and ``dvc params diff``
    against the base, the headline table of ``metrics/comparison.json``, ``dvc plots diff``
    against the base as images (``--plots-diff``) and the comparison PNGs. ``make report``
    (which ``.ci/run`` and the pull-request workflow run) writes it to report.md.

The same commands: ``python -m adaptive_lr report ...`` and ``adaptive-lr report ...``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from adaptive_lr.compare import format_number, headline, tasks_of
from adaptive_lr.files import atomic_write

DVC = [sys.executable, "-m", "dvc"]  # the dvc of this environment


class ReportError(RuntimeError):
    """A DVC or git command failed; the message carries its error output."""


def _cmd(args: list[str], cwd: Path) -> str:
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ReportError(f"{args[0]} not found on PATH; run from the project's environment (make setup)") from exc
    if proc.returncode != 0:
        raise ReportError(f"`{' '.join(args)}` failed:\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def plots_diff_specs(revs: list[str], targets: list[str] | None = None, root: Path = Path(".")) -> dict[str, dict]:
    """DVC's own Vega-Lite spec of every data-series plot of ``dvc plots diff REV ...``, its data inline.

    The specs are what ``dvc plots diff`` puts in its HTML (DVC's templates filled with every revision's
    rows); image plots are left out. A revision DVC cannot read is a warning on stderr, as in DVC.
    """
    cmd = DVC + ["plots", "diff", *revs, "--json"]
    if targets:
        cmd += ["--targets", *targets]
    out = json.loads(_cmd(cmd, root))
    for err in out.get("errors", []):
        print(f"warning: dvc plots: {err.get('rev')}: {err.get('msg', '').splitlines()[0]}", file=sys.stderr)
    return {
        plot_id: item["content"]
        for plot_id, items in out.get("data", {}).items()
        for item in items
        if item.get("type") == "vega"
    }


def _vl_version(spec: dict) -> str | None:
    """The Vega-Lite compiler for ``spec``: the newest of its schema's major version that vl-convert bundles."""
    import vl_convert as vlc

    schema = str(spec.get("$schema", ""))
    for major in ("v5", "v6"):
        if f"/vega-lite/{major}" in schema:
            versions = [v for v in vlc.get_vegalite_versions() if v.startswith(major[1:] + ".")]
            return max(versions, key=lambda v: tuple(int(x) for x in v.split(".")), default=None)
    return None


def render_plots(specs: dict[str, dict], out: Path, fmt: str = "png") -> list[Path]:
    """Render each Vega-Lite spec to ``out/<plot id>.<fmt>`` (png or svg) with vl-convert: no browser, no network."""
    if not specs:
        raise ReportError(
            "dvc plots diff returned no data: are the revisions right, and do they define `plots:` in dvc.yaml?"
        )
    if fmt not in ("png", "svg"):
        raise ReportError(f"format {fmt!r}: png or svg")
    import vl_convert as vlc

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for plot_id, spec in specs.items():
        version = _vl_version(spec)
        if fmt == "png":
            data = bytes(vlc.vegalite_to_png(spec, vl_version=version, scale=2))
        else:
            data = vlc.vegalite_to_svg(spec, vl_version=version).encode()
        path = out / f"{plot_id.replace('/', '_')}.{fmt}"
        atomic_write(path, data)
        paths.append(path)
    return paths


# the placeholder dvc_render fills with its <script> tags (Vega from a CDN): left out, the page brings its own
OFFLINE_TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <title>DVC Plot</title>
    <meta charset="utf-8">
    <!-- Vega, Vega-Lite and Vega-Embed, bundled by vl-convert {version}: this page draws without a network -->
    <script type="text/javascript">
__BUNDLE__
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def html_template(out: Path) -> Path:
    """Write a DVC HTML template (``dvc plots show/diff --html-template``, or ``plots.html_template`` in the
    config) that carries the Vega libraries inline, so DVC's plot pages draw offline."""
    import vl_convert as vlc

    version = getattr(vlc, "__version__", "")
    page = OFFLINE_TEMPLATE.replace("{version}", version).replace("__BUNDLE__", vlc.javascript_bundle())
    atomic_write(out, page)
    return out


def resolve_base(base: str | None, root: Path = Path(".")) -> str:
    """The revision to diff against: ``base`` if given, else origin/main, main, or HEAD, the first that exists."""
    for rev in [base] if base else ["origin/main", "main", "HEAD"]:
        if (
            subprocess.run(
                ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root, capture_output=True
            ).returncode
            == 0
        ):
            return rev
    raise ReportError(
        f"git revision {base!r} not found" if base else "no git revision to compare with (origin/main, main, HEAD)"
    )


def _image_links(paths: list[Path], root: Path) -> list[str]:
    """Markdown image lines linked by their paths from ``root`` (where `cml comment create` finds them), a blank."""
    return [f"![{p.stem}]({p.relative_to(root).as_posix()})" for p in paths] + [""]


def ci_report(base: str | None = None, root: Path = Path("."), plots_diff: Path | None = None) -> str:
    """Markdown in the style of a pull-request comment: metric and param changes against ``base``.

    With ``plots_diff`` (a folder under ``root``), ``dvc plots diff <base>`` (the base against the workspace)
    is rendered there as PNGs (:func:`render_plots`) and shown in a section of its own. Images are linked by
    their path from ``root``, which is where ``cml comment create`` looks for them to upload.
    """
    try:
        rev = resolve_base(base, root)
    except ReportError:
        if base:  # a revision the user named must exist
            raise
        rev = None  # a copy without git history (or without commits): report what is here
    if rev is None:
        lines = ["# Experiment report", "", "No git revision to compare with: metric and param diffs skipped.", ""]
    else:
        head = _cmd(["git", "rev-parse", "--short", "HEAD"], root).strip()
        base_sha = _cmd(["git", "rev-parse", "--short", rev], root).strip()
        lines = [f"# Experiment report: workspace ({head}) vs {rev} ({base_sha})", ""]
        for title, args in (("Metrics", ["metrics", "diff", rev, "--md"]), ("Params", ["params", "diff", rev, "--md"])):
            table = _cmd(DVC + args, root).strip()
            has_rows = len(table.splitlines()) > 2  # a markdown table with more than its header and rule
            lines += [f"## {title} changed vs {rev}", "", table if has_rows else f"No {title.lower()} changed.", ""]
    comparison_path = root / "metrics" / "comparison.json"
    if comparison_path.exists():
        lines += [
            "## Test metric, every task x schedule (mean ± std over seeds)",
            "",
            headline(json.loads(comparison_path.read_text())),
            "",
        ]
        lines += ["Full tables and paired verdicts: [metrics/comparison.md](metrics/comparison.md)", ""]
    if plots_diff is not None and rev is not None:
        out = plots_diff if plots_diff.is_absolute() else root / plots_diff
        images = render_plots(plots_diff_specs([rev], root=root), out)
        lines += [f"## dvc plots diff {rev} (vs the workspace)", ""] + _image_links(images, root)
    pngs = sorted((root / "plots").glob("*.png"))
    if pngs:
        lines += ["## Plots", ""] + _image_links(pngs, root)
    return "\n".join(lines)


# the lab's robustness aim: within 1 point (accuracy) / 0.02 (WER) of its own best
ROBUST_TOLERANCE = {"accuracy": 0.01, "wer": 0.02}


def _exp_rev(name: str, root: Path) -> str:
    """The commit of experiment ``name`` (newest of that name), or of a plain git revision."""
    refs = _cmd(
        ["git", "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)", "refs/exps"], root
    )
    for line in refs.splitlines():
        sha, ref = line.split(" ", 1)
        if ref.rsplit("/", 1)[-1] == name:
            return sha
    try:
        return _cmd(["git", "rev-parse", "--verify", f"{name}^{{commit}}"], root).strip()
    except ReportError:
        raise ReportError(f"{name}: neither an experiment (dvc exp list --all-commits) nor a git revision") from None


def _lrs_at(params_text: str) -> dict[str, float]:
    import tempfile

    from adaptive_lr.config import load_params

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(params_text)
        return {task: cfg.lr for task, cfg in load_params(path).tasks.items()}


def sweep(names: list[str], root: Path = Path(".")) -> dict:
    """Every schedule's mean test metric per run of the sweep (the workspace = default LRs, then each experiment)."""
    runs = {
        "default": ((root / "metrics" / "comparison.json").read_text(), (root / "params.yaml").read_text(), "workspace")
    }
    for name in names:
        rev = _exp_rev(name, root)
        runs[name] = (
            _cmd(["git", "show", f"{rev}:metrics/comparison.json"], root),
            _cmd(["git", "show", f"{rev}:params.yaml"], root),
            rev,
        )
    out: dict = {"runs": {}, "tasks": {}}
    for label, (comparison_text, params_text, rev) in runs.items():
        out["runs"][label] = {"rev": rev, "lr": _lrs_at(params_text)}
        for task, entry in tasks_of(json.loads(comparison_text)).items():
            t = out["tasks"].setdefault(
                task, {"metric": entry["metric"], "higher_is_better": entry["higher_is_better"], "schedules": {}}
            )
            for schedule, v in entry["schedules"].items():
                t["schedules"].setdefault(schedule, {"by_run": {}})["by_run"][label] = v["test_metric"]["mean"]
    for t in out["tasks"].values():
        tol = ROBUST_TOLERANCE.get(t["metric"], 0.01)
        t["tolerance"] = tol
        for v in t["schedules"].values():
            values = [x for x in v["by_run"].values() if x is not None]
            complete = len(values) == len(runs)
            best = (max if t["higher_is_better"] else min)(values) if values else None
            v["own_best"] = best
            v["worst_gap"] = max(abs(best - x) for x in values) if values else None
            v["robust"] = complete and v["worst_gap"] <= tol
    return out


def sweep_markdown(result: dict) -> str:
    from tabulate import tabulate

    labels = list(result["runs"])
    lines = []
    for task, t in result["tasks"].items():
        lrs = ", ".join(f"{label} {result['runs'][label]['lr'][task]:g}" for label in labels)
        rows = [
            [
                s,
                *[format_number(v["by_run"].get(label), "{:.3f}") for label in labels],
                format_number(v["worst_gap"], "{:.3f}"),
                "yes" if v["robust"] else "no",
            ]
            for s, v in t["schedules"].items()
        ]
        lines += [f"### {task}: test {t['metric']} by initial LR ({lrs})", ""]
        lines.append(
            tabulate(
                rows,
                headers=["schedule", *labels, "worst gap to own best", f"within {t['tolerance']}"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m adaptive_lr.report") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plots-diff", help="`dvc plots diff REV ...` rendered to image files, offline")
    p.add_argument("revs", nargs="*", help="git revisions or experiment names (none: workspace vs HEAD, as dvc)")
    p.add_argument("--targets", nargs="*", help="plot ids from dvc.yaml (default: all)")
    p.add_argument("-o", "--out", type=Path, default=Path("dvc_plots/images"), help="folder for the images")
    p.add_argument("--format", choices=("png", "svg"), default="png")
    t = sub.add_parser("html-template", help="a DVC HTML template that draws offline (the Vega libraries inline)")
    t.add_argument("-o", "--out", type=Path, default=Path(".dvc/plots/offline.html"))
    w = sub.add_parser(
        "sweep", help="the initial-LR sweep: test metric per schedule in the workspace and each experiment"
    )
    w.add_argument("names", nargs="+", help="experiment names (or git revisions) of the sweep")
    w.add_argument("-o", "--out", type=Path, help="also write the summary as JSON here")
    c = sub.add_parser("ci", help="markdown report of metric and param changes")
    c.add_argument("--base", help="revision to compare with (default: origin/main, else main, else HEAD)")
    c.add_argument("-o", "--out", type=Path, help="also write the markdown here")
    c.add_argument("--plots-diff", type=Path, help="render `dvc plots diff <base>` into this folder and show it")
    args = parser.parse_args(argv)
    try:
        if args.command == "plots-diff":
            for path in render_plots(plots_diff_specs(args.revs, args.targets), args.out, args.format):
                print(f"wrote {path}")
        elif args.command == "html-template":
            print(f"wrote {html_template(args.out)}")
        elif args.command == "sweep":
            result = sweep(args.names)
            if args.out:
                from adaptive_lr.files import write_json

                write_json(result, args.out)
            print(sweep_markdown(result))
        else:
            md = ci_report(args.base, plots_diff=args.plots_diff)
            if args.out:
                atomic_write(args.out, md)
            print(md)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
