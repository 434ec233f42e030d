"""The command line: ``python -m adaptive_lr`` (console script ``adaptive-lr``) dispatches to the lab's entry points."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adaptive_lr", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_help_lists_the_commands():
    out = cli("--help")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.startswith("usage: python -m adaptive_lr")
    words = " ".join(out.stdout.split())  # argparse wraps the help to the terminal's width
    assert "report reports around DVC: plots-diff, sweep, ci" in words and "bench run bench/NAME.py" in words


def test_report_is_the_report_module():
    out = cli("report", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m adaptive_lr report")
    assert all(name in out.stdout for name in ("plots-diff", "sweep", "ci"))
    bad = cli("report", "nonsense")  # the report's own argparse error and status
    assert bad.returncode == 2 and "invalid choice: 'nonsense'" in bad.stderr


@pytest.mark.parametrize(
    "args, start",
    [
        (["frobnicate"], "error: unknown command 'frobnicate': choose from report, bench"),
        ([], "error: a command is needed: report or bench"),
        (["bench", "nosuch"], "error: no bench 'nosuch' in "),
        (["bench"], "error: a bench NAME is needed; available: "),
    ],
)
def test_a_bad_command_is_one_line_and_status_2(args, start):
    out = cli(*args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(start) and out.stderr.count("\n") == 1, out.stderr
    if args[:1] == ["bench"]:  # the line names the benchmarks there are
        assert BENCHES and out.stderr.rstrip().endswith("available: " + ", ".join(BENCHES))


def test_bench_runs_the_repository_script_from_any_folder(tmp_path):
    listing = cli("bench", "--help", cwd=tmp_path)
    assert listing.returncode == 0 and all(f"  {name}\n" in listing.stdout for name in BENCHES), listing.stdout
    out = cli("bench", "step_cost", "--help", cwd=tmp_path)  # the script's own options, through the dispatcher
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: step_cost.py") and "--repeats" in out.stdout
    assert not list(tmp_path.iterdir())
