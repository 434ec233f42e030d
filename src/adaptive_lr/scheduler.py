"""AdaptiveLR: a learning-rate scheduler driven by the statistical significance of validation loss."""

from __future__ import annotations

import math
from typing import Callable

import torch


class AdaptiveLR:
    """Raise the LR while validation loss improves significantly, cut it when it stops, roll back on divergence.

    Use it where you would use ``torch.optim.lr_scheduler.ReduceLROnPlateau``:
    call ``step(val_loss)`` after each validation. Unlike ReduceLROnPlateau it
    (1) judges an improvement against the measurement's own noise when you pass
    the standard error of the validation loss, (2) raises the LR again (up to
    ``max_lr``) after ``patience_up`` significant improvements in a row, and
    (3) when the loss becomes non-finite or explodes, calls ``restore_fn`` to
    return to the last good weights and optimizer state and cuts the LR.

    Args:
        optimizer (Optimizer): wrapped optimizer; every param group is scaled.
        factor (float): multiplier applied to the LR when progress stops, in (0, 1). Default: 0.1.
        threshold (float): relative improvement of the best loss that counts, >= 0. Default: 0.01.
        min_lr (float): lower bound of every group's LR. Default: 1e-6.
        max_lr (float | None): upper bound; None means 10x each group's initial LR. Default: None.
        increase (float): multiplier applied after ``patience_up`` significant improvements, >= 1. Default: 1.25.
        patience (int): non-improving evaluations tolerated before cutting the LR. Default: 1.
        patience_up (int): significant improvements in a row before raising the LR. Default: 2.
        z (float): an improvement must also exceed ``z`` standard errors. Default: 1.0.
        divergence (float): a loss above ``divergence`` x best counts as divergence. Default: 4.0.
        restore_fn (callable | None): called with no arguments to restore the last good state. Default: None.

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        >>> sched = AdaptiveLR(opt)
        >>> x, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> for epoch in range(3):
        ...     opt.zero_grad()
        ...     torch.nn.functional.mse_loss(model(x), y).backward()
        ...     opt.step()
        ...     with torch.no_grad():
        ...         val_loss = torch.nn.functional.mse_loss(model(x), y)
        ...     sched.step(val_loss)
        >>> len(sched.get_last_lr())
        1
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        factor: float = 0.1,
        threshold: float = 0.01,
        min_lr: float = 1e-6,
        max_lr: float | None = None,
        increase: float = 1.25,
        patience: int = 1,
        patience_up: int = 2,
        z: float = 1.0,
        divergence: float = 4.0,
        restore_fn: Callable[[], None] | None = None,
    ):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor should be in (0, 1), got {factor}")
        if threshold < 0:
            raise ValueError(f"threshold should be >= 0, got {threshold}")
        if min_lr < 0:
            raise ValueError(f"min_lr should be >= 0, got {min_lr}")
        if increase < 1.0:
            raise ValueError(f"increase should be >= 1, got {increase}")
        if patience < 1 or patience_up < 1:
            raise ValueError(f"patience and patience_up should be >= 1, got {patience} and {patience_up}")
        if z < 0:
            raise ValueError(f"z should be >= 0, got {z}")
        if divergence <= 1.0:
            raise ValueError(f"divergence should be > 1, got {divergence}")
        self.optimizer = optimizer
        self.factor = factor
        self.threshold = threshold
        self.min_lr = min_lr
        init = [float(g["lr"]) for g in optimizer.param_groups]
        if max_lr is not None and max_lr < max(init):
            raise ValueError(f"max_lr ({max_lr}) should be >= the initial lr ({max(init)})")
        if min_lr > min(init):
            raise ValueError(f"min_lr ({min_lr}) should be <= the initial lr ({min(init)})")
        self.max_lrs = [max_lr if max_lr is not None else 10.0 * lr for lr in init]
        self.increase = increase
        self.patience = patience
        self.patience_up = patience_up
        self.z = z
        self.divergence = divergence
        self.restore_fn = restore_fn
        self.best = math.inf
        self.best_stderr = 0.0
        self.num_good = 0
        self.num_bad = 0
        self.last_epoch = 0
        self.rollbacks = 0
        self._last_lr = init

    def is_significant(self, current: float, stderr: float) -> bool:
        """Is ``current`` a real improvement on the best loss, beyond threshold and noise?"""
        gain = self.best - current
        noise = self.z * math.hypot(stderr, self.best_stderr)
        return gain > self.threshold * abs(self.best) and gain > noise

    def step(self, metrics: float | torch.Tensor, stderr: float | torch.Tensor = 0.0) -> None:
        """Feed one validation loss (and optionally its standard error)."""
        current, stderr = float(metrics), float(stderr)
        self.last_epoch += 1
        if not math.isfinite(current) or (math.isfinite(self.best) and current > self.divergence * self.best):
            self._rollback()
        elif not math.isfinite(self.best):
            self.best, self.best_stderr = current, stderr  # the first measurement is only the reference
        elif self.is_significant(current, stderr):
            self.best, self.best_stderr = current, stderr
            self.num_bad = 0
            self.num_good += 1
            if self.num_good >= self.patience_up:
                self._scale(self.increase)
                self.num_good = 0
        else:
            if current < self.best:  # small, noisy gains still move the reference point
                self.best, self.best_stderr = current, stderr
            self.num_good = 0
            self.num_bad += 1
            if self.num_bad >= self.patience:
                self._scale(self.factor)
                self.num_bad = 0
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    def _rollback(self) -> None:
        lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        if self.restore_fn is not None:
            self.restore_fn()  # may load an optimizer state with older LRs: set ours after
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._scale(self.factor)
        self.rollbacks += 1
        self.num_good = self.num_bad = 0

    def _scale(self, mult: float) -> None:
        for group, hi in zip(self.optimizer.param_groups, self.max_lrs):
            group["lr"] = min(hi, max(self.min_lr, float(group["lr"]) * mult))

    def get_last_lr(self) -> list[float]:
        """The LR of every param group after the last ``step``."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Everything but the optimizer and the restore hook."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "restore_fn")}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.__dict__.update(state_dict)
