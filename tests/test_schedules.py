"""Every registered schedule builds, trains a tiny model, and follows its own rule."""

import io
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


def saved(state):
    """``state`` through torch.save and torch.load, as a resumed run gets it (no tensor shared with the original)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _flat(obj):
    """Every leaf of a nested state as (path, value), tensors as lists: a state compared with ==."""
    if isinstance(obj, dict):
        return [(f"{k}/{p}", v) for k in sorted(obj, key=str) for p, v in _flat(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [(f"{i}/{p}", v) for i, x in enumerate(obj) for p, v in _flat(x)]
    return [("", obj.tolist() if torch.is_tensor(obj) else obj)]


@pytest.mark.parametrize("name", list(schedules.REGISTRY))
def test_every_schedule_trains_and_round_trips_state(name):
    """A schedule restored from its state_dict continues exactly as the original: same LRs, same weights.

    Losing any part of the state (optimizer moments, step counts, the scheduler's counters) changes
    the continuation, since the validation losses go on changing the LR and Adam's steps depend on
    its moments.
    """
    torch.manual_seed(0)
    model, s = build(name, epochs=8)
    run(model, s, [1.0, 0.9, 0.9, 0.95])
    model2, s2 = build(name, epochs=8)
    model2.load_state_dict(model.state_dict())
    s2.load_state_dict(saved(s.state_dict()))
    assert _flat(s2.state_dict()) == _flat(s.state_dict())
    assert s2.lr == s.lr
    torch.manual_seed(1)
    rest = run(model, s, [0.8, 0.8, 0.85, 0.7])
    torch.manual_seed(1)
    assert run(model2, s2, [0.8, 0.8, 0.85, 0.7]) == rest
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_round_trip_check_sees_a_lost_scheduler_state():
    """The check above fails when the scheduler's own state is not restored (only the optimizer's)."""
    torch.manual_seed(0)
    model, s = build("plateau", epochs=8, patience=0)
    run(model, s, [1.0, 0.9, 0.9, 0.95])
    model2, s2 = build("plateau", epochs=8, patience=0)
    model2.load_state_dict(model.state_dict())
    s2.optimizer.load_state_dict(saved(s.optimizer.state_dict()))  # the scheduler's best and counters are lost
    assert _flat(s2.state_dict()) != _flat(s.state_dict())
    assert run(model, s, [0.95, 0.95]) != run(model2, s2, [0.95, 0.95])


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
