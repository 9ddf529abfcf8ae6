"""box_iou: docs/semantics.md case T5 golden values, hand cases (touching, nested, zero-area -> NaN), dtypes,
bit-exact numpy/cpu/cuda agreement, hypothesis properties, device arrays, errors, empty inputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minirc.ops.box_iou import box_iou, box_iou_numpy

T5_BOXES1 = np.array([[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300], [0, 0, 25, 25]], np.float32)
T5_EXPECTED = [[1, 0.25, 0], [0.25, 1, 0], [0, 0, 1], [0.0625, 0.25, 0]]
FLOAT_BOXES = np.array([[285.3538, 185.5758, 1193.5110, 851.4551],
                        [285.1472, 188.7374, 1192.4984, 851.0669],
                        [279.2440, 197.9812, 1189.4746, 849.2019]], np.float32)


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def boxes_strategy(max_n=12, low=0.0, high=60.0, min_wh=0.5, max_wh=40.0):
    """(n, 4) float32 boxes with x2 > x1, y2 > y1; small coordinates so that many of them overlap."""
    def build(n):
        corner = hnp.arrays(np.float32, (n, 2), elements=st.floats(low, high, width=32))
        size = hnp.arrays(np.float32, (n, 2), elements=st.floats(min_wh, max_wh, width=32))
        return st.tuples(corner, size).map(lambda t: np.concatenate([t[0], t[0] + t[1]], axis=1))
    return st.integers(0, max_n).flatmap(build)


# ---- golden values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_t5_torchvision_case(backend, dtype):
    out = _host(box_iou(T5_BOXES1.astype(dtype), T5_BOXES1[:3].astype(dtype), backend=backend))
    assert out.dtype == dtype and out.shape == (4, 3)
    np.testing.assert_allclose(out, T5_EXPECTED, atol=1e-7)


def test_t5_float_boxes(backend):
    out = _host(box_iou(FLOAT_BOXES, FLOAT_BOXES, backend=backend))
    np.testing.assert_allclose(out, [[1, 0.9933, 0.9673], [0.9933, 1, 0.9737], [0.9673, 0.9737, 1]], atol=1e-3)


def test_hand_cases(backend):
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[10, 0, 20, 10],   # touching edge: no overlap
                  [2, 2, 4, 4],      # nested: 4 / 100
                  [5, 0, 15, 10],    # half overlap: 50 / 150
                  [-5, -5, 15, 15],  # contains a: 100 / 400
                  [3, 3, 3, 3]],     # a point inside a: 0 / 100
                 np.float32)
    out = _host(box_iou(a, b, backend=backend))
    np.testing.assert_allclose(out, [[0, 0.04, 1 / 3, 0.25, 0]], rtol=1e-6)


def test_zero_area_pair_is_nan_like_torchvision(backend):
    # no epsilon in the union: 0 / 0 = NaN for two points (torchvision gives nan too)
    points = np.array([[0, 0, 0, 0], [1, 1, 1, 1]], np.float32)
    out = _host(box_iou(points, points, backend=backend))
    assert np.isnan(out).all()


def test_dtypes():
    assert box_iou(T5_BOXES1.astype(np.int64), T5_BOXES1).dtype == np.float32  # ints -> float32
    assert box_iou(T5_BOXES1.astype(np.float16), T5_BOXES1).dtype == np.float32
    assert box_iou(T5_BOXES1.astype(np.float64), T5_BOXES1).dtype == np.float64  # promotion, like torch
    ints = T5_BOXES1.astype(int).tolist()
    assert box_iou(ints, ints).dtype == np.float32  # nested lists of ints
    assert box_iou(T5_BOXES1.tolist(), ints).dtype == np.float64  # lists of floats: NumPy makes float64


# ---- backends ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backends_bit_exact(backend, dtype):
    # same operations in the same order on every backend (and in torchvision): equal bit for bit
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 50, (11, 2))
    b1 = np.concatenate([xy, xy + rng.uniform(0, 30, (11, 2))], 1).astype(dtype)
    b2 = b1[::-1][:7] + dtype(0.25)
    ref = box_iou_numpy(b1, b2)
    np.testing.assert_array_equal(_host(box_iou(b1, b2, backend=backend)), ref)


def test_cuda_device_arrays_stay_on_device():
    cuda = pytest.importorskip("numba").cuda
    from minirc.backend import cuda_available
    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    d1, d2 = cuda.to_device(T5_BOXES1), cuda.to_device(T5_BOXES1[:3])
    out = box_iou(d1, d2, backend="cuda")
    assert hasattr(out, "copy_to_host")
    np.testing.assert_allclose(out.copy_to_host(), T5_EXPECTED, atol=1e-7)


@pytest.mark.parametrize("n, m", [(0, 3), (2, 0), (0, 0)])
def test_empty(backend, n, m):
    out = _host(box_iou(np.zeros((n, 4), np.float32), T5_BOXES1[:m], backend=backend))
    assert out.shape == (n, m) and out.dtype == np.float32


# ---- properties ----------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(boxes_strategy(), boxes_strategy())
def test_properties_symmetric_bounded_self_one(b1, b2):
    iou = box_iou(b1, b2, backend="cpu")
    np.testing.assert_array_equal(iou, box_iou(b2, b1, backend="cpu").T)  # exactly symmetric
    assert np.all((iou >= 0) & (iou <= 1))  # positive-area boxes: never NaN, never above 1
    np.testing.assert_array_equal(np.diag(box_iou(b1, b1, backend="cpu")), np.ones(len(b1), np.float32))
    np.testing.assert_array_equal(iou, box_iou_numpy(b1, b2))


# ---- errors --------------------------------------------------------------------------------------------
def test_errors():
    good = T5_BOXES1
    with pytest.raises(ValueError, match="boxes1: expected last dimension of size 4"):
        box_iou(good[:, :3], good)
    with pytest.raises(ValueError, match="boxes2: expected 2 dimensions"):
        box_iou(good, good[0])
    nan = good.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"boxes2: expected finite coordinates, row 2"):
        box_iou(good, nan)
    inf = good.copy()
    inf[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"boxes1: expected finite coordinates, row 3"):
        box_iou(inf, good)
    flipped = good.copy()
    flipped[1] = [50, 0, 0, 50]  # x2 < x1
    with pytest.raises(ValueError, match=r"boxes1: expected x1 <= x2 and y1 <= y2.*row 1 is \[50"):
        box_iou(flipped, good)
    flipped[1] = [0, 50, 50, 0]  # y2 < y1
    with pytest.raises(ValueError, match=r"boxes2: .*row 1"):
        box_iou(good, flipped)
    with pytest.raises(TypeError, match="boxes1"):
        box_iou("boxes", good)
    with pytest.raises(TypeError, match="boxes2: expected real-valued"):
        box_iou(good, good.astype(np.complex64))
    with pytest.raises(ValueError, match="backend"):
        box_iou(good, good, backend="tpu")


# ---- optional parity with torchvision ------------------------------------------------------------------
def test_torchvision_parity_bit_exact():
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 500, (40, 2))
    b = np.concatenate([xy, xy + rng.uniform(0, 200, (40, 2))], 1).astype(np.float32)
    expected = tv_ops.box_iou(torch.from_numpy(b), torch.from_numpy(b[:25])).numpy()
    np.testing.assert_array_equal(box_iou(b, b[:25], backend="cpu"), expected)
    np.testing.assert_array_equal(box_iou(b, b[:25], backend="numpy"), expected)
