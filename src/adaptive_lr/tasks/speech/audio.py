"""Audio plumbing of the speech task: 16 kHz mono waveforms, resampling, int16 storage, decoding, trimming."""

from __future__ import annotations

import io
from math import gcd
from pathlib import Path

import numpy as np
import torch

from adaptive_lr.errors import DataError

SAMPLE_RATE = 16_000
# Padding granularity of a batch: few distinct shapes keep the CPU kernels'
# caches warm and waste at most 0.1 s per utterance.
PAD_MULTIPLE = SAMPLE_RATE // 10


def resample(wave: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of a float waveform to ``target`` Hz."""
    if sr == target:
        return wave.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(int(sr), int(target))
    return resample_poly(wave, target // g, int(sr) // g).astype(np.float32)


def to_int16(wave: np.ndarray) -> torch.Tensor:
    """Float waveform in [-1, 1] to an int16 tensor (half the memory of float32 on disk)."""
    return torch.from_numpy(np.clip(np.round(wave * 32767.0), -32768, 32767).astype(np.int16))


def decode_audio(data: bytes | None, path: str | None, where: str, base_dir: Path | None = None) -> np.ndarray:
    """Decode one clip (bytes, else a file path) to mono float32 at 16 kHz.

    Raises:
        DataError: naming ``where`` when the clip is missing, unreadable or empty.
    """
    import soundfile as sf

    try:
        if data:
            wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        elif path:
            p = Path(path)
            if not p.is_absolute() and base_dir is not None and not p.exists():
                p = base_dir / p
            wave, sr = sf.read(str(p), dtype="float32", always_2d=True)
        else:
            raise DataError(f"{where}: the audio has neither bytes nor a path")
    except DataError:
        raise
    except Exception as exc:  # soundfile raises several types; the caller needs the clip's name
        raise DataError(f"{where}: cannot decode the audio ({type(exc).__name__}: {exc})") from exc
    if wave.size == 0 or wave.shape[0] == 0:
        raise DataError(f"{where}: the audio clip is empty (0 samples)")
    return resample(wave.mean(axis=1), sr)


def _trim(wave: np.ndarray, sr: int, threshold: float = 0.02, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing near-silence, keeping a short margin around the speech."""
    loud = np.nonzero(np.abs(wave) > threshold * max(float(np.abs(wave).max()), 1e-9))[0]
    if loud.size == 0:
        return wave
    margin = int(margin_s * sr)
    return wave[max(0, loud[0] - margin) : loud[-1] + margin + 1]
