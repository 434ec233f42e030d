"""adaptive_lr: a validation-loss-driven learning-rate scheduler, and the lab that compares it."""

from adaptive_lr.scheduler import AdaptiveLR, BestState

__all__ = ["AdaptiveLR", "BestState"]
__version__ = "0.1.0"
