"""AdaptiveLR inside the frameworks people train with: a real Hugging Face Trainer run and a real Lightning fit.

Each test replays the validation losses the framework produced through a fresh AdaptiveLR with
the same knobs: the framework fed the scheduler exactly those losses, once per evaluation, in order,
if and only if the LRs agree.
"""

from __future__ import annotations

import math

import pytest
import torch

from adaptive_lr import AdaptiveLR

KNOBS = dict(patience=1, patience_up=1, threshold=0.0, z=0.0)  # quick decisions: a few evaluations move the LR


def replay(lr: float, losses: list[float]) -> list[float]:
    """The LR after each loss, fed to a fresh AdaptiveLR with KNOBS."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = AdaptiveLR(opt, **KNOBS)
    out = []
    for loss in losses:
        sched.step(loss)
        out.append(sched.get_last_lr()[0])
    return out


# Hugging Face Trainer ---------------------------------------------------------------------------
class TokenDataset(torch.utils.data.Dataset):
    """Sequences of 8 tokens; the label says whether token 3 occurs (learnable by a 1-layer BERT)."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, 30, (n, 8), generator=g)
        has = torch.rand(n, generator=g) < 0.5
        self.ids[has, torch.randint(0, 8, (int(has.sum()),), generator=g)] = 3
        self.labels = has.long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def hf_args(tmp_path, **over):
    from transformers import TrainingArguments

    kw = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        num_train_epochs=3,
        eval_strategy="steps",
        eval_steps=4,
        metric_for_best_model="loss",
        logging_steps=4,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )
    kw.update(over)
    return TrainingArguments(**kw)


def test_hf_trainer_feeds_eval_loss_at_each_evaluation(tmp_path):
    from transformers import Trainer, TrainerCallback

    from adaptive_lr.hf import AdaptiveLRCallback

    model = tiny_bert()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = AdaptiveLR(opt, **KNOBS)
    callback = AdaptiveLRCallback()
    lrs_at_eval = []

    class RecordLR(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            lrs_at_eval.append((state.global_step, opt.param_groups[0]["lr"]))

    trainer = Trainer(
        model=model,
        args=hf_args(tmp_path),
        train_dataset=TokenDataset(256, 0),
        eval_dataset=TokenDataset(128, 1),
        optimizers=(opt, sched),
        callbacks=[callback, RecordLR()],
    )
    trainer.train()

    evals = [(h["step"], h["eval_loss"]) for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 12  # 256 / 16 = 16 steps per epoch x 3 epochs, every 4 steps
    assert sched.last_epoch == len(evals)  # once per evaluation, never per batch
    expected = replay(3e-3, [loss for _, loss in evals])
    assert sched.get_last_lr()[0] == pytest.approx(expected[-1])
    # the LR each training step ran with is the one the replay set after the evaluation before it
    for step, lr in lrs_at_eval:
        before = [i for i, (s, _) in enumerate(evals) if s <= step]
        assert lr == pytest.approx(expected[before[-1]] if before else 3e-3), step
    assert len(set(expected)) > 1, "the run should move the LR, or the replay proves little"
    # the rollback state is the lowest evaluation so far, handed to the scheduler
    assert sched.restore_fn == callback.best.restore
    assert callback.best.loss == pytest.approx(min(loss for _, loss in evals))


@pytest.mark.parametrize(
    "over, scheduler, message",
    [
        ({}, "cosine", "not AdaptiveLR; pass optimizers=(optimizer, AdaptiveLR(optimizer))"),
        ({"eval_strategy": "no"}, "adaptive", "eval_strategy is 'no'"),
        ({"metric_for_best_model": None}, "adaptive", "metric_for_best_model is None"),
        ({"metric_for_best_model": "accuracy"}, "adaptive", "metric_for_best_model is 'accuracy'"),
    ],
)
def test_hf_callback_says_what_is_wrong_with_the_setup(tmp_path, over, scheduler, message):
    from transformers import Trainer

    from adaptive_lr.hf import AdaptiveLRCallback

    model = tiny_bert()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = AdaptiveLR(opt) if scheduler == "adaptive" else torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    trainer = Trainer(
        model=model,
        args=hf_args(tmp_path, **over),
        train_dataset=TokenDataset(32, 0),
        eval_dataset=TokenDataset(32, 1),
        optimizers=(opt, sched),
        callbacks=[AdaptiveLRCallback()],
    )
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        trainer.train()


# Lightning ------------------------------------------------------------------------------------
def test_lightning_steps_it_with_the_monitored_val_loss():
    import pytorch_lightning as pl

    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(256, 1)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:192], y[:192]), batch_size=32, shuffle=True)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[192:], y[192:]), batch_size=64)

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(8, 1)
            self.seen = []  # val_loss at the end of each real (not sanity-check) validation

        def training_step(self, batch, _):
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def on_validation_epoch_end(self):
            if not self.trainer.sanity_checking:
                self.seen.append(float(self.trainer.callback_metrics["val_loss"]))

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=1e-2)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": AdaptiveLR(opt, **KNOBS), "monitor": "val_loss"}}

    module = Regression()
    trainer = pl.Trainer(
        max_epochs=8,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(module, train, val)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(sched, AdaptiveLR)
    assert sched.last_epoch == len(module.seen) == 8  # once per validation, never per batch
    expected = replay(1e-2, module.seen)
    assert sched.get_last_lr()[0] == pytest.approx(expected[-1])
    assert len(set(expected)) > 1, "the run should move the LR, or the replay proves little"
    assert all(math.isfinite(v) for v in module.seen)
