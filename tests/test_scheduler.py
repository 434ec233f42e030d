"""AdaptiveLR on synthetic validation-loss traces, each checked against a small, obviously-correct reference.

The reference (:func:`reference_lrs`) is the rule of docs/ALGORITHM.md written as plainly as
possible, for one param group, with numpy; the scheduler must produce the same LR after every
measurement. Each trace also has its own expectation (raises, lowers, nothing, rolls back).
"""

import copy
import io
import logging
import math

import numpy as np
import pytest
import torch

from adaptive_lr import AdaptiveLR, BestState

N = 64  # samples in a synthetic validation probe
DEFAULTS = dict(
    factor=0.1, threshold=0.01, min_lr=1e-6, max_lr=1e-2, increase=2.0, patience=2, patience_up=2, z=2.0, divergence=4.0
)


def reference_lrs(
    trace, lr, factor, threshold, min_lr, max_lr, increase, patience, patience_up, z, divergence, significance=True
):
    """The LR after each measurement of ``trace`` (floats or per-sample arrays), by the documented rule."""
    ref = ref_x = None
    good = bad = 0
    ceiling = max_lr
    out = []
    for x in trace:
        x = np.atleast_1d(np.asarray(x, dtype=float))
        loss = x.mean()
        if not np.isfinite(loss) or (ref is not None and loss > divergence * ref):
            ceiling = min(ceiling, lr / increase)  # rollback: cut like a plateau
            lr, good, bad = max(min_lr, lr * factor), 0, 0
        elif ref is None:
            ref, ref_x = loss, x
        else:
            d = ref_x - x
            se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 and len(d) == len(ref_x) else 0.0
            if ref - loss > threshold * abs(ref) and (not significance or ref - loss > z * se):
                ref, ref_x, good, bad = loss, x, good + 1, 0
                if good == patience_up:
                    lr, good = max(lr, min(ceiling, lr * increase)), 0
            else:
                good, bad = 0, bad + 1
                if bad == patience:
                    ceiling = min(ceiling, lr / increase)
                    lr, good, bad = max(min_lr, lr * factor), 0, 0
        out.append(lr)
    return out


def make(lr=1e-3, restore_fn=None, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return opt, AdaptiveLR(opt, restore_fn=restore_fn, **{**DEFAULTS, **kw})


def run(sched, trace):
    lrs = []
    for x in trace:
        sched.step(torch.as_tensor(x) if not isinstance(x, float) else x)
        lrs.append(sched.get_last_lr()[0])
    return lrs


def probe_trace(levels, noise, seed=0):
    """Per-sample losses: a fixed difficulty per sample times the level, plus independent noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.5, 1.5, N)
    return [np.clip(level * difficulty + rng.normal(0, noise, N), 1e-3, None) for level in levels]


def check_against_reference(trace, **kw):
    _, s = make(**kw)
    lrs = run(s, trace)
    assert lrs == pytest.approx(reference_lrs(trace, 1e-3, **{**DEFAULTS, **kw}), rel=1e-12)
    return lrs, s


def test_steady_improvement_raises_lr_up_to_max():
    trace = probe_trace([1.0 * 0.9**t for t in range(12)], noise=0.01)
    lrs, s = check_against_reference(trace)
    assert lrs[-1] == pytest.approx(1e-2) and max(lrs) == pytest.approx(1e-2) and s.raises >= 3 and s.cuts == 0


def test_default_rule_raises_by_sqrt2_on_every_significant_gain_in_a_row_or_not():
    # version 3's defaults: x sqrt(2) after each significant improvement, so two gains double the LR even
    # with a measurement without progress between them; version 2.1's rule (x2 after 2 in a row) never raised here
    trace = [1.0, 0.9, 0.9, 0.8, 0.8]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    v3 = AdaptiveLR(opt)
    assert (v3.increase, v3.patience_up) == (pytest.approx(math.sqrt(2)), 1)
    assert run(v3, trace) == pytest.approx([1e-3, 1.414213562e-3, 1.414213562e-3, 2e-3, 2e-3])
    assert v3.raises == 2
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    v21 = AdaptiveLR(opt, increase=2.0, patience_up=2)
    assert run(v21, trace) == [1e-3] * 5 and v21.raises == 0
    # the reference rule agrees on a noisy probe trace with these knobs, cuts and re-raises included
    levels = [1.0, 0.9, 0.85, 0.85, 0.85, 0.85, 0.8, 0.7, 0.7, 0.7, 0.7, 0.69, 0.6]
    knobs = dict(increase=math.sqrt(2), patience_up=1, factor=0.5)
    lrs, s = check_against_reference(probe_trace(levels, noise=0.02, seed=4), **knobs)
    # after each cut (x0.5) the ceiling is the stalled LR / sqrt(2): one raise back up, then it holds there
    r = math.sqrt(2) * 1e-3
    assert lrs == pytest.approx([1e-3, r, 2e-3, 2e-3, 1e-3, 1e-3, r, r, r, r / 2, r / 2, 1e-3, 1e-3])
    assert s.cuts == 2


def test_plateau_lowers_lr_by_factor_not_below_min():
    trace = probe_trace([1.0] * 9, noise=0.01)
    lrs, s = check_against_reference(trace, min_lr=1e-5)
    assert lrs[:3] == pytest.approx([1e-3, 1e-3, 1e-4])  # reference, then `patience` 2 flat measurements
    assert lrs[-1] == pytest.approx(1e-5) and min(lrs) == pytest.approx(1e-5) and s.raises == 0


def test_noise_without_trend_changes_nothing():
    # (a) a steady trend with noise inside the measurement's own error takes the same decisions as without it
    levels = [1.0 * 0.93**t for t in range(10)]
    clean = run(make()[1], probe_trace(levels, noise=0.0))
    noisy_trace = probe_trace(levels, noise=0.02, seed=1)
    assert run(make()[1], noisy_trace) == pytest.approx(clean)
    check_against_reference(noisy_trace)
    # (b) pure noise, whose raw swings beat the reference protocol's 1% threshold, never raises the LR
    # nor rolls back ...
    rng = np.random.default_rng(2)
    flat = probe_trace([1.0] * 8, noise=0.3, seed=3)
    flat = [x + rng.normal(0, 0.03) for x in flat]  # the whole probe moves by ~3% between measurements
    restored = []
    lrs, s = check_against_reference(flat, patience_up=1)
    _, s2 = make(restore_fn=lambda: restored.append(1), patience_up=1)
    run(s2, flat)
    assert max(lrs) <= 1e-3 and s.raises == 0 and s.rollbacks == 0 and not restored
    # ... while the threshold alone (the significance part switched off) takes those swings for progress
    _, blind = make(significance=False, patience_up=1)
    blind_lrs = run(blind, flat)
    assert blind_lrs == pytest.approx(reference_lrs(flat, 1e-3, **{**DEFAULTS, "patience_up": 1}, significance=False))
    assert blind.raises >= 1 and max(blind_lrs) > 1e-3


def test_improvement_judged_against_its_own_noise():
    # the same 5% gain of the mean: significant on a quiet probe, not on a noisy one
    quiet = probe_trace([1.0, 0.95], noise=0.001)
    noisy = probe_trace([1.0, 0.95], noise=0.5)
    for trace, significant in ((quiet, True), (noisy, False)):
        _, s = make()
        s.step(torch.as_tensor(trace[0]))
        assert s.is_significant(float(np.mean(trace[1])), list(trace[1])) is significant
    # a float with its standard error is judged the same way (unpaired)
    _, s = make(patience_up=1)
    s.step(1.0, stderr=0.05)
    s.step(0.95, stderr=0.05)  # 5% better, inside two combined standard errors
    assert s.num_good == 0 and s.num_bad == 1
    _, s = make(patience_up=1)
    s.step(1.0, stderr=0.001)
    s.step(0.95, stderr=0.001)
    assert s.get_last_lr() == [pytest.approx(2e-3)]


def test_attached_samples_make_a_float_step_the_same_as_a_samples_step():
    # a framework passes the mean; the losses attached before it give the same decisions as passing them
    for trace in (
        probe_trace([1.0 * 0.9**t for t in range(10)], noise=0.01),
        probe_trace([1.0] * 8, noise=0.3, seed=3),
    ):
        _, direct = make(patience_up=1)
        _, attached = make(patience_up=1)
        for x in trace:
            direct.step(torch.as_tensor(x))
            attached.attach_samples(torch.as_tensor(x))
            attached.step(float(np.mean(x)))
            assert attached.get_last_lr() == pytest.approx(direct.get_last_lr(), rel=1e-12)
        assert attached.raises == direct.raises and attached.best_samples == pytest.approx(direct.best_samples)
    # used once: the next float alone is judged unpaired, against the reference's standard error (0.115), so
    # its 5% gain is not significant; were the attached losses used again, the paired noise would be 0
    _, s = make(patience_up=1)
    s.attach_samples([1.0, 1.2, 0.8])
    s.step(1.0)
    s.step(0.95)
    assert s.best_samples == [1.0, 1.2, 0.8] and s.num_bad == 1 and s.get_last_lr() == [pytest.approx(1e-3)]
    # a step given its own samples ignores attached ones; attached losses are no part of the state
    s.attach_samples([9.0, 9.0])
    s.step([0.5, 0.6, 0.4])
    assert s.best_samples == [0.5, 0.6, 0.4]
    s.attach_samples([1.0, 2.0])
    assert "_attached" not in s.state_dict()
    with pytest.raises(ValueError, match="attach_samples\\(\\) needs a 1-D tensor or sequence of losses"):
        s.attach_samples(0.5)


def test_spike_rolls_back_and_cuts_lr():
    restored = []
    trace = [1.0, 0.8, math.nan, 0.7, 10.0, 0.6]
    opt, s = make(restore_fn=lambda: restored.append(True))
    lrs = run(s, trace)
    assert lrs == pytest.approx(reference_lrs(trace, 1e-3, **DEFAULTS))
    assert restored == [True, True] and s.rollbacks == 2 and lrs[2] == pytest.approx(1e-4)
    # the restore hook may load an optimizer state with an older LR: the scheduler's cut wins
    opt, s = make(restore_fn=lambda: opt.param_groups[0].update(lr=5.0))
    s.step(1.0)
    s.step(math.inf)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_without_rollback_a_spike_is_a_bad_measurement():
    restored = []
    _, s = make(restore_fn=lambda: restored.append(True), rollback=False)
    run(s, [1.0, math.nan, math.nan])
    assert not restored and s.rollbacks == 0 and s.cuts == 1 and s.get_last_lr() == [pytest.approx(1e-4)]


def test_raising_never_returns_to_an_lr_that_stalled():
    # improve (raise to 4e-3), stall (cut to 4e-4, ceiling 2e-3), improve again: stops at 2e-3
    trace = [1.0, 0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02]
    lrs, s = check_against_reference(trace)
    assert max(lrs) == pytest.approx(4e-3) and lrs[-1] == pytest.approx(2e-3)


def test_param_groups_keep_their_own_bounds():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1e-2}, {"params": [b], "lr": 1e-3}])
    s = AdaptiveLR(opt, factor=0.1, patience=1, min_lr=[1e-4, 1e-6])
    run(s, [1.0, 1.0, 1.0, 1.0])
    assert s.get_last_lr() == [pytest.approx(1e-4), pytest.approx(1e-6)]
    with pytest.raises(ValueError, match="min_lr"):
        AdaptiveLR(opt, min_lr=[1e-6])  # one value per group


def test_composes_with_a_warmup_scheduler():
    # LinearLR warm-up stepped per batch multiplies the current LR, so a cut made during warm-up persists
    opt, s = make(lr=1e-3, patience=1)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    for i in range(20):
        opt.step()
        warmup.step()
        if i in (2, 5):
            s.step(1.0)  # the second flat measurement cuts x0.1
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1)


def test_state_dict_round_trip_continues_the_same_trajectory():
    trace = probe_trace([1.0, 0.8, 0.7, 0.7, 0.69, 0.6, 0.5, 0.5, 0.5, 0.4, 0.3, 0.3], noise=0.02)
    full = run(make()[1], trace)
    opt, first = make()
    run(first, trace[:6])
    buf = io.BytesIO()
    torch.save({"sched": first.state_dict(), "opt": opt.state_dict()}, buf)  # through a checkpoint file
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    opt2, second = make()
    opt2.load_state_dict(saved["opt"])
    second.load_state_dict(saved["sched"])
    assert run(second, trace[6:]) == pytest.approx(full[6:]) and second.last_epoch == len(trace)


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"factor": 1.5}, "factor"),
        ({"threshold": -1}, "threshold"),
        ({"min_lr": 1.0}, "min_lr"),
        ({"min_lr": -1.0}, "min_lr"),
        ({"max_lr": 1e-5}, "max_lr"),
        ({"increase": 0.5}, "increase"),
        ({"patience": 0}, "patience"),
        ({"patience_up": 0}, "patience_up"),
        ({"divergence": 0.5}, "divergence"),
        ({"z": -1}, "z"),
        ({"restore_fn": 3}, "restore_fn"),
        ({"max_lr": [1e-2, 1e-2]}, "max_lr"),
    ],
)
def test_bad_arguments_name_the_argument(kw, word):
    with pytest.raises(ValueError, match=word):
        make(**kw)


def test_empty_measurement_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        make()[1].step([])


def test_lr_changes_are_logged_on_the_adaptive_lr_logger(caplog):
    # a plateau cuts (patience 2), a steady improvement raises, a spike rolls back: one INFO record each
    caplog.set_level(logging.INFO, logger="adaptive_lr")
    _, s = make(restore_fn=lambda: None)
    run(s, probe_trace([1.0] * 3, noise=0.01))
    assert s.cuts == 1
    (cut,) = caplog.records
    assert cut.name == "adaptive_lr.scheduler" and cut.levelno == logging.INFO
    assert cut.getMessage().startswith("AdaptiveLR step 3: cut lr 0.001 -> 0.0001 (2 measurements without")
    caplog.clear()
    run(s, [0.5, 0.4, math.nan])
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "AdaptiveLR step 5: raised lr 0.0001 -> 0.0002",
        "AdaptiveLR step 6: rolled back and cut lr 0.0002 -> 2e-05",
    ]
    assert "restored the last good state" in caplog.records[-1].getMessage()
    # DEBUG: one record per measurement, with its loss and the reference
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="adaptive_lr")
    s.step(0.45)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] and "loss 0.45" in caplog.records[0].getMessage()
    # a cut that cannot go lower says so
    caplog.clear()
    caplog.set_level(logging.INFO, logger="adaptive_lr")
    _, floor = make(min_lr=1e-3)
    run(floor, [1.0, 1.0, 1.0])
    (held,) = caplog.records
    assert held.getMessage().startswith("AdaptiveLR step 3: cut lr 0.001 -> 0.001 (")
    assert held.getMessage().endswith("; the lr stays at its bound)")


def test_the_logger_set_to_warning_silences_the_scheduler(caplog, capsys):
    caplog.set_level(logging.WARNING, logger="adaptive_lr")
    _, s = make(restore_fn=lambda: None)
    run(s, probe_trace([1.0] * 3, noise=0.01) + [0.5, 0.4, 0.3, math.nan])
    assert s.cuts == 2 and s.raises == 1 and s.rollbacks == 1  # it acted, and said nothing
    assert caplog.records == [] and capsys.readouterr() == ("", "")


def test_docstring_example_runs():
    import doctest

    import adaptive_lr.scheduler

    failures, tried = doctest.testmod(adaptive_lr.scheduler)
    assert tried > 0 and failures == 0


def test_best_state_keeps_the_lowest_finite_loss_and_restores_it_exactly():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    best = BestState(model, opt)
    best.restore()  # nothing kept yet: a no-op
    x, y = torch.randn(16, 3), torch.randn(16, 1)

    def train_step():
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    kept = None
    for loss in [2.0, 1.0, math.nan, 1.5, 1.0, math.inf]:
        train_step()
        if best.update(torch.tensor(loss)):
            kept = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    assert best.loss == 1.0 and kept is not None  # only the second loss was a new lowest after the first
    best.restore()
    for k, v in model.state_dict().items():
        assert torch.equal(v, kept[0][k])
    state = opt.state_dict()["state"]
    for i, s in kept[1]["state"].items():
        assert all(torch.equal(state[i][name], value) for name, value in s.items() if torch.is_tensor(value))
    # the copy is not a view: training on after a restore leaves the kept state alone
    train_step()
    assert not torch.equal(model.weight, best.state["model"]["weight"])


def test_best_state_as_the_restore_hook_of_a_rollback():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    best = BestState(model, opt)
    sched = AdaptiveLR(opt, restore_fn=best.restore)
    best.update(1.0)
    sched.step(1.0)
    good = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(1e6)  # the weights blew up
    best.update(math.nan)
    sched.step(math.nan)
    assert (
        torch.equal(model.weight, good)
        and sched.rollbacks == 1
        and sched.get_last_lr() == pytest.approx([0.1 * sched.factor])
    )
