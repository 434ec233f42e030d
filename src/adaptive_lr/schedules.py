"""The one registry of learning-rate schedules the lab compares.

Every schedule is a :class:`Schedule`: an optimizer plus the hooks the training
loop calls (after each batch, after each validation, around evaluation).
A new schedule is one ``Knobs`` dataclass and one builder in :data:`REGISTRY`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from adaptive_lr.errors import ParamsError
from adaptive_lr.scheduler import SQRT2, AdaptiveLR
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
        bn_batches: Schedule-Free only: before each evaluation, recompute the BatchNorm statistics for the
            averaged weights from up to this many training batches (:meth:`recalibrate`); 0 = never.
    """

    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    on: str | None = None
    takes_samples: bool = False
    recovers: bool = False
    probes: int = 0
    probe_size: float = 1.0
    probe_budget: float = 0.0
    bn_batches: int = 0

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

    def needs_recalibration(self, model: torch.nn.Module) -> bool:
        """Whether :meth:`recalibrate` does anything for ``model``: a Schedule-Free schedule with
        ``bn_batches`` > 0, and a model with BatchNorm layers that keep running statistics."""
        return self.bn_batches > 0 and bool(_running_norms(model))

    def recalibrate(self, model: torch.nn.Module, forward_batches: Iterable[Callable[[], Any]]) -> int:
        """Recompute ``model``'s BatchNorm running statistics for the weights it is evaluated on.

        Schedule-Free evaluates the averaged weights (:meth:`eval_mode`), but the BatchNorm running
        statistics were gathered along the training sequence; the package's README asks for a few forward
        passes in train mode with the optimizer in eval mode before every evaluation. Here: the optimizer
        goes to eval mode (the averaged weights; it stays there), every BatchNorm layer's statistics are
        reset and re-estimated as the plain average over up to ``bn_batches`` calls of ``forward_batches``
        (each runs the model forward on one training batch; under no_grad, model in train mode), then the
        layers' momentum and the model's train/eval mode are restored. Without a Schedule-Free schedule,
        ``bn_batches`` > 0 or BatchNorm in ``model``, nothing happens (not even a call).

        Returns the number of batches run (0 when nothing happened).
        """
        if not self.needs_recalibration(model):
            return 0
        norms = _running_norms(model)
        self.eval_mode()
        momenta = [m.momentum for m in norms]
        was_training = model.training
        n = 0
        try:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the pass, not an exponential one
            model.train()
            with torch.no_grad():
                for forward in itertools.islice(forward_batches, self.bn_batches):
                    forward()
                    n += 1
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            model.train(was_training)
        return n

    @property
    def lr(self) -> float:
        """The LR the optimizer steps with; for Prodigy ``d * lr`` (its estimate times its lr), the step size
        an Adam with the same moments would take."""
        group = self.optimizer.param_groups[0]
        return float(group["lr"]) * float(group.get("d", 1.0)) if self.prodigy else float(group["lr"])

    @property
    def prodigy(self) -> bool:
        return type(self.optimizer).__name__ == "Prodigy"

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def _running_norms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics (the ones evaluation uses)."""
    return [
        m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@dataclass(frozen=True)
class Context:
    """What a builder may know about the run."""

    lr: float  # the task's initial LR, already times ``multiplier``
    weight_decay: float
    epochs: int
    steps_per_epoch: int
    multiplier: float = 1.0  # the run's LR multiplier (of the grid); Prodigy applies it to its own lr


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
    """transformers' GreedyLR on the validation loss: raises and lowers the LR.

    Every argument of ``GreedyLR.__init__`` that changes what it does is a knob here (``mode`` is "min":
    a loss; ``verbose`` only prints). Values: the GreedyLR authors' settings (params.yaml says which).
    """

    factor: float = ranged(0.9, **FACTOR)  # LR x factor on a plateau, / factor after improvements
    patience: int = ranged(2, ge=1)  # act at the patience-th good (bad) validation in a row
    threshold: float = ranged(1e-6, ge=0)  # the improvement that counts (see threshold_mode)
    threshold_mode: str = ranged("abs", choices=("abs", "rel"))  # abs: best - threshold; rel: best * (1 - t)
    cooldown: int = ranged(0, ge=0)  # validations ignored after a cut
    warmup: int = ranged(0, ge=0)  # validations ignored after a raise
    min_lr: float = ranged(1e-6, ge=0)
    max_lr_ratio: float = ranged(10.0, ge=1)  # max LR as a multiple of the initial LR
    eps: float = ranged(1e-8, ge=0)  # a change of the LR smaller than this is not made
    smooth: bool = False  # streaming average of the validation loss
    window_size: int = ranged(50, ge=1)  # validations in that average (when smooth)
    reset_start: int = ranged(500, ge=1)  # cuts at min_lr before GreedyLR resets to its initial state


@dataclass(frozen=True)
class ScheduleFreeKnobs:
    """Schedule-Free AdamW (no schedule; iterate averaging) with a linear warm-up."""

    warmup: float = ranged(0.05, ge=0, lt=1)  # fraction of all steps
    beta1: float = ranged(0.9, ge=0, lt=1)
    # BatchNorm statistics recomputed for the averaged weights before each evaluation (Schedule.recalibrate)
    bn_batches: int = ranged(50, ge=0, hint="0 = off")


@dataclass(frozen=True)
class ProdigyKnobs:
    """Prodigy (prodigyopt): Adam whose step size D is estimated on the fly, with cosine annealing.

    Every argument of ``Prodigy.__init__`` that changes what it does is a knob here (``fsdp_in_use`` only
    matters for sharded parameters; the lab does not shard them). ``lr`` is Prodigy's own base LR: the
    run's LR multiplier multiplies it (not the task's Adam LR), and the weight decay is the task's.
    No ``min_lr``: the cosine goes to 0, and the task's LR is not Prodigy's.
    """

    lr: float = ranged(1.0, gt=0)
    d_coef: float = ranged(1.0, gt=0)
    beta1: float = ranged(0.9, ge=0, lt=1)
    beta2: float = ranged(0.999, ge=0, lt=1)
    beta3: float | None = ranged(None, ge=0, lt=1, hint="null = sqrt(beta2)")
    eps: float = ranged(1e-8, gt=0)
    decouple: bool = True  # AdamW-style weight decay
    use_bias_correction: bool = False
    safeguard_warmup: bool = False
    d0: float = ranged(1e-6, gt=0)
    growth_rate: float | None = ranged(None, ge=1, hint="null = unbounded")
    slice_p: int = ranged(1, ge=1)  # D estimated on every slice_p-th entry of each tensor (1 = exact)
    cosine: bool = True  # cosine annealing of lr to 0, per batch, over the epoch budget


@dataclass(frozen=True)
class AdaptiveKnobs:
    """Our AdaptiveLR (see adaptive_lr.scheduler and docs/ALGORITHM.md for each knob)."""

    factor: float = ranged(0.5, **FACTOR)
    threshold: float = ranged(0.01, ge=0)
    min_lr: float = ranged(1e-6, ge=0)
    max_lr_ratio: float = ranged(10.0, ge=1)
    increase: float = ranged(SQRT2, ge=1)
    patience: int = ranged(12, ge=1)
    patience_up: int = ranged(1, ge=1)
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
    # foreach: the multi-tensor update, also on a CPU (torch picks it only on a GPU): the same arithmetic as the
    # per-parameter loop, every result bit for bit the same, and 1.1-1.2x faster training steps on the vision model
    return torch.optim.Adam(params, lr=ctx.lr, weight_decay=ctx.weight_decay, foreach=True)


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
        threshold_mode=k.threshold_mode,
        cooldown=k.cooldown,
        warmup=k.warmup,
        min_lr=k.min_lr,
        max_lr=k.max_lr_ratio * ctx.lr,
        eps=k.eps,
        verbose=False,
        smooth=k.smooth,
        window_size=k.window_size,
        reset_start=k.reset_start,
    )
    return Schedule(opt, sched, on="val")


def _schedulefree(params, k: ScheduleFreeKnobs, ctx: Context) -> Schedule:
    schedulefree = _extra("schedulefree", "schedulefree", "lab")

    warmup = int(k.warmup * ctx.epochs * ctx.steps_per_epoch)
    opt = schedulefree.AdamWScheduleFree(
        params, lr=ctx.lr, betas=(k.beta1, 0.999), weight_decay=ctx.weight_decay, warmup_steps=warmup
    )
    return Schedule(opt, bn_batches=k.bn_batches)


def _prodigy(params, k: ProdigyKnobs, ctx: Context) -> Schedule:
    Prodigy = _extra("prodigyopt", "prodigy", "lab").Prodigy

    opt = Prodigy(
        params,
        lr=k.lr * ctx.multiplier,
        betas=(k.beta1, k.beta2),
        beta3=k.beta3,
        eps=k.eps,
        weight_decay=ctx.weight_decay,
        decouple=k.decouple,
        use_bias_correction=k.use_bias_correction,
        safeguard_warmup=k.safeguard_warmup,
        d0=k.d0,
        d_coef=k.d_coef,
        growth_rate=math.inf if k.growth_rate is None else k.growth_rate,
        fsdp_in_use=False,
        slice_p=k.slice_p,
    )
    if not k.cosine:
        return Schedule(opt)
    # the authors' rule of thumb: T_max = every scheduler.step() of the run, no restarts
    total = ctx.epochs * ctx.steps_per_epoch
    return Schedule(opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=0.0), on="batch")


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
    "prodigy": (ProdigyKnobs, _prodigy),
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
