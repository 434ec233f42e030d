"""Task registry: name -> Task class (imported lazily: each task pulls its own heavy deps).

The registry is the one list of tasks: params.yaml's ``tasks`` section accepts these names.
"""

from __future__ import annotations

import importlib
from typing import Any

from adaptive_lr.tasks.base import EvalBatch, Task

REGISTRY = {
    "vision": "adaptive_lr.tasks.vision.task:VisionTask",
    "text": "adaptive_lr.tasks.text.task:TextTask",
    "speech": "adaptive_lr.tasks.speech.task:SpeechTask",
    # problem families the study does not run (AdaptiveLR was not tuned on them): bench/untuned_problems.py
    "tabular": "adaptive_lr.tasks.tabular.task:TabularTask",
    "signal": "adaptive_lr.tasks.signal.task:SignalTask",
}


def task_class(name: str) -> type[Task]:
    """The Task class of task ``name`` (its data and model knobs are class attributes)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_task(name: str, cfg: Any) -> Task:
    """An instance of task ``name`` configured with ``cfg``."""
    return task_class(name)(cfg)


__all__ = ["REGISTRY", "EvalBatch", "Task", "get_task", "task_class"]
