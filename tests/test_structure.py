"""The package's modules import each other without a cycle (tools/import_graph.py), and the checker sees one."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import import_graph  # noqa: E402


def test_the_package_has_no_import_cycle():
    edges = import_graph.graph()
    assert "adaptive_lr.config" in edges and "adaptive_lr.tasks.base" in edges
    assert import_graph.cycles(edges) == []
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "import_graph.py"), "--cycles"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("no import cycles among"), out.stdout + out.stderr


def test_a_function_level_import_that_closes_a_loop_is_a_cycle(tmp_path):
    pkg = tmp_path / "adaptive_lr"
    (pkg / "tasks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("from adaptive_lr.tasks import get_task\n")
    (pkg / "tasks" / "__init__.py").write_text("from adaptive_lr.tasks.base import Task\n")
    (pkg / "tasks" / "base.py").write_text("def f():\n    from adaptive_lr.config import ParamsError\n")
    (pkg / "leaf.py").write_text("from . import config\n")
    edges = import_graph.graph(pkg)
    assert edges["adaptive_lr.leaf"] == {"adaptive_lr.config"}
    assert import_graph.cycles(edges) == [["adaptive_lr.config", "adaptive_lr.tasks", "adaptive_lr.tasks.base"]]
