"""The contract between the training loop and a task.

A task is a small object that knows its data, its model and its metric. The
training loop (:mod:`adaptive_lr.train`) only talks to this interface, so it
never knows which task it runs.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adaptive_lr.validation import Knob, check, defaults

SPLITS = ("train", "val", "test")


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
    # every key allowed under tasks.<name>.data and tasks.<name>.model: kind, default and range
    data_spec: dict[str, Knob] = {}
    model_spec: dict[str, Knob] = {}

    def __init__(self, cfg: Any):
        self.cfg = cfg
        data, model = self.check_knobs(cfg.data, cfg.model)
        self.data_cfg = {**defaults(self.data_spec), **data}  # the data knobs: defaults, overridden by cfg.data
        self.model_cfg = {**defaults(self.model_spec), **model}  # the model knobs, likewise

    @classmethod
    def check_knobs(cls, data: dict | None, model: dict | None) -> tuple[dict, dict]:
        """The keys given under ``tasks.<name>.data`` and ``.model``, checked (ParamsError names a bad one)."""
        return (
            check(f"tasks.{cls.name}.data", data, cls.data_spec),
            check(f"tasks.{cls.name}.model", model, cls.model_spec),
        )

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
        a ``DataLoader`` built on a batch size, or a :class:`~adaptive_lr.tasks.batching.GroupedBatches`
        (``groups()``, ``dataset``, ``collate``, ``batch_size``) such as
        :class:`~adaptive_lr.tasks.batching.LengthGroupedBatches`.
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


class SyntheticClassificationTask(ClassificationTask):
    """A classification task on synthetic tensors made in ``prepare`` (the ``builtin`` source only).

    A subclass makes the splits (:meth:`make_splits`: ``{split: (x, y)}``) and builds the model; this
    class saves, loads and batches them (``x`` float, ``y`` class indices) and takes ``model(x)`` as the logits.
    """

    @abc.abstractmethod
    def make_splits(self, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"train": (x, y), "val": ..., "test": ...}`` drawn with ``seed``."""

    def split(self, seed: int) -> tuple[Any, Any, Any]:
        """Indices of the train, val and test examples among ``n_train + n_test`` drawn ones: the first
        ``data.n_train`` are split by ``validation_split`` (seed + 1), the rest are the test split."""
        from adaptive_lr.tasks.sources import split_indices

        n_train, n_test = self.data_cfg["n_train"], self.data_cfg["n_test"]
        train, val = split_indices(n_train, self.cfg.validation_split, seed + 1, f"tasks.{self.name}.data.n_train")
        return train, val, np.arange(n_train, n_train + n_test)

    def prepare(self, out_dir: Path, seed: int) -> dict[str, int]:
        from adaptive_lr.errors import ParamsError
        from adaptive_lr.files import save_torch

        if self.cfg.source != "builtin":
            raise ParamsError(f"tasks.{self.name}.source = {self.cfg.source!r}: this task is synthetic, use builtin")
        splits = self.make_splits(seed)
        for split, (x, y) in splits.items():
            save_torch({"x": x.float(), "y": y.long()}, Path(out_dir) / f"{split}.pt")
        return {split: len(y) for split, (_, y) in splits.items()}

    def load(self, data_dir: Path, split: str) -> torch.utils.data.Dataset:
        from adaptive_lr.tasks.sources import load_split

        blob = load_split(data_dir, split, f"prepare@{self.name}", ("x", "y"))
        return torch.utils.data.TensorDataset(blob["x"], blob["y"])

    def collate(self, items: list) -> dict[str, Any]:
        return {"x": torch.stack([i[0] for i in items]), "y": torch.stack([i[1] for i in items])}

    def logits(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(batch["x"]).float()
