"""Shared fixtures: small, real configurations of each task."""

from __future__ import annotations

import os

import pytest
import torch

from adaptive_lr.config import TaskConfig

# Tests share two cores with nothing else; one thread avoids oversubscription if pytest runs beside a build.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_vision_cfg() -> TaskConfig:
    return TaskConfig(
        task="vision",
        epochs=2,
        batch_size=16,
        patience=5,
        seeds=(0,),
        target_val_loss=2.0,
        data={"n_train": 120, "n_test": 60},
        model={"width": 8},
    )


@pytest.fixture
def tiny_text_cfg() -> TaskConfig:
    return TaskConfig(
        task="text",
        lr=3e-4,
        epochs=1,
        batch_size=16,
        seeds=(0,),
        target_val_loss=0.7,
        data={"n_train": 40, "n_test": 20, "max_length": 16},
        model={"num_layers": 1},
    )
