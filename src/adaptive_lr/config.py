"""Typed, validated settings read once from ``params.yaml``.

``params.yaml`` has five parts: ``profile`` (which block of ``profiles`` is laid
over the rest), ``common`` (the plan's shared settings), ``tasks`` (per-task
sources, knobs and overrides of common keys), ``schedules`` (per-schedule
knobs) and ``ablations`` (adaptive with some knobs changed). :func:`load_params`
merges the profile in, checks every key, type and range, and returns plain
dataclasses; a bad value raises :class:`ParamsError` with a message that names
the key.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from adaptive_lr.errors import ParamsError  # noqa: F401 (re-exported: stages and tests import it from here)

TASKS = ("vision", "text", "speech")
SOURCES = ("builtin", "hub", "local")
DEVICES = ("auto", "cpu", "cuda")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``3e-05`` is a number, as DVC writes it.

    PyYAML follows YAML 1.1, where a float needs a dot; ``dvc exp run -S tasks.text.lr=3e-5``
    writes ``3e-05`` into params.yaml, which YAML 1.1 reads as a string.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse params.yaml text the way DVC writes it (see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)


@dataclass(frozen=True)
class Common:
    """Settings every task shares unless it overrides them (see params.yaml)."""

    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 50
    validation_split: float = 0.2
    patience: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)
    data_seed: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int = 0
    grad_clip: float = 0.0
    nproc: int = 1  # processes per training run (> 1: the train stage launches itself through torchrun)


@dataclass(frozen=True)
class TaskConfig(Common):
    """The resolved settings of one task: common keys, overridden by the task's own."""

    task: str = ""
    source: str = "builtin"
    path: str | None = None
    target_val_loss: float = 0.0
    data: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Params:
    """Everything in params.yaml, resolved for the active profile."""

    profile: str
    tasks: dict[str, TaskConfig]
    schedules: dict[str, Any]  # typed knobs of every schedule and every ablation, by name
    ablations: tuple[str, ...] = ()  # which names in ``schedules`` are ablations of adaptive


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_type(where: str, value: Any, expected: Any) -> Any:
    """Coerce ``value`` to the annotated type, or raise ParamsError naming ``where``."""
    if expected in ("int",):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if expected in ("float",):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if expected in ("bool",):
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true or false, got {value!r}")
        return value
    if expected in ("str",):
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    if expected in ("str | None",):
        if value is not None and not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string or null, got {value!r}")
        return value
    if expected in ("tuple[int, ...]",):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ParamsError(f"{where}: expected a list of integers, got {value!r}")
        return tuple(value)
    if expected in ("dict",):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return value
    raise AssertionError(f"unhandled type {expected}")


def _check_ranges(where: str, cfg: Common) -> None:
    checks = [
        ("batch_size", cfg.batch_size >= 1, "must be >= 1"),
        ("lr", cfg.lr > 0 and math.isfinite(cfg.lr), "must be a positive number"),
        ("weight_decay", cfg.weight_decay >= 0, "must be >= 0"),
        ("epochs", cfg.epochs >= 1, "must be >= 1"),
        ("validation_split", 0 < cfg.validation_split < 1, "must lie strictly between 0 and 1"),
        ("patience", cfg.patience >= 1, "must be >= 1"),
        ("seeds", len(cfg.seeds) >= 1, "must list at least one seed"),
        ("device", cfg.device in DEVICES, f"must be one of {', '.join(DEVICES)}"),
        ("threads", cfg.threads >= 0, "must be >= 0 (0 = all cores)"),
        ("grad_clip", cfg.grad_clip >= 0, "must be >= 0 (0 = off)"),
        ("nproc", cfg.nproc >= 1, "must be >= 1 (1 = one process, no torchrun)"),
        ("batch_size", cfg.nproc < 1 or cfg.batch_size % cfg.nproc == 0,
         f"must be a multiple of nproc ({cfg.nproc}): it is the global batch, split evenly across the processes"),
    ]
    if isinstance(cfg, TaskConfig):
        checks += [
            ("source", cfg.source in SOURCES, f"must be one of {', '.join(SOURCES)}"),
            ("target_val_loss", cfg.target_val_loss > 0, "must be > 0"),
        ]
    for key, ok, msg in checks:
        if not ok:
            raise ParamsError(f"{where}.{key} = {getattr(cfg, key)!r}: {msg}")
    if not isinstance(cfg, TaskConfig):
        return
    if cfg.source == "local" and not cfg.path:
        raise ParamsError(f"{where}.path: source 'local' needs a path to the local files")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ParamsError(f"{where}.seeds = {list(cfg.seeds)!r}: seeds must be distinct")


def resolve_task(raw: dict, task: str) -> TaskConfig:
    """Merge ``common`` with ``tasks.<task>`` and validate every key."""
    common = raw.get("common") or {}
    tasks = raw.get("tasks") or {}
    if task not in tasks:
        raise ParamsError(f"tasks.{task}: missing; params.yaml defines tasks {sorted(tasks)}")
    own = tasks[task] or {}
    types = {f.name: f.type for f in fields(TaskConfig)}
    common_keys = {f.name for f in fields(Common)}
    values: dict[str, Any] = {"task": task}
    for key, value in common.items():
        if key not in common_keys:
            raise ParamsError(f"common.{key}: unknown key; known keys: {', '.join(sorted(common_keys))}")
        values[key] = _check_type(f"common.{key}", value, types[key])
    _check_ranges("common", Common(**{k: v for k, v in values.items() if k in common_keys}))
    for key, value in own.items():
        if key not in types or key == "task":
            known = sorted(k for k in types if k != "task")
            raise ParamsError(f"tasks.{task}.{key}: unknown key; known keys: {', '.join(known)}")
        if value is None and key not in ("path",):
            continue  # null means "inherit from common"
        values[key] = _check_type(f"tasks.{task}.{key}", value, types[key])
    cfg = TaskConfig(**values)
    _check_ranges(f"tasks.{task}", cfg)
    return cfg


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, merge the active profile, and validate ``params.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run from the repository root)")
    raw = read_yaml(path.read_text()) or {}
    known_top = {"profile", "profiles", "common", "tasks", "schedules", "ablations"}
    for key in raw:
        if key not in known_top:
            raise ParamsError(f"{key}: unknown top-level key; known keys: {', '.join(sorted(known_top))}")
    profile = raw.get("profile", "default")
    profiles = raw.get("profiles") or {}
    if profile != "default":
        if profile not in profiles:
            raise ParamsError(f"profile = {profile!r}: unknown; choose default or one of {sorted(profiles)}")
        raw = _deep_merge(raw, profiles[profile])
    tasks_raw = raw.get("tasks") or {}
    for task in tasks_raw:
        if task not in TASKS:
            raise ParamsError(f"tasks.{task}: unknown task; valid tasks: {', '.join(TASKS)}")
    tasks = {task: resolve_task(raw, task) for task in tasks_raw}
    from adaptive_lr.schedules import validate_ablations, validate_schedules  # late import: they import torch

    schedules_raw = raw.get("schedules") or {}
    schedules = validate_schedules(schedules_raw)
    ablations = validate_ablations(raw.get("ablations") or {}, schedules_raw)
    return Params(profile=profile, tasks=tasks, schedules={**schedules, **ablations}, ablations=tuple(ablations))
