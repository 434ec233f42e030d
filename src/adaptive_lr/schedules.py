"""The one registry of learning-rate schedules the lab compares.

Every schedule is a :class:`Schedule`: an optimizer plus the hooks the training
loop calls (after each batch, after each validation, around evaluation).
A new schedule is one ``Knobs`` dataclass and one builder in :data:`REGISTRY`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from adaptive_lr.errors import ParamsError
from adaptive_lr.scheduler import AdaptiveLR
from adaptive_lr.validation import Knob, check, check_value, ranged, section, spec_of, unknown


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

    def bind_rollback(self, restore: Callable[[], None]) -> None:
        """Give a scheduler that rolls back on a divergence the loop's way back to its best state."""
        if isinstance(self.scheduler, AdaptiveLR):
            self.scheduler.restore_fn = restore

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


# knobs ------------------------------------------------------------------------
# Each field's range is data (adaptive_lr.validation.ranged); knobs_of checks a params.yaml mapping against it.
FACTOR = {"gt": 0, "lt": 1}  # a multiplicative cut of the LR
FRACTION = {"gt": 0, "le": 1}


@dataclass(frozen=True)
class FixedKnobs:
    """Constant LR (the plan's first baseline)."""


@dataclass(frozen=True)
class StepKnobs:
    """StepLR: multiply the LR by ``gamma`` every ``every`` of the epoch budget."""

    every: float = ranged(0.33, **FRACTION)  # fraction of the epoch budget between drops
    gamma: float = ranged(0.1, **FRACTION)  # multiplier at each drop


@dataclass(frozen=True)
class CosineKnobs:
    """Cosine annealing, per batch, from the initial LR to ``min_lr`` over the epoch budget."""

    min_lr: float = ranged(1e-6, ge=0)


@dataclass(frozen=True)
class PlateauKnobs:
    """torch ReduceLROnPlateau on the validation loss (the plan's factor, threshold, min LR)."""

    factor: float = ranged(0.1, **FACTOR)
    threshold: float = ranged(0.01, ge=0)
    min_lr: float = ranged(1e-6, ge=0)
    patience: int = ranged(0, ge=0)  # torch counts bad evaluations *beyond* patience: 0 cuts at the first


@dataclass(frozen=True)
class GreedyKnobs:
    """transformers' GreedyLR on the validation loss: raises and lowers the LR."""

    factor: float = ranged(0.5, **FACTOR)
    threshold: float = ranged(0.01, ge=0)
    min_lr: float = ranged(1e-6, ge=0)
    max_lr_ratio: float = ranged(10.0, ge=1)  # max LR as a multiple of the initial LR
    patience: int = ranged(1, ge=1)
    smooth: bool = False


@dataclass(frozen=True)
class ScheduleFreeKnobs:
    """Schedule-Free AdamW (no schedule; iterate averaging) with a linear warm-up."""

    warmup: float = ranged(0.05, ge=0, lt=1)  # fraction of all steps
    beta1: float = ranged(0.9, ge=0, lt=1)


@dataclass(frozen=True)
class AdaptiveKnobs:
    """Our AdaptiveLR (see adaptive_lr.scheduler and docs/ALGORITHM.md for each knob)."""

    factor: float = ranged(0.1, **FACTOR)
    threshold: float = ranged(0.01, ge=0)
    min_lr: float = ranged(1e-6, ge=0)
    max_lr_ratio: float = ranged(10.0, ge=1)
    increase: float = ranged(2.0, ge=1)
    patience: int = ranged(4, ge=1)
    patience_up: int = ranged(2, ge=1)
    z: float = ranged(2.0, ge=0)
    divergence: float = ranged(4.0, gt=1)
    raise_lr: bool = True
    significance: bool = True
    rollback: bool = True
    probes: int = ranged(3, ge=0, hint="0 = end of epoch only")  # in-epoch validation probes per epoch
    probe_size: float = ranged(0.125, **FRACTION)  # fraction of the validation batches a probe evaluates (>= 1 batch)
    probe_budget: float = ranged(0.05, ge=0, le=1)  # in-epoch probes cost at most this share of the training passes


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
        raise ImportError(
            f"schedule {schedule!r} needs {module.split('.')[0]}: pip install 'adaptive-lr[{extra}]' ({e})"
        ) from e


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
        opt,
        mode="min",
        factor=k.factor,
        patience=k.patience,
        threshold=k.threshold,
        threshold_mode="rel",
        min_lr=k.min_lr,
    )
    return Schedule(opt, sched, on="val")


def _greedy(params, k: GreedyKnobs, ctx: Context) -> Schedule:
    GreedyLR = _extra("transformers.optimization", "greedy", "hf").GreedyLR

    opt = _adam(params, ctx)
    # GreedyLR acts after `patience` evaluations *beyond* the first, hence the -1.
    sched = GreedyLR(
        opt,
        mode="min",
        factor=k.factor,
        patience=k.patience - 1,
        threshold=k.threshold,
        threshold_mode="rel",
        min_lr=k.min_lr,
        max_lr=k.max_lr_ratio * ctx.lr,
        smooth=k.smooth,
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
        opt,
        factor=k.factor,
        threshold=k.threshold,
        min_lr=k.min_lr,
        max_lr=k.max_lr_ratio * ctx.lr,
        increase=k.increase,
        patience=k.patience,
        patience_up=k.patience_up,
        z=k.z,
        divergence=k.divergence,
        raise_lr=k.raise_lr,
        significance=k.significance,
        rollback=k.rollback,
    )
    return Schedule(
        opt,
        sched,
        on="val",
        takes_samples=True,
        recovers=k.rollback,
        probes=k.probes,
        probe_size=k.probe_size,
        probe_budget=k.probe_budget,
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
        raise unknown(where, REGISTRY)
    cls = REGISTRY[name][0]
    return cls(**check(where, raw, spec_of(cls)))


def validate_schedules(raw: dict | None) -> dict[str, Any]:
    """Typed knobs for every schedule named in params.yaml."""
    return {name: knobs_of(name, knobs) for name, knobs in (raw or {}).items()}


ABLATED = "adaptive"  # the schedule whose parts the ablations switch off


def validate_ablations(raw: dict | None, schedules_raw: dict | None) -> dict[str, Any]:
    """Typed knobs of every ablation: ``schedules.adaptive``'s knobs with the ablation's overrides laid on top."""
    out = {}
    for name, over in section("ablations", raw).items():
        if name in REGISTRY:
            raise ParamsError(f"ablations.{name}: a schedule has that name; give the ablation another one")
        over = check_value(f"ablations.{name}", over, Knob("mapping", {}))
        if not over:
            raise ParamsError(f"ablations.{name} = {{}}: must change at least one knob of {ABLATED}")
        # schedules.adaptive was validated already: a bad key or value here is the ablation's own
        base = (schedules_raw or {}).get(ABLATED) or {}
        out[name] = knobs_of(ABLATED, {**base, **over}, where=f"ablations.{name}")
    return out


_BUILDERS = {cls: builder for cls, builder in REGISTRY.values()}


def build(knobs: Any, params, ctx: Context) -> Schedule:
    """Optimizer and scheduler for ``knobs`` (a Knobs dataclass of the registry) over ``params``."""
    return _BUILDERS[type(knobs)](params, knobs, ctx)
