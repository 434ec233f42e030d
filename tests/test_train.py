"""The training loop on a real (tiny) task: curves, checkpoint, determinism, divergence."""

import fcntl
import json
import os
import struct
import sys
import termios
from dataclasses import asdict, replace

import pytest
import torch

from adaptive_lr import schedules
from adaptive_lr.tasks import get_task
from adaptive_lr.train import autocast_for, cpu_runs_bf16, evaluate, probes_per_epoch, train_one


@pytest.fixture
def prepared(tmp_path, tiny_vision_cfg):
    task = get_task("vision", tiny_vision_cfg)
    task.prepare(tmp_path / "data", seed=0)
    return task, tmp_path


def _run(task, cfg, schedule, root, name, progress=None, **knobs):
    return train_one(
        task,
        cfg,
        schedule,
        schedules.knobs_of(schedule, knobs),
        0,
        root / "data",
        root / name / "run",
        root / name / "live",
        log=lambda s: None,
        progress=progress,
    )


CLOCK = {"optim_seconds", "val_seconds", "probe_seconds", "sched_seconds", "elapsed", "usage", "checkpoint_seconds"}


def _timeless(result) -> dict:
    return {k: v for k, v in asdict(result).items() if k not in CLOCK}


def test_loop_logs_curves_and_saves_best_checkpoint(prepared, tiny_vision_cfg):
    task, root = prepared
    r = _run(task, tiny_vision_cfg, "adaptive", root, "a")
    assert r.epochs_run == 2 and len(r.val_loss) == 2 and r.best_val_loss == min(r.val_loss)
    ckpt = torch.load(root / "a" / "run" / "model.pt")
    assert ckpt["epoch"] == r.best_epoch
    metrics = root / "a" / "live" / "plots" / "metrics"
    for name in (
        "train/loss.tsv",
        "val/loss.tsv",
        "val/accuracy.tsv",
        "lr.tsv",
        "time/train_s.tsv",
        "time/val_s.tsv",
        "time/sched_s.tsv",
    ):
        lines = (metrics / name).read_text().splitlines()
        assert len(lines) == 3 and [line.split("\t")[0] for line in lines[1:]] == ["1", "2"], name  # step = epoch
    result = json.loads((root / "a" / "live" / "result.json").read_text())
    assert result["schedule"] == "adaptive" and result["diverged_epoch"] is None
    assert not (root / "a" / "run" / "result.json").exists()


def test_loop_measures_where_the_time_goes(prepared, tiny_vision_cfg):
    task, root = prepared
    r = _run(task, tiny_vision_cfg, "adaptive", root, "t")
    u = r.usage
    assert r.optim_seconds > 0 and r.val_seconds > 0 and r.sched_seconds > 0
    # the parts are disjoint slices of the run's wall time
    assert r.optim_seconds + r.val_seconds + r.probe_seconds + r.sched_seconds <= u["wall_seconds"]
    assert r.sched_seconds < r.optim_seconds
    assert 0 < u["cpu_seconds"] and 0 < u["cpu_util"] <= torch.get_num_threads() + 0.5
    assert u["peak_rss_mb"] > 50 and u["gpu_peak_mb"] is None and u["gpu_util"] is None


def test_probes_run_inside_epochs_within_their_budget(prepared, tiny_vision_cfg):
    task, root = prepared
    # tiny vision: 6 training steps per epoch (96 samples / 16), 2 validation batches, a probe of 1
    free = _run(task, tiny_vision_cfg, "adaptive", root, "p1", probes=3, probe_size=0.5, probe_budget=1.0)
    assert free.probes == 3 * (free.epochs_run - 1) and free.probe_seconds > 0  # none in the first epoch
    # positions of the LR changes are in epochs; decisions after probes fall inside an epoch
    assert free.lr_trace[0] == [0.0, tiny_vision_cfg.lr] and all(0 <= p <= free.epochs_run for p, _ in free.lr_trace)
    # the budget, in forward passes: 1 probe batch per probe against 3 x 6 for the epoch's training
    tight = _run(task, tiny_vision_cfg, "adaptive", root, "p2", probes=3, probe_size=0.5, probe_budget=0.1)
    assert tight.probes == 1 * (tight.epochs_run - 1)  # floor(0.1 * 18 / 1) = 1
    none = _run(task, tiny_vision_cfg, "adaptive", root, "p3", probes=0)
    assert none.probes == 0 and none.probe_seconds == 0.0
    metrics = root / "p1" / "live" / "plots" / "metrics" / "time" / "probe_s.tsv"
    assert len(metrics.read_text().splitlines()) == 1 + free.epochs_run


@pytest.mark.parametrize(
    "probes, size, budget, steps, n_val, expected",
    [
        (3, 0.125, 0.05, 36, 9, 2),
        (3, 0.25, 0.05, 36, 9, 1),
        (3, 0.125, 0.05, 10, 3, 1),
        (3, 0.125, 0.05, 60, 15, 3),
        (0, 1.0, 1.0, 36, 9, 0),
        (3, 1.0, 0.0, 36, 9, 0),
        (5, 0.1, 1.0, 4, 10, 3),
    ],
)
def test_probes_per_epoch_follow_the_budget(probes, size, budget, steps, n_val, expected):
    s = schedules.Schedule(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
        probes=probes,
        probe_size=size,
        probe_budget=budget,
    )
    assert probes_per_epoch(s, steps, s.probe_batches(n_val)) == expected


def test_probe_is_the_first_samples_of_every_full_validation_pass(prepared, tiny_vision_cfg):
    import itertools

    task, root = prepared
    torch.manual_seed(0)
    model = task.build_model()
    batches = task.batches(
        task.load(root / "data", "val"), tiny_vision_cfg.batch_size, False, torch.Generator().manual_seed(0)
    )
    probe = evaluate(task, model, list(itertools.islice(iter(batches), 1)), torch.device("cpu"), False)
    full = evaluate(task, model, batches, torch.device("cpu"), False)
    assert len(probe.losses) == full.batch_sizes[0] and probe.losses == full.losses[: len(probe.losses)]
    assert full.loss == pytest.approx(sum(full.losses) / len(full.losses)) and full.n_samples == sum(full.batch_sizes)


def test_same_seed_same_curves(prepared, tiny_vision_cfg):
    """Bitwise on the CPU: every recorded number but the clock readings, the checkpoint, the test metric."""
    task, root = prepared
    a = _run(task, tiny_vision_cfg, "adaptive", root, "a", probe_budget=1.0, patience=4)  # the LR moves in 2 epochs
    b = _run(task, tiny_vision_cfg, "adaptive", root, "b", probe_budget=1.0, patience=4)
    assert _timeless(a) == _timeless(b)
    assert a.probes > 0 and len(a.lr_trace) > 1  # the adaptive parts ran
    ma, mb = (torch.load(root / n / "run" / "model.pt", weights_only=False)["model"] for n in ("a", "b"))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    test = task.load(root / "data", "test")
    metrics = []
    for m in (ma, mb):
        model = task.build_model()
        model.load_state_dict(m)
        ev = evaluate(
            task, model, task.batches(test, 32, False, torch.Generator().manual_seed(0)), torch.device("cpu"), True
        )
        metrics.append((ev.loss, ev.metric, ev.losses))
    assert metrics[0] == metrics[1]


def test_progress_bar_forced_on_changes_nothing_but_stderr(prepared, tiny_vision_cfg, capsys):
    task, root = prepared
    plain = _run(task, tiny_vision_cfg, "adaptive", root, "plain", probe_budget=1.0)  # stderr captured: no terminal
    assert capsys.readouterr() == ("", "")
    barred = _run(task, tiny_vision_cfg, "adaptive", root, "bar", progress=True, probe_budget=1.0)
    out, err = capsys.readouterr()
    # tiny vision: 6 training steps per epoch; the bar is labelled with the run and the epoch, counts batches out
    # of 6 and is cleared at the epoch's end (the terminal's line is blank again: only spaces after the last \r)
    assert out == "" and "[vision/adaptive 1x seed 0] epoch 1/2:" in err and "epoch 2/2:" in err
    assert "| 0/6 [" in err and err.endswith("\r") and err.rstrip("\r").rsplit("\r", 1)[-1].strip() == ""
    assert barred.probes > 0 and _timeless(barred) == _timeless(plain)  # same batches, same draws, same decisions
    ma, mb = (torch.load(root / n / "run" / "model.pt", weights_only=False)["model"] for n in ("plain", "bar"))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_progress_bar_follows_the_terminal_unless_forced_off(prepared, tiny_vision_cfg, monkeypatch):
    """stderr a real terminal (a pseudo-terminal): the bar shows by default, and progress=False keeps it off."""
    task, root = prepared
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    os.set_blocking(master, False)

    def written() -> str:
        chunks = []
        while True:
            try:
                chunks.append(os.read(master, 65536))
            except (BlockingIOError, OSError):
                return b"".join(chunks).decode(errors="replace")

    with open(slave, "w", buffering=1) as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        off = _run(task, tiny_vision_cfg, "fixed", root, "off", progress=False)
        terminal.flush()
        assert written() == ""
        shown = _run(task, tiny_vision_cfg, "fixed", root, "on")
        terminal.flush()
        assert "[vision/fixed 1x seed 0] epoch 2/2" in written()
    os.close(master)
    assert _timeless(shown) == _timeless(off)


def test_amp_on_a_cpu_autocasts_only_where_bf16_is_native():
    # amp true: bf16 where oneDNN runs it natively, fp32 where it would be emulated (AVX2); amp false: never
    cpu = torch.device("cpu")
    x = torch.randn(4, 4)
    with autocast_for(cpu, True):
        assert torch.is_autocast_enabled("cpu") == cpu_runs_bf16()
        assert (x @ x).dtype == (torch.bfloat16 if cpu_runs_bf16() else torch.float32)
    with autocast_for(cpu, False):
        assert not torch.is_autocast_enabled("cpu")
        assert (x @ x).dtype == torch.float32


def test_divergence_is_recorded_not_raised(prepared, tiny_vision_cfg):
    task, root = prepared
    r = _run(task, replace(tiny_vision_cfg, lr=1e30, amp=False), "fixed", root, "d")
    assert r.diverged_epoch == 1


def test_adaptive_rolls_back_a_divergence_and_goes_on(prepared, tiny_vision_cfg):
    task, root = prepared
    cfg = replace(tiny_vision_cfg, epochs=4, amp=False)
    # 1e30 makes the first epoch's weights explode: there is no good state yet, so the run is recorded as diverged
    assert _run(task, replace(cfg, lr=1e30), "adaptive", root, "r0", probes=0).diverged_epoch == 1
    # a modest LR that the scheduler raises into divergence (x1000 after each significant gain)
    r = _run(
        task,
        cfg,
        "adaptive",
        root,
        "r1",
        probes=0,
        factor=0.1,
        increase=1000.0,
        max_lr_ratio=1e9,
        patience_up=1,
        z=0.0,
        threshold=0.0,
    )
    lrs = [lr for _, lr in r.lr_trace]
    peak = lrs.index(max(lrs))
    assert r.diverged_epoch is None and r.epochs_run == 4 and max(lrs) >= 0.99
    # the loss explodes at the raised LR; each explosion restores the best state and cuts the LR tenfold
    assert max(r.val_loss) > 4 * min(r.val_loss) and lrs[peak + 1 :] == pytest.approx([max(lrs) / 10, max(lrs) / 100])


def test_early_stopping_uses_patience(prepared, tiny_vision_cfg):
    task, root = prepared
    # with a zero LR nothing improves after the first epoch
    r = _run(task, replace(tiny_vision_cfg, lr=1e-12, epochs=6, patience=2), "fixed", root, "e")
    assert r.stopped_early and r.epochs_run < 6


_LIVE_WORKER = """
import sys
from pathlib import Path
from adaptive_lr.train import open_live
for i in range(int(sys.argv[2])):
    live = open_live(Path(sys.argv[1]))
    live.log_metric("x", i)
    live.next_step()  # writes .dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED
    live.end()  # removes it if it exists: races with the other process
"""


def test_runs_logged_by_two_processes_at_once_end_cleanly(tmp_path):
    """dvclive's end() checks for, then removes, one signal file in the repository's .dvc/tmp: two processes
    ending runs together race on it (a plain ``Live`` fails with FileNotFoundError within a few hundred
    runs here); the pipeline's workers do exactly that inside ``dvc exp run``."""
    import subprocess

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _LIVE_WORKER, f"live{k}", "300"],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    errors = [w.communicate()[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    assert not (tmp_path / ".dvc" / "tmp" / "exps" / "run" / "DVCLIVE_STEP_COMPLETED").exists()
