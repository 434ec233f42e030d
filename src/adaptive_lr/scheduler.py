"""AdaptiveLR: a learning-rate scheduler driven by the statistical significance of validation loss.

Its decisions are reported on the logger ``adaptive_lr.scheduler`` (a child of ``adaptive_lr``):
every raise, cut and rollback at INFO, every measurement at DEBUG. The library configures no
handler, so nothing is shown until the application asks, e.g.
``logging.basicConfig(); logging.getLogger("adaptive_lr").setLevel(logging.INFO)``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence

import torch

logger = logging.getLogger(__name__)

SQRT2 = math.sqrt(2.0)  # the default raise: two significant improvements double the LR


def _lrs(lrs: Sequence[float]) -> str:
    return ", ".join(f"{lr:.3g}" for lr in lrs)


def _per_group(value: float | Sequence[float] | None, n: int, name: str) -> list[float | None]:
    if value is None or isinstance(value, (int, float)):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name} should be a number or one per param group ({n}), got {len(value)} values")
    return [float(v) for v in value]


class AdaptiveLR(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """Raise the LR while validation loss improves significantly, cut it when it stops, roll back on divergence.

    Use it where you would use ``torch.optim.lr_scheduler.ReduceLROnPlateau``: call
    ``step(val_loss)`` after each validation, as often as you like (the training loop of this
    project calls it several times per epoch, on a small fixed validation probe).
    It is a ``ReduceLROnPlateau`` by type (none of that class's logic or state is used), so
    frameworks that feed a plateau scheduler its metric do the same for it: the Hugging Face
    ``Trainer`` at each evaluation, Lightning with ``{"scheduler": s, "monitor": "val_loss"}``.
    Those pass the mean loss only; :mod:`adaptive_lr.hf` and :mod:`adaptive_lr.lightning` add the
    per-batch or per-sample losses (:meth:`attach_samples`) and, for Lightning, a step after every
    validation.

    ``val_loss`` is a float or 0-dim tensor, or, better, a 1-D tensor (or sequence) of the
    per-sample losses of a *fixed* set of validation samples, in the same order every time.
    Then the scheduler judges a change against the noise of the measurement itself: the
    standard error of the per-sample differences to the reference measurement (a paired
    test), so a 1% gain on a large, quiet probe counts, and a 5% gain on a small, noisy one
    does not. With a float, pass ``stderr`` to get the same (unpaired) judgement.

    The rule (docs/ALGORITHM.md, version 3): the *reference* is the loss of the last significant
    improvement. A measurement is a significant improvement when it beats the reference by
    more than ``threshold`` (relative) and by more than ``z`` standard errors. After
    ``patience_up`` significant improvements in a row (by default each one) the LR is multiplied
    by ``increase`` (by default sqrt(2); never above ``max_lr``, nor above the LR of the last cut
    divided by ``increase``); after
    ``patience`` measurements in a row without one, by ``factor`` (never below ``min_lr``).
    A non-finite loss, or one above ``divergence`` x the reference, calls ``restore_fn`` (the
    loop restores its last good weights and optimizer state) and cuts the LR.

    It only ever multiplies each group's current LR, so it composes with a warm-up scheduler
    in chainable form (``torch.optim.lr_scheduler.LinearLR`` stepped per batch).

    Where ``ReduceLROnPlateau`` had ``verbose``, it logs: each raise, cut and rollback is a record
    at INFO on the ``adaptive_lr.scheduler`` logger, each measurement one at DEBUG
    (``logging.getLogger("adaptive_lr").setLevel(logging.INFO)`` and a handler to see them).

    Args:
        optimizer (Optimizer): wrapped optimizer; every param group is scaled.
        factor (float): multiplier applied when progress stops and after a divergence, in (0, 1). Default: 0.5.
        threshold (float): relative improvement of the reference that counts, >= 0. Default: 0.01.
        min_lr (float | list[float]): lower bound of each group's LR. Default: 1e-6.
        max_lr (float | list[float] | None): upper bound; None means 10x each group's initial LR. Default: None.
        increase (float): multiplier after ``patience_up`` significant improvements, >= 1. Default: sqrt(2)
            (two significant improvements double the LR, whether or not they come in a row).
        patience (int): measurements without a significant improvement before cutting, >= 1. Default: 12
            (three epochs at four measurements an epoch, as in the lab; stepped once per epoch, 3 is the same span).
        patience_up (int): significant improvements in a row before raising, >= 1. Default: 1
            (version 2.1: 2, with ``increase`` 2).
        z (float): an improvement must also exceed ``z`` standard errors, >= 0. Default: 2.0.
        divergence (float): a loss above ``divergence`` x the reference is a divergence, > 1. Default: 4.0.
        restore_fn (callable | None): called with no arguments to restore the last good state. Default: None.
        raise_lr (bool): raise the LR at all (ablation switch). Default: True.
        significance (bool): require ``z`` standard errors as well as the threshold (ablation switch). Default: True.
        rollback (bool): call ``restore_fn`` on a divergence; if False a divergence only counts
            as a measurement without improvement (ablation switch). Default: True.

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        >>> sched = AdaptiveLR(opt)
        >>> x, y, xv, yv = torch.randn(64, 4), torch.randn(64, 1), torch.randn(32, 4), torch.randn(32, 1)
        >>> for epoch in range(3):
        ...     opt.zero_grad()
        ...     torch.nn.functional.mse_loss(model(x), y).backward()
        ...     opt.step()
        ...     with torch.no_grad():  # per-sample losses of a fixed validation set
        ...         val_losses = torch.nn.functional.mse_loss(model(xv), yv, reduction="none").squeeze(1)
        ...     sched.step(val_losses)
        >>> len(sched.get_last_lr())
        1
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        factor: float = 0.5,
        threshold: float = 0.01,
        min_lr: float | Sequence[float] = 1e-6,
        max_lr: float | Sequence[float] | None = None,
        increase: float = SQRT2,
        patience: int = 12,
        patience_up: int = 1,
        z: float = 2.0,
        divergence: float = 4.0,
        restore_fn: Callable[[], None] | None = None,
        raise_lr: bool = True,
        significance: bool = True,
        rollback: bool = True,
    ):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor should be in (0, 1), got {factor}")
        if not threshold >= 0:
            raise ValueError(f"threshold should be >= 0, got {threshold}")
        if not increase >= 1.0:
            raise ValueError(f"increase should be >= 1, got {increase}")
        if patience < 1:
            raise ValueError(f"patience should be >= 1, got {patience}")
        if patience_up < 1:
            raise ValueError(f"patience_up should be >= 1, got {patience_up}")
        if not z >= 0:
            raise ValueError(f"z should be >= 0, got {z}")
        if not divergence > 1.0:
            raise ValueError(f"divergence should be > 1, got {divergence}")
        if restore_fn is not None and not callable(restore_fn):
            raise ValueError(f"restore_fn should be callable or None, got {restore_fn!r}")
        # no super().__init__(): the ReduceLROnPlateau base is for frameworks' isinstance checks only
        init = [float(g["lr"]) for g in optimizer.param_groups]
        n = len(init)
        self.min_lrs = [float(v) for v in _per_group(min_lr, n, "min_lr")]
        maxes = _per_group(max_lr, n, "max_lr")
        self.max_lrs = [10.0 * lr if hi is None else float(hi) for lr, hi in zip(init, maxes)]
        for i, (lo, lr, hi) in enumerate(zip(self.min_lrs, init, self.max_lrs)):
            if lo < 0:
                raise ValueError(f"min_lr should be >= 0, got {lo}")
            if lo > lr:
                raise ValueError(f"min_lr ({lo}) should be <= the initial lr ({lr}) of param group {i}")
            if hi < lr:
                raise ValueError(f"max_lr ({hi}) should be >= the initial lr ({lr}) of param group {i}")
        self.optimizer = optimizer
        self.factor, self.threshold, self.increase, self.z, self.divergence = factor, threshold, increase, z, divergence
        self.patience, self.patience_up = patience, patience_up
        self.raise_lr, self.significance, self.rollback = raise_lr, significance, rollback
        self.restore_fn = restore_fn
        # state (everything in state_dict)
        self.best = math.inf  # the reference: loss of the last significant improvement
        self.best_samples: list[float] | None = None  # its per-sample losses (paired test)
        self.best_stderr = 0.0
        self.ceilings = list(self.max_lrs)  # raising never goes back to an LR that stalled or diverged
        self.num_good = 0
        self.num_bad = 0
        self.last_epoch = 0  # number of step() calls, as in torch schedulers
        self.raises = self.cuts = self.rollbacks = 0
        self._last_lr = init
        self._attached: list[float] | None = None  # per-sample losses for the next float step() (not state)

    # the decision ------------------------------------------------------------------
    def measure(self, metrics, stderr=None) -> tuple[float, list[float] | None, float]:
        """Mean loss, per-sample losses (or None) and standard error of one measurement."""
        if torch.is_tensor(metrics):
            metrics = metrics.detach().float().cpu()
            metrics = metrics.item() if metrics.dim() == 0 else metrics.flatten().tolist()
        if isinstance(metrics, (int, float)):
            return float(metrics), None, 0.0 if stderr is None else float(stderr)
        samples = [float(v) for v in metrics]
        if not samples:
            raise ValueError("step() got an empty sequence of losses")
        n = len(samples)
        mean = math.fsum(samples) / n
        if not math.isfinite(mean) or n < 2:
            return mean, samples, 0.0 if stderr is None else float(stderr)
        var = math.fsum((v - mean) ** 2 for v in samples) / (n - 1)
        return mean, samples, math.sqrt(var / n) if stderr is None else float(stderr)

    def noise(self, samples: list[float] | None, stderr: float) -> float:
        """Standard error of (reference - current): paired when both have the same samples."""
        ref = self.best_samples
        if samples is not None and ref is not None and len(ref) == len(samples) and len(samples) > 1:
            d = [r - c for r, c in zip(ref, samples)]
            m = math.fsum(d) / len(d)
            return math.sqrt(math.fsum((v - m) ** 2 for v in d) / (len(d) - 1) / len(d))
        return math.hypot(stderr, self.best_stderr)

    def is_significant(self, current: float, samples: list[float] | None = None, stderr: float = 0.0) -> bool:
        """Does ``current`` beat the reference by more than the threshold and (if on) ``z`` standard errors?"""
        gain = self.best - current
        if not gain > self.threshold * abs(self.best):
            return False
        return not self.significance or gain > self.z * self.noise(samples, stderr)

    def attach_samples(self, samples: torch.Tensor | Sequence[float]) -> None:
        """Give the per-sample (or per-batch) losses behind the float the next :meth:`step` receives.

        For a framework that feeds the scheduler the mean loss only (the Hugging Face ``Trainer``):
        whoever sees the evaluation's losses attaches them first, and ``step(mean)`` judges the mean
        against their noise, paired with the reference's losses, as ``step(samples)`` would. They are
        used once; a ``step`` given per-sample losses itself ignores them.
        """
        _, values, _ = self.measure(samples)
        if values is None:
            raise ValueError("attach_samples() needs a 1-D tensor or sequence of losses, got a single number")
        self._attached = values

    def step(self, metrics: float | torch.Tensor | Sequence[float], stderr: float | None = None) -> None:
        """Feed one validation measurement: a loss, or the per-sample losses of a fixed validation set."""
        attached, self._attached = self._attached, None
        current, samples, se = self.measure(metrics, stderr)
        if samples is None and attached is not None:
            _, samples, attached_se = self.measure(attached)
            se = attached_se if stderr is None else se
        self.last_epoch += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "AdaptiveLR step %d: loss %.4g (stderr %.2g), reference %.4g, %d significant / %d not in a row",
                self.last_epoch,
                current,
                se,
                self.best,
                self.num_good,
                self.num_bad,
            )
        diverged = not math.isfinite(current) or (math.isfinite(self.best) and current > self.divergence * self.best)
        if diverged and self.rollback:
            self._rollback(current)
        elif not math.isfinite(self.best) and math.isfinite(current):  # the first measurement is the reference
            self._new_reference(current, samples, se)
        elif not diverged and self.is_significant(current, samples, se):
            self._new_reference(current, samples, se)
            self.num_bad = 0
            self.num_good += 1
            if self.num_good >= self.patience_up and self.raise_lr:
                before = [float(g["lr"]) for g in self.optimizer.param_groups]
                self._scale(self.increase)
                self.raises += 1
                self.num_good = 0
                why = (
                    "a significant improvement"
                    if self.patience_up == 1
                    else f"{self.patience_up} significant improvements in a row"
                )
                self._report("raised", before, f"{why}, loss {current:.4g}")
        else:
            self.num_good = 0
            self.num_bad += 1
            if self.num_bad >= self.patience:
                before = [float(g["lr"]) for g in self.optimizer.param_groups]
                self._cut()
                self._report(
                    "cut",
                    before,
                    f"{self.patience} measurements without a significant improvement on reference {self.best:.4g}",
                )
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    def _report(self, what: str, before: list[float], why: str) -> None:
        """One INFO record of an LR change: the step, the LRs before and after, and why."""
        if logger.isEnabledFor(logging.INFO):
            after = [float(g["lr"]) for g in self.optimizer.param_groups]
            if after == before:
                why += "; the lr stays at its bound"
            logger.info(
                "AdaptiveLR step %d: %s lr %s -> %s (%s)", self.last_epoch, what, _lrs(before), _lrs(after), why
            )

    def _new_reference(self, current: float, samples: list[float] | None, stderr: float) -> None:
        self.best, self.best_samples, self.best_stderr = current, samples, stderr

    def _cut(self) -> None:
        lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        self.ceilings = [min(c, lr / self.increase) if self.increase > 1 else c for c, lr in zip(self.ceilings, lrs)]
        self._scale(self.factor)
        self.cuts += 1
        self.num_good = self.num_bad = 0

    def _rollback(self, current: float) -> None:
        lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        if self.restore_fn is not None:
            self.restore_fn()  # may load an optimizer state with older LRs: set ours back before cutting
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.rollbacks += 1
        self._cut()
        restored = "restored the last good state" if self.restore_fn is not None else "no restore_fn to roll back with"
        self._report(
            "rolled back and cut", lrs, f"loss {current:.4g} diverged from reference {self.best:.4g}; {restored}"
        )

    def _scale(self, mult: float) -> None:
        for group, lo, hi in zip(self.optimizer.param_groups, self.min_lrs, self.ceilings):
            lr = float(group["lr"]) * mult
            if mult > 1:
                lr = min(lr, max(hi, float(group["lr"])))  # a raise stops at the ceiling, never lowers
            group["lr"] = max(lo, lr)

    # the torch scheduler protocol -----------------------------------------------------
    def get_last_lr(self) -> list[float]:
        """The LR of every param group after the last ``step``."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Everything but the optimizer and the restore hook (a resumed run continues exactly)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "restore_fn", "_attached")}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in ("optimizer", "restore_fn", "_attached")})


class BestState:
    """The weights and optimizer state at the lowest validation loss so far, kept to roll back to.

    Give its :meth:`restore` to :class:`AdaptiveLR` as ``restore_fn`` and call :meth:`update` with
    every validation loss (before ``step``): a divergence then returns to the best state instead of
    wasting the run. The copy lives on the CPU (about three times the model's size with Adam). Frozen
    parameters (``requires_grad`` False, e.g. pretrained embeddings) never change: they are not copied.

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        >>> best = BestState(model, opt)
        >>> sched = AdaptiveLR(opt, restore_fn=best.restore)
        >>> for val_loss in [1.0, 0.8, float("nan")]:  # the last one diverged
        ...     best.update(val_loss)
        ...     sched.step(val_loss)
        True
        True
        False
        >>> best.loss, sched.rollbacks
        (0.8, 1)
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        self.loss = math.inf
        self.state: dict | None = None

    def update(self, loss: float | torch.Tensor) -> bool:
        """Keep a copy of the current state if ``loss`` is finite and the lowest so far; say whether it was."""
        loss = float(loss)
        if not (math.isfinite(loss) and loss < self.loss):
            return False
        self.loss = loss
        self.state = {"model": changing_state(self.model), "optimizer": copy.deepcopy(self.optimizer.state_dict())}
        return True

    def restore(self) -> None:
        """Load the kept weights and optimizer state back (nothing to do before the first :meth:`update`)."""
        if self.state is not None:
            load_changing_state(self.model, self.state["model"])
            self.optimizer.load_state_dict(self.state["optimizer"])


def changing_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's state without its frozen parameters (those that never change)."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k not in frozen}


def load_changing_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what :func:`changing_state` kept; every key it lacks must be a frozen parameter of ``model``."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - frozen:
        raise RuntimeError(
            f"state does not fit the model: missing {sorted(set(missing) - frozen)[:5]}, unexpected {unexpected[:5]}"
        )
