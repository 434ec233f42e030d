"""The offline speech stand-in's voice: espeak-ng through ctypes, and what the synthetic corpus draws from."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile

import numpy as np

from adaptive_lr.errors import ParamsError

DEFAULT_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
]  # fmt: skip
DEFAULT_VOICES = [
    # no breathy variants (+f2, +f3 ...): their noise does not follow any seed we can set
    "en", "en-us", "en-GB-x-rp", "en-gb-scotland", "en-029",
    "en+m3", "en-us+m2", "en+m1", "en-us+m4", "en-GB-x-rp+m2",
]  # fmt: skip


class _Espeak:
    """A private instance of libespeak-ng, driven through ctypes.

    espeak-ng keeps synthesis state in C statics (pitch flutter phase, gain
    control, echo buffer) that survive ``espeak_Initialize``, so the same text
    sounds slightly different depending on what was spoken before. A private
    copy of the shared library (fresh statics) makes one ``prepare`` call
    reproducible whatever ran earlier in the process. (Breathy voice variants
    such as ``+f2`` add noise that no seed we can reach controls: the default
    voice list leaves them out.)
    """

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self) -> None:
        import espeakng_loader

        self._dir = tempfile.mkdtemp(prefix="espeak-")
        lib_path = os.path.join(self._dir, "libespeak-ng-private.so")
        shutil.copyfile(espeakng_loader.get_library_path(), lib_path)
        self._lib = ctypes.CDLL(lib_path)
        # 2 = AUDIO_OUTPUT_SYNCHRONOUS: samples arrive through the callback before Synth returns.
        self.sample_rate = self._lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise (returned {self.sample_rate})")
        self._chunks: list[np.ndarray] = []
        self._cb = self._CALLBACK(self._collect)  # keep a reference: C holds only the pointer
        self._lib.espeak_SetSynthCallback(self._cb)
        self._voice: str | None = None

    def _collect(self, wav, n, _events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """Speak ``text``; return float32 samples at :attr:`sample_rate`."""
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ParamsError(
                    f"tasks.speech.data.voices: espeak-ng has no voice {voice!r} "
                    "(e.g. 'en', 'en-us', 'en-us+f3', 'en-029')"
                )
            self._voice = voice
        self._lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE
        self._lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
        self._chunks = []
        raw = text.encode("utf-8")
        self._lib.espeak_Synth(raw, len(raw) + 1, 0, 0, 0, 1, None, None)  # 1 = espeakCHARS_UTF8
        self._lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0

    def close(self) -> None:
        """Forget the library copy (the mapping stays until process exit; the file goes now)."""
        shutil.rmtree(self._dir, ignore_errors=True)


def draw(rng: np.random.Generator, span: float | list) -> float:
    """A uniform draw from ``[low, high]``, or the one value (no draw) of a number or an empty span.

    ``span`` is a params.yaml span, checked when params.yaml was read (a number, or low <= high).
    """
    lo, hi = span if isinstance(span, list) else (span, span)
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)
