"""Image classification: CIFAR-10 with ResNet-18, or an offline cluttered-digits stand-in.

The stand-in renders scikit-learn's 1797 real 8x8 handwritten digits onto 32x32
RGB canvases (``data.size``; smaller canvases are faster on a CPU): rotated,
scaled and shifted, over a low-frequency colour clutter, with a faint second
digit as a distractor and Gaussian noise. At the default size it keeps CIFAR's
shape (3x32x32, 10 classes) so the same ResNet-18 trains on both.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adaptive_lr.errors import DataError
from adaptive_lr.files import save_torch
from adaptive_lr.tasks.base import ClassificationTask
from adaptive_lr.tasks.sources import load_real, load_split, require_columns, split_indices
from adaptive_lr.validation import Knob

# CIFAR-10 channel statistics; the stand-in is normalised with its own.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# the knobs under tasks.vision.data and tasks.vision.model: kind, default, range
DATA_SPEC = {
    "n_test": Knob("int", 360, ge=1),  # builtin: digits held out for the test split (of 1797)
    "n_train": Knob("int", None, ge=2),  # builtin: cap on train+val digits (None = all the rest; >= 2: one of each)
    "noise": Knob("float", 0.5, ge=0),  # builtin: std of the Gaussian pixel noise
    "distractor": Knob("float", 0.6, ge=0),  # builtin: intensity of the second, wrong digit
    "clutter": Knob("float", 0.6, ge=0),  # builtin: intensity of the colour clutter
    "max_rotation": Knob("float", 25.0, ge=0, le=180),  # builtin: degrees, either way
    "min_scale": Knob("float", 0.6, gt=0, le=1),  # builtin: smallest digit size, as a fraction of the canvas
    "size": Knob("int", 32, ge=8),  # builtin: canvas side in pixels (CIFAR's 32; smaller is faster on a CPU)
    "max_examples": Knob("int", None, ge=1),  # hub/local: cap per split (None = all)
}
MODEL_SPEC = {
    "width": Knob("int", 16, ge=1),  # channels of the first ResNet stage
    "num_classes": Knob("int", 10, ge=10, hint="the labels are the digits 0-9 or CIFAR-10's classes"),
}


def _place(img8: torch.Tensor, max_rot: float, min_scale: float, size: int, g: torch.Generator | None) -> torch.Tensor:
    """Rotate, scale and shift 1x8x8 images onto 1 x size x size canvases (bilinear)."""
    n = len(img8)
    # affine_grid maps output to input coordinates: inverse scale, rotation, shift.
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(max_rot)
    scale = min_scale + torch.rand(n, generator=g) * (1 - min_scale)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (1 - scale)[:, None]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, -shift[:, 0] / scale], 1), torch.stack([sin, cos, -shift[:, 1] / scale], 1)], 1
    )
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    return F.grid_sample(img8, grid, align_corners=False, padding_mode="zeros")


def render(
    digits: torch.Tensor, distractors: torch.Tensor, knobs: dict, g: torch.Generator | None = None
) -> torch.Tensor:
    """Render Nx8x8 digits (0..1) and their distractor digits into cluttered Nx3xSxS uint8 images (S: knobs["size"])."""
    n, size = len(digits), int(knobs.get("size", 32))
    digit = _place(digits.view(n, 1, 8, 8), knobs["max_rotation"], knobs["min_scale"], size, g)
    distractor = _place(distractors.view(n, 1, 8, 8), 180.0, 0.5, size, g) * knobs["distractor"]
    clutter = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bicubic", align_corners=False)
    img = clutter.clamp(0, 1) * knobs["clutter"] + distractor + digit
    img = img + torch.randn(img.shape, generator=g) * knobs["noise"]
    return (img.clamp(0, 1.5) / 1.5 * 255).round().to(torch.uint8)


def pick_distractors(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each example, the index of a digit of another class (so it never gives the answer away)."""
    other = (labels + 1 + rng.integers(0, 9, len(labels))) % 10
    pool = {c: np.flatnonzero(labels == c) for c in range(10)}
    return np.array([rng.choice(pool[c]) for c in other])


class RenderedDigits(torch.utils.data.Dataset):
    """Training digits rendered afresh at every fetch (new pose, clutter, distractor, noise).

    A fixed rendering is memorised in a few epochs, after which every schedule
    looks alike; fresh renderings keep the optimisation problem alive.
    """

    def __init__(self, digits: torch.Tensor, labels: torch.Tensor, knobs: dict):
        self.digits, self.labels, self.knobs = digits, labels, knobs
        self.pool = {c: torch.nonzero(labels == c).flatten() for c in range(10)}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, idx: list[int]) -> list:
        # batched fetch (DataLoader calls this when present): one render call per batch
        idx_t = torch.as_tensor(idx)
        labels = self.labels[idx_t]
        other = (labels + 1 + torch.randint(0, 9, (len(idx),))) % 10
        pick = torch.stack([self.pool[int(c)][torch.randint(len(self.pool[int(c)]), ())] for c in other])
        imgs = render(self.digits[idx_t], self.digits[pick], self.knobs)
        return list(zip(imgs, labels))

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]


def _decode_image(value: Any, where: str) -> np.ndarray:
    """A CIFAR image value (PIL image, or parquet {bytes, path}) as HxWx3 uint8; DataError names ``where``."""
    from PIL import Image

    try:
        if isinstance(value, dict):
            value = Image.open(io.BytesIO(value["bytes"] or b""))
        return np.asarray(value.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several types; the caller needs the image's place
        raise DataError(f"{where}: cannot decode the image ({type(exc).__name__}: {exc})") from exc


def resnet18(width: int = 64, num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool).

    ``width`` is the first stage's channel count (64 in the paper); the later
    stages double it, as in the original.
    """
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.maxpool = nn.Identity()
    if width != 64:
        net.layer1 = net._make_layer(BasicBlock, width, 2)
        net.layer2 = net._make_layer(BasicBlock, width * 2, 2, stride=2)
        net.layer3 = net._make_layer(BasicBlock, width * 4, 2, stride=2)
        net.layer4 = net._make_layer(BasicBlock, width * 8, 2, stride=2)
        net.fc = nn.Linear(width * 8, num_classes)
    for m in net.modules():  # torchvision's own initialisation, re-applied to the rebuilt layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return net


class VisionTask(ClassificationTask):
    """10-class image classification; metric: accuracy."""

    name = "vision"
    data_spec = DATA_SPEC
    model_spec = MODEL_SPEC

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self._mean = self._std = None

    # data -----------------------------------------------------------------
    def prepare(self, out_dir: Path, seed: int) -> dict[str, int]:
        splits = self._builtin(seed) if self.cfg.source == "builtin" else self._real(seed)
        ref = splits["val"][0].float() / 255  # rendered images in every source
        mean, std = ref.mean(dim=(0, 2, 3)), ref.std(dim=(0, 2, 3))
        for split, (x, y) in splits.items():
            blob = {"x": x, "y": y, "mean": mean, "std": std, "render": x.dim() == 3}
            save_torch(blob, Path(out_dir) / f"{split}.pt")
        return {split: len(y) for split, (x, y) in splits.items()}

    def _builtin(self, seed: int) -> dict:
        from sklearn.datasets import load_digits

        digits = load_digits()
        rng = np.random.default_rng(seed)
        raw = torch.from_numpy(digits.images.astype(np.float32) / 16.0)
        labels_np = digits.target.astype(np.int64)
        labels = torch.from_numpy(labels_np)
        g = torch.Generator().manual_seed(seed)
        images = render(raw, raw[pick_distractors(labels_np, rng)], self.data_cfg, g)
        n = len(labels)
        rest, test = split_indices(n, self.data_cfg["n_test"] / n, seed, "tasks.vision.data.n_test")
        if self.data_cfg["n_train"]:
            rest = rest[: self.data_cfg["n_train"]]
        train_i, val_i = split_indices(
            len(rest), self.cfg.validation_split, seed + 1, "tasks.vision.data.n_train / validation_split"
        )
        train, val = rest[train_i], rest[val_i]
        out = {s: (images[idx], labels[idx]) for s, idx in (("val", val), ("test", test))}
        # the training split keeps the raw digits: they are rendered afresh every epoch
        out["train"] = (raw[train], labels[train])
        return out

    def _real(self, seed: int) -> dict:
        from PIL import Image

        raw = load_real(self.cfg, "uoft-cs/cifar10", columns={"img": "struct", "label": "integer"})
        cap = self.data_cfg["max_examples"]
        out = {}
        for split, ds in raw.items():
            where = f"{self.cfg.path or 'uoft-cs/cifar10'} ({split})"
            require_columns(ds, {"img": (dict, Image.Image), "label": (int,)}, where)
            if cap:
                ds = ds.select(range(min(cap, len(ds))))
            images = [_decode_image(v, f"{where}, row {i}") for i, v in enumerate(ds["img"])]
            x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
            if x.shape[1:] != (3, 32, 32):
                raise DataError(f"{split}: images are {tuple(x.shape[1:])}, expected 3x32x32 (CIFAR-10)")
            out[split] = (x, torch.tensor(ds["label"], dtype=torch.int64))
        if "validation" in out:
            out["val"] = out.pop("validation")
        else:
            x, y = out["train"]
            where = f"{self.cfg.path or 'uoft-cs/cifar10'} (train) / validation_split"
            train_i, val_i = split_indices(len(y), self.cfg.validation_split, seed, where)
            out["train"], out["val"] = (x[train_i], y[train_i]), (x[val_i], y[val_i])
        return out

    def load(self, data_dir: Path, split: str) -> torch.utils.data.Dataset:
        blob = load_split(data_dir, split, "prepare@vision", ("x", "y", "mean", "std", "render"))
        self._mean, self._std = blob["mean"].view(1, 3, 1, 1), blob["std"].view(1, 3, 1, 1)
        if blob["render"]:
            return RenderedDigits(blob["x"], blob["y"], self.data_cfg)
        size = self.data_cfg["size"]
        if self.cfg.source == "builtin" and blob["x"].shape[-1] != size:
            raise DataError(
                f"{data_dir}/{split}.pt: images are {blob['x'].shape[-1]}px, tasks.vision.data.size is {size}:"
                " run `dvc repro prepare@vision`"
            )
        return torch.utils.data.TensorDataset(blob["x"], blob["y"])

    def collate(self, items: list) -> dict[str, Any]:
        x = torch.stack([i[0] for i in items]).float().div_(255)
        return {"x": (x - self._mean) / self._std, "y": torch.stack([i[1] for i in items])}

    # model ------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return resnet18(int(self.model_cfg["width"]), int(self.model_cfg["num_classes"]))

    def logits(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(batch["x"]).float()
