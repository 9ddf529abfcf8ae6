"""A diverging run ends with the trainer's advice, not with the error of whatever op first saw the
non-finite values (NaN boxes in the RPN used to report 'boxes: expected finite coordinates')."""
import pytest

import minirc.random as mrandom
from minirc.data import ShapesDataset
from minirc.train.trainer import TrainConfig, Trainer


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow warnings on the way up
def test_divergence_is_reported_as_divergence():
    from minirc.model import MaskRCNN, override, tiny

    mrandom.manual_seed(0)
    model = MaskRCNN(override(tiny(), {"transform.min_size": (48,), "transform.max_size": 48}))
    ds = ShapesDataset(3, image_size=48, seed=1, empty_fraction=0.0, max_objects=2)
    cfg = TrainConfig(iters=8, batch_size=1, lr=30.0, warmup_iters=0, hflip=0.0)
    with pytest.raises(FloatingPointError, match=r"training diverged: .*lower the learning rate "
                                                 r"\(config.lr=30.0\)"):
        Trainer(model, ds, cfg, progress=False).train()
