"""Optimizers and learning-rate schedules."""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "SGD": ".sgd",
    "WarmupMultiStepLR": ".lr_scheduler", "LinearWarmup": ".lr_scheduler", "MultiStepLR": ".lr_scheduler",
})
