"""The run records the stages hand each other, in one place.

``RunResult`` is what a training run writes to ``live/<task>/<schedule>/<mult>x/seed<k>/result.json``
and what evaluation and comparison read back. ``EvalRecord`` is what evaluation writes to
``metrics/<task>/<schedule>/<mult>x/<seed>.json`` and comparison reads back (``<mult>x``: the
initial-LR multiplier's folder, :func:`adaptive_lr.grid.mult_dir`). Both are read with
``from_json(path, stage)``: a file that is missing, unreadable, not a JSON object or short of a
field raises :class:`DataError` naming the file and the DVC stage that writes it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from adaptive_lr.errors import DataError

R = TypeVar("R", bound="_Record")


def read_json_object(path: Path, stage: str) -> dict[str, Any]:
    """The JSON object in ``path``, which DVC stage ``stage`` writes; else DataError: what is wrong, what to re-run."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing; run `dvc repro {stage}`") from exc
    except ValueError as exc:  # truncated, or not JSON (UnicodeDecodeError is a ValueError too)
        raise DataError(f"{path}: unreadable JSON ({exc}); run `dvc repro -f {stage}`") from exc
    if not isinstance(record, dict):
        raise DataError(f"{path}: not a JSON object; run `dvc repro -f {stage}`")
    return record


def _optional(default: Any = None) -> Any:
    """A field that a file may lack (it takes ``default``); every other field must be in the file."""
    return field(default=default, metadata={"optional": True})


class _Record:
    """Reading a record back from the JSON file its stage wrote."""

    @classmethod
    def required_keys(cls) -> tuple[str, ...]:
        """The keys every file of this record holds."""
        return tuple(f.name for f in fields(cls) if not f.metadata.get("optional"))

    @classmethod
    def from_json(cls: type[R], path: Path, stage: str) -> R:
        """The record in ``path``, which DVC stage ``stage`` writes; DataError (naming the file and the stage) if bad.

        Keys that are no field (such as ``test_<metric>``, a copy of ``test_metric``) are left out.
        """
        data = read_json_object(path, stage)
        missing = [k for k in cls.required_keys() if k not in data]
        if missing:
            raise DataError(f"{path}: lacks {', '.join(missing)}; run `dvc repro -f {stage}`")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class RunResult(_Record):
    """What a training run leaves for evaluation and comparison (train writes every field)."""

    task: str
    schedule: str
    seed: int
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_val_metric: float = math.nan
    # where the time went: optimisation steps, validation passes, the schedule's own logic
    optim_seconds: float = 0.0
    val_seconds: float = 0.0  # end-of-epoch validation passes (every schedule has them)
    probe_seconds: float = 0.0  # in-epoch validation probes (schedules with probes only)
    sched_seconds: float = 0.0
    probes: int = 0  # in-epoch probes run
    diverged_epoch: int | None = None
    stopped_early: bool = False
    # per epoch (1-based position i-1): validation loss and wall seconds since the start
    val_loss: list = field(default_factory=list)
    elapsed: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    # every LR the schedule set: [position in epochs (epoch - 1 + fraction of its batches), lr]
    lr_trace: list = field(default_factory=list)
    # machine cost of the whole run (UsageMeter.stop): wall_seconds, cpu_util, peak_rss_mb, ...
    usage: dict = field(default_factory=dict)
    checkpoint_seconds: float = 0.0  # writing the per-epoch resume state (not in `elapsed`)


@dataclass(kw_only=True)
class EvalRecord(_Record):
    """What evaluation writes for one run (a seed at a multiplier) of a task x schedule cell, in the order of the file.

    The file also holds ``test_<metric>`` (``test_accuracy``, ``test_wer``) right after
    ``test_metric``, with the same value; see :meth:`to_dict`.
    """

    task: str
    schedule: str
    seed: int
    multiplier: float  # the initial LR as a multiple of the schedule's base LR (the grid point; 1.0 = default)
    lr: float  # the initial LR used: base LR x multiplier (the task's LR; prodigy's own base, 1.0)
    metric: str  # the task's metric: "accuracy" or "wer"
    # on the test split; None when the run diverged before any finite validation loss (no checkpoint)
    test_loss: float | None
    test_metric: float | None
    # the evaluation's own cost: absent from the file when there was no checkpoint to evaluate
    eval_seconds: float | None = _optional()
    eval_samples_per_s: float | None = _optional()
    test_samples: int | None = _optional()
    # from the training run (RunResult)
    best_val_loss: float | None
    best_epoch: int
    epochs_run: int
    diverged_epoch: int | None
    # overhead: total training time and where it went, and what the run cost the machine
    train_seconds: float
    seconds_per_epoch: float
    optim_seconds: float
    val_seconds: float
    probe_seconds: float
    sched_seconds: float
    probes: int
    cpu_util: float
    peak_rss_mb: float
    gpu_peak_mb: float | None
    gpu_util: float | None

    @classmethod
    def from_run(cls, run: RunResult, **given: Any) -> EvalRecord:
        """The record of ``run``: ``given`` holds who ran (task, schedule, seed, multiplier, lr, metric) and the test
        figures."""
        usage = run.usage
        return cls(
            **given,
            best_val_loss=run.best_val_loss,
            best_epoch=run.best_epoch,
            epochs_run=run.epochs_run,
            diverged_epoch=run.diverged_epoch,
            train_seconds=usage["wall_seconds"],
            seconds_per_epoch=usage["wall_seconds"] / max(run.epochs_run, 1),
            optim_seconds=run.optim_seconds,
            val_seconds=run.val_seconds,
            probe_seconds=run.probe_seconds,
            sched_seconds=run.sched_seconds,
            probes=run.probes,
            cpu_util=usage["cpu_util"],
            peak_rss_mb=usage["peak_rss_mb"],
            gpu_peak_mb=usage["gpu_peak_mb"],
            gpu_util=usage["gpu_util"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the file: the fields in order, ``test_<metric>`` after ``test_metric``, unset optional
        fields left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[f.name] = value
            if f.name == "test_metric":
                out[f"test_{self.metric}"] = value
        return out
