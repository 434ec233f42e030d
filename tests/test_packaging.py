"""What a wheel of this tree ships: the py.typed marker, the extras and the console script.

The wheel is built from a copy of this tree (pyproject.toml, README.md, src/) with setuptools, the
build backend pyproject.toml names, offline and without build isolation.
"""

import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib: Python 3.11 or later")
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools")
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md"):
        (tree / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "src"), str(tree / "src")], check=True)
    build = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta; print(build_meta.build_wheel('dist'))"],
        capture_output=True,
        text=True,
        cwd=tree,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    with zipfile.ZipFile(tree / "dist" / build.stdout.split()[-1]) as whl:
        yield whl


def dist_file(whl: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in whl.namelist() if n.endswith(f".dist-info/{name}")]
    return whl.read(path).decode()


def test_py_typed_is_declared_and_ships(wheel):
    marker = ROOT / "src" / "adaptive_lr" / "py.typed"
    assert marker.is_file() and marker.read_bytes() == b""  # PEP 561: an empty marker
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["adaptive_lr"]
    assert "adaptive_lr/py.typed" in wheel.namelist()


def test_extras_test_and_dev(wheel):
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras["test"]) == {"pytest", "ruff"}
    assert extras["dev"] == [f"{PYPROJECT['project']['name']}[lab,test]"]  # a self-reference: pip >= 21.2
    meta = email.message_from_string(dist_file(wheel, "METADATA"))
    assert {"hf", "lightning", "lab", "test", "dev"} <= set(meta.get_all("Provides-Extra"))
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("adaptive-lr[lab,test]") and 'extra == "dev"' in r for r in requires), requires
    assert any(r.startswith("tqdm") and 'extra == "lab"' in r for r in requires), requires


def test_console_script_is_the_module_entry_point(wheel):
    entry_points = dist_file(wheel, "entry_points.txt")
    assert "[console_scripts]\nadaptive-lr = adaptive_lr.__main__:main" in entry_points
    assert "adaptive_lr/__main__.py" in wheel.namelist()
