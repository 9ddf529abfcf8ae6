"""Training: the loop, checkpoints with bit-identical resume, loss logs and plots, the shapes demo."""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "Trainer": ".trainer", "TrainConfig": ".trainer",
    "save_checkpoint": ".checkpoint", "load_checkpoint": ".checkpoint", "load_model": ".checkpoint",
    "Checkpoint": ".checkpoint",
    "LossLog": ".logs", "plot_losses": ".plots",
    "predict_dataset": ".evaluate", "evaluate_model": ".evaluate",
    "run_demo": ".demo", "DemoConfig": ".demo", "DEMO_PRESETS": ".demo",
})
