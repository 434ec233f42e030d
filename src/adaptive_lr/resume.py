"""Per-epoch resume of a training run: where its state is kept, whose it is, how it is written.

A run saves its whole state (:meth:`adaptive_lr.train.RunState.state_dict`) at the end of every
epoch; a run started again with the same settings, knobs, seed, data and code finds it and
continues, to the same result as an uninterrupted run. A state saved by any other run (another
key) or one that cannot be read is removed, and the run starts afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptive_lr.distributed import World
from adaptive_lr.files import save_torch

PACKAGE = Path(__file__).resolve().parent


def run_key(
    task_name: str, cfg: Any, schedule_name: str, knobs: Any, seed: int, data_dir: Path, multiplier: float = 1.0
) -> str:
    """What a saved run state must match to be continued: settings, knobs, seed, LR multiplier, data files and
    our code. The task's validation-loss target is left out: training does not read it."""
    cfg = dataclasses.replace(cfg, target_val_loss=0.0) if hasattr(cfg, "target_val_loss") else cfg
    h = hashlib.sha256(repr((task_name, cfg, schedule_name, knobs, seed, multiplier, torch.__version__)).encode())
    for path in sorted(Path(data_dir).rglob("*")) + sorted(PACKAGE.rglob("*.py")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class Checkpointer:
    """The resume state of one run at ``path`` (None: resume is off and every call does nothing).

    Under torchrun each rank keeps its own state (its RNG streams differ), ``<stem>.rank<r>.pt``,
    and the one before it, ``<stem>.rank<r>.prev.pt``: a kill between two ranks' saves leaves them
    one epoch apart, and the ranks then resume together from the last epoch every one of them saved.
    ``key`` is called once, only when resume is on (it hashes the data and the code).
    """

    def __init__(self, path: Path | None, key: Callable[[], str], world: World, log: Callable[[str], None], tag: str):
        self.prev = None
        if path is not None and world.size > 1:
            path = path.with_name(f"{path.stem}.rank{world.rank}{path.suffix}")
            self.prev = path.with_name(f"{path.stem}.prev{path.suffix}")
        self.path, self.world = path, world
        self.key = key() if path is not None else ""
        self.log, self.tag = log, tag

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def load(self) -> dict | None:
        """The state to continue from, or None to start afresh.

        In one process: the saved state, if it belongs to this run. Under torchrun: of each rank's
        last two states, the one at the latest epoch that every rank has (a collective call).
        A foreign or unreadable file is removed.
        """
        if self.path is None:
            return None
        states = {}
        for path in (self.path, self.prev) if self.prev is not None else (self.path,):
            state = self._read(path)
            if state is not None:
                states[(state["result"]["epochs_run"], state["done"])] = state
        if self.world.size == 1:
            return next(iter(states.values()), None)
        common = set.intersection(*(set(map(tuple, have)) for have in self.world.all_gather(sorted(states))))
        if states and not common:
            self.log(f"{self.tag} the ranks' resume states share no epoch; starting afresh")
        return states[max(common)] if common else None

    def _read(self, path: Path) -> dict | None:
        if not path.exists():
            return None
        try:
            state = torch.load(path, weights_only=False)
        except Exception as exc:  # a state that cannot be read is no state
            self.log(f"{self.tag} {path}: unreadable resume state ({type(exc).__name__}); starting afresh")
            path.unlink()
            return None
        if state.get("key") != self.key:
            self.log(f"{self.tag} {path}: saved by a run with other settings, data or code; starting afresh")
            path.unlink()
            return None
        return state

    def save(self, state: dict) -> float:
        """Write ``state`` atomically (a kill leaves the previous one); return the seconds it took.

        Under torchrun the state it replaces is kept as the previous one.
        """
        if self.path is None:
            return 0.0
        start = time.perf_counter()
        if self.prev is not None and self.path.exists():
            os.replace(self.path, self.prev)
        save_torch({"key": self.key, **state}, self.path)
        return time.perf_counter() - start


def rng_state(*generators: torch.Generator) -> dict:
    """Every random state a run draws from: Python, NumPy, torch (CPU and CUDA) and the loop's generators."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict, *generators: torch.Generator) -> None:
    """Put back what :func:`rng_state` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)
