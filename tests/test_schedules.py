"""Every registered schedule builds, trains a tiny model, and follows its own rule."""

import io
import math

import pytest
import torch

from adaptive_lr import schedules
from adaptive_lr.validation import spec_of


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


def test_greedy_passes_every_argument_of_greedylr_as_a_knob():
    """Each argument of GreedyLR.__init__ that changes its behaviour is a knob, and reaches the scheduler."""
    import inspect

    from transformers.optimization import GreedyLR

    args = set(inspect.signature(GreedyLR.__init__).parameters) - {"self", "optimizer", "mode", "verbose"}
    renamed = {"max_lr": "max_lr_ratio"}  # a multiple of the initial LR
    assert {renamed.get(a, a) for a in args} <= set(spec_of(schedules.GreedyKnobs))
    knobs = dict(factor=0.8, patience=3, threshold=0.02, threshold_mode="rel", cooldown=2, warmup=1, min_lr=1e-5)
    knobs |= dict(max_lr_ratio=4.0, eps=1e-9, smooth=True, window_size=7, reset_start=9)
    _, s = build("greedy", **knobs)
    sched = s.scheduler
    assert (sched.factor, sched.patience, sched.threshold, sched.threshold_mode) == (0.8, 2, 0.02, "rel")
    assert (sched.cooldown, sched.warmup, sched.min_lrs, sched.max_lrs) == (2, 1, [1e-5], [pytest.approx(4e-2)])
    assert (sched.eps, sched.smooth, sched.window_size, sched.reset_start) == (1e-9, True, 7, 9)


def test_greedy_defaults_floor_never_binds_and_act_on_the_second_validation_in_a_row():
    model, s = build("greedy")
    assert s.scheduler.min_lrs == [1e-6] and s.scheduler.patience == 1
    # improvements on +inf, 1.0, then flat: x1/0.9 at the 2nd good one, x0.9 at the 2nd bad one
    assert run(model, s, [1.0, 0.9, 0.9, 0.9]) == pytest.approx([1e-2, 1e-2 / 0.9, 1e-2 / 0.9, 1e-2])


def build_prodigy(multiplier=1.0, weight_decay=0.0, epochs=2, steps=5, **knobs):
    model = torch.nn.Linear(3, 1)
    ctx = schedules.Context(
        lr=1e-2 * multiplier, weight_decay=weight_decay, epochs=epochs, steps_per_epoch=steps, multiplier=multiplier
    )
    return model, schedules.build(schedules.knobs_of("prodigy", knobs), model.parameters(), ctx)


def test_context_multiplier_is_the_last_field_and_defaults_to_one():
    import dataclasses

    fields = dataclasses.fields(schedules.Context)
    assert fields[-1].name == "multiplier" and fields[-1].default == 1.0


def test_prodigy_takes_its_own_lr_times_the_multiplier_and_every_knob():
    import inspect

    from prodigyopt import Prodigy

    args = set(inspect.signature(Prodigy.__init__).parameters) - {"self", "params", "weight_decay", "fsdp_in_use"}
    knobs = set(spec_of(schedules.ProdigyKnobs))
    assert (args - {"betas"}) | {"beta1", "beta2"} <= knobs and "min_lr" not in knobs
    _, s = build_prodigy(multiplier=0.3, weight_decay=0.01, d_coef=2.0, beta2=0.99, growth_rate=1.02)
    g = s.optimizer.param_groups[0]
    assert type(s.optimizer) is Prodigy and g["lr"] == pytest.approx(0.3)  # 1.0 x 0.3, not the task's 3e-3
    assert (g["weight_decay"], g["decouple"], g["d_coef"], g["betas"], g["growth_rate"]) == (
        0.01,
        True,
        2.0,
        (0.9, 0.99),
        1.02,
    )
    assert (g["d0"], g["beta3"], g["use_bias_correction"], g["safeguard_warmup"], g["slice_p"]) == (
        1e-6,
        None,
        False,
        False,
        1,
    )
    assert build_prodigy()[1].optimizer.param_groups[0]["growth_rate"] == math.inf  # null: unbounded


def test_prodigy_anneals_its_lr_to_zero_and_reports_d_times_lr():
    model, s = build_prodigy(epochs=2, steps=5)
    assert s.on == "batch" and s.lr == pytest.approx(1e-6)  # d0 x lr before the first step
    run(model, s, [1.0, 0.9], steps=5)
    g = s.optimizer.param_groups[0]
    assert g["lr"] == pytest.approx(0.0, abs=1e-12) and g["d"] > 1e-6  # cosine to 0; D has grown
    _, flat = build_prodigy(cosine=False)
    assert flat.scheduler is None and flat.on is None


def bn_model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def train_schedulefree(model, steps=30, **knobs):
    ctx = schedules.Context(lr=5e-2, weight_decay=0.0, epochs=1, steps_per_epoch=steps)
    s = schedules.build(schedules.knobs_of("schedulefree", knobs), model.parameters(), ctx)
    s.train_mode()
    model.train()
    for _ in range(steps):
        x = torch.randn(16, 4) * 2 + 1
        s.optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True)).backward()
        s.optimizer.step()
    return s


def test_schedulefree_recalibrates_batchnorm_for_the_averaged_weights():
    torch.manual_seed(0)
    model = bn_model()
    s = train_schedulefree(model)
    bn = model[1]
    stale = bn.running_mean.clone()
    batches = [torch.randn(16, 4) * 2 + 1 for _ in range(3)]
    model.eval()
    s.eval_mode()
    assert s.needs_recalibration(model)
    calls = []
    forwards = [lambda b=b: calls.append(1) or model(b) for b in batches]
    assert s.recalibrate(model, iter(forwards)) == 3 and len(calls) == 3
    with torch.no_grad():  # the statistics of the BatchNorm input under the averaged (eval) weights
        acts = [model[0](b) for b in batches]
    expected_mean = torch.cat(acts).mean(0)
    expected_var = torch.stack([a.var(0, unbiased=True) for a in acts]).mean(0)  # equal batches: mean of the three
    assert torch.allclose(bn.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, expected_var, atol=1e-5)
    assert not torch.allclose(stale, expected_mean, atol=1e-2)
    assert bn.momentum == 0.1 and not model.training  # momentum and the model's eval mode restored
    model.train()
    assert s.recalibrate(model, forwards) == 3 and model.training


def test_recalibration_runs_at_most_bn_batches_and_only_when_needed():
    torch.manual_seed(0)
    model = bn_model()
    s = train_schedulefree(model, bn_batches=2)
    calls = []
    assert s.recalibrate(model, (lambda: calls.append(1) or model(torch.randn(16, 4)) for _ in range(10))) == 2
    assert len(calls) == 2
    off = train_schedulefree(bn_model(), bn_batches=0)
    assert not off.needs_recalibration(model)
    plain = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    s_plain = train_schedulefree(plain)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    boom = [lambda: pytest.fail("no forward pass without BatchNorm")]
    assert not s_plain.needs_recalibration(plain) and s_plain.recalibrate(plain, boom) == 0
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())
    model2, adam = build("fixed")
    assert not adam.needs_recalibration(bn_model()) and adam.recalibrate(bn_model(), boom) == 0
