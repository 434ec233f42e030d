"""Smoke run of ``profile: full``'s code path, offline, at the real sizes: data in the hub schemas, real architectures.

What it runs, per task (vision, text, speech), in a fresh process of its own:

1. Writes a few dozen rows of local parquet **in the hub dataset's schema and at its real shapes**
   into a temporary folder: vision as ``uoft-cs/cifar10`` (``img`` {bytes: 32x32 RGB PNG of noise,
   path}, ``label`` 0-9), text as ``stanfordnlp/imdb`` (``text``: reviews of ~180-420 English-ish
   words, so most fill the 256 tokens of ``max_length``; ``label`` 0/1 balanced), speech as
   ``openslr/librispeech_asr`` clean (``audio`` {bytes: 16 kHz FLAC of harmonic buzz and noise,
   1 s to ``--seconds-max``, path}, ``text`` in LibriSpeech's upper case, ``speaker_id``,
   ``chapter_id``, ``id``, ``file``; train, validation and test files). One clip per speech
   split lies past ``--seconds-max`` (``data.max_seconds`` must drop it) and each split holds a
   row more than its cap (``max_examples`` / ``n_train`` / ``max_train`` ... cut it).
2. Stands in for the pretrained weights, which cannot be downloaded here, with **the real
   architectures at random weights**, saved to a local folder that ``tasks.<task>.model.name``
   points at: ``BertForPreTraining(BertConfig())`` (bert-base-uncased's shape: vocab 30522, 768
   hidden, 12 layers, 12 heads, 3072 ffn) with a ``BertTokenizer`` over a generated WordPiece
   vocabulary laid out like bert-base-uncased's ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102,
   [MASK] 103, padded with [unused] entries to 30522); ``Wav2Vec2ForPreTraining(Wav2Vec2Config())``
   (wav2vec2-base's shape: 7-layer conv front end, 768 hidden, 12 layers) with a
   ``Wav2Vec2FeatureExtractor``. Vision's ResNet-18 (width 64) is built from code. Loading a
   pre-training checkpoint into the task's classes is what the hub checkpoints go through too:
   the heads (classifier, CTC ``lm_head``) start fresh.
3. Resolves the settings as ``profile: full`` would: a copy of params.yaml with ``profile: full``,
   the task's ``source: local`` and ``path`` laid over ``profiles.full``, one seed per
   ``--repeats``, a grid of one multiplier (1x) and one worker, ``--epochs`` epochs of
   ``--steps`` training steps in all (the data caps set so), and ``schedules.adaptive.probe_budget``
   raised to ``--probe-budget`` so the in-epoch probes run on so few steps (they start in epoch 2).
4. Runs the lab's pipeline functions on a temporary root: ``pipeline.prepare`` and
   ``pipeline.train_cell`` (schedule ``--schedule``; ``train.train_one`` inside, then the best
   checkpoint on the test split).

What it measures: each training step's seconds (from the batch being handed out to the next one
asked for: forward, backward, optimizer step and schedule, in-epoch probes taken out), the
batches' largest shapes, evaluation throughput, peak RSS of the task's process over the pipeline
(sampled, and the kernel's high-water mark), the train loop's own peak (``RunResult.usage``) and
on CUDA the peak allocated GPU memory. ``ratio steps/s (<task>)`` is 1 / the median step.

How to read it: on this project's 2-core CPU the real sizes are slow (BERT-base at 32 x 256 tokens
and wav2vec2-base at 8 x 16 s are minutes per step at one thread); the figures that matter for
planning the full study are ``samples/s`` and the "GPU-hours estimate inputs" block, which scales
the measured rates to the full datasets, 50 epochs and the study's runs per task. Run it on the
machine the study will run on. ``--tiny`` shrinks the models and inputs (for the tests).

Run: ``python bench/full_smoke.py`` (real sizes; several GB of RAM and temporary disk), or
``python bench/full_smoke.py --tiny`` (about a minute). ``--tasks text`` for one task.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from _common import REPO, TASKS, machine, median, table

SCRIPT = Path(__file__).resolve()
SAMPLE_RATE = 16_000
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BERT_VOCAB_SIZE = 30522  # bert-base-uncased's vocabulary
# The real datasets' sizes (hub dataset cards), for the estimate: units per split. Vision and
# text: samples (their train splits lose validation_split to validation); speech: seconds of
# audio (LibriSpeech clean: train.100 100.6 h / 28,539 utterances, validation 5.4 h / 2,703,
# test 5.4 h / 2,620), before the max_seconds filter drops the longest clips.
REAL = {
    "vision": {"train": 50_000, "val": None, "test": 10_000},
    "text": {"train": 25_000, "val": None, "test": 25_000},
    "speech": {"train": 100.6 * 3600, "val": 5.4 * 3600, "test": 5.4 * 3600},
}
UNIT = {"vision": "images", "text": "tokens", "speech": "audio s"}

# ----------------------------------------------------------------------------- words

COMMON = (
    "the a and of to is it this that in was as with for but film movie on not you he his are have be one all at "
    "they by an who so from like her just about out if has what some there can more when very up no time even "
    "my would which story only really see their had me were we than much been get other do most also into "
    "will how first people could made them great good bad well way make then acting plot scene scenes best "
    "never little ever while show love life man know where over think films characters character watch two "
    "many being too director seen better after back end still off young old real something nothing funny "
    "because before here through though actors role again long own thing why work go new years few gets"
).split()
POSITIVE = "wonderful excellent brilliant superb loved beautiful moving enjoyable perfect touching".split()
NEGATIVE = "awful terrible boring waste worst dull poorly stupid horrible disappointing".split()
ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z"]
ONSETS += ["bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gr", "pl", "pr", "sh", "sl", "st", "th", "tr", "wh"]
VOWELS = ["a", "e", "i", "o", "u", "ea", "ee", "ou", "ai", "oa", "ie"]
CODAS = ["", "", "", "n", "r", "s", "t", "l", "d", "m", "nd", "st", "ng", "ck", "rt", "ll"]


def pseudo_words(rng, n: int, taken: set[str]) -> list[str]:
    """``n`` distinct lower-case English-ish words of 1-3 syllables, none of ``taken``."""
    out: list[str] = []
    seen = set(taken)
    while len(out) < n:
        syllables = int(rng.choice([1, 2, 2, 3, 3]))
        word = "".join(
            ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))] + CODAS[rng.integers(len(CODAS))]
            for _ in range(syllables)
        )
        if 2 <= len(word) <= 14 and word not in seen:
            seen.add(word)
            out.append(word)
    return out


def review(rng, words: list[str], label: int, n_words: int) -> str:
    """One IMDB-like review: capitalised sentences, commas, the odd <br /><br />, a few sentiment words.

    Three words in five are common English words, the rest drawn from ``words``.
    """
    mood = POSITIVE if label else NEGATIVE

    def word() -> str:
        u = rng.random()
        pool = mood if u < 0.04 else (COMMON if u < 0.64 else words)
        return pool[rng.integers(len(pool))]

    parts, count = [], 0
    while count < n_words:
        k = int(rng.integers(6, 22))
        sentence = [word() for _ in range(k)]
        if k > 8 and rng.random() < 0.4:
            sentence[int(rng.integers(2, k - 2))] += ","
        text = " ".join(sentence)
        parts.append(text[0].upper() + text[1:] + str(rng.choice([".", ".", ".", "!", "?"])))
        if rng.random() < 0.12:
            parts.append("<br /><br />")
        count += k
    return " ".join(parts)


# ----------------------------------------------------------------------------- local parquet, hub schemas


def write_vision(src: Path, n_train: int, n_test: int, rng) -> None:
    """CIFAR-10's parquet schema: img {bytes (PNG), path}, label (ClassLabel); random-noise 32x32 RGB images."""
    import datasets
    import numpy as np
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CIFAR_CLASSES)})
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = []
        for _ in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
            imgs.append({"bytes": buf.getvalue(), "path": None})
        labels = rng.permutation(np.arange(n) % 10).tolist()
        ds = datasets.Dataset.from_dict({"img": imgs, "label": labels}, features=features)
        ds.to_parquet(str(src / f"{split}-00000-of-00001.parquet"))


def write_text(src: Path, n_train: int, n_test: int, words: list[str], length: tuple[int, int], rng) -> None:
    """IMDB's parquet schema: text, label (ClassLabel neg/pos), each split balanced."""
    import datasets
    import numpy as np

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % 2).tolist()
        texts = [review(rng, words, y, int(rng.integers(length[0], length[1] + 1))) for y in labels]
        datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features).to_parquet(
            str(src / f"{split}-00000-of-00001.parquet")
        )


def clip(rng, seconds: float) -> bytes:
    """A 16 kHz mono FLAC (WAV where libsndfile lacks FLAC) of a harmonic buzz at a syllable rhythm, plus noise."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    f0 = rng.uniform(90, 220)
    voice = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 5))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 2 * np.pi)))
    wave = voice * envelope + 0.05 * rng.standard_normal(t.size)
    wave = (0.3 * wave / max(float(np.abs(wave).max()), 1e-9)).astype(np.float32)
    buf = io.BytesIO()
    fmt = "FLAC" if "FLAC" in sf.available_formats() else "WAV"
    sf.write(buf, wave, SAMPLE_RATE, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def transcript(rng, words: list[str], seconds: float) -> str:
    """LibriSpeech style: upper case, apostrophes, no punctuation; ~2.7 words (~15 characters) a second.

    Two words in three are common short English words, the rest English-ish ones.
    """
    out = []
    for _ in range(max(1, round(seconds * 2.7))):
        pool = COMMON if rng.random() < 0.67 else words
        w = pool[rng.integers(len(pool))].upper()
        out.append(w + "'S" if rng.random() < 0.03 else w)
    return " ".join(out)


def clip_seconds(rng, seconds_max: float) -> float:
    """A clip length like LibriSpeech train.100's (3 in 4 of 10-16 s, the rest 1-10 s), scaled to ``seconds_max``."""
    fraction = rng.uniform(0.62, 1.0) if rng.random() < 0.75 else rng.uniform(1 / 16, 0.62)
    return float(min(seconds_max, max(1.0, fraction * seconds_max)))


def write_speech(src: Path, rows: dict[str, int], seconds_max: float, words: list[str], rng) -> dict[str, float]:
    """LibriSpeech's parquet schema (file, audio {bytes, path}, text, speaker_id, chapter_id, id), per split.

    Clip lengths follow :func:`clip_seconds`; the first clip of each split is exactly
    ``seconds_max`` long (the largest batch) and the second ``seconds_max + 1`` (dropped by
    ``data.max_seconds``). Returns the audio seconds written per split.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    total = {}
    for split, n in rows.items():
        seconds = [clip_seconds(rng, seconds_max) for _ in range(n)]
        seconds[0], seconds[1] = seconds_max, seconds_max + 1.0
        speaker, chapter = int(rng.integers(19, 9000)), int(rng.integers(100, 300000))
        ids = [f"{speaker}-{chapter}-{i:04d}" for i in range(n)]
        table_ = {
            "file": pa.array([f"{i}.flac" for i in ids], type=pa.string()),
            "audio": pa.array([{"bytes": clip(rng, s), "path": f"{i}.flac"} for s, i in zip(seconds, ids)], audio_type),
            "text": pa.array([transcript(rng, words, s) for s in seconds], type=pa.string()),
            "speaker_id": pa.array([speaker] * n, type=pa.int64()),
            "chapter_id": pa.array([chapter] * n, type=pa.int64()),
            "id": pa.array(ids, type=pa.string()),
        }
        pq.write_table(pa.table(table_), src / f"{split}-00000-of-00001.parquet")
        total[split] = sum(seconds)
    return total


# ----------------------------------------------------------------------------- stand-ins for the pretrained folders


def bert_folder(folder: Path, words: list[str], tiny: bool) -> None:
    """A bert-base-uncased-shaped checkpoint at random weights and a WordPiece tokenizer, saved to ``folder``."""
    import transformers
    from transformers import BertConfig, BertForPreTraining

    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]  # punctuation, digits, a-z
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += chars + [f"##{c}" for c in chars if c.isalnum()]
    # word pieces: syllable parts and suffixes, so a word outside the vocabulary splits into a few pieces
    vocab += [f"##{v}{c}" for v in VOWELS for c in CODAS if c] + [f"##{o}{v}" for o in ONSETS for v in VOWELS]
    vocab += ["##s", "##ed", "##ing", "##ly", "##er", "##est", "##ness"]
    vocab = list(dict.fromkeys(vocab))
    vocab += [w for w in dict.fromkeys(words) if w not in set(vocab)]
    if not tiny:
        if len(vocab) > BERT_VOCAB_SIZE:
            raise ValueError(f"the generated vocabulary ({len(vocab)}) exceeds bert-base-uncased's ({BERT_VOCAB_SIZE})")
        vocab += [f"[unused{i}]" for i in range(99, 99 + BERT_VOCAB_SIZE - len(vocab))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if int(transformers.__version__.split(".")[0]) >= 5:
        from transformers import BertTokenizer  # v5: the tokenizers-backed class takes the vocabulary as `vocab`

        tok = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512)
    else:
        from transformers import BertTokenizerFast

        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512)
    if (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) != (0, 100, 101, 102):
        raise RuntimeError(f"the generated tokenizer lost bert's special ids: cls {tok.cls_token_id}")
    if tiny:
        config = BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    else:
        # bert-base-uncased: vocab 30522, 768 hidden, 12 layers, 12 heads, 3072 ffn, 512 positions
        config = BertConfig()
    config.architectures = ["BertForPreTraining"]
    model = BertForPreTraining(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model


def wav2vec2_folder(folder: Path, tiny: bool) -> None:
    """A wav2vec2-base-shaped pre-training checkpoint at random weights and its feature extractor, in ``folder``."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

    base = {"feat_proj_dropout": 0.1, "architectures": ["Wav2Vec2ForPreTraining"]}  # as facebook/wav2vec2-base's config
    if tiny:  # the real conv strides (320 samples = 20 ms a frame), few channels, 2 small layers
        config = Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            codevector_dim=16,
            proj_codevector_dim=16,
            num_codevectors_per_group=8,
            **base,
        )
    else:
        config = Wav2Vec2Config(**base)  # transformers' defaults are the base model: 768 hidden, 12 layers, 12 heads
    model = Wav2Vec2ForPreTraining(config)
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(folder)
    del model


# ----------------------------------------------------------------------------- params: profile full, local


def deep_set(d: dict, path: str, value: Any) -> None:
    """``d[a][b][c] = value`` for ``path`` "a.b.c", making the missing (or null) levels."""
    keys = path.split(".")
    for k in keys[:-1]:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[keys[-1]] = value


def full_params(params_path: Path, out: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A copy of params.yaml with ``profile: full`` and ``overrides`` (dotted keys) written to ``out``."""
    import yaml

    from adaptive_lr.config import read_yaml

    raw = read_yaml(Path(params_path).read_text())
    raw["profile"] = "full"
    for key, value in (overrides or {}).items():
        deep_set(raw, key, value)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def train_rows(steps_per_epoch: int, batch: int, fraction: float, even: bool) -> int:
    """Rows of a train file whose split (``sources.split_indices``: round(n * fraction) held out) trains
    exactly ``steps_per_epoch`` full batches."""
    want = steps_per_epoch * batch
    n = want + 1
    while n - max(1, int(round(n * fraction))) != want or (even and n % 2):
        n += 1
        if n > 4 * want + 8:
            raise ValueError(f"no train size gives {want} training samples at validation_split {fraction}")
    return n


# ----------------------------------------------------------------------------- measurement


class Recorder:
    """What the instrumented task methods see: step seconds, batch shapes, evaluation time and units."""

    def __init__(self, task: str):
        self.task = task
        self.steps: list[float] = []
        self.data_s: list[float] = []
        self.step_samples: list[int] = []
        self.step_units: list[float] = []
        self.eval_s, self.eval_samples, self.eval_units = 0.0, 0, 0.0
        self.shapes: dict[str, dict[str, list[int]]] = {"train": {}, "eval": {}}
        self.params: tuple[int, int] | None = None

    def units(self, batch: dict) -> float:
        """Images, tokens (real, not padding) or seconds of audio (real samples) in a batch."""
        if self.task == "vision":
            return float(len(batch["y"]))
        if self.task == "text":
            return float(batch["attention_mask"].sum())
        return float(batch["attention_mask"].sum()) / SAMPLE_RATE

    def see(self, kind: str, batch: dict) -> None:
        for key, value in batch.items():
            if torch.is_tensor(value):
                old = self.shapes[kind].get(key)
                shape = list(value.shape)
                self.shapes[kind][key] = shape if old is None else [max(a, b) for a, b in zip(old, shape)]


class TimedBatches:
    """A task's batches, passed through: records each batch's shapes and, for training, each step's seconds.

    A step is the time from handing out a batch to the loop asking for the next one, less the time
    spent in ``evaluate_batch`` meanwhile (an in-epoch probe); fetching and collating a batch is
    recorded apart (``data_s``).
    """

    def __init__(self, inner, rec: Recorder, train: bool):
        self.inner, self.rec, self.train = inner, rec, train

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        it = iter(self.inner)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            t1 = time.perf_counter()
            self.rec.see("train" if self.train else "eval", batch)
            if not self.train:
                yield batch
                continue
            eval_before = self.rec.eval_s
            yield batch
            self.rec.steps.append(time.perf_counter() - t1 - (self.rec.eval_s - eval_before))
            self.rec.data_s.append(t1 - t0)
            self.rec.step_samples.append(int(next(v for v in batch.values() if torch.is_tensor(v)).shape[0]))
            self.rec.step_units.append(self.rec.units(batch))


def instrument(task: str, rec: Recorder) -> None:
    """Wrap the task class's ``batches``, ``evaluate_batch`` and ``build_model`` (this process only)."""
    from adaptive_lr.tasks import task_class

    cls = task_class(task)
    batches, evaluate_batch, build_model = cls.batches, cls.evaluate_batch, cls.build_model

    def timed_batches(self, dataset, batch_size, shuffle, generator):
        return TimedBatches(batches(self, dataset, batch_size, shuffle, generator), rec, train=shuffle)

    def timed_evaluate_batch(self, model, batch):
        start = time.perf_counter()
        out = evaluate_batch(self, model, batch)
        rec.eval_s += time.perf_counter() - start
        rec.eval_samples += out.count
        rec.eval_units += rec.units(batch)
        return out

    def counted_build_model(self):
        model = build_model(self)
        if rec.params is None:
            total = sum(p.numel() for p in model.parameters())
            rec.params = (total, sum(p.numel() for p in model.parameters() if p.requires_grad))
        return model

    cls.batches, cls.evaluate_batch, cls.build_model = timed_batches, timed_evaluate_batch, counted_build_model


class PeakRSS(threading.Thread):
    """Samples this process's resident set every ``interval`` seconds; ``peak_mb`` is the largest seen."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak_mb, self._halt = interval, 0.0, threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def rss_mb(self) -> float:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self.page / 2**20
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_mb = max(self.peak_mb, self.rss_mb())
            self._halt.wait(self.interval)

    def stop(self) -> float:
        self._halt.set()
        if self.ident is not None:  # started
            self.join()
        return max(self.peak_mb, self.rss_mb())


# ----------------------------------------------------------------------------- one task (child process)


def setup_task(args: argparse.Namespace, work: Path) -> tuple[Path, dict]:
    """Local parquet, the model folder and the params copy of one task; (params path, facts for the report)."""
    import numpy as np

    from adaptive_lr.config import load_params

    task = args.child
    rng = np.random.default_rng(0)
    base = load_params(full_params(args.params, work / "params.full.yaml")).tasks[task]  # the full profile as is
    batch, fraction = base.batch_size, base.validation_split
    spe = steps_per_epoch(args)
    src, model_dir = work / "src", work / "model"
    src.mkdir(parents=True, exist_ok=True)
    over: dict[str, Any] = {
        "common.seeds": list(range(args.repeats)),
        "common.threads": args.threads,
        "common.device": args.device,
        "grid": {"multipliers": [1.0], "extra_seeds": [], "workers": 1},
        "schedules.adaptive.probe_budget": args.probe_budget,
    }
    prof = f"profiles.full.tasks.{task}"
    over |= {f"{prof}.source": "local", f"{prof}.path": str(src)}
    over |= {f"{prof}.epochs": args.epochs, f"{prof}.patience": args.epochs + 1}
    facts: dict[str, Any] = {"batch_size": batch, "steps_per_epoch": spe}
    if task == "vision":
        n = train_rows(spe, batch, fraction, even=False)
        write_vision(src, n + 1, batch, rng)
        over[f"{prof}.data.max_examples"] = n
        if args.tiny:
            over[f"{prof}.model.width"] = 4
        facts["fixture"] = f"{n + 1} train / {batch} test rows of 32x32 PNG; max_examples {n}"
    elif task == "text":
        n = train_rows(spe, batch, fraction, even=True)
        words = COMMON + pseudo_words(rng, 300 if args.tiny else 6000, set(COMMON))
        pool = words + pseudo_words(rng, 60 if args.tiny else 2000, set(words))  # some words split into ##pieces
        length = (15, 45) if args.tiny else (80, 360)  # words; IMDB: mean ~230 words (~300 tokens)
        write_text(src, n + 2, batch + 2, pool + POSITIVE + NEGATIVE, length, rng)
        bert_folder(model_dir, words + POSITIVE + NEGATIVE, args.tiny)
        over |= {f"{prof}.data.n_train": n, f"{prof}.data.n_test": batch, f"{prof}.model.name": str(model_dir)}
        if args.tiny:
            over[f"{prof}.data.max_length"] = 32
        facts["fixture"] = f"{n + 2} train / {batch + 2} test reviews of {length[0]}-{length[1]} words; n_train {n}"
    else:
        words = COMMON + pseudo_words(rng, 2000, set(COMMON))
        rows = {"train": spe * batch + 2, "validation": batch + 2, "test": batch + 2}
        seconds = write_speech(src, rows, args.seconds_max, words, rng)
        wav2vec2_folder(model_dir, args.tiny)
        over |= {
            f"{prof}.data.max_train": spe * batch,
            f"{prof}.data.max_val": batch,
            f"{prof}.data.max_test": batch,
            f"{prof}.data.max_seconds": args.seconds_max,
            f"{prof}.model.name": str(model_dir),
        }
        facts["fixture"] = (
            f"{'/'.join(str(v) for v in rows.values())} train/validation/test clips of 1-{args.seconds_max:g} s, "
            f"one of {args.seconds_max + 1:g} s in each ({sum(seconds.values()):.0f} s of audio in all); "
            f"max_seconds {args.seconds_max:g}, max_train {spe * batch}, max_val/max_test {batch}"
        )
    if model_dir.exists():
        facts["model_dir_mb"] = sum(p.stat().st_size for p in model_dir.iterdir()) / 2**20
    return full_params(args.params, work / "params.yaml", over), facts


def run_child(args: argparse.Namespace) -> int:
    """Set up one task and run the pipeline on it; the outcome goes to ``<work>/result.json``."""
    task, work = args.child, Path(args.work)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"task": task, "ok": False}
    rec = Recorder(task)
    sampler = None
    try:
        import datasets

        from adaptive_lr import pipeline
        from adaptive_lr.config import load_params
        from adaptive_lr.records import EvalRecord
        from adaptive_lr.usage import _reset_peak_rss, peak_rss_mb

        datasets.disable_progress_bars()  # the fixtures' writes; load_real turns them off for the reads too
        if task != "vision":  # (vision never imports transformers: a second or more saved)
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        start = time.perf_counter()
        params_path, facts = setup_task(args, work)
        result |= facts
        result["fixture_s"] = time.perf_counter() - start
        params = load_params(params_path)
        cfg = params.tasks[task]
        result |= {"amp": cfg.amp, "lr": cfg.lr, "epochs": cfg.epochs, "seeds": list(cfg.seeds)}
        instrument(task, rec)
        root = work / "root"
        import gc

        gc.collect()
        sampler = PeakRSS()
        result["rss_before_mb"] = sampler.rss_mb()
        _reset_peak_rss()
        cuda = torch.cuda.is_available() and cfg.device != "cpu"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sampler.start()
        t = time.perf_counter()
        result["sizes"] = pipeline.prepare(params, task, root)
        result["prepare_s"] = time.perf_counter() - t
        t = time.perf_counter()
        runs = pipeline.train_cell(params, task, args.schedule, root)
        result["train_s"] = time.perf_counter() - t
        records = [
            EvalRecord.from_json(pipeline.run_paths(root, task, args.schedule, m, seed).metrics, "train")
            for m, seed in runs
        ]
        result["peak_rss_mb"] = max(sampler.stop(), peak_rss_mb())  # VmHWM: since train_one's reset
        sampler = None
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        result["device"] = "cuda" if cuda else "cpu"
        result["runs"] = [
            {
                "probes": r.probes,
                "epochs_run": r.epochs_run,
                "best_val_loss": r.best_val_loss,
                "optim_s": r.optim_seconds,
                "probe_s": r.probe_seconds,
                "val_s": r.val_seconds,
                "checkpoint_s": r.checkpoint_seconds,
                "diverged_epoch": r.diverged_epoch,
            }
            for r in runs.values()
        ]
        result["records"] = [
            {
                "metric": e.metric,
                "test_metric": e.test_metric,
                "test_loss": e.test_loss,
                "test_samples": e.test_samples,
                "eval_samples_per_s": e.eval_samples_per_s,
                "train_loop_rss_mb": e.peak_rss_mb,
                "train_loop_gpu_mb": e.gpu_peak_mb,
            }
            for e in records
        ]
        problems = []
        if any(r["diverged_epoch"] for r in result["runs"]):
            problems.append("a run diverged")
        if any(e["test_metric"] is None for e in result["records"]):
            problems.append("no test metric (no checkpoint)")
        probing = args.schedule == "adaptive" and args.epochs >= 2 and args.probe_budget > 0
        if probing and steps_per_epoch(args) >= 2 and not any(r["probes"] for r in result["runs"]):
            problems.append("the adaptive schedule ran no probe")
        if not rec.steps:
            problems.append("no training step was timed")
        if problems:
            raise RuntimeError("; ".join(problems))
        result["ok"] = True
    except Exception as exc:
        result["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:600]
        result["traceback"] = traceback.format_exc()[-4000:]
    finally:
        if sampler is not None:
            result.setdefault("peak_rss_mb", sampler.stop())
        result |= {
            "params": rec.params,
            "steps": rec.steps,
            "data_s": rec.data_s,
            "step_samples": rec.step_samples,
            "step_units": rec.step_units,
            "eval_s": rec.eval_s,
            "eval_samples": rec.eval_samples,
            "eval_units": rec.eval_units,
            "shapes": rec.shapes,
        }
        (work / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["ok"] else 1


# ----------------------------------------------------------------------------- the parent: one process per task


def steps_per_epoch(args: argparse.Namespace) -> int:
    return -(-args.steps // args.epochs)


def child_command(args: argparse.Namespace, task: str, work: Path) -> list[str]:
    cmd = [sys.executable, str(SCRIPT), "--child", task, "--work", str(work)]
    cmd += ["--steps", str(args.steps), "--epochs", str(args.epochs), "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads), "--device", args.device, "--schedule", args.schedule]
    cmd += ["--probe-budget", str(args.probe_budget), "--seconds-max", str(args.seconds_max)]
    cmd += ["--params", str(args.params)] + (["--tiny"] if args.tiny else [])
    return cmd


def run_task(args: argparse.Namespace, task: str, work: Path) -> dict:
    """Run one task's child, its output streamed with a margin; its result (or why there is none)."""
    work.mkdir(parents=True)
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",  # the smoke must not reach for the hub: everything it needs is local
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_CACHE=str(work / "hf_datasets"),  # the parquet's arrow cache: in the scratch folder
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    if args.threads > 0:
        env.setdefault("OMP_NUM_THREADS", str(args.threads))
    start = time.perf_counter()
    tail: list[str] = []
    proc = subprocess.Popen(
        child_command(args, task, work), cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        # progress bars redraw with carriage returns: keep their last state
        line = line.rsplit("\r", 1)[-1]
        print(f"  | {line}", flush=True)
        tail = (tail + [line])[-20:]
    rc = proc.wait()
    out_file = work / "result.json"
    if out_file.exists():
        result = json.loads(out_file.read_text())
    else:
        why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
        result = {"task": task, "ok": False, "error": f"the task's process ended with {why} and no result", "steps": []}
        result["traceback"] = "\n".join(tail)
    result["wall_s"] = time.perf_counter() - start
    return result


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))}f}"


def max_input(task: str, r: dict) -> str:
    """The largest batch the task saw (training, or evaluation where larger)."""
    shapes = [r.get("shapes", {}).get(k, {}) for k in ("train", "eval")]
    if task == "vision":
        x = [s["x"] for s in shapes if "x" in s]
        return f"{max(v[0] for v in x)}x{'x'.join(map(str, x[0][1:]))}" if x else "-"
    if task == "text":
        ids = [s["input_ids"] for s in shapes if "input_ids" in s]
        return f"{max(v[0] for v in ids)}x{max(v[1] for v in ids)} tok" if ids else "-"
    vals = [s["input_values"] for s in shapes if "input_values" in s]
    labels = [s["labels"] for s in shapes if "labels" in s]
    if not vals:
        return "-"
    samples = max(v[1] for v in vals)
    return f"{max(v[0] for v in vals)}x{samples} ({samples / SAMPLE_RATE:g} s, {max(v[1] for v in labels)} chars)"


def rates(r: dict) -> dict[str, float | None]:
    steps = r.get("steps") or []
    train_s = sum(steps)
    return {
        "step_median": median(steps) if steps else None,
        "first_step": steps[0] if steps else None,
        "samples_s": sum(r.get("step_samples", [])) / train_s if train_s > 0 else None,
        "units_s": sum(r.get("step_units", [])) / train_s if train_s > 0 else None,
        "eval_samples_s": r.get("eval_samples", 0) / r["eval_s"] if r.get("eval_s") else None,
        "eval_units_s": r.get("eval_units", 0) / r["eval_s"] if r.get("eval_s") else None,
    }


def runs_per_task(params) -> tuple[int, int]:
    """(runs of every cell of one task in the study, cells): every schedule and ablation, at most (tuned != 1x)."""
    from adaptive_lr.grid import runs_of
    from adaptive_lr.pipeline import cell_extra_seeds, cell_multipliers

    total = 0
    for name in params.schedules:
        mults = cell_multipliers(params, name)
        tuned = next((m for m in mults if m != 1.0), 1.0)
        seeds = next(iter(params.tasks.values())).seeds
        total += len(runs_of(mults, seeds, cell_extra_seeds(params, name), tuned))
    return total, len(params.schedules)


def estimate(results: dict[str, dict], params_path: Path, scratch: Path) -> list[str]:
    """The GPU-hours estimate inputs: the measured rates scaled to the real datasets and the study's runs."""
    from adaptive_lr.config import load_params

    full = load_params(full_params(params_path, scratch / "params.estimate.yaml"))
    runs, cells = runs_per_task(full)
    lines = [
        "",
        f"GPU-hours estimate inputs (profile full as params.yaml has it; rates measured here, device above; "
        f"{cells} schedules and ablations, {runs} runs per task at most):",
    ]
    rows = []
    for task, r in results.items():
        cfg = full.tasks[task]
        real = REAL[task]
        rate = rates(r)
        unit = "images" if task == "vision" else ("reviews" if task == "text" else "audio s")
        train_rate = rate["samples_s"] if task != "speech" else rate["units_s"]
        eval_rate = rate["eval_samples_s"] if task != "speech" else rate["eval_units_s"]
        train_n = real["train"] if real["val"] is not None else real["train"] * (1 - cfg.validation_split)
        val_n = real["val"] if real["val"] is not None else real["train"] * cfg.validation_split
        if r.get("ok") and train_rate and eval_rate:
            epoch_h = (train_n / train_rate + val_n / eval_rate) / 3600
            run_h = cfg.epochs * epoch_h + real["test"] / eval_rate / 3600
            cols = [fmt(epoch_h), fmt(run_h), fmt(run_h * runs)]
        else:
            cols = ["-", "-", "-"]
        rows.append(
            [
                task,
                unit,
                fmt(train_rate),
                fmt(eval_rate),
                fmt(train_n),
                fmt(val_n),
                fmt(float(real["test"])),
                cfg.epochs,
            ]
            + cols
        )
    headers = ["task", "unit", "train /s", "eval /s", "train set", "val set", "test set", "epochs"]
    lines.append(table(headers + ["h/epoch", "h/run", f"h/{runs} runs"], rows))
    lines.append(
        "  (h/run: every epoch run, no early stop; probes add up to probe_budget of the training passes; the speech "
        "sets are the full audio, before max_seconds drops the longest clips; h/N runs: the runs one after another)"
    )
    return lines


def report(args: argparse.Namespace, results: dict[str, dict], scratch: Path) -> list[str]:
    rows = []
    for task, r in results.items():
        rate = rates(r)
        params = r.get("params")
        recs = r.get("records") or []
        metric = recs[0]["metric"] if recs else ""
        test = recs[0]["test_metric"] if recs else None
        train_loop = max((e["train_loop_rss_mb"] or 0 for e in recs), default=None)
        gpu = r.get("gpu_peak_mb")
        rows.append(
            [
                task,
                "pass" if r.get("ok") else "FAIL",
                f"{params[0] / 1e6:.2f}M ({params[1] / 1e6:.2f}M)" if params else "-",
                r.get("batch_size", "-"),
                max_input(task, r),
                len(r.get("steps") or []),
                fmt(rate["step_median"]),
                fmt(rate["first_step"]),
                fmt(median(r["data_s"])) if r.get("data_s") else "-",
                fmt(rate["samples_s"]),
                f"{fmt(rate['units_s'])} {UNIT[task]}",
                fmt(rate["eval_samples_s"]),
                fmt(r.get("peak_rss_mb")),
                fmt(train_loop),
                fmt(gpu) if gpu is not None else "-",
                sum(run["probes"] for run in r.get("runs", [])),
                f"{metric} {fmt(test)}" if recs else "-",
            ]
        )
    headers = ["task", "result", "params (trainable)", "batch", "largest batch", "steps", "s/step", "1st step s"]
    headers += [
        "data s",
        "samples/s",
        "units/s",
        "eval smp/s",
        "peak RSS MB",
        "loop RSS MB",
        "GPU MB",
        "probes",
        "test",
    ]
    lines = ["", table(headers, rows)]
    for task, r in results.items():
        if r.get("ok"):
            lines.append(
                f"  {task}: {r.get('fixture', '')}; prepared {r.get('sizes')}; prepare {fmt(r.get('prepare_s'))} s, "
                f"train and test {fmt(r.get('train_s'))} s, "
                f"process {fmt(r.get('wall_s'))} s; model folder {fmt(r.get('model_dir_mb'))} MB"
            )
    for task, r in results.items():
        if not r.get("ok"):
            lines += ["", f"FAILED {task}: {r.get('error')}"]
            lines += [f"    {line}" for line in (r.get("traceback") or "").strip().splitlines()[-15:]]
    lines.append("")
    for task, r in results.items():
        step = rates(r)["step_median"]
        if r.get("ok") and step:
            why = f"1 / median s per training step, batch {r['batch_size']}"
            lines.append(f"ratio steps/s ({task}): {1 / step:.4g}x  ({why})")
        else:
            lines.append(f"ratio steps/s ({task}): 0x  (failed; see above)")
    try:
        lines += estimate(results, args.params, scratch)
    except Exception as exc:  # the estimate is an extra: never hide the smoke's own outcome behind it
        lines.append(f"(no estimate: {type(exc).__name__}: {exc})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks to run (default: all)")
    parser.add_argument(
        "--steps",
        type=int,
        default=8,
        help="training steps per run, spread evenly over --epochs (rounded up to a multiple of it; default: 8)",
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs per run (default: 2: the adaptive probes start in epoch 2)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per task (seeds 0..N-1), their steps pooled (default: 1)"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="shrink the models (ResNet width 4, 2-layer BERT and wav2vec2 of 32 units) and inputs "
        "(32 tokens, clips up to 2 s) for the tests",
    )
    parser.add_argument(
        "--seconds-max",
        type=float,
        default=None,
        help="longest speech clip in seconds, and data.max_seconds (default: 16, the full profile's; --tiny: 2)",
    )
    parser.add_argument("--schedule", default="adaptive", help="schedule of params.yaml to train (default: adaptive)")
    parser.add_argument(
        "--probe-budget",
        type=float,
        default=1.0,
        help="schedules.adaptive.probe_budget for the smoke, so probes run on a few steps (default: 1.0)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (common.threads; 0 = all cores; default: 1)"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="common.device (default: auto)"
    )
    parser.add_argument(
        "--params", type=Path, default=REPO / "params.yaml", help="params file (default: the repository's)"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="write the scratch files (data, models, runs) here and keep them"
    )
    parser.add_argument("--child", choices=TASKS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "epochs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.steps < args.epochs:
        parser.error(f"--steps ({args.steps}) must be >= --epochs ({args.epochs}): every epoch needs a step")
    if not 0 <= args.probe_budget <= 1:
        parser.error(f"--probe-budget must lie in [0, 1], got {args.probe_budget}")
    if args.seconds_max is None:
        args.seconds_max = 2.0 if args.tiny else 16.0
    if args.seconds_max < 1:
        parser.error(f"--seconds-max must be >= 1, got {args.seconds_max}")
    args.params = Path(args.params).resolve()
    if args.child:
        return run_child(args)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from adaptive_lr.config import load_params
    from adaptive_lr.errors import ParamsError

    with tempfile.TemporaryDirectory(prefix="adaptive_lr_full_smoke.") as tmp:
        try:
            params = load_params(full_params(args.params, Path(tmp) / "params.yaml"))
        except (ParamsError, OSError) as exc:
            print(f"error: {args.params} with profile full: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
    if args.schedule not in params.schedules:
        parser.error(f"--schedule {args.schedule!r}: not in params.yaml ({', '.join(params.schedules)})")
    spe = steps_per_epoch(args)
    print("full_smoke: profile full's code path offline: local parquet in the hub schemas, real architectures at")
    print("random weights, pipeline.prepare -> train_cell (train, then test), one process per task")
    print(
        f"run: {'TINY models and inputs' if args.tiny else 'real sizes'}; schedule {args.schedule}, {args.epochs} "
        f"epoch(s) x {spe} step(s), {args.repeats} seed(s), threads {args.threads}, device {args.device}, "
        f"speech clips up to {args.seconds_max:g} s, probe_budget {args.probe_budget:g}"
    )
    print(machine(), flush=True)
    scratch = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="adaptive_lr_full_smoke."))
    if args.keep:
        scratch.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    try:
        for task in args.tasks:
            print(f"\n[{task}]", flush=True)
            work = scratch / task
            if work.exists():
                shutil.rmtree(work)
            results[task] = run_task(args, task, work)
            r = results[task]
            print(f"[{task}] {'pass' if r.get('ok') else 'FAIL: ' + str(r.get('error'))}", flush=True)
        print("\n".join(report(args, results, scratch)))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
