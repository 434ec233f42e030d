"""Image classification: ResNet-18 on 32x32 colour images (the ``vision`` task).

:mod:`~adaptive_lr.tasks.vision.task` holds :class:`VisionTask`, a ResNet-18 of adjustable width,
the CIFAR-10 sources and the offline stand-in (scikit-learn's digits rendered onto
cluttered 32x32 colour canvases).
"""

from adaptive_lr.tasks.vision.task import DATA_SPEC, MODEL_SPEC, RenderedDigits, VisionTask, resnet18

__all__ = ["DATA_SPEC", "MODEL_SPEC", "RenderedDigits", "VisionTask", "resnet18"]
