"""Bounded memory in predict: masks pasted in place, or thresholded to bool per detection
(``transform.mask_threshold``), give the same pixels as thresholding the float32 probabilities."""
import numpy as np

import minirc.random
from minirc.model import MaskRCNN, override, tiny
from minirc.model.paste import paste_masks_in_image


def test_thresholded_paste_equals_thresholding_the_probabilities(rng):
    m = rng.random((5, 28, 28)).astype(np.float32)
    boxes = np.array([[3.2, 4.7, 40.1, 30.3], [-20, -5, 10, 70], [50, 50, 90, 90], [0, 0, 63, 47],
                      [200, 200, 300, 300]], np.float32)
    soft = paste_masks_in_image(m, boxes, (48, 64))
    hard = paste_masks_in_image(m, boxes, (48, 64), threshold=0.5)
    assert soft.dtype == np.float32 and hard.dtype == np.bool_ and hard.shape == (5, 48, 64)
    np.testing.assert_array_equal(hard, soft > 0.5)
    assert paste_masks_in_image(m[:0], boxes[:0], (48, 64), threshold=0.5).dtype == np.bool_


def test_model_mask_threshold_gives_bool_masks():
    minirc.random.manual_seed(0)
    model = MaskRCNN(override(tiny(), {"roi_heads.score_thresh": 0.0}))
    model.eval()
    img = np.random.default_rng(1).random((3, 70, 90)).astype(np.float32)
    soft = model([img])[0]["masks"]
    model.transform.mask_threshold = 0.5
    hard = model([img])[0]["masks"]
    assert soft.dtype == np.float32 and hard.dtype == np.bool_ and len(hard) > 0
    np.testing.assert_array_equal(hard, soft > 0.5)
