"""1-D signal classification: a small CNN telling waveform shapes apart in noise.

A problem family unlike the study's three: each example is a window of ``length`` samples of
one of four periodic shapes (sine, square, sawtooth, triangle) at a random frequency (``cycles``
periods per window), phase and amplitude, on a random offset and slope, buried in Gaussian noise
of std ``noise`` (the amplitude is 0.5-1.5). The model is a 3-layer 1-D CNN with BatchNorm
(so Schedule-Free's statistics recalibration is exercised too) and global average pooling.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from adaptive_lr.tasks.base import SyntheticClassificationTask
from adaptive_lr.validation import Knob

DATA_SPEC = {
    "n_train": Knob("int", 1600, ge=2),  # train+val windows (split by validation_split)
    "n_test": Knob("int", 800, ge=1),
    "length": Knob("int", 128, ge=16),  # samples per window
    "cycles": Knob("span", [2.0, 8.0], gt=0),  # periods per window, uniform
    "noise": Knob("float", 0.6, ge=0),  # std of the Gaussian noise
}
MODEL_SPEC = {
    "channels": Knob("int", 16, ge=1),  # channels of the first conv layer (then 2x, 2x)
}
SHAPES = ("sine", "square", "sawtooth", "triangle")


def waves(labels: np.ndarray, length: int, cycles: tuple[float, float], noise: float, rng) -> np.ndarray:
    """One noisy window per label (an index into SHAPES), shape (n, 1, length)."""
    n = len(labels)
    t = np.arange(length) / length
    phase = (rng.uniform(*cycles, (n, 1)) * t + rng.random((n, 1))) % 1.0  # position within the period
    shapes = np.stack(
        [
            np.sin(2 * np.pi * phase),
            np.where(phase < 0.5, 1.0, -1.0),
            2 * phase - 1,
            1 - 4 * np.abs(phase - 0.5),
        ]
    )
    clean = shapes[labels, np.arange(n)] * rng.uniform(0.5, 1.5, (n, 1))
    drift = rng.normal(0, 0.5, (n, 1)) + rng.normal(0, 0.5, (n, 1)) * (t - 0.5)
    return (clean + drift + rng.normal(0, noise, (n, length)))[:, None, :].astype(np.float32)


class SignalTask(SyntheticClassificationTask):
    """Waveform-shape classification of noisy 1-D windows; metric: accuracy."""

    name = "signal"
    data_spec = DATA_SPEC
    model_spec = MODEL_SPEC

    def make_splits(self, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        d = self.data_cfg
        rng = np.random.default_rng(seed)
        n = d["n_train"] + d["n_test"]
        labels = rng.integers(0, len(SHAPES), n)
        x = waves(labels, d["length"], tuple(d["cycles"]), d["noise"], rng)
        train, val, test = self.split(seed)
        to = lambda idx: (torch.from_numpy(x[idx]), torch.from_numpy(labels[idx]).long())  # noqa: E731
        return {"train": to(train), "val": to(val), "test": to(test)}

    def build_model(self) -> nn.Module:
        c = self.model_cfg["channels"]

        def block(i: int, o: int, k: int) -> list[nn.Module]:
            return [nn.Conv1d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm1d(o), nn.ReLU()]

        return nn.Sequential(
            *block(1, c, 7),
            nn.MaxPool1d(2),
            *block(c, 2 * c, 5),
            nn.MaxPool1d(2),
            *block(2 * c, 2 * c, 3),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(2 * c, len(SHAPES)),
        )
