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

Knobs in ``cfg.data`` (all optional; kinds, defaults and ranges in :data:`DATA_SPEC`):
``words``, ``voices``, ``n_train``, ``n_test``, ``rate``, ``pitch``,
``snr_db``, ``pad_s`` (builtin only); ``max_train``, ``max_val``, ``max_test``,
``max_seconds`` (caps, every source); ``hub_name``, ``hub_config``,
``hub_splits`` (hub only).

Knobs in ``cfg.model`` (kinds, defaults and ranges in :data:`MODEL_SPEC`): ``name``
(pretrained id for hub/local); ``hidden_size``, ``num_layers``, ``num_heads``,
``ffn_size``, ``conv_channels``, ``conv_kernel``, ``conv_stride``,
``pos_conv_kernel``, ``pos_conv_groups`` (builtin only); ``dropout``,
``layerdrop``, ``mask_time_prob`` (every source; ``null`` keeps a pretrained
model's own value).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adaptive_lr.errors import DataError, ParamsError
from adaptive_lr.files import save_torch
from adaptive_lr.tasks.base import EvalBatch, Task
from adaptive_lr.tasks.batching import LengthGroupedBatches
from adaptive_lr.tasks.sources import load_real, load_split, require_columns, split_indices
from adaptive_lr.tasks.speech.audio import PAD_MULTIPLE, SAMPLE_RATE, _trim, decode_audio, resample, to_int16
from adaptive_lr.tasks.speech.ctc import VOCAB, ctc_greedy_decode, encode_text, normalize_text
from adaptive_lr.tasks.speech.espeak import DEFAULT_VOICES, DEFAULT_WORDS, _Espeak, draw
from adaptive_lr.validation import Knob

# the knobs under tasks.speech.data and tasks.speech.model: kind, default, range
DATA_SPEC: dict[str, Knob] = {
    # an int N for the first N of DEFAULT_WORDS (the digits), or a list of words
    "words": Knob(
        ("int", "strs"),
        10,
        ge=1,
        le=len(DEFAULT_WORDS),
        min_items=1,
        hint="N: the first N built-in words; in a list, quote yes/no/on/off or YAML reads booleans",
    ),
    "voices": Knob("strs", DEFAULT_VOICES, min_items=1),  # espeak-ng voices
    "n_train": Knob("int", 1200, ge=2),  # builtin: utterances split into train/val by cfg.validation_split
    "n_test": Knob("int", 300, ge=1),  # builtin: utterances in the separate test set
    "rate": Knob("span", [120, 190], ge=80, le=450),  # espeak words per minute (its range), uniform
    "pitch": Knob("span", [30, 70], ge=0, le=99),  # espeak pitch 0-99, uniform
    "snr_db": Knob("span", [20, 40]),  # white-noise SNR, uniform
    "pad_s": Knob("span", [0.0, 0.05], ge=0),  # silence added before and after the word, uniform (seconds)
    "max_train": Knob("int", None, ge=1),  # caps on split sizes (null = all)
    "max_val": Knob("int", None, ge=1),
    "max_test": Knob("int", None, ge=1),
    "max_seconds": Knob("float", None, gt=0),  # drop longer clips (hub/local; null = keep all)
    "hub_name": Knob("str", "openslr/librispeech_asr"),
    "hub_config": Knob("str", "clean", null=True),
    "hub_splits": Knob("mapping", {"train": "train.100", "val": "validation", "test": "test"}),
}

MODEL_SPEC: dict[str, Knob] = {
    "name": Knob("str", "facebook/wav2vec2-base"),  # hub/local only
    "hidden_size": Knob("int", 256, ge=1),
    "num_layers": Knob("int", 4, ge=1),
    "num_heads": Knob("int", 4, ge=1),
    "ffn_size": Knob("int", 1024, ge=1),
    "conv_channels": Knob("int", 64, ge=1),
    # "group": GroupNorm on the first conv only; "layer": LayerNorm after each
    "conv_norm": Knob("str", "group", choices=("group", "layer")),
    "conv_kernel": Knob("ints", [10, 3, 3, 3, 2], ge=1, min_items=1),
    # product 640 = one frame per 40 ms: half the encoder work of wav2vec2's 20 ms,
    # and CTC leaves its all-blank plateau in far fewer steps on short words
    "conv_stride": Knob("ints", [5, 4, 4, 4, 2], ge=1, min_items=1),
    "pos_conv_kernel": Knob("int", 64, ge=1),
    "pos_conv_groups": Knob("int", 16, ge=1),
    "attention": Knob("str", "eager", choices=("eager", "sdpa")),
    "dropout": Knob("float", 0.0, null=True, ge=0, lt=1),  # null keeps a pretrained model's own value
    "layerdrop": Knob("float", 0.0, null=True, ge=0, lt=1),
    "mask_time_prob": Knob("float", 0.0, null=True, ge=0, le=1),
}


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


# --------------------------------------------------------------------------- task


class SpeechTask(Task):
    """Character CTC speech recognition scored by word error rate (lower is better)."""

    name = "speech"
    metric = "wer"
    higher_is_better = False
    data_spec = DATA_SPEC
    model_spec = MODEL_SPEC

    @classmethod
    def check_knobs(cls, data: dict | None, model: dict | None) -> tuple[dict, dict]:
        data, model = super().check_knobs(data, model)
        words = data.get("words")
        if isinstance(words, list) and not all(normalize_text(w) for w in words):
            raise ParamsError(f"tasks.speech.data.words = {words!r}: each word must hold a letter")
        return data, model

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
        max_s = self.data_cfg["max_seconds"]
        if max_s and self.cfg.source != "builtin":
            keep = [i for i, a in enumerate(audio) if a.numel() <= max_s * SAMPLE_RATE]
            audio, text = [audio[i] for i in keep], [text[i] for i in keep]
        cap = self.data_cfg[f"max_{split}"]
        if cap is not None:
            audio, text = audio[: int(cap)], text[: int(cap)]
        return audio, text

    def _words(self) -> list[str]:
        words = self.data_cfg["words"]  # checked when params.yaml was read (DATA_SPEC, check_knobs)
        return [normalize_text(w) for w in (DEFAULT_WORDS[:words] if isinstance(words, int) else words)]

    def _builtin(self, seed: int) -> dict[str, tuple[list, list]]:
        d = self.data_cfg  # its ranges were checked when params.yaml was read (DATA_SPEC)
        words, voices = self._words(), list(d["voices"])
        n_test, n_train = int(d["n_test"]), int(d["n_train"])
        rng = np.random.default_rng(seed)
        engine = _Espeak()
        try:
            # the test set is drawn first, so it does not change with n_train
            test = self._synth_many(engine, rng, words, voices, n_test)
            rest = self._synth_many(engine, rng, words, voices, n_train)
        finally:
            engine.close()
        train_i, val_i = split_indices(
            n_train, self.cfg.validation_split, seed + 1, "tasks.speech.data.n_train / validation_split"
        )
        pick = lambda idx: ([rest[0][i] for i in idx], [rest[1][i] for i in idx])  # noqa: E731
        return {"train": pick(train_i), "val": pick(val_i), "test": test}

    def _synth_many(self, engine: _Espeak, rng, words, voices, n) -> tuple[list, list]:
        d = self.data_cfg
        # Draw every random choice before synthesising: espeak-ng's output can differ
        # by a few samples from run to run, and must not shift the draws that follow.
        specs = [
            (
                words[int(rng.integers(len(words)))],
                voices[int(rng.integers(len(voices)))],
                int(round(draw(rng, d["rate"]))),
                int(round(draw(rng, d["pitch"]))),
                draw(rng, d["snr_db"]),
                (draw(rng, d["pad_s"]), draw(rng, d["pad_s"])),
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

        d = self.data_cfg
        names = {"train": d["hub_splits"]["train"], "val": d["hub_splits"]["val"], "test": d["hub_splits"]["test"]}
        raw = load_real(
            self.cfg,
            d["hub_name"],
            d["hub_config"],
            list(names.values()),
            columns={"audio": "struct", "text": "string"},
        )
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
            train_i, val_i = split_indices(
                len(audio),
                self.cfg.validation_split,
                seed,
                f"{self.cfg.path or d['hub_name']} (train) / validation_split",
            )
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
        return {
            "input_values": values,
            "attention_mask": mask,
            "labels": labels,
            "references": [it["text"] for it in items],
        }

    def batches(
        self, dataset: torch.utils.data.Dataset, batch_size: int, shuffle: bool, generator: torch.Generator
    ) -> Iterable[dict[str, Any]]:
        """Length-grouped batches (see :class:`LengthGroupedBatches`): little padding per batch."""
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:  # e.g. a Subset of a SpeechDataset: measure each clip
            lengths = [int(dataset[i]["input_values"].numel()) for i in range(len(dataset))]
        return LengthGroupedBatches(dataset, batch_size, shuffle, generator, self.collate, lengths, PAD_MULTIPLE)

    # model ------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """A small Wav2Vec2ForCTC from config (builtin), else a pretrained one with a fresh CTC head."""
        from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

        m = self.model_cfg
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
