"""AdaptiveLR in Lightning, stepped after every validation (``pip install 'adaptive-lr[lightning]'``).

Lightning steps a scheduler returned from ``configure_optimizers`` on its own clock: once an epoch
(``interval: "epoch"``) or every N training steps, with the last logged value of ``monitor``. That
works (:class:`~adaptive_lr.AdaptiveLR` is a ``ReduceLROnPlateau`` by type) but gives it one float
per epoch. :class:`AdaptiveLRCallback` gives it what the lab's loop does:

* a step after **every** validation, in-epoch ones included (``Trainer(val_check_interval=0.25)``
  validates four times an epoch, as the lab measures);
* the **per-sample losses** of that validation, so its significance test is on: have
  ``validation_step`` return them (``F.cross_entropy(logits, y, reduction="none")``) or the
  batch's mean loss (then the test is paired over batches). The validation dataloader must
  give the same samples in the same order every time (Lightning's default: no shuffling);
* its **rollback**: the weights and optimizer state at the lowest validation loss so far
  (:class:`~adaptive_lr.scheduler.BestState`), restored when a validation diverges.

The callback builds the scheduler on the module's optimizer, so ``configure_optimizers`` returns
the optimizer alone::

    class Module(pl.LightningModule):
        def validation_step(self, batch, _):
            x, y = batch
            losses = F.cross_entropy(self(x), y, reduction="none")
            self.log("val_loss", losses.mean())
            return losses

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    trainer = pl.Trainer(val_check_interval=0.25, callbacks=[AdaptiveLRCallback()])

The scheduler's state is saved in Lightning's checkpoints with the callback's and restored
with them; ``callback.scheduler`` is the :class:`~adaptive_lr.AdaptiveLR` once fit has started.
"""

from __future__ import annotations

import logging
import math
from typing import Any

try:
    import pytorch_lightning as pl
except ImportError as e:  # tests/test_library.py blocks pytorch_lightning
    raise ImportError(
        f"adaptive_lr.lightning needs pytorch-lightning: pip install 'adaptive-lr[lightning]' ({e})"
    ) from e

import torch

from adaptive_lr.scheduler import AdaptiveLR, BestState

logger = logging.getLogger(__name__)


def _losses(outputs: Any) -> torch.Tensor | None:
    """The losses a ``validation_step`` returned: a tensor (or a dict's ``loss``), flattened; None otherwise."""
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    if not torch.is_tensor(outputs):
        return None
    return outputs.detach().float().flatten()


class AdaptiveLRCallback(pl.Callback):
    """Build an :class:`AdaptiveLR` on the module's optimizer and step it after every validation.

    Args:
        rollback (bool): keep the best state (on the CPU: about three times the model's size with
            Adam) and restore it when a validation diverges. Default: True.
        **scheduler_kwargs: the :class:`AdaptiveLR` knobs (``factor``, ``patience``, ``z``, ...).
    """

    def __init__(self, rollback: bool = True, **scheduler_kwargs: Any):
        self.rollback, self.kwargs = rollback, scheduler_kwargs
        self.scheduler: AdaptiveLR | None = None
        self.best: BestState | None = None
        self.losses: list[torch.Tensor] = []  # of the validation under way
        self.saved: dict | None = None  # a checkpoint's scheduler state, loaded before the optimizer exists
        self.warned = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, AdaptiveLR):
                raise ValueError(
                    "AdaptiveLRCallback: configure_optimizers also returns an AdaptiveLR, which Lightning would step "
                    "on its own clock as well; return the optimizer alone, the callback builds the scheduler"
                )
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"AdaptiveLRCallback: the module has {len(trainer.optimizers)} optimizers; it schedules exactly one"
            )
        optimizer = trainer.optimizers[0]
        self.best = BestState(pl_module, optimizer) if self.rollback else None
        self.scheduler = AdaptiveLR(optimizer, restore_fn=self.best.restore if self.best else None, **self.kwargs)
        if self.saved is not None:
            self.scheduler.load_state_dict(self.saved)
            self.saved = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.losses = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        losses = _losses(outputs)
        if losses is not None:
            self.losses.append(losses)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.scheduler is None:
            return
        losses, self.losses = self.losses, []
        if not losses:
            raise ValueError(
                "AdaptiveLRCallback: validation_step returned no losses; return the batch's per-sample losses "
                '(e.g. F.cross_entropy(logits, y, reduction="none")) or its mean loss'
            )
        # every rank's losses in rank order, the same on every rank, so that all make the same decision
        local = torch.cat(losses).to(pl_module.device)
        gathered = trainer.strategy.all_gather(local)
        samples = gathered.flatten().cpu() if gathered.dim() > local.dim() else local.cpu()
        if samples.numel() < 2 and not self.warned:
            self.warned = True
            logger.warning(
                "AdaptiveLRCallback: one loss per validation; AdaptiveLR judges it on its threshold alone "
                "(return per-sample losses from validation_step)"
            )
        mean = float(samples.mean())
        if self.best is not None and math.isfinite(mean):
            self.best.update(mean)
        self.scheduler.step(samples if samples.numel() > 1 else mean)

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("scheduler")
        if self.scheduler is not None and saved is not None:
            self.scheduler.load_state_dict(saved)
        else:
            self.saved = saved
