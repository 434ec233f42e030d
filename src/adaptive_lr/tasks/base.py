"""The contract between the training loop and a task.

A task is a small object that knows its data, its model and its metric. The
training loop (:mod:`adaptive_lr.train`) only talks to this interface, so it
never knows which task it runs.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

SPLITS = ("train", "val", "test")


def kind(value: Any) -> str:
    """The YAML kind of a params.yaml value, as the messages name it."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


@dataclass
class EvalBatch:
    """What a task returns for one evaluated batch.

    Args:
        losses: the per-sample loss of every sample in the batch, in batch order (the loop
            averages exactly over a split of any size, and validation probes compare them
            sample by sample).
        predictions: one prediction per sample (class index, or decoded text).
        references: one reference per sample, same kind as ``predictions``.
    """

    losses: list[float]
    predictions: list = field(default_factory=list)
    references: list = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.losses)

    @property
    def loss_sum(self) -> float:
        return math.fsum(self.losses)


class Task(abc.ABC):
    """One learning problem: data (prepare / load / batch), model, loss, metric.

    Args:
        cfg: the resolved settings of this task (``adaptive_lr.config.TaskConfig``):
            ``cfg.source`` ("builtin" | "hub" | "local"), ``cfg.path`` (local
            files), ``cfg.validation_split``, ``cfg.data`` and ``cfg.model``
            (task-specific dicts from params.yaml), ``cfg.batch_size`` ...
    """

    name: str = ""
    metric: str = "accuracy"  # "accuracy" | "wer"
    higher_is_better: bool = True
    data_defaults: dict = {}  # every key allowed under tasks.<name>.data, with its default
    model_defaults: dict = {}  # every key allowed under tasks.<name>.model, with its default
    # the kinds (see :func:`kind`) a data or model key accepts besides null, where its default's kind is not
    # the answer (a null default, or a key that takes either of two kinds)
    knob_kinds: dict = {}

    def __init__(self, cfg: Any):
        from adaptive_lr.config import ParamsError

        self.cfg = cfg
        for part, defaults in (("data", self.data_defaults), ("model", self.model_defaults)):
            unknown = sorted(set(getattr(cfg, part) or {}) - set(defaults))
            if unknown:
                raise ParamsError(
                    f"tasks.{self.name}.{part}.{unknown[0]}: unknown key; known keys: {', '.join(defaults)}"
                )
            for key, value in (getattr(cfg, part) or {}).items():
                allowed = self.knob_kinds.get(key) or ((kind(defaults[key]),) if defaults[key] is not None else ())
                if value is not None and allowed and kind(value) not in allowed:
                    raise ParamsError(f"tasks.{self.name}.{part}.{key}: expected {' or '.join(allowed)}, got {value!r}")
        self.knobs = {**self.data_defaults, **(cfg.data or {})}
        self.model_knobs = {**self.model_defaults, **(cfg.model or {})}

    # data -----------------------------------------------------------------
    @abc.abstractmethod
    def prepare(self, out_dir: Path, seed: int) -> dict[str, int]:
        """Build train/val/test under ``out_dir`` (one file per split); return split sizes."""

    @abc.abstractmethod
    def load(self, data_dir: Path, split: str) -> torch.utils.data.Dataset:
        """Load one prepared split ("train", "val" or "test")."""

    @abc.abstractmethod
    def collate(self, items: list) -> dict[str, Any]:
        """Stack dataset items into a batch dict (tensors, plus plain references)."""

    def batches(
        self, dataset: torch.utils.data.Dataset, batch_size: int, shuffle: bool, generator: torch.Generator
    ) -> Iterable[dict[str, Any]]:
        """Batches of ``dataset``; a task may override (e.g. to group by length).

        Under torchrun the loop shards what this returns (``adaptive_lr.distributed.World.shard``):
        a ``DataLoader`` built on a batch size, or an object with ``groups()``, ``dataset``,
        ``collate`` and ``batch_size`` like speech's ``LengthGroupedBatches``.
        """
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=self.collate
        )

    # model ------------------------------------------------------------------
    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (seeded by the caller)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean training loss of one batch (a 0-dim tensor with grad)."""

    @abc.abstractmethod
    def evaluate_batch(self, model: nn.Module, batch: dict[str, Any]) -> EvalBatch:
        """Per-sample losses, predictions and references of one batch (no grad, eval mode)."""

    @abc.abstractmethod
    def score(self, predictions: list, references: list) -> float:
        """The task metric (accuracy or WER) over a whole split."""


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch to ``device``; leave other values as they are."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


class ClassificationTask(Task):
    """A task whose model maps a batch to class logits; loss: cross-entropy; metric: accuracy."""

    metric = "accuracy"
    higher_is_better = True

    @abc.abstractmethod
    def logits(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Float logits of shape (batch, classes); the batch's labels are ``batch["y"]``."""

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.logits(model, batch), batch["y"])

    def evaluate_batch(self, model: nn.Module, batch: dict[str, Any]) -> EvalBatch:
        logits = self.logits(model, batch)
        losses = torch.nn.functional.cross_entropy(logits.float(), batch["y"], reduction="none")
        return EvalBatch(losses.tolist(), logits.argmax(1).tolist(), batch["y"].tolist())

    def score(self, predictions: list, references: list) -> float:
        if not references:
            return float("nan")
        return sum(p == r for p, r in zip(predictions, references)) / len(references)
