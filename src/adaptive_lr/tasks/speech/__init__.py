"""Speech recognition: character-level CTC on spoken English (the ``speech`` task).

Modules: :mod:`~adaptive_lr.tasks.speech.task` (:class:`SpeechTask`, :class:`SpeechDataset`, the
sources and knobs), :mod:`~adaptive_lr.tasks.speech.ctc` (character set, normalisation, greedy
decoding), :mod:`~adaptive_lr.tasks.speech.audio` (16 kHz waveforms: decode, resample, store) and
:mod:`~adaptive_lr.tasks.speech.espeak` (the espeak-ng voice of the offline stand-in). Its batches
are :class:`adaptive_lr.tasks.batching.LengthGroupedBatches`.
"""

from adaptive_lr.tasks.speech.audio import PAD_MULTIPLE, SAMPLE_RATE, decode_audio, resample, to_int16
from adaptive_lr.tasks.speech.ctc import BLANK, CHAR_TO_ID, VOCAB, ctc_greedy_decode, encode_text, normalize_text
from adaptive_lr.tasks.speech.espeak import DEFAULT_VOICES, DEFAULT_WORDS
from adaptive_lr.tasks.speech.task import DATA_SPEC, MODEL_SPEC, SpeechDataset, SpeechTask

__all__ = [
    "BLANK",
    "CHAR_TO_ID",
    "DATA_SPEC",
    "DEFAULT_VOICES",
    "DEFAULT_WORDS",
    "MODEL_SPEC",
    "PAD_MULTIPLE",
    "SAMPLE_RATE",
    "VOCAB",
    "SpeechDataset",
    "SpeechTask",
    "ctc_greedy_decode",
    "decode_audio",
    "encode_text",
    "normalize_text",
    "resample",
    "to_int16",
]
