"""Optimizers and learning-rate schedules: ``SGD`` (torch's update, bit for bit) and per-iteration
warm-up / step schedules (``minirc.optim.lr_scheduler``)."""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "SGD": ".sgd",
    "lr_scheduler": (".lr_scheduler", None),
    "WarmupMultiStepLR": ".lr_scheduler", "LinearWarmup": ".lr_scheduler", "MultiStepLR": ".lr_scheduler",
})
