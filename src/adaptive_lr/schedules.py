"""The one registry of learning-rate schedules the lab compares.

Every schedule is a :class:`Schedule`: an optimizer plus the hooks the training
loop calls (after each batch, after each validation, around evaluation).
A new schedule is one ``Knobs`` dataclass and one builder in :data:`REGISTRY`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import torch

from adaptive_lr.errors import ParamsError
from adaptive_lr.scheduler import AdaptiveLR


@dataclass
class Schedule:
    """What the training loop sees of a schedule.

    Args:
        optimizer: the optimizer the loop steps.
        scheduler: the LR scheduler object, or None for a constant LR.
        on: when the scheduler steps: "batch", "epoch" (no argument) or "val"
            (with the validation loss).
        takes_samples: the scheduler's ``step`` takes the per-sample losses of the validation
            probe (a fixed set: the first validation batches) instead of the mean loss.
        recovers: the scheduler rolls back on a non-finite loss, so the run goes on.
        probes: validation probes per epoch *inside* the epoch, on top of the end-of-epoch validation.
        probe_size: fraction of the validation batches (the first ones, always the same) a probe evaluates.
        probe_budget: the in-epoch probes may cost at most this share of the training, counted in forward
            passes (a training step ~ 3 forward passes of a batch; see train.probes_per_epoch).
    """

    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    on: str | None = None
    takes_samples: bool = False
    recovers: bool = False
    probes: int = 0
    probe_size: float = 1.0
    probe_budget: float = 0.0

    def after_batch(self) -> None:
        if self.on == "batch":
            self.scheduler.step()

    def after_validation(self, val_loss: float, samples: list[float] | None = None) -> None:
        """After the end-of-epoch validation: ``samples`` are the probe's per-sample losses within it."""
        if self.on == "epoch":
            self.scheduler.step()
        elif self.on == "val":
            self.scheduler.step(samples if self.takes_samples and samples is not None else val_loss)

    def after_probe(self, samples: list[float]) -> None:
        """After an in-epoch probe (only schedules with ``probes`` > 0 get them)."""
        self.scheduler.step(samples)

    def probe_batches(self, n_val_batches: int) -> int:
        """How many of the first validation batches form the probe."""
        return min(n_val_batches, max(1, math.ceil(self.probe_size * n_val_batches)))

    def train_mode(self) -> None:
        """Schedule-Free keeps two weight sequences: train on one, evaluate on the other."""
        if hasattr(self.optimizer, "train"):
            self.optimizer.train()

    def eval_mode(self) -> None:
        if hasattr(self.optimizer, "eval"):
            self.optimizer.eval()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])


@dataclass(frozen=True)
class Context:
    """What a builder may know about the run."""

    lr: float
    weight_decay: float
    epochs: int
    steps_per_epoch: int
    restore_fn: Callable[[], None] | None = None


# knobs ------------------------------------------------------------------------
@dataclass(frozen=True)
class FixedKnobs:
    """Constant LR (the plan's first baseline)."""


@dataclass(frozen=True)
class StepKnobs:
    """StepLR: multiply the LR by ``gamma`` every ``every`` of the epoch budget."""

    every: float = 0.33  # fraction of the epoch budget between drops
    gamma: float = 0.1  # multiplier at each drop


@dataclass(frozen=True)
class CosineKnobs:
    """Cosine annealing, per batch, from the initial LR to ``min_lr`` over the epoch budget."""

    min_lr: float = 1e-6


@dataclass(frozen=True)
class PlateauKnobs:
    """torch ReduceLROnPlateau on the validation loss (the plan's factor, threshold, min LR)."""

    factor: float = 0.1
    threshold: float = 0.01
    min_lr: float = 1e-6
    patience: int = 0  # torch counts bad evaluations *beyond* patience: 0 cuts at the first


@dataclass(frozen=True)
class GreedyKnobs:
    """transformers' GreedyLR on the validation loss: raises and lowers the LR."""

    factor: float = 0.5
    threshold: float = 0.01
    min_lr: float = 1e-6
    max_lr_ratio: float = 10.0  # max LR as a multiple of the initial LR
    patience: int = 1
    smooth: bool = False


@dataclass(frozen=True)
class ScheduleFreeKnobs:
    """Schedule-Free AdamW (no schedule; iterate averaging) with a linear warm-up."""

    warmup: float = 0.05  # fraction of all steps
    beta1: float = 0.9


@dataclass(frozen=True)
class AdaptiveKnobs:
    """Our AdaptiveLR (see adaptive_lr.scheduler and docs/ALGORITHM.md for each knob)."""

    factor: float = 0.1
    threshold: float = 0.01
    min_lr: float = 1e-6
    max_lr_ratio: float = 10.0
    increase: float = 2.0
    patience: int = 4
    patience_up: int = 2
    z: float = 2.0
    divergence: float = 4.0
    raise_lr: bool = True
    significance: bool = True
    rollback: bool = True
    probes: int = 3  # in-epoch validation probes per epoch (0: end of epoch only)
    probe_size: float = 0.125  # fraction of the validation batches a probe evaluates (at least one batch)
    probe_budget: float = 0.05  # in-epoch probes cost at most this share of the training forward passes


# builders ---------------------------------------------------------------------
def _adam(params, ctx: Context) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=ctx.lr, weight_decay=ctx.weight_decay)


def _fixed(params, k: FixedKnobs, ctx: Context) -> Schedule:
    return Schedule(_adam(params, ctx))


def _extra(module: str, schedule: str, extra: str):
    """Import a peer's package, or say which extra brings it (the library itself needs only torch)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"schedule {schedule!r} needs {module.split('.')[0]}: pip install 'adaptive-lr[{extra}]' ({e})") from e


def _step(params, k: StepKnobs, ctx: Context) -> Schedule:
    opt = _adam(params, ctx)
    every = max(1, round(k.every * ctx.epochs))
    return Schedule(opt, torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=k.gamma), on="epoch")


def _cosine(params, k: CosineKnobs, ctx: Context) -> Schedule:
    opt = _adam(params, ctx)
    total = ctx.epochs * ctx.steps_per_epoch
    return Schedule(opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=k.min_lr), on="batch")


def _plateau(params, k: PlateauKnobs, ctx: Context) -> Schedule:
    opt = _adam(params, ctx)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=k.factor, patience=k.patience, threshold=k.threshold, threshold_mode="rel", min_lr=k.min_lr
    )
    return Schedule(opt, sched, on="val")


def _greedy(params, k: GreedyKnobs, ctx: Context) -> Schedule:
    GreedyLR = _extra("transformers.optimization", "greedy", "hf").GreedyLR

    opt = _adam(params, ctx)
    # GreedyLR acts after `patience` evaluations *beyond* the first, hence the -1.
    sched = GreedyLR(
        opt, mode="min", factor=k.factor, patience=k.patience - 1, threshold=k.threshold, threshold_mode="rel",
        min_lr=k.min_lr, max_lr=k.max_lr_ratio * ctx.lr, smooth=k.smooth,
    )
    return Schedule(opt, sched, on="val")


def _schedulefree(params, k: ScheduleFreeKnobs, ctx: Context) -> Schedule:
    schedulefree = _extra("schedulefree", "schedulefree", "lab")

    warmup = int(k.warmup * ctx.epochs * ctx.steps_per_epoch)
    opt = schedulefree.AdamWScheduleFree(
        params, lr=ctx.lr, betas=(k.beta1, 0.999), weight_decay=ctx.weight_decay, warmup_steps=warmup
    )
    return Schedule(opt)


def _adaptive(params, k: AdaptiveKnobs, ctx: Context) -> Schedule:
    opt = _adam(params, ctx)
    sched = AdaptiveLR(
        opt, factor=k.factor, threshold=k.threshold, min_lr=k.min_lr, max_lr=k.max_lr_ratio * ctx.lr,
        increase=k.increase, patience=k.patience, patience_up=k.patience_up, z=k.z, divergence=k.divergence,
        restore_fn=ctx.restore_fn, raise_lr=k.raise_lr, significance=k.significance, rollback=k.rollback,
    )
    return Schedule(
        opt, sched, on="val", takes_samples=True, recovers=k.rollback,
        probes=k.probes, probe_size=k.probe_size, probe_budget=k.probe_budget,
    )


REGISTRY: dict[str, tuple[type, Callable[..., Schedule]]] = {
    "fixed": (FixedKnobs, _fixed),
    "step": (StepKnobs, _step),
    "cosine": (CosineKnobs, _cosine),
    "plateau": (PlateauKnobs, _plateau),
    "greedy": (GreedyKnobs, _greedy),
    "schedulefree": (ScheduleFreeKnobs, _schedulefree),
    "adaptive": (AdaptiveKnobs, _adaptive),
}


def knobs_of(name: str, raw: dict | None, where: str | None = None) -> Any:
    """The typed knobs of schedule ``name`` from its params.yaml mapping (ParamsError names a bad key).

    ``where`` is the params.yaml path the messages name (default ``schedules.<name>``).
    """
    where = where or f"schedules.{name}"
    if name not in REGISTRY:
        raise ParamsError(f"{where}: unknown schedule; valid schedules: {', '.join(REGISTRY)}")
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping of knobs, got {raw!r}")
    cls = REGISTRY[name][0]
    raw = raw or {}
    types = {f.name: f.type for f in fields(cls)}
    for key, value in raw.items():
        if key not in types:
            known = ", ".join(types) or "none"
            raise ParamsError(f"{where}.{key}: unknown key; known keys: {known}")
        want = types[key]
        ok = {
            "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }[want]
        if not ok:
            raise ParamsError(f"{where}.{key}: expected {want}, got {value!r}")
    knobs = cls(**raw)
    _check_knobs(name, knobs, where)
    return knobs


def _check_knobs(name: str, k: Any, where: str) -> None:
    d = asdict(k)
    rules = {
        "factor": (lambda v: 0 < v < 1, "must lie strictly between 0 and 1"),
        "gamma": (lambda v: 0 < v <= 1, "must lie in (0, 1]"),
        "threshold": (lambda v: v >= 0, "must be >= 0"),
        "min_lr": (lambda v: v >= 0, "must be >= 0"),
        "patience": (lambda v: v >= (0 if name == "plateau" else 1), "must be >= 1 (plateau: >= 0)"),
        "patience_up": (lambda v: v >= 1, "must be >= 1"),
        "every": (lambda v: 0 < v <= 1, "must lie in (0, 1]"),
        "warmup": (lambda v: 0 <= v < 1, "must lie in [0, 1)"),
        "beta1": (lambda v: 0 <= v < 1, "must lie in [0, 1)"),
        "max_lr_ratio": (lambda v: v >= 1, "must be >= 1"),
        "increase": (lambda v: v >= 1, "must be >= 1"),
        "z": (lambda v: v >= 0, "must be >= 0"),
        "divergence": (lambda v: v > 1, "must be > 1"),
        "probes": (lambda v: v >= 0, "must be >= 0 (0 = end of epoch only)"),
        "probe_size": (lambda v: 0 < v <= 1, "must lie in (0, 1]"),
        "probe_budget": (lambda v: 0 <= v <= 1, "must lie in [0, 1]"),
    }
    for key, value in d.items():
        check, msg = rules.get(key, (lambda v: True, ""))
        if not check(value):
            raise ParamsError(f"{where}.{key} = {value!r}: {msg}")


def validate_schedules(raw: dict) -> dict[str, Any]:
    """Typed knobs for every schedule named in params.yaml."""
    return {name: knobs_of(name, knobs) for name, knobs in raw.items()}


ABLATED = "adaptive"  # the schedule whose parts the ablations switch off


def validate_ablations(raw: dict, schedules_raw: dict) -> dict[str, Any]:
    """Typed knobs of every ablation: ``schedules.adaptive``'s knobs with the ablation's overrides laid on top."""
    out = {}
    for name, over in (raw or {}).items():
        if name in REGISTRY:
            raise ParamsError(f"ablations.{name}: a schedule has that name; give the ablation another one")
        if not isinstance(over, dict) or not over:
            raise ParamsError(f"ablations.{name}: expected a mapping of the {ABLATED} knobs it changes, got {over!r}")
        # schedules.adaptive was validated already: a bad key or value here is the ablation's own
        out[name] = knobs_of(ABLATED, {**(schedules_raw.get(ABLATED) or {}), **over}, where=f"ablations.{name}")
    return out


_BUILDERS = {cls: builder for cls, builder in REGISTRY.values()}


def build(knobs: Any, params, ctx: Context) -> Schedule:
    """Optimizer and scheduler for ``knobs`` (a Knobs dataclass of the registry) over ``params``."""
    return _BUILDERS[type(knobs)](params, knobs, ctx)
