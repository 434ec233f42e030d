"""The speech task: espeak-ng stand-in, local parquet source, batching, CTC decoding, model."""

from __future__ import annotations

import io
import math

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch

from adaptive_lr.config import ParamsError, TaskConfig
from adaptive_lr.errors import DataError
from adaptive_lr.tasks.speech import PAD_MULTIPLE, SAMPLE_RATE, VOCAB, SpeechTask, ctc_greedy_decode, normalize_text

TINY_MODEL = {
    "hidden_size": 64,
    "num_layers": 1,
    "num_heads": 2,
    "ffn_size": 128,
    "conv_channels": 16,
    "pos_conv_kernel": 16,
}


def _cfg(**kw) -> TaskConfig:
    base = dict(
        task="speech", batch_size=4, seeds=(0,), target_val_loss=1.0, data={"n_train": 20, "n_test": 6, "words": 4}
    )
    base.update(kw)
    return TaskConfig(**base)


@pytest.fixture(scope="module")
def tiny_builtin(tmp_path_factory):
    task = SpeechTask(_cfg(model=TINY_MODEL))
    out = tmp_path_factory.mktemp("speech")
    sizes = task.prepare(out, seed=3)
    return task, out, sizes


def test_builtin_prepare_splits_and_shapes(tiny_builtin):
    task, out, sizes = tiny_builtin
    assert sizes == {"train": 16, "val": 4, "test": 6}
    assert {p.name for p in out.iterdir()} == {"train.pt", "val.pt", "test.pt", "vocab.json"}
    words = {"ZERO", "ONE", "TWO", "THREE"}
    for split, n in sizes.items():
        ds = task.load(out, split)
        assert len(ds) == n
        assert all(a.dtype == torch.int16 and a.dim() == 1 for a in ds.audio)
        assert set(ds.text) <= words
        # trimmed single words: between a few tenths of a second and about a second
        assert 0.15 * SAMPLE_RATE < ds.lengths.min() and ds.lengths.max() < 1.2 * SAMPLE_RATE
        item = ds[0]
        assert abs(float(item["input_values"].mean())) < 1e-3 and abs(float(item["input_values"].std()) - 1) < 1e-2
        assert "".join(VOCAB[i] for i in item["labels"].tolist()) == item["text"]


def test_builtin_prepare_is_deterministic(tiny_builtin, tmp_path):
    task, out, _ = tiny_builtin
    for name in ("again", "third"):
        task.prepare(tmp_path / name, seed=3)
    task.prepare(tmp_path / "other_seed", seed=4)
    for split in ("train", "val", "test"):
        first, again, third = (task.load(d, split) for d in (out, tmp_path / "again", tmp_path / "third"))
        assert first.text == again.text == third.text
        assert all(torch.equal(x, y) for x, y in zip(again.audio, third.audio))
        # the first espeak-ng synthesis in a process can come out a sample or two longer
        assert np.abs(first.lengths - again.lengths).max() <= 16
    assert task.load(out, "train").text != task.load(tmp_path / "other_seed", "train").text


def test_collate_pads_to_tenths_and_masks_labels():
    task = SpeechTask(_cfg())
    items = [
        {"input_values": torch.ones(1700), "labels": torch.tensor([5, 6, 7]), "text": "CDE"},
        {"input_values": torch.ones(900), "labels": torch.tensor([3]), "text": "A"},
    ]
    batch = task.collate(items)
    assert batch["input_values"].shape == (2, 2 * PAD_MULTIPLE)
    assert batch["attention_mask"].sum(1).tolist() == [1700, 900]
    assert float(batch["input_values"][1, 900:].abs().sum()) == 0.0
    assert batch["labels"].tolist() == [[5, 6, 7], [3, -100, -100]]
    assert batch["references"] == ["CDE", "A"]


def test_batches_group_by_length_and_reshuffle(tiny_builtin):
    task, out, _ = tiny_builtin
    ds = task.load(out, "train")
    batches = task.batches(ds, 4, True, torch.Generator().manual_seed(0))
    assert len(batches) == math.ceil(len(ds) / 4)
    first = batches.groups()
    assert sorted(i for g in first for i in g) == list(range(len(ds)))
    # groups are contiguous in length: no batch spans more than its neighbours' lengths
    buckets = -(-ds.lengths // PAD_MULTIPLE)
    spans = sorted((buckets[g].min(), buckets[g].max()) for g in first)
    assert all(hi <= nxt_lo for (_, hi), (nxt_lo, _) in zip(spans, spans[1:]))
    assert first != batches.groups()  # a new draw every pass (every epoch)
    again = task.batches(ds, 4, True, torch.Generator().manual_seed(0)).groups()
    assert again == first
    for batch in batches:
        assert batch["input_values"].shape[1] % PAD_MULTIPLE == 0
        assert batch["input_values"].shape[1] - int(batch["attention_mask"].sum(1).max()) < PAD_MULTIPLE


def test_greedy_ctc_decoding_on_handmade_logits():
    ids = {c: i for i, c in enumerate(VOCAB)}
    # frames: H H <b> I I <space> <b> I <pad frames ignored via length>
    path = [ids["H"], ids["H"], 0, ids["I"], ids["I"], ids[" "], 0, ids["I"], ids["Z"], ids["Z"]]
    logits = torch.full((1, len(path), len(VOCAB)), -5.0)
    for t, i in enumerate(path):
        logits[0, t, i] = 5.0
    assert ctc_greedy_decode(logits, torch.tensor([8])) == ["HI I"]
    assert ctc_greedy_decode(logits) == ["HI IZ"]
    assert ctc_greedy_decode(torch.zeros(1, 3, len(VOCAB))) == [""]  # all blank


def test_score_matches_jiwer():
    task = SpeechTask(_cfg())
    refs, hyps = ["THE CAT SAT", "ON THE MAT", "ONE"], ["THE CAT SAT", "ON A MAT HERE", ""]
    assert task.score(hyps, refs) == pytest.approx(jiwer.wer(refs, hyps))
    assert task.score(hyps, refs) == pytest.approx(3 / 7)  # 1 substitution + 1 insertion + 1 deletion
    assert normalize_text("Don't  stop-me, now!") == "DON'T STOP ME NOW"


def _wav_bytes(seconds: float, sr: int, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write_parquet(path, rows, columns=("audio", "text")):
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = {}
    if "audio" in columns:
        table["audio"] = pa.array([{"bytes": b, "path": p} for b, p, _ in rows], type=audio_type)
    if "text" in columns:
        table["text"] = pa.array([t for _, _, t in rows], type=pa.string())
    pq.write_table(pa.table(table), path)


def test_local_parquet_source_resamples_and_splits(tmp_path):
    src = tmp_path / "libri"
    src.mkdir()
    train = [(_wav_bytes(0.5, 16000), f"t{i}.flac", "hello world") for i in range(3)]
    train += [(_wav_bytes(0.5, 8000), f"t{i}.flac", "Mister Quilter's, manner!") for i in range(3, 6)]
    _write_parquet(src / "train-00000.parquet", train)
    _write_parquet(src / "test-00000.parquet", [(_wav_bytes(0.25, 8000), "x.flac", "a test")])
    task = SpeechTask(_cfg(source="local", path=str(src), data={}))
    sizes = task.prepare(tmp_path / "out", seed=0)
    assert sizes == {"train": 5, "val": 1, "test": 1}  # no validation file: 20% of train split off
    texts = task.load(tmp_path / "out", "train").text + task.load(tmp_path / "out", "val").text
    assert sorted(set(texts)) == ["HELLO WORLD", "MISTER QUILTER'S MANNER"]
    for split in ("train", "val"):
        assert set(task.load(tmp_path / "out", split).lengths.tolist()) == {8000}  # 8 kHz clips resampled
    test = task.load(tmp_path / "out", "test")
    assert test.lengths.tolist() == [4000] and test.text == ["A TEST"]


_GOOD_CLIP = (_wav_bytes(0.2, 16000), "b.wav", "hi")


@pytest.mark.parametrize(
    "train_rows, columns, message",
    [
        # a file without the transcript column: the error names the file and the column
        ([_GOOD_CLIP], ("audio",), r"train\.parquet: missing column 'text'"),
        # an empty clip among good ones: the error names the clip
        ([_GOOD_CLIP, (_wav_bytes(0.0, 16000), "silent-42.wav", "x")], None, r"silent-42\.wav.*empty"),
        # bytes that are no audio: the error names the clip
        ([(b"not audio at all", "junk-7.flac", "hi")] * 2, None, r"junk-7\.flac.*cannot decode"),
    ],
    ids=["missing-column", "empty-clip", "unreadable-clip"],
)
def test_local_bad_input_is_named(tmp_path, train_rows, columns, message):
    src = tmp_path / "bad"
    src.mkdir()
    _write_parquet(src / "train.parquet", train_rows, **({"columns": columns} if columns else {}))
    _write_parquet(src / "test.parquet", [_GOOD_CLIP])
    task = SpeechTask(_cfg(source="local", path=str(src), data={}))
    with pytest.raises(DataError, match=message):
        task.prepare(tmp_path / "out", seed=0)


def test_unknown_knob_is_rejected():
    with pytest.raises(ParamsError, match="n_utterances"):
        SpeechTask(_cfg(data={"n_utterances": 3}))
    with pytest.raises(ParamsError, match=r"tasks.speech.data.rate: expected a number or \[low, high\], got 'fast'"):
        SpeechTask(_cfg(data={"rate": "fast"}))
    # ranges are checked when the task is configured, before any data is drawn
    with pytest.raises(ParamsError, match=r"tasks.speech.data.pitch = \[70, 30\]: low must not exceed high"):
        SpeechTask(_cfg(data={"pitch": [70, 30], "n_train": 2, "n_test": 1}))
    with pytest.raises(ParamsError, match="quote yes/no"):
        SpeechTask(_cfg(data={"words": [True, "go"]}))
    with pytest.raises(ParamsError, match=r"tasks.speech.data.words = 21: must lie in \[1, 20\]"):
        SpeechTask(_cfg(data={"words": 21}))


def test_small_model_trains_on_a_real_batch(tiny_builtin):
    task, out, _ = tiny_builtin
    torch.manual_seed(0)
    model = task.build_model()
    assert model.config.ctc_loss_reduction == "mean" and model.config.vocab_size == len(VOCAB)
    batch = next(iter(task.batches(task.load(out, "train"), 4, True, torch.Generator().manual_seed(0))))
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = task.loss(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ = task.evaluate_batch(model, batch)
    assert model.training  # evaluate_batch leaves the mode as it found it
    assert out_.count == 4 and len(out_.predictions) == 4 and out_.references == batch["references"]
    # no dropout, layerdrop or time masking by default: train and eval modes compute the same losses, and only the
    # float32 batch mean against a float64 sum of the per-utterance losses rounds differently
    assert math.isfinite(out_.loss_sum) and out_.loss_sum / out_.count == pytest.approx(float(loss.detach()), rel=1e-6)
