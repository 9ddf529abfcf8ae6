"""A MaskRCNN whose parameters and buffers all differ from their initial values, for export tests."""
import numpy as np

from minirc.model.mask_rcnn import MaskRCNN
from minirc.random import manual_seed


def randomised(cfg, seed, noise):
    """MaskRCNN(cfg) built under ``seed``, then every entry of its state moved: float tensors by
    ``noise`` * N(0, 1), running variances scaled by 1 + U(0, 1) (they stay positive), ints by 3.
    Buffers too, so a test sees running statistics away from their defaults."""
    manual_seed(seed)
    model = MaskRCNN(cfg)
    rng = np.random.default_rng(seed)
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("running_var"):
            state[k] = (v * (1 + rng.random(v.shape))).astype(v.dtype)
        elif v.dtype.kind == "f":
            state[k] = (v + noise * rng.standard_normal(v.shape)).astype(v.dtype)
        else:
            state[k] = v + 3
    model.load_state_dict(state)
    return model
