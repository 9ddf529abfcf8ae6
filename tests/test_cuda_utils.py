"""Placement helpers shared by modules, optimizers and ops: zeros and in-place copies where an array lives."""
import numpy as np
import pytest

from minirc.cuda_utils import copy_into, is_device_array, to_device, to_host, zeros_like


def test_zeros_like_and_copy_into_on_the_host():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    z = zeros_like(a)
    assert z.dtype == np.float32 and z.shape == (2, 3) and not z.any()
    view = a  # another reference: copy_into must write through it
    copy_into(a, np.full((2, 3), 2.5, np.float64))
    assert view.dtype == np.float32 and (view == 2.5).all()


@pytest.mark.cuda
def test_zeros_like_and_copy_into_on_the_device():
    d = to_device(np.arange(6, dtype=np.float32).reshape(2, 3))
    z = zeros_like(d)
    assert is_device_array(z) and z.shape == (2, 3) and z.dtype == np.float32 and not to_host(z).any()
    assert zeros_like(to_device(np.zeros((0, 4), np.float32))).shape == (0, 4)
    copy_into(d, np.full((2, 3), -1.0))
    assert is_device_array(d) and (to_host(d) == -1).all()
