"""Reports around DVC, for places without a browser or a network.

``python -m adaptive_lr.report plots-diff [REV ...] [-o PNG]``
    The offline rendering of ``dvc plots diff REV ...``: DVC's own plot data (the
    top-level ``plots:`` of dvc.yaml, any git revision or experiment name) drawn with
    matplotlib, one panel per plot (each schedule at its tuned LR, mean over seeds, as compare
    writes it), one line style per revision. DVC's HTML needs a CDN to draw; this PNG does not.

``python -m adaptive_lr.report sweep EXP ... [-o JSON]``
    The initial-LR sweep in one table: every schedule's mean test metric in the workspace
    (the default LRs) and in each named experiment (``dvc exp run -S ...``), each
    schedule's worst gap to its own best, and whether that stays within the robustness
    tolerance (1 point of accuracy, 0.02 WER). Reads each experiment's committed
    ``metrics/comparison.json`` and ``params.yaml`` from git.

``python -m adaptive_lr.report ci [--base REV] [-o MD]``
    A pull-request-comment style report: ``dvc metrics diff`` and ``dvc params diff``
    against the base, the headline table of ``metrics/comparison.json`` and the
    comparison PNGs. ``.ci/run`` writes it on every run.

The same commands: ``python -m adaptive_lr report ...`` and ``adaptive-lr report ...``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from adaptive_lr.compare import OURS, format_number, headline, pyplot, save_png, tasks_of

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


def plots_diff_data(revs: list[str], targets: list[str] | None = None, root: Path = Path(".")) -> dict[str, list[dict]]:
    """The rows DVC draws for ``dvc plots diff``: plot id -> rows with step (epoch), value, rev, schedule, field."""
    cmd = DVC + ["plots", "diff", *revs, "--json"]
    if targets:
        cmd += ["--targets", *targets]
    out = json.loads(_cmd(cmd, root))
    for err in out.get("errors", []):
        print(f"warning: dvc plots: {err.get('rev')}: {err.get('msg', '').splitlines()[0]}", file=sys.stderr)
    plots: dict[str, list[dict]] = {}
    for plot_id, items in out.get("data", {}).items():
        rows = []
        for item in items:
            if item.get("type") != "vega":
                continue
            # compare's curves (plots/curves/<task>_<series>.csv): one y field per schedule, the value DVC drew
            for row in item["content"]["data"]["values"]:
                value = row.get("dvc_inferred_y_value")
                if row.get("field") is None or value in (None, ""):
                    continue  # an epoch after the run stopped early
                rows.append(
                    {
                        "rev": row["rev"],
                        "schedule": row["field"],
                        "field": plot_id.rsplit("_", 1)[0],
                        "step": int(float(row["epoch"])),
                        "value": float(value),
                    }
                )
        if rows:
            plots[plot_id] = rows
    return plots


def plot_diff_png(plots: dict[str, list[dict]], out: Path) -> Path:
    """One panel per plot id; colour = schedule, line style = revision."""
    if not plots:
        raise ReportError(
            "dvc plots diff returned no data: are the revisions right, and do they define `plots:` in dvc.yaml?"
        )
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    ids = sorted(plots, key=lambda i: (i.rsplit("_", 1)[-1], i))  # val_loss_<task>, val_<metric>_<task>: by task
    cols = min(2, len(ids))
    rows_n = -(-len(ids) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(7 * cols, 4 * rows_n), dpi=100, squeeze=False)
    styles = ["-", "--", ":", "-."]
    revs = list(dict.fromkeys(r["rev"] for rows in plots.values() for r in rows))
    schedules = list(dict.fromkeys(r["schedule"] for rows in plots.values() for r in rows))

    def color(schedule: str) -> str:
        return "black" if schedule == OURS else f"C{schedules.index(schedule) % 10}"

    for ax, plot_id in zip(axes.flat, ids):
        rows = plots[plot_id]
        series: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            series[(r["rev"], r["schedule"])][r["step"]].append(r["value"])
        for (rev, schedule), by_step in series.items():
            steps = sorted(by_step)
            ax.plot(
                steps,
                [np.mean(by_step[s]) for s in steps],
                color=color(schedule),
                linestyle=styles[revs.index(rev) % len(styles)],
                linewidth=2 if schedule == OURS else 1.3,
            )
        ax.set_title(plot_id)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(rows[0]["field"])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(ids) :]:
        ax.set_visible(False)
    # one legend for the figure: colour = schedule, line style = revision
    handles = [Line2D([], [], color=color(s), linewidth=2 if s == OURS else 1.3, label=s) for s in schedules]
    handles += [
        Line2D([], [], color="grey", linestyle=styles[i % len(styles)], label=rev) for i, rev in enumerate(revs)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=8)
    fig.suptitle("dvc plots diff " + " vs ".join(revs) + " (each schedule at its tuned LR, mean over seeds)")
    fig.tight_layout(rect=(0, 0.06 * (2 / (rows_n + 1)), 1, 1))
    return save_png(fig, out)


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


def ci_report(base: str | None = None, root: Path = Path(".")) -> str:
    """Markdown in the style of a pull-request comment: metric and param changes against ``base``."""
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
    pngs = sorted((root / "plots").glob("*.png"))
    if pngs:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(root).as_posix()})" for p in pngs] + [""]
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
    p = sub.add_parser("plots-diff", help="offline PNG of `dvc plots diff REV ...`")
    p.add_argument("revs", nargs="*", help="git revisions or experiment names (none: workspace vs HEAD, as dvc)")
    p.add_argument("--targets", nargs="*", help="plot ids from dvc.yaml (default: all)")
    p.add_argument("-o", "--out", type=Path, default=Path("dvc_plots/diff.png"))
    w = sub.add_parser(
        "sweep", help="the initial-LR sweep: test metric per schedule in the workspace and each experiment"
    )
    w.add_argument("names", nargs="+", help="experiment names (or git revisions) of the sweep")
    w.add_argument("-o", "--out", type=Path, help="also write the summary as JSON here")
    c = sub.add_parser("ci", help="markdown report of metric and param changes")
    c.add_argument("--base", help="revision to compare with (default: origin/main, else main, else HEAD)")
    c.add_argument("-o", "--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    try:
        if args.command == "plots-diff":
            path = plot_diff_png(plots_diff_data(args.revs, args.targets), args.out)
            print(f"wrote {path}")
        elif args.command == "sweep":
            result = sweep(args.names)
            if args.out:
                from adaptive_lr.files import write_json

                write_json(result, args.out)
            print(sweep_markdown(result))
        else:
            md = ci_report(args.base)
            if args.out:
                from adaptive_lr.files import atomic_write

                atomic_write(args.out, md)
            print(md)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
