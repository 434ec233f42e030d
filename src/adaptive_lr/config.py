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


def _mapping(where: str, value: Any) -> dict:
    """A section of params.yaml: a mapping (null is an empty one), or ParamsError naming ``where``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamsError(f"{where}: expected a mapping of keys, got {value!r}")
    return value


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
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ParamsError(f"{where}.seeds = {list(cfg.seeds)!r}: seeds must be distinct")
    if isinstance(cfg, TaskConfig) and cfg.source == "local" and not cfg.path:
        raise ParamsError(f"{where}.path: source 'local' needs a path to the local files")


def resolve_task(raw: dict, task: str) -> TaskConfig:
    """Merge ``common`` with ``tasks.<task>`` and validate every key."""
    common = _mapping("common", raw.get("common"))
    tasks = _mapping("tasks", raw.get("tasks"))
    if task not in tasks:
        raise ParamsError(f"tasks.{task}: missing; params.yaml defines tasks {sorted(tasks)}")
    own = _mapping(f"tasks.{task}", tasks[task])
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
    try:
        raw = _mapping(str(path), read_yaml(path.read_text()))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc})") from exc
    known_top = {"profile", "profiles", "common", "tasks", "schedules", "ablations"}
    for key in raw:
        if key not in known_top:
            raise ParamsError(f"{key}: unknown top-level key; known keys: {', '.join(sorted(known_top))}")
    profile = raw.get("profile", "default")
    profiles = _mapping("profiles", raw.get("profiles"))
    if profile != "default":
        if not isinstance(profile, str) or profile not in profiles:
            raise ParamsError(f"profile = {profile!r}: unknown; choose default or one of {sorted(profiles)}")
        raw = _deep_merge(raw, _mapping(f"profiles.{profile}", profiles[profile]))
    try:
        return _validate(raw, profile)
    except ParamsError as exc:
        if profile == "default":
            raise
        # the key may hold its bad value in the profile's block, not where the message points
        raise ParamsError(f"{exc} (with profiles.{profile} laid over params.yaml)") from exc


def _validate(raw: dict, profile: str) -> Params:
    """Typed, checked settings of ``raw`` (params.yaml with the active profile merged in)."""
    tasks_raw = _mapping("tasks", raw.get("tasks"))
    for task in tasks_raw:
        if task not in TASKS:
            raise ParamsError(f"tasks.{task}: unknown task; valid tasks: {', '.join(TASKS)}")
    tasks = {task: resolve_task(raw, task) for task in tasks_raw}
    # late imports: they import torch
    from adaptive_lr.schedules import validate_ablations, validate_schedules
    from adaptive_lr.tasks import get_task

    for task, cfg in tasks.items():
        get_task(task, cfg)  # checks the keys and kinds under tasks.<task>.data and .model
    schedules_raw = _mapping("schedules", raw.get("schedules"))
    schedules = validate_schedules(schedules_raw)
    ablations = validate_ablations(_mapping("ablations", raw.get("ablations")), schedules_raw)
    _check_min_lr(raw, tasks, {**{f"schedules.{n}": k for n, k in schedules.items()}, **{f"ablations.{n}": k for n, k in ablations.items()}})
    return Params(profile=profile, tasks=tasks, schedules={**schedules, **ablations}, ablations=tuple(ablations))


def _check_min_lr(raw: dict, tasks: dict[str, TaskConfig], knobs: dict[str, Any]) -> None:
    """A schedule's floor (``min_lr``) must not lie above a task's initial LR: its first cut would raise the LR."""
    for where, k in knobs.items():
        for task, cfg in tasks.items():
            if getattr(k, "min_lr", None) is not None and k.min_lr > cfg.lr:
                own = (raw.get("tasks") or {}).get(task) or {}
                lr_key = f"tasks.{task}.lr" if own.get("lr") is not None else "common.lr"
                raise ParamsError(f"{where}.min_lr = {k.min_lr!r}: above the initial LR of task {task} ({lr_key} = {cfg.lr!r}); must not exceed it")
