"""The lab's command line: ``python -m adaptive_lr COMMAND ...``, or the console script ``adaptive-lr COMMAND ...``.

``report {plots-diff,sweep,ci} ...``
    :mod:`adaptive_lr.report`, exactly as ``python -m adaptive_lr.report ...``.
``bench NAME [ARGS ...]``
    ``bench/NAME.py`` of the repository with ``ARGS``, in a fresh interpreter (as
    ``python bench/NAME.py ARGS``): the checkout this package is imported from, else the current
    folder. The benchmarks come with the repository, not with an installed package.

A dispatcher only: each command keeps its own options (``COMMAND --help``) and exit status; a
command it does not know is one error line and exit status 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

COMMANDS = {
    "report": "reports around DVC: plots-diff, sweep, ci (python -m adaptive_lr.report)",
    "bench": "run bench/NAME.py of the repository with ARGS (throughput and overhead benchmarks)",
}


def prog() -> str:
    """How the user called us: ``python -m adaptive_lr`` or the console script."""
    return "python -m adaptive_lr" if Path(sys.argv[0]).name == "__main__.py" else "adaptive-lr"


def parser() -> argparse.ArgumentParser:
    """Only for the help text: the commands parse their own arguments."""
    p = argparse.ArgumentParser(
        prog=prog(),
        description="The lab's commands (the console script adaptive-lr is the same as python -m adaptive_lr).",
        epilog=f"{prog()} COMMAND --help: the options of a command",
    )
    sub = p.add_subparsers(title="commands", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    return p


def bench_folder() -> Path | None:
    """``bench/`` of the checkout this package is imported from (src layout), else of the current folder."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "bench").is_dir():
            return root / "bench"
    return None


def bench(args: list[str]) -> int:
    folder = bench_folder()
    if folder is None:
        return fail(
            "no bench/ folder in the checkout of adaptive_lr or the current folder: "
            "the benchmarks come with the repository, not with the installed package"
        )
    names = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))
    if args[:1] in (["-h"], ["--help"]):
        print(f"usage: {prog()} bench NAME [ARGS ...]   (NAME --help: its options)\n\nbenchmarks in {folder}:")
        print("\n".join(f"  {name}" for name in names))
        return 0
    if not args or args[0] not in names:
        what = f"no bench {args[0]!r} in {folder}" if args else "a bench NAME is needed"
        return fail(f"{what}; available: {', '.join(names) or 'none'}")
    return subprocess.run([sys.executable, str(folder / f"{args[0]}.py"), *args[1:]]).returncode


def report(args: list[str]) -> int:
    from adaptive_lr.report import main as report_main  # the lab's packages: imported only for this command

    return report_main(args, prog=f"{prog()} report")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        parser().print_help()
        return 0
    if not argv:
        return fail(f"a command is needed: {' or '.join(COMMANDS)} ({prog()} --help)")
    if argv[0] not in COMMANDS:
        return fail(f"unknown command {argv[0]!r}: choose from {', '.join(COMMANDS)} ({prog()} --help)")
    command = report if argv[0] == "report" else bench
    return command(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
