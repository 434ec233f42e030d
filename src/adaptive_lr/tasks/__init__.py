"""Task registry: name -> Task class (imported lazily: each task pulls its own heavy deps)."""

from __future__ import annotations

import importlib
from typing import Any

from adaptive_lr.tasks.base import EvalBatch, Task

_TASKS = {
    "vision": "adaptive_lr.tasks.vision:VisionTask",
    "text": "adaptive_lr.tasks.text:TextTask",
    "speech": "adaptive_lr.tasks.speech:SpeechTask",
}


def get_task(name: str, cfg: Any) -> Task:
    """An instance of task ``name`` configured with ``cfg``."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(_TASKS)}")
    module, cls = _TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)


__all__ = ["EvalBatch", "Task", "get_task"]
