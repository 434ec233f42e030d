"""adaptive_lr: a validation-loss-driven learning-rate scheduler, and the lab that compares it.

The library logs under ``logging.getLogger("adaptive_lr")`` (the scheduler's LR changes at INFO) and
configures no handler of its own: the application decides what is shown.
"""

import logging

from adaptive_lr.scheduler import AdaptiveLR, BestState

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["AdaptiveLR", "BestState"]
__version__ = "0.1.0"
