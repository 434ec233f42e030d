"""Every registered schedule builds, trains a tiny model, and follows its own rule."""

import math

import pytest
import torch

from adaptive_lr import schedules


def build(name, epochs=4, steps=5, **knobs):
    model = torch.nn.Linear(3, 1)
    ctx = schedules.Context(lr=1e-2, weight_decay=0.0, epochs=epochs, steps_per_epoch=steps)
    return model, schedules.build(schedules.knobs_of(name, knobs), model.parameters(), ctx)


def run(model, s, val_losses, steps=5):
    lrs = []
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    for v in val_losses:
        s.train_mode()
        for _ in range(steps):
            s.optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            s.optimizer.step()
            s.after_batch()
        s.eval_mode()
        s.after_validation(v)
        lrs.append(s.lr)
    return lrs


@pytest.mark.parametrize("name", list(schedules.REGISTRY))
def test_every_schedule_trains_and_round_trips_state(name):
    model, s = build(name)
    run(model, s, [1.0, 0.9, 0.9, 0.95])
    state = s.state_dict()
    model2, s2 = build(name)
    s2.load_state_dict(state)
    assert s2.lr == pytest.approx(s.lr)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fixed_keeps_the_lr():
    assert run(*build("fixed"), [1.0, 2.0, 3.0]) == [1e-2] * 3


def test_step_drops_every_third_of_the_budget():
    lrs = run(*build("step", epochs=6, every=0.33, gamma=0.1), [1.0] * 6)
    assert lrs == pytest.approx([1e-2, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5])


def test_cosine_reaches_min_lr_at_the_end_of_the_budget():
    lrs = run(*build("cosine", epochs=4, min_lr=1e-6), [1.0] * 4)
    assert lrs[1] == pytest.approx(1e-6 + (1e-2 - 1e-6) * (1 + math.cos(math.pi / 2)) / 2)
    assert lrs[-1] == pytest.approx(1e-6)


def test_plateau_cuts_at_the_first_flat_validation():
    assert run(*build("plateau", patience=0), [1.0, 0.5, 0.5]) == pytest.approx([1e-2, 1e-2, 1e-3])


def test_greedy_raises_after_improvements_and_lowers_on_plateau():
    # GreedyLR counts its first evaluation as an improvement on +inf
    lrs = run(*build("greedy", factor=0.5, patience=1), [1.0, 0.5, 0.5, 0.5])
    assert lrs == pytest.approx([2e-2, 4e-2, 2e-2, 1e-2])


def test_schedulefree_switches_weights_between_train_and_eval():
    model, s = build("schedulefree")
    run(model, s, [1.0])
    s.train_mode()
    w_train = model.weight.detach().clone()
    s.eval_mode()
    assert not torch.equal(w_train, model.weight.detach())
