"""params.yaml validation: every bad value stops with a message that names the key."""

from pathlib import Path

import pytest
import yaml

from adaptive_lr.config import ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, mutate):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_params_load_and_resolve_overrides():
    p = load_params(REPO / "params.yaml")
    assert set(p.tasks) == {"vision", "text", "speech"}
    assert p.tasks["text"].lr != p.tasks["vision"].lr  # the text task overrides the plan's 1e-3
    assert p.tasks["vision"].batch_size == 32 and p.tasks["vision"].validation_split == 0.2
    assert len(p.tasks["vision"].seeds) >= 3
    assert set(p.schedules) - set(p.ablations) == {"fixed", "step", "cosine", "plateau", "greedy", "schedulefree", "adaptive"}
    assert set(p.ablations) == {"adaptive_noraise", "adaptive_nosig", "adaptive_norollback", "adaptive_epoch"}
    assert (p.schedules["adaptive"].factor, p.schedules["adaptive"].threshold, p.schedules["adaptive"].min_lr) == (0.1, 0.01, 1e-6)


def test_ablations_take_adaptive_knobs_and_change_one_part(tmp_path):
    p = load_params(write(tmp_path, lambda r: r["schedules"]["adaptive"].update(factor=0.5)))
    a, off = p.schedules["adaptive"], p.schedules["adaptive_noraise"]
    assert off.factor == 0.5 and off.raise_lr is False and a.raise_lr is True
    assert p.schedules["adaptive_epoch"].probes == 0 and p.schedules["adaptive_epoch"].probe_size == 1.0


def test_full_profile_switches_to_real_sources(tmp_path):
    p = load_params(write(tmp_path, lambda r: r.update(profile="full")))
    assert {t.source for t in p.tasks.values()} == {"hub"}
    assert p.tasks["vision"].epochs == 50 and p.tasks["vision"].patience == 10


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda r: r["common"].update(lr=-1.0), "common.lr|tasks.vision.lr"),
        (lambda r: r["common"].update(batch_size=0), "batch_size"),
        (lambda r: r["common"].update(epochs=0), "epochs"),
        (lambda r: r["common"].update(validation_split=1.5), "validation_split"),
        (lambda r: r["common"].update(seeds=[]), "seeds"),
        (lambda r: r["common"].update(lrr=1e-3), "common.lrr: unknown key"),
        (lambda r: r["common"].update(batch_size="32"), "common.batch_size: expected an integer"),
        (lambda r: r["tasks"].update(audio={}), "tasks.audio: unknown task; valid tasks: vision, text, speech"),
        (lambda r: r["tasks"]["vision"].update(source="web"), "tasks.vision.source"),
        (lambda r: r["tasks"]["vision"].update(source="local"), "tasks.vision.path"),
        (lambda r: r["schedules"].update(linear={}), "schedules.linear: unknown schedule; valid schedules: fixed"),
        (lambda r: r["schedules"]["adaptive"].update(factor=1.5), "schedules.adaptive.factor"),
        (lambda r: r["schedules"]["plateau"].update(threshold=-0.1), "schedules.plateau.threshold"),
        (lambda r: r["schedules"]["adaptive"].update(fator=0.1), "schedules.adaptive.fator: unknown key"),
        (lambda r: r.update(profile="huge"), "profile"),
        (lambda r: r["ablations"].update(adaptive_x={"raise": False}), "ablations.adaptive_x.raise: unknown key"),
        (lambda r: r["ablations"].update(fixed={"probes": 0}), "ablations.fixed: a schedule has that name"),
        (lambda r: r["ablations"].update(adaptive_x={}), "ablations.adaptive_x: expected a mapping"),
        (lambda r: r["ablations"].update(adaptive_x={"probe_size": 0.0}), r"ablations.adaptive_x.probe_size = 0.0: must lie in \(0, 1\]"),
        (lambda r: r["schedules"]["adaptive"].update(probes=-1), "schedules.adaptive.probes"),
    ],
)
def test_bad_params_are_named(tmp_path, mutate, needle):
    with pytest.raises(ParamsError, match=needle):
        load_params(write(tmp_path, mutate))


def test_exponent_floats_as_dvc_writes_them_are_numbers(tmp_path):
    # `dvc exp run -S tasks.text.lr=3e-5` writes `lr: 3e-05`, a string to YAML 1.1 (PyYAML)
    text = (REPO / "params.yaml").read_text().replace("lr: 3.0e-4            # a usual", "lr: 3e-05            # a usual", 1)
    assert "lr: 3e-05" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).tasks["text"].lr == 3e-05
