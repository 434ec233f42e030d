"""Shared data plumbing for tasks: real sources (hub / local parquet), splits, files."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np
import torch


class DataError(ValueError):
    """Input data is missing, malformed or empty; the message says which file and what to do."""


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut off ``fraction`` of it: (rest, cut)."""
    order = np.random.default_rng(seed).permutation(n)
    n_cut = max(1, int(round(n * fraction)))
    if n_cut >= n:
        raise DataError(f"cannot hold out {fraction:.0%} of {n} examples and keep any for training")
    return np.sort(order[n_cut:]), np.sort(order[:n_cut])


def load_split(data_dir: Path, split: str, stage: str) -> Any:
    """Load a prepared split, or say which DVC stage rebuilds it."""
    path = Path(data_dir) / f"{split}.pt"
    if not path.exists():
        raise DataError(f"{path}: prepared data missing; run `dvc repro {stage}`")
    try:
        return torch.load(path, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"{path}: unreadable ({exc}); run `dvc repro -f {stage}`") from exc


def load_real(cfg: Any, hub_id: str, hub_config: str | None = None, hub_splits: list[str] | None = None) -> dict:
    """Real data as ``{split: datasets.Dataset}``: from the hub, or local parquet in the hub's schema.

    On the hub, ``hub_splits`` names the splits to download (None: all of them;
    LibriSpeech's ``clean`` config alone holds tens of GB that a run may not need).
    Local files are found in ``cfg.path`` by split prefix (``train*.parquet``,
    ``validation*.parquet``, ``test*.parquet``); splits with no file are absent.
    """
    import datasets

    if cfg.source == "hub":
        if hub_splits:
            return {name: datasets.load_dataset(hub_id, hub_config, split=name) for name in hub_splits}
        return dict(datasets.load_dataset(hub_id, hub_config))
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"tasks.{cfg.task}.path = {cfg.path!r}: not a folder of parquet files")
    files = {}
    for split in ("train", "validation", "test"):
        found = sorted(glob.glob(str(root / f"{split}*.parquet")))
        if found:
            files[split] = found
    if "train" not in files or "test" not in files:
        raise DataError(f"{root}: needs train*.parquet and test*.parquet files (found: {sorted(files) or 'none'})")
    return dict(datasets.load_dataset("parquet", data_files=files))


def require_columns(ds: Any, columns: dict[str, tuple], where: str) -> None:
    """Check that ``ds`` has each column and that its first value has an allowed Python type."""
    for col, types in columns.items():
        if col not in ds.column_names:
            raise DataError(f"{where}: missing column {col!r} (has {ds.column_names})")
        if len(ds) and not isinstance(ds[0][col], types):
            got = type(ds[0][col]).__name__
            raise DataError(f"{where}: column {col!r} has values of type {got}, expected {'/'.join(t.__name__ for t in types)}")
    if len(ds) == 0:
        raise DataError(f"{where}: the split is empty")

