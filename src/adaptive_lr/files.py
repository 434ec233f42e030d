"""Writing outputs so that a killed or failed stage never leaves a half-written file behind."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: files get the usual permissions, not mkstemp's 0600


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a write to the open file (a full disk): name the file it was for
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` leaves in ``folder`` when it is killed mid-write.

    A stage calls this for each folder it writes into before it writes; it returns what it removed.
    """
    gone = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` atomically.

    The archive is built in memory first: torch names the zip's inner folder after the
    file it writes, and a temporary name would make equal data hash differently
    (DVC would then re-run every stage downstream).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def write_json(obj: Any, path: Path) -> None:
    """JSON, atomically; NaN and infinities (not valid JSON) become null."""
    atomic_write(path, json.dumps(finite_or_none(obj), indent=2, allow_nan=False) + "\n")


def finite_or_none(obj: Any) -> Any:
    """Replace NaN and infinities by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj
