"""CTC text side of the speech task: the character set, transcript normalisation, greedy decoding."""

from __future__ import annotations

import re

import torch

BLANK = "<pad>"
# Index 0 is the CTC blank (it doubles as the model's pad token, which is what
# transformers uses as the blank id). The symbol set is fixed so that
# ``build_model`` never needs to look at the data.
VOCAB: list[str] = [BLANK, " ", "'"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
CHAR_TO_ID = {c: i for i, c in enumerate(VOCAB)}


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
