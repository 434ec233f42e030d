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

:class:`AdaptiveLRCallback` adds what the ``Trainer`` cannot know: it checks that set-up before
the first step (an error says what to change, instead of a run with a constant LR), and gives the
scheduler its rollback: the weights and optimizer state at the lowest ``eval_loss`` so far
(a :class:`~adaptive_lr.scheduler.BestState`), restored when an evaluation diverges.
"""

from __future__ import annotations

try:
    from transformers import TrainerCallback
except ImportError as e:  # tests/test_library.py blocks transformers
    raise ImportError(f"adaptive_lr.hf needs transformers and accelerate: pip install 'adaptive-lr[hf]' ({e})") from e

from adaptive_lr.scheduler import AdaptiveLR, BestState


class AdaptiveLRCallback(TrainerCallback):
    """Check that a ``Trainer`` feeds its :class:`AdaptiveLR`, and give the scheduler its rollback.

    Args:
        rollback (bool): keep the best state (on the CPU: about three times the model's size with
            Adam) and hand its ``restore`` to a scheduler that has no ``restore_fn`` yet. Default: True.
    """

    def __init__(self, rollback: bool = True):
        self.rollback = rollback
        self.best: BestState | None = None
        self.metric = "eval_loss"

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

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # runs inside Trainer.evaluate, before the Trainer steps the scheduler with the same metric
        if self.best is not None and metrics and self.metric in metrics:
            self.best.update(metrics[self.metric])
