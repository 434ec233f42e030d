"""AdaptiveLR in a Hugging Face ``Trainer`` (``pip install 'adaptive-lr[hf]'``).

The ``Trainer`` already feeds a ``ReduceLROnPlateau`` its evaluation metric after each
evaluation, and never steps it per batch; :class:`~adaptive_lr.AdaptiveLR` is one by type, so
passing it through ``optimizers=`` is all the feeding there is::

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(..., eval_strategy="steps", eval_steps=100, metric_for_best_model="loss"),
        train_dataset=train, eval_dataset=val,
        optimizers=(optimizer, AdaptiveLR(optimizer)),
        callbacks=[AdaptiveLRCallback()],
    )

:class:`AdaptiveLRCallback` adds what the ``Trainer`` cannot know:

* it checks that set-up before the first step (an error says what to change, instead of a run
  with a constant LR);
* it gives the scheduler the noise of each evaluation: the ``Trainer`` passes only the mean
  ``eval_loss``, so the callback records the loss of every evaluation batch (a forward hook on the
  model, which returns its loss when the batch has labels) and attaches them
  (:meth:`~adaptive_lr.AdaptiveLR.attach_samples`). The ``Trainer`` evaluates the same samples in
  the same order every time, so the scheduler's significance test is paired over batches, as the
  lab's is over samples. It needs two batches or more; eight or more make a useful test
  (``per_device_eval_batch_size`` at most an eighth of the evaluation set);
* it gives the scheduler its rollback: the weights and optimizer state at the lowest
  ``eval_loss`` so far (a :class:`~adaptive_lr.scheduler.BestState`), restored when an evaluation
  diverges.

The lab measures four times an epoch (``eval_steps`` about a quarter of an epoch's steps does the
same); ``patience`` counts evaluations.
"""

from __future__ import annotations

try:
    from transformers import TrainerCallback
except ImportError as e:  # tests/test_library.py blocks transformers
    raise ImportError(f"adaptive_lr.hf needs transformers and accelerate: pip install 'adaptive-lr[hf]' ({e})") from e

import logging
import math

import torch

from adaptive_lr.scheduler import AdaptiveLR, BestState

logger = logging.getLogger(__name__)


def _batch_loss(output) -> float | None:
    """The loss a model returned for one batch (a ``ModelOutput`` or a dict with ``loss``), else None."""
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if not torch.is_tensor(loss) or loss.numel() != 1:
        return None
    return float(loss.detach().float())


def _gathered(values: list[float]) -> list[float]:
    """Every process's values, in rank order (the same list on every rank); this process's alone without DDP."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    out: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, values)
    return [v for part in out for v in part]


class AdaptiveLRCallback(TrainerCallback):
    """Check that a ``Trainer`` feeds its :class:`AdaptiveLR`; give the scheduler each evaluation's batch losses
    and its rollback.

    Args:
        rollback (bool): keep the best state (on the CPU: about three times the model's size with
            Adam) and hand its ``restore`` to a scheduler that has no ``restore_fn`` yet. Default: True.
        batch_losses (bool): attach each evaluation's per-batch losses to the scheduler, so that
            it tests significance; if False it judges the mean against ``threshold`` alone (as
            ``AdaptiveLR(significance=False)``). Default: True.
    """

    def __init__(self, rollback: bool = True, batch_losses: bool = True):
        self.rollback, self.batch_losses = rollback, batch_losses
        self.best: BestState | None = None
        self.metric = "eval_loss"
        self.losses: list[float] = []  # loss of each batch of the evaluation under way
        self.warned = False
        self._hook = None

    def on_train_begin(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        if not isinstance(lr_scheduler, AdaptiveLR):
            raise ValueError(
                "AdaptiveLRCallback: the Trainer's scheduler is "
                f"{type(lr_scheduler).__name__}, not AdaptiveLR; pass optimizers=(optimizer, AdaptiveLR(optimizer))"
            )
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
            raise ValueError(
                "AdaptiveLRCallback: eval_strategy is 'no', so AdaptiveLR would never be fed; "
                "set TrainingArguments(eval_strategy='steps', eval_steps=...) or eval_strategy='epoch'"
            )
        metric = args.metric_for_best_model
        if metric is None or not metric.endswith("loss"):
            raise ValueError(
                f"AdaptiveLRCallback: metric_for_best_model is {metric!r}; the Trainer feeds the scheduler that "
                "metric and AdaptiveLR expects a loss: set TrainingArguments(metric_for_best_model='loss')"
            )
        self.metric = metric if metric.startswith("eval_") else f"eval_{metric}"
        if self.rollback and lr_scheduler.restore_fn is None:
            self.best = BestState(model, lr_scheduler.optimizer)
            lr_scheduler.restore_fn = self.best.restore
        if self.batch_losses and self._hook is None:
            self._hook = model.register_forward_hook(self._record)

    def _record(self, module, inputs, output) -> None:
        if not module.training:  # evaluation batches only (the Trainer puts the model in eval mode for them)
            loss = _batch_loss(output)
            if loss is not None:
                self.losses.append(loss)

    def on_evaluate(self, args, state, control, metrics=None, lr_scheduler=None, **kwargs):
        # runs inside Trainer.evaluate, before the Trainer steps the scheduler with the same metric
        if self.best is not None and metrics and self.metric in metrics:
            self.best.update(metrics[self.metric])
        if self._hook is None or self.metric != "eval_loss":
            return  # not recording (off, or after training), or a loss the model's batches did not average to
        losses, self.losses = _gathered(self.losses), []
        if len(losses) >= 2 and all(math.isfinite(v) for v in losses):
            lr_scheduler.attach_samples(losses)
        elif not self.warned:
            self.warned = True
            why = (
                "the model returned no loss for the evaluation batches (give the eval dataset labels)"
                if not losses
                else f"the evaluation had {len(losses)} batch; lower per_device_eval_batch_size"
                if len(losses) == 1
                else "an evaluation batch's loss was not finite"
            )
            logger.warning("AdaptiveLRCallback: AdaptiveLR judges eval_loss on its threshold alone: %s", why)

    def on_predict(self, args, state, control, **kwargs):
        self.losses = []  # Trainer.predict's batches are no evaluation of the scheduler's

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
