"""What the tests of the RoI sampling ops share: rois from rows, random cases, and the bad arguments
that roi_align, roi_warp and roi_align_max refuse alike (one argument at a time, the rest valid)."""
import numpy as np
import pytest


def rois(*rows, dtype=np.float32):
    """(K, 5) rois [batch_index, x1, y1, x2, y2] from rows of five numbers."""
    return np.array(rows, dtype=dtype).reshape(-1, 5)


def random_case(rng, n=2, c=3, h=7, w=9, k=12, dtype=np.float32, ties=False, corners=(-30, 160), size=90):
    """A random input (n, c, h, w) and k rois on it: x1, y1 uniform in ``corners`` (input pixels), widths
    and heights uniform in [-4, size), a fifth of them 0, the first two sub-pixel. ties: integer values."""
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    if ties:
        x = np.round(x)
    xy = rng.uniform(*corners, (k, 2))
    wh = rng.uniform(-4, size, (k, 2)) * (rng.random((k, 1)) < 0.8)  # some zero-size and inverted
    wh[:2] = rng.uniform(0, 1.5, (2, 2))                              # sub-pixel boxes
    rois = np.concatenate([rng.integers(0, n, (k, 1)), xy, xy + wh], 1).astype(dtype)
    return x, rois


BAD_SAMPLING_ARGUMENTS = [  # (keyword arguments, error, message pattern)
    (dict(boxes=np.zeros((3, 4))), ValueError, "boxes: expected a \\(K, 5\\)"),
    (dict(boxes=rois([0, 0, 0, np.nan, 2])), ValueError, "boxes: expected finite"),
    (dict(output_size=0), ValueError, "output_size"),
    (dict(output_size=2.5), TypeError, "output_size"),
    (dict(sampling_ratio=1.5), TypeError, "sampling_ratio"),
    (dict(spatial_scale=0.0), ValueError, "spatial_scale"),
    (dict(input=np.ones((1, 4, 4), np.float32)), ValueError, "input: expected 4 dimensions"),
    (dict(input=np.ones((1, 1, 4, 4), np.int32)), TypeError, "input: expected float32"),
]


def assert_refuses(op, kwargs, err, match):
    """op(input=(1, 1, 4, 4) ones, boxes=one roi [0, 0, 0, 2, 2], output_size=2, **kwargs) raises err
    with a message matching ``match``."""
    args = dict(input=np.ones((1, 1, 4, 4), np.float32), boxes=rois([0, 0, 0, 2, 2]), output_size=2)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        op(**args)
