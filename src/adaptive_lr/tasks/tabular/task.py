"""Tabular classification with label noise: an MLP on scikit-learn's ``make_classification`` features.

A problem family unlike the study's three (no pretrained weights, no convolutions, no sequence):
Gaussian clusters around the vertices of a hypercube (``informative`` of the ``features`` carry the
class; a few more are linear mixtures of those), ``classes`` classes. A share ``label_noise`` of the
training and validation labels is replaced by a random class, so a model that keeps fitting them
overfits, as real tabular data with annotation errors makes it do; the test labels are clean.
Features are standardised with the training split's statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from adaptive_lr.tasks.base import SyntheticClassificationTask
from adaptive_lr.validation import Knob

DATA_SPEC = {
    "n_train": Knob("int", 2000, ge=2),  # train+val examples (split by validation_split)
    "n_test": Knob("int", 1000, ge=1),  # test examples (clean labels)
    "features": Knob("int", 20, ge=2),
    "informative": Knob("int", 8, ge=1),
    "classes": Knob("int", 4, ge=2),
    "class_sep": Knob("float", 1.0, gt=0),  # distance between the class clusters (make_classification's)
    "label_noise": Knob("float", 0.2, ge=0, lt=1),  # share of train/val labels replaced by a random class
}
MODEL_SPEC = {
    "hidden": Knob("int", 128, ge=1),  # width of each hidden layer
    "layers": Knob("int", 2, ge=1),  # hidden layers
}


class TabularTask(SyntheticClassificationTask):
    """Noisy-label tabular classification; metric: accuracy on clean test labels."""

    name = "tabular"
    data_spec = DATA_SPEC
    model_spec = MODEL_SPEC

    def make_splits(self, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from sklearn.datasets import make_classification

        d = self.data_cfg
        informative = min(d["informative"], d["features"])
        n_train, n_test = d["n_train"], d["n_test"]
        x, y = make_classification(
            n_samples=n_train + n_test,
            n_features=d["features"],
            n_informative=informative,
            n_redundant=min(4, d["features"] - informative),
            n_classes=d["classes"],
            n_clusters_per_class=2,
            class_sep=d["class_sep"],
            flip_y=0.0,
            random_state=seed,
        )
        train, val, test = self.split(seed)
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        x = (x - mean) / std
        noisy = y.copy()
        rng = np.random.default_rng(seed + 2)
        flip = rng.random(len(y)) < d["label_noise"]
        noisy[flip] = rng.integers(0, d["classes"], int(flip.sum()))
        to = lambda idx, labels: (torch.from_numpy(x[idx]).float(), torch.from_numpy(labels[idx]).long())  # noqa: E731
        return {"train": to(train, noisy), "val": to(val, noisy), "test": to(test, y)}

    def build_model(self) -> nn.Module:
        d, m = self.data_cfg, self.model_cfg
        layers: list[Any] = []
        width = d["features"]
        for _ in range(m["layers"]):
            layers += [nn.Linear(width, m["hidden"]), nn.ReLU()]
            width = m["hidden"]
        return nn.Sequential(*layers, nn.Linear(width, d["classes"]))
