"""Typed, validated settings read once from ``params.yaml``.

``params.yaml`` has these parts: ``profile`` (which block of ``profiles`` is laid
over the rest), ``common`` (the reference protocol's shared settings), ``grid``
(the initial-LR multipliers every schedule runs at, the extra seeds, the worker
processes, the multipliers of the ablations), ``tasks`` (per-task sources, knobs and overrides of common keys),
``targets`` (each task's validation-loss target, read by compare only),
``schedules`` (per-schedule knobs) and ``ablations`` (adaptive with some knobs
changed). :func:`load_params`
merges the profile in, checks every key, type and range, and returns plain
dataclasses; a bad value raises :class:`ParamsError` with a message that names
the key.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adaptive_lr import schedules
from adaptive_lr.errors import ParamsError
from adaptive_lr.tasks import REGISTRY as _TASK_REGISTRY
from adaptive_lr.tasks import task_class
from adaptive_lr.validation import Knob, check, check_value, ranged, section, spec_of

TASKS = tuple(_TASK_REGISTRY)
SOURCES = ("builtin", "hub", "local")
DEVICES = ("auto", "cpu", "cuda")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``3e-05`` is a number, as DVC writes it.

    PyYAML follows YAML 1.1, where a float needs a dot; ``dvc exp run -S tasks.text.lr=3e-5``
    writes ``3e-05`` into params.yaml, which YAML 1.1 reads as a string.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse params.yaml text the way DVC writes it (see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)


@dataclass(frozen=True)
class Common:
    """Settings every task shares unless it overrides them (see params.yaml); ranges: :func:`ranged`."""

    batch_size: int = ranged(32, ge=1)
    lr: float = ranged(1e-3, gt=0)
    weight_decay: float = ranged(0.0, ge=0)
    epochs: int = ranged(50, ge=1)
    validation_split: float = ranged(0.2, gt=0, lt=1)
    patience: int = ranged(10, ge=1)
    seeds: tuple[int, ...] = ranged((0, 1, 2), min_items=1, distinct=True, ge=0, lt=2**32)  # numpy's seed range
    data_seed: int = ranged(0, ge=0, lt=2**32)
    device: str = ranged("auto", choices=DEVICES)
    amp: bool = True
    threads: int = ranged(0, ge=0, hint="0 = all cores")
    grad_clip: float = ranged(0.0, ge=0, hint="0 = no clipping")
    # processes per training run (> 1: the train stage launches itself through torchrun)
    nproc: int = ranged(1, ge=1, hint="1 = one process, no torchrun")


@dataclass(frozen=True)
class Grid:
    """The study's grid: every schedule at every multiplier of its base LR, ``common.seeds`` at each point."""

    multipliers: tuple[float, ...] = ranged((0.1, 0.3, 1.0, 3.0, 10.0), gt=0, min_items=1, distinct=True)
    # more seeds where verdicts are made: at 1x and at each schedule's tuned multiplier (chosen on validation)
    extra_seeds: tuple[int, ...] = ranged((3, 4), distinct=True, ge=0, lt=2**32)
    # processes that train a cell's runs side by side (each with common.threads torch threads)
    workers: int = ranged(2, ge=1)
    # the multipliers the ablations of adaptive run at (common.seeds at each), a subset of multipliers with 1 in it
    ablation_multipliers: tuple[float, ...] = ranged((1.0,), gt=0, min_items=1, distinct=True)


@dataclass(frozen=True)
class TaskConfig(Common):
    """The resolved settings of one task: common keys, overridden by the task's own."""

    task: str = ""
    source: str = ranged("builtin", choices=SOURCES)
    path: str | None = None
    target_val_loss: float = ranged(0.0, gt=0)  # from params.yaml `targets` (compare reads it; training does not)
    data: dict = field(default_factory=dict)  # the keys given under tasks.<task>.data (see the task's data_spec)
    model: dict = field(default_factory=dict)  # the keys given under tasks.<task>.model (its model_spec)


@dataclass(frozen=True)
class Params:
    """Everything in params.yaml, resolved for the active profile."""

    profile: str
    tasks: dict[str, TaskConfig]
    schedules: dict[str, Any]  # typed knobs of every schedule and every ablation, by name
    ablations: tuple[str, ...] = ()  # which names in ``schedules`` are ablations of adaptive
    grid: Grid = field(default_factory=Grid)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# the top-level keys of params.yaml
_TOP = {
    "profile": Knob("str", "default"),
    **{
        key: Knob("mapping", {}) for key in ("profiles", "common", "grid", "tasks", "targets", "schedules", "ablations")
    },
}
_TASKS = {name: Knob("mapping", {}) for name in TASKS}  # the sections under tasks


def _check_common(where: str, cfg: Common) -> None:
    """The rules that tie two keys together (each key's own range is checked as it is read)."""
    if cfg.batch_size % cfg.nproc:
        raise ParamsError(
            f"{where}.batch_size = {cfg.batch_size!r}: must be a multiple of nproc ({cfg.nproc}): "
            "it is the global batch, split evenly across the processes"
        )
    if isinstance(cfg, TaskConfig) and cfg.source == "local" and not cfg.path:
        raise ParamsError(f"{where}.path: missing; source 'local' needs a path to the local files")


def resolve_task(raw: dict, task: str) -> TaskConfig:
    """Merge ``common`` with ``tasks.<task>`` and check every key, down to the task's data and model knobs."""
    tasks = check("tasks", raw.get("tasks"), _TASKS)
    if task not in tasks:
        raise ParamsError(f"tasks.{task}: missing; params.yaml defines tasks {sorted(tasks)}")
    common = check("common", raw.get("common"), spec_of(Common))
    _check_common("common", Common(**common))
    spec = {key: knob for key, knob in spec_of(TaskConfig).items() if key != "task"}
    # null under tasks.<task> means "inherit from common" (where the key cannot be null itself)
    own = {k: v for k, v in tasks[task].items() if v is not None or k not in spec or spec[k].nullable}
    values = {**common, **check(f"tasks.{task}", own, spec), "task": task}
    target = check("targets", raw.get("targets"), {name: Knob("float", gt=0, null=True) for name in TASKS}).get(task)
    if target is None:
        raise ParamsError(f"targets.{task}: missing; the validation-loss target of task {task} (a number > 0)")
    values["target_val_loss"] = target
    values["data"], values["model"] = task_class(task).check_knobs(values.get("data"), values.get("model"))
    cfg = TaskConfig(**values)
    _check_common(f"tasks.{task}", cfg)
    return cfg


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, merge the active profile, and validate ``params.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run from the repository root)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:  # a folder, no permission, not text
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ParamsError(f"{path}: unreadable ({why}); it must be a YAML file") from exc
    try:
        raw = section(str(path), read_yaml(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc})") from exc
    if not raw:
        raise ParamsError(
            f"{path}: empty; it holds the sections common, tasks and schedules (`git checkout {path}` restores them)"
        )
    top = check("", raw, _TOP)  # where "": the top-level keys are named alone
    profile = top.get("profile", "default")
    profiles = top.get("profiles") or {}
    # every profile, `default` included, is a block of `profiles` (dvc.yaml's stages depend on
    # profiles.<active profile> only, so editing another profile's block re-runs nothing)
    check_value("profile", profile, Knob("str", choices=tuple(profiles) or ("default",)))
    if profile not in profiles:
        raise ParamsError(f"profiles.{profile}: missing; add `{profile}: {{}}` under profiles")
    raw = _deep_merge(raw, section(f"profiles.{profile}", profiles[profile]))
    try:
        return _validate(raw, profile)
    except ParamsError as exc:
        if profile == "default":
            raise
        # the key may hold its bad value in the profile's block, not where the message points
        raise ParamsError(f"{exc} (with profiles.{profile} laid over params.yaml)") from exc


def _validate(raw: dict, profile: str) -> Params:
    """Typed, checked settings of ``raw`` (params.yaml with the active profile merged in)."""
    tasks = {task: resolve_task(raw, task) for task in check("tasks", raw.get("tasks"), _TASKS)}
    schedules_raw = section("schedules", raw.get("schedules"))
    knobs = schedules.validate_schedules(schedules_raw)
    ablations = schedules.validate_ablations(raw.get("ablations"), schedules_raw)
    floors = {f"schedules.{n}": k for n, k in knobs.items()} | {f"ablations.{n}": k for n, k in ablations.items()}
    _check_min_lr(raw, tasks, floors)
    grid = Grid(**check("grid", raw.get("grid"), spec_of(Grid)))
    if 1.0 not in grid.multipliers:
        raise ParamsError(f"grid.multipliers = {list(grid.multipliers)!r}: must include 1 (the default LR)")
    outside = [m for m in grid.ablation_multipliers if m not in grid.multipliers]
    if outside or 1.0 not in grid.ablation_multipliers:
        raise ParamsError(
            f"grid.ablation_multipliers = {list(grid.ablation_multipliers)!r}: must include 1 and lie in "
            f"grid.multipliers ({list(grid.multipliers)!r})" + (f"; {outside!r} do not" if outside else "")
        )
    for task, cfg in tasks.items():
        if set(grid.extra_seeds) & set(cfg.seeds):
            raise ParamsError(
                f"grid.extra_seeds = {list(grid.extra_seeds)!r}: must not repeat a seed of tasks.{task} "
                f"({list(cfg.seeds)!r})"
            )
    return Params(profile=profile, tasks=tasks, schedules={**knobs, **ablations}, ablations=tuple(ablations), grid=grid)


def _check_min_lr(raw: dict, tasks: dict[str, TaskConfig], knobs: dict[str, Any]) -> None:
    """A schedule's floor (``min_lr``) must not lie above a task's initial LR: its first cut would raise the LR."""
    for where, k in knobs.items():
        for task, cfg in tasks.items():
            if getattr(k, "min_lr", None) is not None and k.min_lr > cfg.lr:
                own = (raw.get("tasks") or {}).get(task) or {}
                lr_key = f"tasks.{task}.lr" if own.get("lr") is not None else "common.lr"
                raise ParamsError(
                    f"{where}.min_lr = {k.min_lr!r}: above the initial LR of task {task} ({lr_key} = {cfg.lr!r}); "
                    "must not exceed it"
                )
