"""Shared data plumbing for tasks: real sources (hub / local parquet), splits, files."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptive_lr.errors import DataError


def split_indices(n: int, fraction: float, seed: int, where: str = "validation_split") -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut off ``fraction`` of it: (rest, cut).

    ``where`` names the params.yaml keys that set ``n`` and ``fraction`` (the message of a split
    that would leave nothing names them).
    """
    order = np.random.default_rng(seed).permutation(n)
    n_cut = max(1, int(round(n * fraction)))
    if n_cut >= n:
        raise DataError(
            f"{where}: cannot hold out {fraction:.0%} of {n} examples and keep any for training (an empty split)"
        )
    return np.sort(order[n_cut:]), np.sort(order[:n_cut])


def load_split(data_dir: Path, split: str, stage: str, keys: tuple[str, ...] = ()) -> Any:
    """Load a prepared split (a dict holding ``keys``), or say which DVC stage rebuilds it."""
    path = Path(data_dir) / f"{split}.pt"
    if not path.exists():
        raise DataError(f"{path}: prepared data missing; run `dvc repro {stage}`")
    try:
        blob = torch.load(path, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"{path}: unreadable ({exc}); run `dvc repro -f {stage}`") from exc
    missing = [k for k in keys if not isinstance(blob, dict) or k not in blob]
    if missing:  # another task's file, or one from an older layout
        raise DataError(f"{path}: not what {stage} writes (no {', '.join(missing)}); run `dvc repro -f {stage}`")
    return blob


def load_real(
    cfg: Any,
    hub_id: str,
    hub_config: str | None = None,
    hub_splits: list[str] | None = None,
    columns: dict[str, str] | None = None,
) -> dict:
    """Real data as ``{split: datasets.Dataset}``: from the hub, or local parquet in the hub's schema.

    On the hub, ``hub_splits`` names the splits to download (None: all of them;
    LibriSpeech's ``clean`` config alone holds tens of GB that a run may not need).
    Local files are found in ``cfg.path`` by split prefix (``train*.parquet``,
    ``validation*.parquet``, ``test*.parquet``); splits with no file are absent.
    ``columns`` (name -> kind, see :func:`check_parquet_columns`) is checked in every local file.
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
    for found in files.values():
        check_parquet_columns(found, columns or {})
    datasets.disable_progress_bars()  # local files load in moments: the bars would only bury a stage's messages
    return dict(datasets.load_dataset("parquet", data_files=files))


def require_columns(ds: Any, columns: dict[str, tuple], where: str) -> None:
    """Check that ``ds`` has each column and that its first value has an allowed Python type."""
    for col, types in columns.items():
        if col not in ds.column_names:
            raise DataError(f"{where}: missing column {col!r} (has {ds.column_names})")
        if len(ds) and not isinstance(ds[0][col], types):
            got = type(ds[0][col]).__name__
            raise DataError(
                f"{where}: column {col!r} has values of type {got}, expected {'/'.join(t.__name__ for t in types)}"
            )
    if len(ds) == 0:
        raise DataError(f"{where}: the split is empty")


def check_parquet_columns(files: list[str], columns: dict[str, str]) -> None:
    """Name the first local parquet file that lacks one of ``columns`` or holds another kind in it.

    Only the schemas are read; ``columns`` maps a column to "string", "integer" or "struct"
    (an image or audio column: ``{bytes, path}``).
    """
    import pyarrow.parquet as pq
    import pyarrow.types as pt

    kinds = {"string": (pt.is_string, pt.is_large_string), "integer": (pt.is_integer,), "struct": (pt.is_struct,)}
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # pyarrow raises several types for a file that is not parquet
            raise DataError(f"{f}: not a readable parquet file ({type(exc).__name__}: {exc})") from exc
        for col, kind in columns.items():
            if col not in schema.names:
                raise DataError(f"{f}: missing column {col!r} (columns: {schema.names})")
            got = schema.field(col).type
            if not any(is_kind(got) for is_kind in kinds[kind]):
                raise DataError(f"{f}: column {col!r} holds {got}, expected {kind}")
