"""Speech recognition: character-level CTC on spoken English.

Sources (``cfg.source``):

* ``builtin``: an offline spoken-word set synthesised with espeak-ng (through the
  ``espeakng-loader`` wheel and ctypes): single words from a small vocabulary,
  several voices, random speaking rate and pitch, white noise at a random SNR.
  The model is a small ``Wav2Vec2ForCTC`` built from a config.
* ``hub``: ``openslr/librispeech_asr`` (config ``clean``; splits ``train.100``,
  ``validation``, ``test``) with ``facebook/wav2vec2-base`` and a fresh CTC head.
* ``local``: parquet files in the hub's schema (``audio`` = {bytes, path},
  ``text``) under ``cfg.path``; same model as ``hub``.

Every source is prepared into the same on-disk form: ``<split>.pt`` holding
16 kHz int16 waveforms and normalised transcripts, plus ``vocab.json``.

Knobs in ``cfg.data`` (all optional; defaults in :data:`DATA_DEFAULTS`):
``words``, ``voices``, ``n_train``, ``n_test``, ``rate``, ``pitch``,
``snr_db``, ``pad_s`` (builtin only); ``max_train``, ``max_val``, ``max_test``,
``max_seconds`` (caps, every source); ``hub_name``, ``hub_config``,
``hub_splits`` (hub only).

Knobs in ``cfg.model`` (defaults in :data:`MODEL_DEFAULTS`): ``name``
(pretrained id for hub/local); ``hidden_size``, ``num_layers``, ``num_heads``,
``ffn_size``, ``conv_channels``, ``conv_kernel``, ``conv_stride``,
``pos_conv_kernel``, ``pos_conv_groups`` (builtin only); ``dropout``,
``layerdrop``, ``mask_time_prob`` (every source; ``null`` keeps a pretrained
model's own value).
"""

from __future__ import annotations

import ctypes
import io
import json
import math
import os
import re
import shutil
import tempfile
from math import gcd
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from adaptive_lr.errors import ParamsError
from adaptive_lr.tasks.base import EvalBatch, Task
from adaptive_lr.files import save_torch
from adaptive_lr.tasks.sources import DataError, load_real, load_split, require_columns, split_indices

SAMPLE_RATE = 16_000
# Padding granularity of a batch: few distinct shapes keep the CPU kernels'
# caches warm and waste at most 0.1 s per utterance.
PAD_MULTIPLE = SAMPLE_RATE // 10

BLANK = "<pad>"
# Index 0 is the CTC blank (it doubles as the model's pad token, which is what
# transformers uses as the blank id). The symbol set is fixed so that
# ``build_model`` never needs to look at the data.
VOCAB: list[str] = [BLANK, " ", "'"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
CHAR_TO_ID = {c: i for i, c in enumerate(VOCAB)}

DEFAULT_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
]  # fmt: skip
DEFAULT_VOICES = [
    # no breathy variants (+f2, +f3 ...): their noise does not follow any seed we can set
    "en", "en-us", "en-GB-x-rp", "en-gb-scotland", "en-029",
    "en+m3", "en-us+m2", "en+m1", "en-us+m4", "en-GB-x-rp+m2",
]  # fmt: skip

DATA_DEFAULTS: dict[str, Any] = {
    "words": 10,  # an int N for the first N of DEFAULT_WORDS (the digits), or a list of words
    "voices": DEFAULT_VOICES,
    "n_train": 1200,  # builtin: utterances split into train/val by cfg.validation_split
    "n_test": 300,  # builtin: utterances in the separate test set
    "rate": [120, 190],  # espeak words per minute, uniform
    "pitch": [30, 70],  # espeak pitch 0-99, uniform
    "snr_db": [20, 40],  # white-noise SNR, uniform
    "pad_s": [0.0, 0.05],  # silence added before and after the word, uniform (seconds)
    "max_train": None,  # caps on split sizes (null = all)
    "max_val": None,
    "max_test": None,
    "max_seconds": None,  # drop longer clips (hub/local; null = keep all)
    "hub_name": "openslr/librispeech_asr",
    "hub_config": "clean",
    "hub_splits": {"train": "train.100", "val": "validation", "test": "test"},
}

MODEL_DEFAULTS: dict[str, Any] = {
    "name": "facebook/wav2vec2-base",  # hub/local only
    "hidden_size": 256,
    "num_layers": 4,
    "num_heads": 4,
    "ffn_size": 1024,
    "conv_channels": 64,
    "conv_norm": "group",  # "group": GroupNorm on the first conv only; "layer": LayerNorm after each
    "conv_kernel": [10, 3, 3, 3, 2],
    # product 640 = one frame per 40 ms: half the encoder work of wav2vec2's 20 ms,
    # and CTC leaves its all-blank plateau in far fewer steps on short words
    "conv_stride": [5, 4, 4, 4, 2],
    "pos_conv_kernel": 64,
    "pos_conv_groups": 16,
    "attention": "eager",
    "dropout": 0.0,
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
}


# --------------------------------------------------------------------------- text


def normalize_text(text: str) -> str:
    """Upper-case, keep letters, apostrophes and single spaces (LibriSpeech style)."""
    text = re.sub(r"[^A-Z' ]+", " ", text.upper())
    return " ".join(text.split())


def encode_text(text: str) -> list[int]:
    """Character ids of a normalised transcript (unknown characters are dropped)."""
    return [CHAR_TO_ID[c] for c in text if c in CHAR_TO_ID and c != BLANK]


def ctc_greedy_decode(logits: torch.Tensor, lengths: torch.Tensor | None = None) -> list[str]:
    """Best-path CTC decoding: argmax per frame, collapse repeats, drop blanks.

    Args:
        logits: ``(batch, frames, len(VOCAB))`` scores.
        lengths: valid frames per utterance (default: all frames).
    """
    ids = logits.argmax(dim=-1).cpu()
    out = []
    for b in range(ids.shape[0]):
        seq = ids[b, : int(lengths[b])] if lengths is not None else ids[b]
        seq = torch.unique_consecutive(seq)
        text = "".join(VOCAB[i] for i in seq.tolist() if i != 0)
        out.append(" ".join(text.split()))
    return out


# --------------------------------------------------------------------------- audio


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
                raise ParamsError(f"tasks.speech.data.voices: espeak-ng has no voice {voice!r} (e.g. 'en', 'en-us', 'en-us+f3', 'en-029')")
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


def _trim(wave: np.ndarray, sr: int, threshold: float = 0.02, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing near-silence, keeping a short margin around the speech."""
    loud = np.nonzero(np.abs(wave) > threshold * max(float(np.abs(wave).max()), 1e-9))[0]
    if loud.size == 0:
        return wave
    margin = int(margin_s * sr)
    return wave[max(0, loud[0] - margin) : loud[-1] + margin + 1]


def _uniform(rng: np.random.Generator, bounds: Any, name: str) -> float:
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if number(bounds):
        bounds = [bounds, bounds]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(map(number, bounds))) or bounds[1] < bounds[0]:
        raise ParamsError(f"tasks.speech.data.{name} = {bounds!r}: expected a number or [low, high] with low <= high")
    lo, hi = bounds
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


# --------------------------------------------------------------------------- dataset


class SpeechDataset(torch.utils.data.Dataset):
    """Prepared utterances: int16 16 kHz waveforms and their normalised transcripts.

    Items are dicts ``{"input_values": float32 (T,), "labels": int64 (U,), "text": str}``;
    each waveform is normalised to zero mean and unit variance, as
    ``Wav2Vec2FeatureExtractor(do_normalize=True)`` would.
    """

    def __init__(self, audio: list[torch.Tensor], text: list[str]):
        if len(audio) != len(text):
            raise ValueError(f"{len(audio)} clips but {len(text)} transcripts")
        self.audio = audio
        self.text = text
        self.lengths = np.array([int(a.numel()) for a in audio], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict[str, Any]:
        wave = self.audio[i].float()
        wave = (wave - wave.mean()) / (wave.std(unbiased=False) + 1e-5 * 32768)
        return {
            "input_values": wave,
            "labels": torch.tensor(encode_text(self.text[i]), dtype=torch.long),
            "text": self.text[i],
        }


class LengthGroupedBatches:
    """Batches of utterances of similar length, re-drawn on every pass when shuffling.

    Like a ``DataLoader``, one object serves every epoch: each ``iter()`` draws
    a new grouping from ``generator``, so runs are reproducible from its seed.
    Utterances are ordered by padded length (0.1 s units) with random order
    inside each length, cut into batches, and the batches are shuffled.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool, generator: torch.Generator, collate):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.collate = collate
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            lengths = [int(dataset[i]["input_values"].numel()) for i in range(len(dataset))]
        self.buckets = -(-np.asarray(lengths, dtype=np.int64) // PAD_MULTIPLE)

    def __len__(self) -> int:
        return -(-len(self.buckets) // self.batch_size)

    def groups(self) -> list[list[int]]:
        """The index groups of one pass (draws from the generator when shuffling)."""
        n = len(self.buckets)
        if self.shuffle:
            # random order inside each padded length, then a stable sort by length:
            # groups change from pass to pass but stay tight
            perm = torch.randperm(n, generator=self.generator).numpy()
            order = perm[np.argsort(self.buckets[perm], kind="stable")]
        else:
            order = np.argsort(self.buckets, kind="stable")
        groups = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.shuffle:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=self.generator).tolist()]
        return groups

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for group in self.groups():
            yield self.collate([self.dataset[i] for i in group])


# --------------------------------------------------------------------------- task


class SpeechTask(Task):
    """Character CTC speech recognition scored by word error rate (lower is better)."""

    name = "speech"
    metric = "wer"
    higher_is_better = False
    data_defaults = DATA_DEFAULTS
    model_defaults = MODEL_DEFAULTS
    knob_kinds = {
        **{k: ("a number", "a list") for k in ("words", "rate", "pitch", "snr_db", "pad_s")},  # a list, or one value
        **{k: ("a number",) for k in ("max_train", "max_val", "max_test", "max_seconds")},
    }

    # data -----------------------------------------------------------------
    def prepare(self, out_dir: Path, seed: int) -> dict[str, int]:
        """Write ``train.pt``, ``val.pt``, ``test.pt`` and ``vocab.json`` under ``out_dir``."""
        out_dir = Path(out_dir)
        splits = self._builtin(seed) if self.cfg.source == "builtin" else self._real(seed)
        sizes = {}
        for split in ("train", "val", "test"):
            audio, text = self._cap(split, *splits[split])
            if not audio:
                raise DataError(f"speech: split {split!r} is empty after the caps and filters in tasks.speech.data")
            save_torch({"audio": audio, "text": text, "sample_rate": SAMPLE_RATE}, out_dir / f"{split}.pt")
            sizes[split] = len(audio)
        (out_dir / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(VOCAB)}, indent=1) + "\n")
        return sizes

    def _cap(self, split: str, audio: list, text: list) -> tuple[list, list]:
        max_s = self.knobs["max_seconds"]
        if max_s and self.cfg.source != "builtin":
            keep = [i for i, a in enumerate(audio) if a.numel() <= max_s * SAMPLE_RATE]
            audio, text = [audio[i] for i in keep], [text[i] for i in keep]
        cap = self.knobs[f"max_{split}"]
        if cap is not None:
            audio, text = audio[: int(cap)], text[: int(cap)]
        return audio, text

    def _words(self) -> list[str]:
        words = self.knobs["words"]
        if isinstance(words, int) and not isinstance(words, bool):
            if not 1 <= words <= len(DEFAULT_WORDS):
                raise DataError(f"tasks.speech.data.words = {words}: expected 1..{len(DEFAULT_WORDS)} or a list of words")
            words = DEFAULT_WORDS[:words]
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and normalize_text(w) for w in words):
            # YAML reads unquoted yes/no/on/off as booleans: say so, it is the usual cause
            raise DataError(
                f"tasks.speech.data.words = {words!r}: expected an int or a list of words "
                "(quote yes/no/on/off in YAML, or they become booleans)"
            )
        return [normalize_text(w) for w in words]

    def _builtin(self, seed: int) -> dict[str, tuple[list, list]]:
        d = self.knobs
        words, voices = self._words(), list(d["voices"])
        if not voices:
            raise DataError("tasks.speech.data.voices: expected at least one espeak-ng voice")
        n_test, n_train = int(d["n_test"]), int(d["n_train"])
        if n_test < 1 or n_train < 2:
            raise DataError(f"tasks.speech.data: n_train = {n_train} (>= 2) and n_test = {n_test} (>= 1) are too small")
        rng = np.random.default_rng(seed)
        engine = _Espeak()
        try:
            # the test set is drawn first, so it does not change with n_train
            test = self._synth_many(engine, rng, words, voices, n_test)
            rest = self._synth_many(engine, rng, words, voices, n_train)
        finally:
            engine.close()
        train_i, val_i = split_indices(n_train, self.cfg.validation_split, seed + 1, "tasks.speech.data.n_train / validation_split")
        pick = lambda idx: ([rest[0][i] for i in idx], [rest[1][i] for i in idx])  # noqa: E731
        return {"train": pick(train_i), "val": pick(val_i), "test": test}

    def _synth_many(self, engine: _Espeak, rng, words, voices, n) -> tuple[list, list]:
        d = self.knobs
        # Draw every random choice before synthesising: espeak-ng's output can differ
        # by a few samples from run to run, and must not shift the draws that follow.
        specs = [
            (
                words[int(rng.integers(len(words)))],
                voices[int(rng.integers(len(voices)))],
                int(round(_uniform(rng, d["rate"], "rate"))),
                int(round(_uniform(rng, d["pitch"], "pitch"))),
                _uniform(rng, d["snr_db"], "snr_db"),
                (_uniform(rng, d["pad_s"], "pad_s"), _uniform(rng, d["pad_s"], "pad_s")),
                int(rng.integers(2**31)),
            )
            for _ in range(n)
        ]
        audio, text = [], []
        for word, voice, rate, pitch, snr_db, pad, noise_seed in specs:
            wave = engine.synth(word.lower(), voice, rate, pitch)
            if wave.size == 0:
                raise DataError(f"espeak-ng produced no audio for {word!r} with voice {voice!r}")
            wave = resample(_trim(wave, engine.sample_rate), engine.sample_rate)
            silence = [np.zeros(int(p * SAMPLE_RATE), np.float32) for p in pad]
            wave = np.concatenate([silence[0], wave, silence[1]])
            speech_power = float(np.mean(wave**2)) + 1e-12
            noise = np.random.default_rng(noise_seed).standard_normal(wave.size).astype(np.float32)
            wave = wave + noise * math.sqrt(speech_power / 10 ** (snr_db / 10))
            wave *= 0.5 / max(float(np.abs(wave).max()), 1e-9)  # headroom for int16
            audio.append(to_int16(wave))
            text.append(word)
        return audio, text

    def _real(self, seed: int) -> dict[str, tuple[list, list]]:
        """LibriSpeech from the hub, or local parquet files in its schema."""
        import datasets

        d = self.knobs
        names = {"train": d["hub_splits"]["train"], "val": d["hub_splits"]["val"], "test": d["hub_splits"]["test"]}
        raw = load_real(self.cfg, d["hub_name"], d["hub_config"], list(names.values()), columns={"audio": "struct", "text": "string"})
        if self.cfg.source == "local":
            names = {"train": "train", "val": "validation", "test": "test"}
        out = {}
        for split, name in names.items():
            if name not in raw:
                continue
            ds = raw[name]
            where = f"{self.cfg.path or d['hub_name']} ({name})"
            missing = [c for c in ("audio", "text") if c not in ds.column_names]
            if missing:
                raise DataError(f"{where}: missing column(s) {missing} (has {ds.column_names})")
            cap = d[f"max_{split}"]
            if cap is not None and not d["max_seconds"]:
                ds = ds.select(range(min(int(cap), len(ds))))  # decode only what the cap keeps
            # decode=False: datasets' own decoder needs torchcodec; soundfile reads the bytes
            ds = ds.select_columns(["audio", "text"]).cast_column("audio", datasets.Audio(decode=False))
            require_columns(ds, {"audio": (dict,), "text": (str,)}, where)
            out[split] = self._decode_rows(ds, where)
        if "train" not in out or "test" not in out:
            raise DataError(f"{self.cfg.path or d['hub_name']}: needs train and test splits (found {sorted(raw)})")
        if "val" not in out:
            audio, text = out["train"]
            train_i, val_i = split_indices(len(audio), self.cfg.validation_split, seed, f"{self.cfg.path or d['hub_name']} (train) / validation_split")
            out["val"] = ([audio[i] for i in val_i], [text[i] for i in val_i])
            out["train"] = ([audio[i] for i in train_i], [text[i] for i in train_i])
        return out

    def _decode_rows(self, ds, where: str) -> tuple[list, list]:
        base = Path(self.cfg.path) if self.cfg.path else None
        audio, text = [], []
        for i, row in enumerate(ds):
            a = row["audio"] or {}
            clip = f"{where}, row {i} ({a.get('path') or 'no path'})"
            wave = decode_audio(a.get("bytes"), a.get("path"), clip, base)
            audio.append(to_int16(np.clip(wave, -1.0, 1.0)))
            text.append(normalize_text(row["text"] or ""))
        return audio, text

    def load(self, data_dir: Path, split: str) -> SpeechDataset:
        """Load a prepared split as a :class:`SpeechDataset`."""
        vocab_file = Path(data_dir) / "vocab.json"
        if vocab_file.exists():
            try:
                vocab = json.loads(vocab_file.read_text())
            except ValueError as exc:
                raise DataError(f"{vocab_file}: unreadable ({exc}); run `dvc repro -f prepare@speech`") from exc
            if vocab != {c: i for i, c in enumerate(VOCAB)}:
                raise DataError(f"{vocab_file}: prepared with another character set; run `dvc repro -f prepare@speech`")
        blob = load_split(data_dir, split, "prepare@speech", ("audio", "text"))
        return SpeechDataset(blob["audio"], blob["text"])

    def collate(self, items: list) -> dict[str, Any]:
        """Pad to a multiple of 0.1 s; mask marks real samples; labels padded with -100."""
        longest = max(int(it["input_values"].numel()) for it in items)
        frames = max(PAD_MULTIPLE, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE)
        values = torch.zeros(len(items), frames)
        mask = torch.zeros(len(items), frames, dtype=torch.long)
        max_u = max(1, max(int(it["labels"].numel()) for it in items))
        labels = torch.full((len(items), max_u), -100, dtype=torch.long)
        for b, it in enumerate(items):
            n, u = it["input_values"].numel(), it["labels"].numel()
            values[b, :n] = it["input_values"]
            mask[b, :n] = 1
            labels[b, :u] = it["labels"]
        return {"input_values": values, "attention_mask": mask, "labels": labels, "references": [it["text"] for it in items]}

    def batches(
        self, dataset: torch.utils.data.Dataset, batch_size: int, shuffle: bool, generator: torch.Generator
    ) -> Iterable[dict[str, Any]]:
        """Length-grouped batches (see :class:`LengthGroupedBatches`): little padding per batch."""
        return LengthGroupedBatches(dataset, batch_size, shuffle, generator, self.collate)

    # model ------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """A small Wav2Vec2ForCTC from config (builtin), else a pretrained one with a fresh CTC head."""
        from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

        m = self.model_knobs
        common = {
            "vocab_size": len(VOCAB),
            "pad_token_id": 0,  # transformers uses the pad id as the CTC blank
            "bos_token_id": None,
            "eos_token_id": None,
            "ctc_loss_reduction": "mean",  # the config default "sum" scales with batch and length
            "ctc_zero_infinity": True,  # a too-short clip must not turn the loss into inf
        }
        overrides = {}
        if m["dropout"] is not None:
            d = float(m["dropout"])
            overrides.update(hidden_dropout=d, attention_dropout=d, activation_dropout=d, final_dropout=d)
        if m["layerdrop"] is not None:
            overrides["layerdrop"] = float(m["layerdrop"])
        if m["mask_time_prob"] is not None:
            overrides["mask_time_prob"] = float(m["mask_time_prob"])
            overrides["apply_spec_augment"] = float(m["mask_time_prob"]) > 0
        if self.cfg.source == "builtin":
            kernel, stride = list(m["conv_kernel"]), list(m["conv_stride"])
            config = Wav2Vec2Config(
                hidden_size=int(m["hidden_size"]),
                num_hidden_layers=int(m["num_layers"]),
                num_attention_heads=int(m["num_heads"]),
                intermediate_size=int(m["ffn_size"]),
                conv_dim=[int(m["conv_channels"])] * len(kernel),
                conv_kernel=kernel,
                conv_stride=stride,
                feat_extract_norm=m["conv_norm"],
                do_stable_layer_norm=True,  # pre-LN: the post-LN encoder only learned blanks from scratch
                num_conv_pos_embeddings=int(m["pos_conv_kernel"]),
                num_conv_pos_embedding_groups=int(m["pos_conv_groups"]),
                # On CPU the fused SDPA backward costs ~5 ms a layer on these
                # few-frame sequences; plain matmul attention is several times cheaper.
                attn_implementation=m["attention"],
                **common,
                **overrides,
            )
            return Wav2Vec2ForCTC(config)
        model = Wav2Vec2ForCTC.from_pretrained(
            m["name"], ignore_mismatched_sizes=True, **common, **overrides
        )  # the pretrained checkpoint has no (or another) CTC head: lm_head starts fresh
        model.freeze_feature_encoder()  # standard wav2vec2 fine-tuning: the conv front end stays fixed
        return model

    def _forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and their valid frame counts."""
        mask = batch["attention_mask"]
        config = model.config
        # Group-norm checkpoints (wav2vec2-base) were trained on unmasked, zero-padded
        # input and transformers advises not to pass a mask to them; the from-scratch
        # model and layer-norm checkpoints use it.
        use_mask = self.cfg.source == "builtin" or getattr(config, "feat_extract_norm", "layer") == "layer"
        logits = model(batch["input_values"], attention_mask=mask if use_mask else None).logits
        lengths = model._get_feat_extract_output_lengths(mask.sum(-1)).to(torch.long)
        return logits, lengths.clamp(max=logits.shape[1])

    @staticmethod
    def _ctc_per_sample(model: nn.Module, logits: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor):
        """CTC loss of each utterance divided by its target length (what reduction="mean" averages)."""
        keep = labels >= 0
        targets = labels.masked_select(keep)
        target_lengths = keep.sum(-1)
        log_probs = nn.functional.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        losses = nn.functional.ctc_loss(
            log_probs,
            targets,
            lengths,
            target_lengths,
            blank=model.config.pad_token_id,
            reduction="none",
            zero_infinity=bool(getattr(model.config, "ctc_zero_infinity", True)),
        )
        return losses / target_lengths.clamp(min=1).to(losses.dtype)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean over the batch of CTC loss per target character."""
        logits, lengths = self._forward(model, batch)
        return self._ctc_per_sample(model, logits, lengths, batch["labels"].to(logits.device)).mean()

    def evaluate_batch(self, model: nn.Module, batch: dict[str, Any]) -> EvalBatch:
        """Per-utterance CTC losses and greedy transcripts of one batch (eval mode, no grad)."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits, lengths = self._forward(model, batch)
                losses = self._ctc_per_sample(model, logits, lengths, batch["labels"].to(logits.device))
        finally:
            model.train(was_training)
        return EvalBatch(
            losses=losses.float().tolist(),
            predictions=ctc_greedy_decode(logits, lengths),
            references=list(batch["references"]),
        )

    def score(self, predictions: list, references: list) -> float:
        """Word error rate of the predictions against the references (jiwer)."""
        import jiwer

        if not references:
            raise ValueError("no references to score")
        return float(jiwer.wer(list(references), list(predictions)))

