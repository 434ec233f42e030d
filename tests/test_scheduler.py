"""AdaptiveLR on synthetic validation-loss traces, each against an obvious expectation."""

import math

import pytest
import torch

from adaptive_lr import AdaptiveLR


def make(lr=1e-3, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return opt, AdaptiveLR(opt, **kw)


def test_steady_improvement_raises_lr_up_to_max():
    opt, s = make(increase=2.0, patience_up=2, max_lr=4e-3)
    for loss in [1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.12, 0.07]:
        s.step(loss)
    assert s.get_last_lr() == [pytest.approx(4e-3)]


def test_plateau_lowers_lr_by_factor_not_below_min():
    opt, s = make(factor=0.1, patience=1, min_lr=1e-5)
    s.step(1.0)
    s.step(1.0)
    assert s.get_last_lr() == [pytest.approx(1e-4)]
    s.step(1.0)
    s.step(1.0)
    assert s.get_last_lr() == [pytest.approx(1e-5)]


def test_improvement_within_noise_is_not_significant():
    opt, s = make(patience=1, patience_up=1, increase=2.0)
    s.step(1.0, stderr=0.05)
    s.step(0.95, stderr=0.05)  # 5% better but well inside two standard errors
    assert s.get_last_lr() == [pytest.approx(1e-4)]
    opt2, s2 = make(patience=1, patience_up=1, increase=2.0)
    s2.step(1.0, stderr=0.001)
    s2.step(0.95, stderr=0.001)
    assert s2.get_last_lr() == [pytest.approx(2e-3)]


def test_spike_rolls_back_and_cuts_lr():
    restored = []
    opt, s = make(restore_fn=lambda: restored.append(True), divergence=3.0)
    s.step(1.0)
    s.step(math.nan)
    assert restored == [True] and s.get_last_lr() == [pytest.approx(1e-4)] and s.rollbacks == 1
    s.step(10.0)  # explodes past 3x the best
    assert restored == [True, True]


def test_tensor_metric_and_param_groups():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1e-2}, {"params": [b], "lr": 1e-3}])
    s = AdaptiveLR(opt, patience=1)
    s.step(torch.tensor(1.0))
    s.step(torch.tensor(1.0))
    assert s.get_last_lr() == [pytest.approx(1e-3), pytest.approx(1e-4)]


def test_state_dict_round_trip_continues_the_same_trajectory():
    trace = [1.0, 0.7, 0.5, 0.5, 0.4, 0.41, 0.3, 0.3, 0.29, 0.2]
    _, ref = make()
    lrs_ref = []
    for x in trace:
        ref.step(x)
        lrs_ref.append(ref.get_last_lr()[0])
    opt, first = make()
    for x in trace[:5]:
        first.step(x)
    opt2, second = make()
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    second.load_state_dict(first.state_dict())
    lrs = []
    for x in trace[5:]:
        second.step(x)
        lrs.append(second.get_last_lr()[0])
    assert lrs == pytest.approx(lrs_ref[5:])


@pytest.mark.parametrize(
    "kw, word",
    [({"factor": 1.5}, "factor"), ({"threshold": -1}, "threshold"), ({"min_lr": 1.0}, "min_lr"),
     ({"max_lr": 1e-5}, "max_lr"), ({"increase": 0.5}, "increase"), ({"patience": 0}, "patience"),
     ({"divergence": 0.5}, "divergence"), ({"z": -1}, "z")],
)
def test_bad_arguments_name_the_argument(kw, word):
    with pytest.raises(ValueError, match=word):
        make(**kw)
