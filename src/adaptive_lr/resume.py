"""Per-epoch resume of a training run: where its state is kept, whose it is, how it is written.

A run saves its whole state (:meth:`adaptive_lr.train.RunState.state_dict`) at the end of every
epoch; a run started again with the same settings, knobs, seed, data and code finds it and
continues, to the same result as an uninterrupted run. A state saved by any other run (another
key) or one that cannot be read is removed, and the run starts afresh.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptive_lr.files import save_torch

PACKAGE = Path(__file__).resolve().parent


def run_key(task_name: str, cfg: Any, schedule_name: str, knobs: Any, seed: int, data_dir: Path) -> str:
    """What a saved run state must match to be continued: settings, knobs, seed, data files and our code."""
    h = hashlib.sha256(repr((task_name, cfg, schedule_name, knobs, seed, torch.__version__)).encode())
    for path in sorted(Path(data_dir).rglob("*")) + sorted(PACKAGE.rglob("*.py")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class Checkpointer:
    """The resume state of one run at ``path`` (None: resume is off and every call does nothing).

    Under torchrun each rank keeps its own state (its RNG streams differ): ``<stem>.rank<r>.pt``.
    ``key`` is called once, only when resume is on (it hashes the data and the code).
    """

    def __init__(
        self,
        path: Path | None,
        key: Callable[[], str],
        rank: int,
        world_size: int,
        log: Callable[[str], None],
        tag: str,
    ):
        if path is not None and world_size > 1:
            path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
        self.path = path
        self.key = key() if path is not None else ""
        self.log, self.tag = log, tag

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def load(self) -> dict | None:
        """The saved state if it belongs to this run, else None (and a foreign or unreadable file is removed)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=False)
        except Exception as exc:  # a state that cannot be read is no state: start afresh
            self.log(f"{self.tag} {self.path}: unreadable resume state ({type(exc).__name__}); starting afresh")
            self.path.unlink()
            return None
        if state.get("key") != self.key:
            self.log(f"{self.tag} {self.path}: saved by a run with other settings, data or code; starting afresh")
            self.path.unlink()
            return None
        return state

    def save(self, state: dict) -> float:
        """Write ``state`` atomically (a kill leaves the previous one); return the seconds it took."""
        if self.path is None:
            return 0.0
        start = time.perf_counter()
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
