"""Data-parallel training: shards of every global batch, gathered evaluations, a real 2-process run."""

import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adaptive_lr import distributed
from adaptive_lr.config import ParamsError, load_params
from adaptive_lr.distributed import World, merge_batches
from adaptive_lr.tasks import get_task
from adaptive_lr.tasks.base import EvalBatch, Task
from adaptive_lr.tasks.batching import GroupedBatches, LengthGroupedBatches

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "ddp_train.py"


class Lengths(torch.utils.data.Dataset):
    """Items are their own indices; ``lengths`` drives the length grouping."""

    def __init__(self, n: int):
        self.lengths = np.random.default_rng(0).integers(1_000, 40_000, n).tolist()

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> int:
        return i


def dataloader(n: int, batch_size: int, shuffle: bool, seed: int):
    # Task.batches itself (the DataLoader of every task but speech), collating a batch to its indices
    return Task.batches(
        SimpleNamespace(collate=list), Lengths(n), batch_size, shuffle, torch.Generator().manual_seed(seed)
    )


def length_grouped(n: int, batch_size: int, shuffle: bool, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return LengthGroupedBatches(Lengths(n), batch_size, shuffle, generator, list, bucket=1_600)  # 0.1 s, as speech


def interleave(shares: list[list]) -> list:
    whole = [None] * sum(map(len, shares))
    for r, s in enumerate(shares):
        whole[r :: len(shares)] = s
    return whole


@pytest.mark.parametrize("make", [dataloader, length_grouped], ids=["dataloader", "length_grouped"])
@pytest.mark.parametrize("n, batch_size, size", [(37, 8, 2), (37, 8, 4), (40, 8, 4), (33, 8, 2)])
def test_training_shards_of_every_step_make_the_single_process_batch(make, n, batch_size, size):
    single = make(n, batch_size, True, seed=3)
    ranks = [World(rank=r, size=size).shard(make(n, batch_size, True, seed=3), train=True) for r in range(size)]
    for _ in range(2):  # every pass draws a new order, alike on every rank
        # a batch too small to give every rank a sample (33 = 4 x 8 + 1 on 2 ranks) is left out
        expected = [b for b in single if len(b) >= size]
        shares = [list(b) for b in ranks]
        assert all(len(b) == len(s) == len(expected) for b, s in zip(ranks, shares))
        steps = [[s[t] for s in shares] for t in range(len(expected))]
        assert [interleave(step) for step in steps] == expected
        assert all(max(map(len, step)) - min(map(len, step)) <= 1 for step in steps)  # even shares


@pytest.mark.parametrize("make", [dataloader, length_grouped], ids=["dataloader", "length_grouped"])
@pytest.mark.parametrize("n, batch_size, size", [(37, 8, 2), (37, 8, 4), (33, 8, 2)])
def test_evaluation_shards_cover_every_sample_once(make, n, batch_size, size):
    expected = list(make(n, batch_size, False, seed=0))
    ranks = [World(rank=r, size=size).shard(make(n, batch_size, False, seed=0), train=False) for r in range(size)]
    shares = [list(b) for b in ranks]
    assert all(len(b) == len(expected) for b in ranks)  # the global count (a rank may have nothing of the last)
    assert [interleave([s[t] if t < len(s) else [] for s in shares]) for t in range(len(expected))] == expected


def test_one_process_keeps_the_task_batches_and_a_global_batch_splits_evenly():
    batches = dataloader(10, 4, True, seed=0)
    assert World().shard(batches, train=True) is batches
    with pytest.raises(ValueError, match="batch_size = 6: .*multiple of the 4 processes"):
        World(rank=0, size=4).shard(dataloader(10, 6, True, seed=0), train=True)
    with pytest.raises(TypeError, match="DataLoader or an object with groups"):
        World(rank=0, size=2).shard([[0, 1]], train=True)


def test_sharding_dispatches_on_the_grouped_batches_protocol():
    grouped = length_grouped(37, 8, True, seed=0)
    assert isinstance(grouped, GroupedBatches) and not isinstance(dataloader(37, 8, True, seed=0), GroupedBatches)
    share = World(rank=1, size=2).shard(grouped, train=True)
    assert isinstance(share, GroupedBatches)  # a rank's share is a grouped source too
    # the protocol's members, not a groups() method alone, make a grouped source
    with pytest.raises(TypeError, match="DataLoader or an object with groups"):
        World(rank=0, size=2).shard(SimpleNamespace(groups=lambda: [[0, 1]], batch_size=2), train=True)
    with pytest.raises(TypeError, match="no lengths"):
        LengthGroupedBatches(list(range(4)), 2, False, torch.Generator(), list)


def test_merged_shares_are_the_single_process_evaluation():
    whole = [
        EvalBatch([0.1 * i for i in range(b, b + n)], list(range(b, b + n)), [str(i) for i in range(b, b + n)])
        for b, n in ((0, 8), (8, 3))
    ]
    per_rank = [[EvalBatch(w.losses[r::4], w.predictions[r::4], w.references[r::4]) for w in whole] for r in range(4)]
    per_rank[3] = per_rank[3][:1]  # 3 samples in the last batch: rank 3 had nothing to evaluate
    assert merge_batches(per_rank) == whole
    assert World().gather_batches(whole) is whole


def _collectives(rank: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    world = distributed.setup(torch.device("cpu"))
    bn = torch.nn.BatchNorm1d(2)
    bn.running_mean.fill_(float(rank))
    world.broadcast_buffers(bn)
    # rank 0 evaluated positions 0, 2, 4 of a batch of 5, rank 1 positions 1, 3
    share = [EvalBatch([0.5 * i for i in range(rank, 5, 2)], list(range(rank, 5, 2)), list(range(rank, 5, 2)))]
    record = {
        "finite": world.all_true(rank == 0),  # one rank's non-finite loss: every rank stops
        "mean": world.mean(1.0 + rank),
        "running_mean": bn.running_mean.tolist(),
        "gathered": [b.losses for b in world.gather_batches(share)],
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    distributed.shutdown()


def test_collectives_give_every_rank_the_same_answer(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_collectives, args=(port, str(tmp_path)), nprocs=2)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert (
        records[0]
        == records[1]
        == {"finite": False, "mean": 1.5, "running_mean": [0.0, 0.0], "gathered": [[0.0, 0.5, 1.0, 1.5, 2.0]]}
    )


def test_nproc_is_validated_and_launches_through_torchrun(tmp_path):
    raw = (REPO / "params.yaml").read_text()
    assert load_params(REPO / "params.yaml").tasks["vision"].nproc == 1
    assert "  nproc: 1 " in raw
    (tmp_path / "p.yaml").write_text(raw.replace("  nproc: 1 ", "  nproc: 0 "))
    with pytest.raises(ParamsError, match=r"common.nproc = 0: must be >= 1"):
        load_params(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text(raw.replace("  nproc: 1 ", "  nproc: 3 "))
    with pytest.raises(ParamsError, match=r"common.batch_size = 32: must be a multiple of nproc \(3\)"):
        load_params(tmp_path / "p.yaml")
    assert distributed.needs_launch(2, {}) and not distributed.needs_launch(1, {})
    assert not distributed.needs_launch(2, {"RANK": "0", "WORLD_SIZE": "2"})  # already a torchrun rank
    assert distributed.torchrun_command(2, ["stages/train.py", "text", "adaptive"])[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "stages/train.py",
        "text",
        "adaptive",
    ]
    # a real launch: 2 CPU ranks join one gloo group, answer one collective and each write a record
    script = tmp_path / "rank_report.py"
    script.write_text(RANK_REPORT)
    assert distributed.launch(2, [str(script), str(tmp_path)]) == 0
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert records == [{"rank": r, "size": 2, "main": r == 0, "env": [str(r), "2"], "mean_rank": 0.5} for r in (0, 1)]
    # a failing rank fails the launch (what a stage's exit code then reports)
    assert distributed.launch(2, [str(script), str(tmp_path / "failed"), "fail"]) != 0
    assert not (tmp_path / "failed").exists()


RANK_REPORT = """\
import json, os, sys
from pathlib import Path

if sys.argv[2:] == ["fail"]:
    sys.exit(3 if os.environ["RANK"] == "1" else 0)  # before importing torch: a quick failure
import torch
from adaptive_lr import distributed

world = distributed.setup(torch.device("cpu"))
record = {"rank": world.rank, "size": world.size, "main": world.is_main,
          "env": [os.environ["RANK"], os.environ["WORLD_SIZE"]], "mean_rank": world.mean(float(world.rank))}
Path(sys.argv[1], f"rank{world.rank}.json").write_text(json.dumps(record))
distributed.shutdown()
"""


@pytest.mark.slow
def test_two_processes_take_the_single_process_decisions(tmp_path, tiny_text_cfg):
    # text: LayerNorm only (no per-rank BatchNorm statistics), and the worker switches dropout off,
    # so one process and two differ only by float rounding (matmuls over 8 rows instead of 16,
    # the gradient average); amp off, as bf16 rounding would widen that
    cfg = replace(tiny_text_cfg, lr=1e-3, epochs=3, amp=False, data={"n_train": 80, "n_test": 20, "max_length": 16})
    get_task("text", cfg).prepare(tmp_path / "data", seed=0)
    # 64 training samples: 4 global batches of 16, 8 per rank; 16 validation samples; 3 probes an
    # epoch and knobs that move the LR at every measurement, so the trajectory has many decisions
    knobs = {
        "probes": 3,
        "probe_size": 0.5,
        "probe_budget": 1.0,
        "patience": 1,
        "patience_up": 1,
        "z": 0.0,
        "threshold": 0.0,
    }
    spec = json.dumps({"cfg": asdict(cfg), "data": str(tmp_path / "data"), "knobs": knobs, "dropout": False})
    for name, cmd in (("one", [sys.executable, str(WORKER)]), ("two", distributed.torchrun_command(2, [str(WORKER)]))):
        (tmp_path / name).mkdir()
        subprocess.run([*cmd, spec, str(tmp_path / name)], check=True, capture_output=True, timeout=300)
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    rank0, rank1 = (json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1))

    assert rank1.pop("log") == []  # only rank 0 logs
    assert {k: v for k, v in rank0.items() if k != "log"} == rank1  # the same evaluations and decisions
    assert len(rank0["lr_trace"]) >= 4 and rank0["probes"] == 6
    assert rank0["lr_trace"] == one["lr_trace"]
    # measured here: relative differences of at most 2e-8 per epoch (3e-5 with bf16 autocast;
    # 1e-3 with dropout on, since each rank draws its own masks)
    assert rank0["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)

    # only rank 0 wrote: curves, result.json, checkpoint
    main = tmp_path / "two" / "rank0"
    assert (main / "live" / "result.json").exists() and (main / "run" / "model.pt").exists()
    assert len((main / "live" / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()) == 1 + 3
    assert not (tmp_path / "two" / "rank1").exists()


@pytest.mark.slow
def test_ranks_killed_between_their_saves_resume_together(tmp_path, tiny_text_cfg):
    """Under torchrun each rank saves its own resume state; a SIGKILL can land between two ranks' saves.

    Run again, the ranks resume from the last epoch every rank saved, and end exactly where an
    uninterrupted two-process run ends.
    """
    import signal
    import time

    cfg = replace(tiny_text_cfg, lr=1e-3, epochs=4, amp=False, data={"n_train": 80, "n_test": 20, "max_length": 16})
    get_task("text", cfg).prepare(tmp_path / "data", seed=0)
    knobs = {"probes": 1, "probe_size": 0.5, "probe_budget": 1.0, "patience": 1, "patience_up": 1}

    def spec(name: str) -> str:
        resume = str(tmp_path / name / "state.pt")
        return json.dumps({"cfg": asdict(cfg), "data": str(tmp_path / "data"), "knobs": knobs, "resume": resume})

    def run(name: str) -> dict:
        (tmp_path / name).mkdir(exist_ok=True)
        cmd = distributed.torchrun_command(2, [str(WORKER), spec(name), str(tmp_path / name)])
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        return json.loads((tmp_path / name / "rank0.json").read_text())

    ref = run("ref")
    assert ref["epochs_run"] == 4 and not any("resumed" in line for line in ref["log"])

    # a kill after rank 0 saved its final state and before rank 1 did: rank 1 has epoch 3 only
    (tmp_path / "ref" / "state.rank1.pt").unlink()
    again = run("ref")
    assert "resumed after epoch 3" in " ".join(again["log"])
    assert again["val_loss"] == ref["val_loss"] and again["lr_trace"] == ref["lr_trace"]

    # a real SIGKILL of the whole run once both ranks have saved an epoch
    (tmp_path / "work").mkdir()
    cmd = distributed.torchrun_command(2, [str(WORKER), spec("work"), str(tmp_path / "work")])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not all((tmp_path / "work" / f"state.rank{r}.pt").exists() for r in (0, 1)):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "work" / "rank0.json").exists()  # it really was cut short
    work = run("work")
    assert "resumed after epoch" in " ".join(work["log"])
    assert work["val_loss"] == ref["val_loss"] and work["lr_trace"] == ref["lr_trace"]
