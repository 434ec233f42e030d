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
    assert p.tasks["text"].lr != p.tasks["vision"].lr  # the text task overrides the reference protocol's 1e-3
    assert p.tasks["vision"].batch_size == 32 and p.tasks["vision"].validation_split == 0.2
    assert len(p.tasks["vision"].seeds) >= 3
    assert set(p.schedules) - set(p.ablations) == {
        "fixed",
        "step",
        "cosine",
        "plateau",
        "greedy",
        "schedulefree",
        "prodigy",
        "adaptive",
    }
    assert set(p.ablations) == {
        "adaptive_noraise",
        "adaptive_epoch",
        "adaptive_pairraise",
    }
    assert (p.schedules["adaptive"].factor, p.schedules["adaptive"].threshold, p.schedules["adaptive"].min_lr) == (
        0.5,
        0.01,
        1e-6,
    )


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
        (
            lambda r: r["tasks"].update(audio={}),
            "tasks.audio: unknown key; known keys: vision, text, speech, tabular, signal",
        ),
        (lambda r: r["tasks"]["vision"].update(source="web"), "tasks.vision.source"),
        (
            lambda r: r["tasks"]["vision"].update(source="local"),
            "tasks.vision.path: missing; source 'local' needs a path",
        ),
        (lambda r: r["schedules"].update(linear={}), "schedules.linear: unknown key; known keys: fixed, step"),
        (lambda r: r["schedules"]["adaptive"].update(factor=1.5), "schedules.adaptive.factor"),
        (lambda r: r["schedules"]["plateau"].update(threshold=-0.1), "schedules.plateau.threshold"),
        (lambda r: r["schedules"]["adaptive"].update(fator=0.1), "schedules.adaptive.fator: unknown key"),
        (lambda r: r.update(profile="huge"), "profile = 'huge': must be one of default, full"),
        (lambda r: r["ablations"].update(adaptive_x={"raise": False}), "ablations.adaptive_x.raise: unknown key"),
        (lambda r: r["ablations"].update(fixed={"probes": 0}), "ablations.fixed: a schedule has that name"),
        (
            lambda r: r["ablations"].update(adaptive_x={}),
            "ablations.adaptive_x = {}: must change at least one knob of adaptive",
        ),
        (lambda r: r["ablations"].update(adaptive_x=3), "ablations.adaptive_x: expected a mapping, got 3"),
        (
            lambda r: r["ablations"].update(adaptive_x={"probe_size": 0.0}),
            r"ablations.adaptive_x.probe_size = 0.0: must lie in \(0, 1\]",
        ),
        (lambda r: r["schedules"]["adaptive"].update(probes=-1), "schedules.adaptive.probes"),
        # the initial LR: zero, not a number, per task
        (lambda r: r["common"].update(lr=0), r"common.lr = 0.0: must be > 0"),
        (lambda r: r["common"].update(lr=float("nan")), r"common.lr = nan: must be a finite number"),
        (lambda r: r["common"].update(lr="fast"), r"common.lr: expected a number, got 'fast'"),
        (lambda r: r["tasks"]["text"].update(lr=0.0), r"tasks.text.lr = 0.0: must be > 0"),
        # a schedule's floor above a task's initial LR (the task's own, or common's)
        (
            lambda r: r["schedules"]["plateau"].update(min_lr=0.01),
            r"schedules.plateau.min_lr = 0.01: above the initial LR of task \w+ \((tasks.\w+|common).lr = [-.\de]+\); "
            r"must not exceed it",
        ),
        (
            lambda r: (r["common"].update(lr=5e-7), r["tasks"]["vision"].pop("lr")),
            r"schedules.\w+.min_lr = 1e-06: above the initial LR of task vision \(common.lr = 5e-07\)",
        ),
        (
            lambda r: r["schedules"]["cosine"].update(min_lr=2e-3),
            r"schedules.cosine.min_lr = 0.002: above the initial LR of task (text|speech) "
            r"\(tasks.(text|speech).lr = 0.001\)",
        ),
        (
            lambda r: r["tasks"].update(vision=dict(r["tasks"]["vision"], lr=1e-7)),
            r"schedules.\w+.min_lr = 1e-06: above the initial LR of task vision \(tasks.vision.lr = 1e-07\)",
        ),
        (lambda r: r["schedules"]["greedy"].update(min_lr=1.0), "schedules.greedy.min_lr = 1.0: above"),
        (lambda r: r["schedules"]["adaptive"].update(min_lr=1.0), "schedules.adaptive.min_lr = 1.0: above"),
        (lambda r: r["ablations"].update(adaptive_x={"min_lr": 1.0}), "ablations.adaptive_x.min_lr = 1.0: above"),
        # factor outside (0, 1) for every schedule that has one; step's gamma in (0, 1]
        (
            lambda r: r["schedules"]["plateau"].update(factor=0.0),
            r"schedules.plateau.factor = 0.0: must lie in \(0, 1\)",
        ),
        (lambda r: r["schedules"]["greedy"].update(factor=1.0), r"schedules.greedy.factor = 1.0: must lie in \(0, 1\)"),
        (lambda r: r["schedules"]["step"].update(gamma=0.0), r"schedules.step.gamma = 0.0: must lie in \(0, 1\]"),
        (
            lambda r: r["schedules"]["greedy"].update(threshold=-0.01),
            "schedules.greedy.threshold = -0.01: must be >= 0",
        ),
        (
            lambda r: r["schedules"]["adaptive"].update(threshold=-1.0),
            "schedules.adaptive.threshold = -1.0: must be >= 0",
        ),
        (lambda r: r["common"].update(validation_split=0.0), r"common.validation_split = 0.0: must lie in \(0, 1\)"),
        (
            lambda r: r["tasks"]["vision"].update(validation_split=1.0),
            r"tasks.vision.validation_split = 1.0: must lie in \(0, 1\)",
        ),
        (lambda r: r["common"].update(seeds=[0, 0]), r"common.seeds = \[0, 0\]: values must be distinct"),
        (lambda r: r["common"].update(seeds="0"), "common.seeds: expected a list of integers, got '0'"),
        (lambda r: r["tasks"]["speech"].update(batch_size=-1), "tasks.speech.batch_size = -1: must be >= 1"),
        (lambda r: r["tasks"]["vision"].update(epochs=0), "tasks.vision.epochs = 0: must be >= 1"),
        (lambda r: r["common"].update(device="gpu"), "common.device = 'gpu': must be one of auto, cpu, cuda"),
        (lambda r: r["common"].update(amp="yes"), "common.amp: expected true or false, got 'yes'"),
        (
            lambda r: r["schedules"]["plateau"].update(patience=1.5),
            "schedules.plateau.patience: expected an integer, got 1.5",
        ),
        # typos and kinds one level down: a task's own keys, its data and model knobs
        (
            lambda r: r["tasks"]["vision"].update(epocs=3),
            "tasks.vision.epocs: unknown key; known keys: batch_size, lr, weight_decay",
        ),
        (
            lambda r: r["tasks"]["vision"]["data"].update(nosie=0.3),
            "tasks.vision.data.nosie: unknown key; known keys: n_test, n_train, noise",
        ),
        (lambda r: r["tasks"]["speech"]["model"].update(hiden_size=3), "tasks.speech.model.hiden_size: unknown key"),
        (
            lambda r: r["tasks"]["vision"]["data"].update(noise="high"),
            "tasks.vision.data.noise: expected a number, got 'high'",
        ),
        (
            lambda r: r["tasks"]["speech"]["data"].update(words="ten"),
            "tasks.speech.data.words: expected an integer or a list of strings, got 'ten'",
        ),
        (
            lambda r: r["tasks"]["text"]["model"].update(name=3),
            "tasks.text.model.name: expected a string or null, got 3",
        ),
        # every data and model knob has its range, checked as params.yaml is read (not when the data is prepared)
        (lambda r: r["tasks"]["vision"]["data"].update(n_test=-1), r"tasks.vision.data.n_test = -1: must be >= 1"),
        (lambda r: r["tasks"]["vision"]["data"].update(n_train=1), r"tasks.vision.data.n_train = 1: must be >= 2"),
        (
            lambda r: r["tasks"]["vision"]["data"].update(n_train=1.5),
            "tasks.vision.data.n_train: expected an integer or null, got 1.5",
        ),
        (
            lambda r: r["tasks"]["vision"]["data"].update(min_scale=0.0),
            r"tasks.vision.data.min_scale = 0.0: must lie in \(0, 1\]",
        ),
        (lambda r: r["tasks"]["vision"]["data"].update(noise=-0.1), "tasks.vision.data.noise = -0.1: must be >= 0"),
        (lambda r: r["tasks"]["vision"]["model"].update(width=0), "tasks.vision.model.width = 0: must be >= 1"),
        (lambda r: r["tasks"]["vision"].update(data=3), "tasks.vision.data: expected a mapping, got 3"),
        (lambda r: r["tasks"]["text"]["data"].update(max_length=0), "tasks.text.data.max_length = 0: must be >= 3"),
        (lambda r: r["tasks"]["text"]["data"].update(n_test=1), "tasks.text.data.n_test = 1: must be >= 2"),
        (lambda r: r["tasks"]["text"]["model"].update(num_layers=0), "tasks.text.model.num_layers = 0: must be >= 1"),
        (
            lambda r: r["tasks"]["speech"]["data"].update(words=30),
            r"tasks.speech.data.words = 30: must lie in \[1, 20\]",
        ),
        (lambda r: r["tasks"]["speech"]["data"].update(words=0), r"tasks.speech.data.words = 0: must lie in \[1, 20\]"),
        (
            lambda r: r["tasks"]["speech"]["data"].update(words=[True, "go"]),
            r"tasks.speech.data.words: expected .+ quote yes/no",
        ),
        (
            lambda r: r["tasks"]["speech"]["data"].update(words=["?!"]),
            r"tasks.speech.data.words = \['\?!'\]: each word must hold",
        ),
        (
            lambda r: r["tasks"]["speech"]["data"].update(voices=[]),
            r"tasks.speech.data.voices = \[\]: must list at least 1 value",
        ),
        (lambda r: r["tasks"]["speech"]["data"].update(n_train=1), "tasks.speech.data.n_train = 1: must be >= 2"),
        (lambda r: r["tasks"]["speech"]["data"].update(n_test=0), "tasks.speech.data.n_test = 0: must be >= 1"),
        (
            lambda r: r["tasks"]["speech"]["data"].update(pitch=[70, 30]),
            r"tasks.speech.data.pitch = \[70, 30\]: low must not exceed high",
        ),
        (
            lambda r: r["tasks"]["speech"]["data"].update(pitch=[30, 120]),
            r"tasks.speech.data.pitch = \[30, 120\]: each value must lie in \[0, 99\]",
        ),
        (lambda r: r["tasks"]["speech"]["data"].update(pad_s=-0.1), "tasks.speech.data.pad_s = -0.1: must be >= 0"),
        (
            lambda r: r["tasks"]["speech"]["model"].update(conv_norm="batch"),
            "tasks.speech.model.conv_norm = 'batch': must be one of group, layer",
        ),
        (
            lambda r: r["targets"].pop("vision"),
            "targets.vision: missing; the validation-loss target of task vision",
        ),
        (lambda r: r["grid"].update(multipliers=[0.3, 3]), r"grid.multipliers = \[0.3, 3.0\]: must include 1"),
        (lambda r: r["grid"].update(multipliers=[1, -2]), r"grid.multipliers = \[1.0, -2.0\]: each value must be > 0"),
        (lambda r: r["grid"].update(extra_seeds=[2, 3]), r"grid.extra_seeds = \[2, 3\]: must not repeat a seed"),
        (lambda r: r["grid"].update(workers=0), "grid.workers = 0: must be >= 1"),
        (
            lambda r: r["grid"].update(ablation_multipliers=[0.1, 1, 30]),
            r"grid.ablation_multipliers = \[0.1, 1.0, 30.0\]: must include 1 and lie in grid.multipliers "
            r"\(\[0.1, 0.3, 1.0, 3.0, 10.0\]\); \[30.0\] do not",
        ),
        (
            lambda r: r["grid"].update(ablation_multipliers=[0.1]),
            r"grid.ablation_multipliers = \[0.1\]: must include 1 and lie in grid.multipliers",
        ),
        (lambda r: r["grid"].update(ablation_multipliers=[]), "grid.ablation_multipliers"),
        (lambda r: r.update(profile="full", profiles={"default": {}}), "profile = 'full': must be one of default"),
        (lambda r: r.update(schedule={}), "schedule: unknown key; known keys: profile, profiles, common"),
        # a section that is not a mapping
        (lambda r: r.update(common=[1]), r"common: expected a mapping, got \[1\]"),
        (lambda r: r["tasks"].update(vision=3), "tasks.vision: expected a mapping, got 3"),
        (lambda r: r.update(schedules=["fixed"]), "schedules: expected a mapping, got"),
        # a bad value in the active profile's block: the message says the profile was laid over
        (
            lambda r: r.update(profile="full") or r["profiles"]["full"]["tasks"]["vision"].update(epochs=0),
            r"tasks.vision.epochs = 0: must be >= 1 \(with profiles.full laid over params.yaml\)",
        ),
    ],
)
def test_bad_params_are_named(tmp_path, mutate, needle):
    with pytest.raises(ParamsError, match=needle):
        load_params(write(tmp_path, mutate))


@pytest.mark.parametrize(
    "text, needle",
    [
        (
            "common:\n  lr: 1.0e-3\n   batch_size: 3\n",
            r"params.yaml: not valid YAML at line 3 \(mapping values are not allowed here\)",
        ),
        ("- vision\n- text\n", r"params.yaml: expected a mapping, got \['vision', 'text'\]"),
    ],
)
def test_a_file_that_is_no_params_mapping_is_named(tmp_path, text, needle):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=needle):
        load_params(tmp_path / "params.yaml")


def test_exponent_floats_as_dvc_writes_them_are_numbers(tmp_path):
    # `dvc exp run -S tasks.text.lr=3e-5` writes `lr: 3e-05`, a string to YAML 1.1 (PyYAML)
    text = (
        (REPO / "params.yaml")
        .read_text()
        .replace("lr: 1.0e-3            # the grid's centre (1e-4", "lr: 3e-05            # the grid's centre (1e-4", 1)
    )
    assert "lr: 3e-05" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).tasks["text"].lr == 3e-05
