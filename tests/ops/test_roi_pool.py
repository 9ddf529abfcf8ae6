"""RoIPool: hand-computed cases (docs/semantics.md case T4, C rounding of halves, overlapping bins, ties),
bit-exact backend agreement, finite differences, determinism, errors and empty inputs."""
import numpy as np
import pytest

from minirc.ops.roi_pool import FLT_MAX, roi_pool, roi_pool_backward, round_half_away
from minirc.testing import assert_backends_agree, numerical_grad

X10 = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)  # value 10r + c


def _rois(*rows, dtype=np.float32):
    return np.array(rows, dtype=dtype).reshape(-1, 5)


T4 = [  # (roi, output_size, spatial_scale, expected)
    ([0, 0, 0, 9, 9], 2, 1.0, [[44, 49], [94, 99]]),
    ([0, 0, 5, 4, 9], 2, 1.0, [[72, 74], [92, 94]]),
    ([0, 5, 5, 9, 9], 2, 1.0, [[77, 79], [97, 99]]),
    ([0, 1.5, 1.5, 3.5, 3.5], 2, 1.0, [[33, 34], [43, 44]]),  # 1.5 -> 2, 3.5 -> 4 (half away from zero)
    ([0, 0, 0, 9, 9], 5, 1.0, [[11, 13, 15, 17, 19], [31, 33, 35, 37, 39], [51, 53, 55, 57, 59],
                               [71, 73, 75, 77, 79], [91, 93, 95, 97, 99]]),
    ([0, 0, 0, 9, 9], 3, 1.0, [[33, 36, 39], [63, 66, 69], [93, 96, 99]]),  # bins 0..3, 3..6, 6..9 overlap
    ([0, 0, 0, 9, 9], 3, 0.5, [[11, 13, 15], [31, 33, 35], [51, 53, 55]]),  # 4.5 -> 5
    ([0, -2.5, -2.5, 2.5, 2.5], 2, 1.0, [[0, 3], [30, 33]]),  # -2.5 -> -3 (NumPy's round gives -2 -> 22)
]


@pytest.mark.parametrize("roi, size, scale, expected", T4)
def test_golden_cases(backend, roi, size, scale, expected):
    out, arg = roi_pool(X10, _rois(roi), size, scale, return_argmax=True, backend=backend)
    np.testing.assert_array_equal(out[0, 0], expected)
    np.testing.assert_array_equal(arg[0, 0], expected)  # on X10 the value is its own flat index
    assert arg.dtype == np.int32


def test_box_off_the_map_gives_zero_and_argmax_minus_one(backend):
    out, arg = roi_pool(X10, _rois([0, -20, -20, -12, -12]), 2, return_argmax=True, backend=backend)
    assert not out.any() and (arg == -1).all()
    g = roi_pool_backward(np.ones((1, 1, 2, 2), np.float32), arg, _rois([0, -20, -20, -12, -12]), X10.shape,
                          backend=backend)
    assert not g.any()


def test_c_round_is_half_away_from_zero():
    f = np.float32
    cases = {2.5: 3, -2.5: -3, 1.5: 2, -1.5: -2, 0.49999997: 0, -0.49999997: 0, 2.4999998: 2, 7.0: 7, -0.5: -1}
    for v, r in cases.items():
        assert round_half_away(f(v)) == r, v
        assert round_half_away.py_func(f(v)) == r, v


def test_ties_keep_the_first_cell_and_an_all_minus_inf_bin_gives_minus_flt_max(backend):
    x = np.full((1, 1, 4, 4), 5.0, np.float32)
    x[0, 0, 2:, 2:] = -np.inf
    out, arg = roi_pool(x, _rois([0, 0, 0, 3, 3]), 2, return_argmax=True, backend=backend)
    np.testing.assert_array_equal(arg[0, 0], [[0, 2], [8, -1]])  # top-left cell of each 2x2 window
    assert out[0, 0, 1, 1] == -FLT_MAX                           # nothing beats -FLT_MAX
    np.testing.assert_array_equal(out[0, 0], [[5, 5], [5, -FLT_MAX]])


def test_overlapping_bins_add_their_gradients(backend):
    x = np.zeros((1, 1, 10, 10), np.float32)
    x[0, 0, 3, 3] = 1.0  # in the shared row and column of bins (0,0), (0,1), (1,0), (1,1) of a 3x3 pool
    out, arg = roi_pool(x, _rois([0, 0, 0, 9, 9]), 3, return_argmax=True, backend=backend)
    g = roi_pool_backward(np.ones((1, 1, 3, 3), np.float32), arg, _rois([0, 0, 0, 9, 9]), x.shape, backend=backend)
    assert g[0, 0, 3, 3] == 4.0
    # the other five bins see only zeros: their first cell (0 > -FLT_MAX) takes the gradient
    assert g.sum() == 9.0 and g[0, 0, 0, 6] == 1.0 and g[0, 0, 6, 6] == 1.0


# ---- backends -------------------------------------------------------------------------------------
def _random_case(rng, n=2, c=3, h=7, w=9, k=12, ties=False):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    if ties:
        x = np.round(x)
    xy = rng.uniform(-30, 160, (k, 2))
    wh = rng.uniform(-4, 90, (k, 2)) * (rng.random((k, 1)) < 0.8)
    wh[:2] = rng.uniform(0, 1.5, (2, 2))
    rois = np.concatenate([rng.integers(0, n, (k, 1)), xy, xy + wh], 1).astype(np.float32)
    rois[-2:, 1:] = np.round(rois[-2:, 1:] * 2) / 2 * 16  # exact halves after scale 1/16
    return x, rois


@pytest.mark.parametrize("size, ties", [(2, False), ((3, 2), True)])
def test_numpy_cpu_cuda_identical(rng, size, ties):
    x, rois = _random_case(rng, ties=ties)
    out, arg = assert_backends_agree(
        lambda backend: roi_pool(x, rois, size, 1 / 16, return_argmax=True, backend=backend), rtol=0, atol=0)
    g = rng.standard_normal(out.shape).astype(np.float32)
    assert_backends_agree(lambda backend: roi_pool_backward(g, arg, rois, x.shape, backend=backend), rtol=0, atol=0)


def test_backward_matches_finite_differences(rng):
    x = rng.permutation(60).reshape(1, 3, 4, 5).astype(np.float64) / 7  # distinct values: no ties
    rois = _rois([0, 0.3, 0.2, 3.9, 2.6], [0, 1, 1, 4, 3], [0, -2, -2, 2.7, 6.6], dtype=np.float64)
    w = rng.standard_normal((3, 3, 2, 2))
    out, arg = roi_pool(x, rois, 2, return_argmax=True, backend="numpy")
    numeric = numerical_grad(lambda a: float(np.sum(roi_pool(a, rois, 2, backend="numpy") * w)), [x.copy()], 0)
    np.testing.assert_allclose(roi_pool_backward(w, arg, rois, x.shape, backend="numpy"), numeric, atol=1e-7)


def test_backward_is_deterministic(rng):
    x, rois = _random_case(rng, n=1, c=2, h=5, w=5, k=300, ties=True)
    out, arg = roi_pool(x, rois, 2, 1 / 16, return_argmax=True, backend="cpu")
    g = rng.standard_normal(out.shape).astype(np.float32)
    runs = [roi_pool_backward(g, arg, rois, x.shape, backend="cpu") for _ in range(2)]
    assert runs[0].tobytes() == runs[1].tobytes()


# ---- inputs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("boxes", [np.zeros((0, 5), np.float32), [np.zeros((0, 4))], []])
def test_empty_rois(backend, boxes):
    x = np.ones((1, 3, 4, 4), np.float32)
    out, arg = roi_pool(x, boxes, 2, return_argmax=True, backend=backend)
    assert out.shape == arg.shape == (0, 3, 2, 2)
    g = roi_pool_backward(np.zeros((0, 3, 2, 2), np.float32), arg, boxes, x.shape, backend=backend)
    assert g.shape == x.shape and not g.any()


def test_list_of_boxes_equals_k5_rois():
    b = [np.array([[0, 0, 5, 5]], np.float32), np.array([[2, 2, 9, 9]], np.float32)]
    x = np.stack([X10[0], X10[0] + 100])
    np.testing.assert_array_equal(roi_pool(x, b, 2), roi_pool(x, _rois([0, 0, 0, 5, 5], [1, 2, 2, 9, 9]), 2))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"boxes: batch index .*\[0, 1\)"):
        roi_pool(X10, _rois([1, 0, 0, 2, 2]), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_pool(X10, _rois([0, 0, 0, 2, 2]), (2, 0))
    with pytest.raises(ValueError, match="argmax: expected the shape"):
        roi_pool_backward(np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 3, 3), np.int32), _rois([0, 0, 0, 2, 2]),
                          X10.shape)
    with pytest.raises(ValueError, match="input_shape"):
        roi_pool_backward(np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.int32), _rois([0, 0, 0, 2, 2]),
                          (1, 2, 10, 10))


def test_matches_torchvision_bit_for_bit(rng):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    x, rois = _random_case(rng, k=30, ties=True)
    t = torch.tensor(x, requires_grad=True)
    ref = tv.ops.roi_pool(t, torch.tensor(rois), 3, 1 / 16)
    g = rng.standard_normal(ref.shape).astype(np.float32)
    ref.backward(torch.tensor(g))
    out, arg = roi_pool(x, rois, 3, 1 / 16, return_argmax=True, backend="cpu")
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_array_equal(roi_pool_backward(g, arg, rois, x.shape, backend="cpu"), t.grad.numpy())
